"""The device state machine of :mod:`server.engine.budget_device` as two Triton kernels.

Why: in eager torch one step of the machine is some 150 small ops, one step per
committed token, and each is a kernel launch on a GPU, so the host time per step
grows with the number of tokens committed since the last step (speculative
decoding, a resume after preemption). Here one program per request slot walks
all of its new committed tokens in a loop (:func:`catch_up`), and one program per
logits row copies its slot's state, walks the row's drafts and decides
(:func:`decide_rows`): two launches per step whatever the batch, the drafts or
the tokens to catch up. The logic is :func:`server.engine.budget_device.observe` and
:func:`~server.engine.budget_device.decide` line for line, on scalars; the tests run both
(Triton's interpreter on CPU) against the pure machine.

Used by :mod:`server.engine.logits_processor_v2` on CUDA; the torch version stays the
reference and the CPU path. Layouts are :class:`server.engine.budget_device.SlotTable`'s.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from server.engine.budget_device import N_CONST, N_STATE
from server.engine.budget_slots_v2 import SlotTable


@triton.jit
def _at(strings, idx, LT):
    return tl.load(strings + tl.minimum(tl.maximum(idx, 0), LT - 1))


@triton.jit
def _observe(phase, think, pos, qkind, qpos, qend, smatch, last, hold, hitmax, conts, tok,
             strings, sets, LT, W: tl.constexpr, c_min, c_max, c_nl, c_hold_after, c_end_len,
             c_cont_off, c_cont_len, c_pre_off, c_pre_len, c_start_off, c_start_len, c_waits):
    held = hold != 0
    thinkp = phase == 1
    end0 = tl.load(strings)
    a = (qkind != 0) & (tok == _at(strings, qpos, LT))
    a_next = qpos + 1
    a_fin = a & (a_next >= qend)
    a_more = a & (a_next < qend)
    b = ~a
    at_max = (c_max >= 0) & (think >= c_max)
    bt = b & thinkp
    is_end0 = bt & (tok == end0)
    nl_cut = bt & ~is_end0 & at_max & (c_nl >= 0) & (tok == c_nl)
    is_stop = tok < -1
    for j in tl.static_range(W):
        is_stop = is_stop | ((tl.load(sets + 2 * W + j) == tok) & (tok >= 0))
    ended = bt & ~is_end0 & ~nl_cut & is_stop
    ordinary = bt & ~is_end0 & ~nl_cut & ~is_stop
    think_new = think + (a & (qkind == 2)).to(tl.int64) + ordinary.to(tl.int64)
    cont_hit = (ordinary & (c_cont_len > 0) & (tok == _at(strings, c_cont_off, LT))
                & ((think_new <= c_min) | (conts < c_waits)) & ~held)
    q_cont = cont_hit & (c_cont_len > 1)
    q_end1 = is_end0 & (c_end_len > 1)
    new_hitmax = tl.where(is_end0, at_max.to(tl.int64), tl.where(nl_cut, 1, hitmax))
    enter = (a_fin & (qkind == 1)) | (is_end0 & (c_end_len == 1))
    q_prefix = enter & (new_hitmax != 0) & (c_pre_len > 0)
    bm = b & (phase == 0)
    sm_next = tl.where(tok == _at(strings, c_start_off + smatch, LT), smatch + 1,
                       (tok == _at(strings, c_start_off, LT)).to(tl.int64))
    opened = bm & (sm_next == c_start_len)
    hold_after = c_hold_after != 0
    new_hold = ((a_fin & (qkind == 2) & hold_after) | (cont_hit & (c_cont_len == 1) & hold_after)
                | (opened & hold_after & ((c_min > 0) | (c_waits > 0))))
    new_phase = tl.where(enter, 2, tl.where(ended, 3, tl.where(opened, 1, phase)))
    kind = tl.where(a_more, qkind, 0)
    kind = tl.where(q_end1 | nl_cut, 1, tl.where(q_cont, 2, kind))
    kind = tl.where(q_prefix, 3, kind)
    new_qpos = tl.where(a_more, a_next, 0)
    new_qpos = tl.where(q_end1, 1, tl.where(q_cont, c_cont_off + 1, new_qpos))
    new_qpos = tl.where(q_prefix, c_pre_off, new_qpos)
    new_qend = tl.where(a_more, qend, 0)
    new_qend = tl.where(q_end1 | nl_cut, c_end_len,
                        tl.where(q_cont, c_cont_off + c_cont_len, new_qend))
    new_qend = tl.where(q_prefix, c_pre_off + c_pre_len, new_qend)
    new_smatch = tl.where(bm, sm_next, smatch)
    return (new_phase.to(tl.int64), think_new.to(tl.int64), pos + 1, kind.to(tl.int64),
            new_qpos.to(tl.int64), new_qend.to(tl.int64), new_smatch.to(tl.int64), tok,
            new_hold.to(tl.int64), new_hitmax.to(tl.int64),
            (conts + cont_hit.to(tl.int64)).to(tl.int64))


@triton.jit
def _catch_up_kernel(slots_ptr, state_ptr, const_ptr, strings_ptr, sets_ptr, ids_ptr, ids_stride,
                     prompt_ptr, total_ptr, LT, NS: tl.constexpr, NC: tl.constexpr,
                     W: tl.constexpr):
    slot = tl.load(slots_ptr + tl.program_id(0)).to(tl.int64)
    slot = tl.maximum(slot, 0)
    c = const_ptr + slot * NC
    st = state_ptr + slot * NS
    strings = strings_ptr + slot * LT
    sets = sets_ptr + slot * 3 * W
    prompt = tl.load(prompt_ptr + slot).to(tl.int64)
    out_len = tl.load(total_ptr + slot).to(tl.int64) - prompt
    out_len = tl.where(tl.load(c + 0) != 0, out_len, 0)  # inactive slots: nothing to observe
    phase, think, pos = tl.load(st + 0), tl.load(st + 1), tl.load(st + 2)
    qkind, qpos, qend = tl.load(st + 3), tl.load(st + 4), tl.load(st + 5)
    smatch, last, hold, hitmax = tl.load(st + 6), tl.load(st + 7), tl.load(st + 8), tl.load(st + 9)
    conts = tl.load(st + 10)
    start = pos
    while pos < out_len:
        tok = tl.load(ids_ptr + slot * ids_stride + prompt + pos).to(tl.int64)
        phase, think, pos, qkind, qpos, qend, smatch, last, hold, hitmax, conts = _observe(
            phase, think, pos, qkind, qpos, qend, smatch, last, hold, hitmax, conts, tok, strings,
            sets, LT, W, tl.load(c + 1), tl.load(c + 2), tl.load(c + 4), tl.load(c + 6),
            tl.load(c + 8), tl.load(c + 9), tl.load(c + 10), tl.load(c + 11), tl.load(c + 12),
            tl.load(c + 13), tl.load(c + 14), tl.load(c + 18))
    if pos > start:
        tl.store(st + 0, phase)
        tl.store(st + 1, think)
        tl.store(st + 2, pos)
        tl.store(st + 3, qkind)
        tl.store(st + 4, qpos)
        tl.store(st + 5, qend)
        tl.store(st + 6, smatch)
        tl.store(st + 7, last)
        tl.store(st + 8, hold)
        tl.store(st + 9, hitmax)
        tl.store(st + 10, conts)


@triton.jit
def _decide_kernel(emap_ptr, local_ptr, input_ids_ptr, state_ptr, const_ptr, strings_ptr,
                   sets_ptr, nl_ptr, nl_stride, action_ptr, token_ptr, pos_ptr, LT,
                   NS: tl.constexpr, NC: tl.constexpr, W: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    slot = tl.load(emap_ptr + row).to(tl.int64)
    valid = slot >= 0
    slot = tl.maximum(slot, 0)
    c = const_ptr + slot * NC
    st = state_ptr + slot * NS
    strings = strings_ptr + slot * LT
    sets = sets_ptr + slot * 3 * W
    phase, think, pos = tl.load(st + 0), tl.load(st + 1), tl.load(st + 2)
    qkind, qpos, qend = tl.load(st + 3), tl.load(st + 4), tl.load(st + 5)
    smatch, last, hold, hitmax = tl.load(st + 6), tl.load(st + 7), tl.load(st + 8), tl.load(st + 9)
    conts = tl.load(st + 10)
    c_min, c_max, c_nl, c_waits = tl.load(c + 1), tl.load(c + 2), tl.load(c + 4), tl.load(c + 18)
    local = tl.load(local_ptr + row).to(tl.int64)
    local = tl.where(tl.load(c + 0) != 0, local, 0)
    first = row - local
    d = 1
    while d <= local:
        tok = tl.load(input_ids_ptr + first + d).to(tl.int64)
        phase, think, pos, qkind, qpos, qend, smatch, last, hold, hitmax, conts = _observe(
            phase, think, pos, qkind, qpos, qend, smatch, last, hold, hitmax, conts, tok, strings,
            sets, LT, W, c_min, c_max, c_nl, tl.load(c + 6), tl.load(c + 8), tl.load(c + 9),
            tl.load(c + 10), tl.load(c + 11), tl.load(c + 12), tl.load(c + 13), tl.load(c + 14),
            c_waits)
        d += 1
    # decide: server.engine.budget_device.decide
    thinkp = phase == 1
    in_q = qkind != 0
    cut = (c_max >= 0) & (think >= c_max) & (qkind != 1)
    nl_hit = tl.load(nl_ptr + tl.load(c + 7) * nl_stride + tl.maximum(last, 0)).to(tl.int64)
    ends_nl = tl.where(think > 0, nl_hit, tl.load(c + 5)) != 0
    end0 = tl.load(strings)
    cut_tok = tl.where((c_nl >= 0) & ~ends_nl, c_nl, end0)
    below_min = tl.where(tl.load(c + 10) > 0, 2, 4)  # no continuation string: suppress only
    settled = tl.where(think < c_min, below_min, tl.load(c + 3))
    settled = tl.where(conts < c_waits, 6, settled)  # GUARD_WAIT
    thinking = tl.where(cut | in_q, 1, tl.where(hold != 0, 4, settled))
    action = tl.where(thinkp, thinking, tl.where(in_q, 1, 0))
    action = tl.where((tl.load(c + 0) != 0) & valid, action, 0)
    forced = tl.where(thinkp & cut, cut_tok, _at(strings, qpos, LT))
    repl = tl.where((action == 2) | (action == 6), _at(strings, tl.load(c + 9), LT), end0)
    tl.store(action_ptr + row, action.to(tl.int64))
    tl.store(token_ptr + row, tl.where(action == 1, forced, repl).to(tl.int64))
    tl.store(pos_ptr + row, pos)


def catch_up(table: SlotTable, slots: torch.Tensor, all_ids: torch.Tensor,
             prompt_len: torch.Tensor, total_len: torch.Tensor) -> None:
    """Observe every committed token the ``slots`` have not observed yet (one launch)."""
    _catch_up_kernel[(slots.shape[0],)](
        slots, table.state, table.const, table.strings, table.sets, all_ids, all_ids.stride(0),
        prompt_len, total_len, table.strings_width, NS=N_STATE, NC=N_CONST, W=table.width)


def decide_rows(table: SlotTable, emap: torch.Tensor, local: torch.Tensor,
                input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(action, token, position) per logits row, after the row's drafts (one launch)."""
    n = emap.shape[0]
    action = torch.empty(n, dtype=torch.int64, device=emap.device)
    token, pos = torch.empty_like(action), torch.empty_like(action)
    _decide_kernel[(n,)](
        emap, local, input_ids, table.state, table.const, table.strings, table.sets, table.nl,
        table.nl.stride(0), action, token, pos, table.strings_width, NS=N_STATE, NC=N_CONST,
        W=table.width)
    return action, token, pos


@triton.jit
def _uniform_bits(seed, position):
    """:func:`server.budget.draws.uniform_bits` (splitmix64, wrapping int64, masked shifts)."""
    z = seed * -7046029254386353131 + (position + 1) * -4658895280553007687
    z = (z ^ ((z >> 30) & 17179869183)) * -4658895280553007687
    z = (z ^ ((z >> 27) & 137438953471)) * -7723592293110705685
    z = z ^ ((z >> 31) & 8589934591)
    return (z >> 11) & 9007199254740991


@triton.jit
def _edit_kernel(logits_ptr, stride, V, action_ptr, token_ptr, pos_ptr, emap_ptr, const_ptr,
                 sets_ptr, NC: tl.constexpr, W: tl.constexpr, BLOCK: tl.constexpr):
    """One logits row: :func:`server.engine.logits_processor_v2.edit_logits` for that row; a
    FREE row returns at once, so only edited rows touch their logits."""
    row = tl.program_id(0).to(tl.int64)
    action = tl.load(action_ptr + row)
    if action != 0:
        base = logits_ptr + row * stride
        token = tl.load(token_ptr + row)
        slot = tl.maximum(tl.load(emap_ptr + row).to(tl.int64), 0)
        c = const_ptr + slot * NC
        sets = sets_ptr + slot * 3 * W + tl.where(action == 3, W, 0)
        hit = action == 1  # FORCE: the whole row goes
        if (action == 2) | (action == 3) | (action == 6):  # guarded: did the model try?
            if tl.load(c + 15) != 0:  # greedy: an attempt id wins the argmax (first max)
                best = tl.load(base).to(tl.float32)
                best_idx = 0
                for start in range(0, V, BLOCK):
                    offs = start + tl.arange(0, BLOCK)
                    x = tl.load(base + offs, mask=offs < V, other=float("-inf")).to(tl.float32)
                    m = tl.max(x, axis=0)
                    i = tl.min(tl.where(x == m, offs, V), axis=0)
                    if m > best:
                        best = m
                        best_idx = i
                for j in tl.static_range(W):
                    a_id = tl.load(sets + j)
                    hit = hit | ((a_id >= 0) & (a_id == best_idx))
            else:  # sampled: the draw against the attempt probability after temperature
                inv_t = tl.load(c + 16).to(tl.int32).to(tl.float32, bitcast=True)
                mx = tl.load(base).to(tl.float32) * inv_t  # any element starts the max
                for start in range(0, V, BLOCK):
                    offs = start + tl.arange(0, BLOCK)
                    x = tl.load(base + offs, mask=offs < V, other=float("-inf")).to(tl.float32)
                    mx = tl.maximum(mx, tl.max(x * inv_t, axis=0))
                total = 0.0
                for start in range(0, V, BLOCK):
                    offs = start + tl.arange(0, BLOCK)
                    x = tl.load(base + offs, mask=offs < V, other=float("-inf")).to(tl.float32)
                    total += tl.sum(tl.exp(x * inv_t - mx), axis=0)
                p = 0.0
                for j in tl.static_range(W):
                    a_id = tl.load(sets + j)
                    x = tl.load(base + tl.maximum(a_id, 0)).to(tl.float32)
                    p += tl.where(a_id >= 0, tl.exp(x * inv_t - mx), 0.0)
                u = _uniform_bits(tl.load(c + 17), tl.load(pos_ptr + row))
                hit = u.to(tl.float64) < (p / total).to(tl.float64) * 9007199254740992.0
        if action != 1:  # held and guarded rows lose their attempt ids
            for j in tl.static_range(W):
                a_id = tl.load(sets + j)
                tl.store(base + tl.maximum(a_id, 0), float("-inf"), mask=a_id >= 0)
        if (action == 6) & ~hit:  # GUARD_WAIT: the continuation only ever comes forced
            tl.store(base + token, float("-inf"))
        if hit:
            for start in range(0, V, BLOCK):
                offs = start + tl.arange(0, BLOCK)
                tl.store(base + offs, float("-inf"), mask=offs < V)
            tl.store(base + token, 0.0)


def edit_rows(logits: torch.Tensor, table: SlotTable, emap: torch.Tensor, action: torch.Tensor,
              token: torch.Tensor, pos: torch.Tensor) -> None:
    """Apply each row's decision to ``logits`` in place (one launch)."""
    _edit_kernel[(logits.shape[0],)](
        logits, logits.stride(0), logits.shape[1], action, token, pos, emap, table.const,
        table.sets, NC=N_CONST, W=table.width, BLOCK=1024)
