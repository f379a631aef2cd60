"""The budget state machine of :mod:`server.budget.machine`, vectorised over request slots in torch.

Why: vLLM's Model Runner V2 keeps each request's token history only on the device
(``all_token_ids`` up to ``total_len``), so a V2 logits processor that wants no host
round trip per step has to run the s1 state machine where the tokens are. This
module holds one row of int64 state per request slot (:class:`SlotTable`) and
advances every row at once: :func:`observe` is :meth:`BudgetState.observe` written
as masked tensor arithmetic, :func:`decide` is :meth:`BudgetState.decide`. Each is a
fixed sequence of tensor ops whatever the number of rows, with no data-dependent
Python control flow, so nothing here reads a device value on the host.

It deliberately does not know vLLM: :mod:`server.engine.logits_processor_v2` feeds it the
committed tokens and the draft prefixes; the logits edit lives there too. The pure
machine stays the reference: the tests compare this one with it token for token.

Layout of a slot's row (all int64):

- ``state``: the columns ``S_*`` below (phase, counts, the forced-token queue as a
  [position, end) range into the slot's string table, the start-delimiter match,
  the last token, the hold flag, whether the maximum was hit, the forced
  continuations so far);
- ``const``: the columns ``C_*`` (limits, s1 rules, string offsets and lengths,
  sampling: greedy flag, 1/temperature as float32 bits, the decision seed);
- ``strings``: the end delimiter, the continuation string, the answer prefix and
  the start delimiter, concatenated, padded with -1;
- ``sets``: three id sets of width ``W`` padded with -1: the attempt ids (end
  delimiter's first token, then the end-of-turn ids), the end-of-turn ids without
  the end delimiter (what GUARD_TURN watches), and the stop ids.
"""

from __future__ import annotations

import torch

from server.budget.machine import (
    FORCE,
    FREE,
    GUARD,
    GUARD_TURN,
    GUARD_WAIT,
    HOLD,
    BudgetSpec,
    Phase,
)

BEFORE, THINKING, ANSWER, ENDED = (int(p) for p in Phase)
Q_NONE, Q_END, Q_CONT, Q_PREFIX = 0, 1, 2, 3

# state columns
(S_PHASE, S_THINK, S_POS, S_QKIND, S_QPOS, S_QEND, S_SMATCH, S_LAST, S_HOLD, S_HITMAX,
 S_CONTS) = range(11)
N_STATE = 11
# const columns
(C_ACTIVE, C_MIN, C_MAX, C_SETTLED, C_NL, C_OPENS_NL, C_HOLD_AFTER, C_FMT, C_END_LEN,
 C_CONT_OFF, C_CONT_LEN, C_PRE_OFF, C_PRE_LEN, C_START_OFF, C_START_LEN, C_GREEDY,
 C_INV_T, C_SEED, C_WAITS) = range(19)
N_CONST = 19

_MASK64 = (1 << 64) - 1


def _i64(value: int) -> int:
    """An unsigned 64-bit value as the signed int64 with the same bits."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_SM_A, _SM_B, _SM_C = _i64(0x9E3779B97F4A7C15), _i64(0xBF58476D1CE4E5B9), _i64(0x94D049BB133111EB)


def uniform_bits(seed: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """:func:`server.budget.draws.uniform_bits` on int64 tensors (wrapping multiplication,
    logical shifts by masking), so a decision draws the same bits on the device as on
    the host."""
    z = seed * _SM_A + (position + 1) * _SM_B
    z = (z ^ ((z >> 30) & ((1 << 34) - 1))) * _SM_B
    z = (z ^ ((z >> 27) & ((1 << 37) - 1))) * _SM_C
    z = z ^ ((z >> 31) & ((1 << 33) - 1))
    return (z >> 11) & ((1 << 53) - 1)


def initial_state(spec: BudgetSpec) -> list[int]:
    """The state row of a fresh :class:`~server.budget.machine.BudgetState` for ``spec``."""
    row = [0] * N_STATE
    row[S_LAST] = -1
    if spec.prompt_opens:
        row[S_PHASE] = THINKING
        row[S_HOLD] = int(spec.hold_after_continuation
                          and ((spec.thinking_min or 0) > 0 or (spec.thinking_waits or 0) > 0))
    else:
        row[S_PHASE] = BEFORE
    return row


class Rows:
    """Rows of state and constants (one per slot, or one per logits row), as column
    views of packed tensors; :meth:`packed` stacks the state back."""

    def __init__(self, state: torch.Tensor, const: torch.Tensor, strings: torch.Tensor,
                 sets: torch.Tensor, width: int) -> None:
        self.s = list(state.unbind(1))
        self.const = const
        self.c = const.unbind(1)
        self.strings = strings
        self.attempts = sets[:, :width]
        self.turns = sets[:, width:2 * width]
        self.stops = sets[:, 2 * width:]

    def packed(self) -> torch.Tensor:
        return torch.stack(self.s, dim=1)

    def string_at(self, index: torch.Tensor) -> torch.Tensor:
        col = index.clamp(0, self.strings.shape[1] - 1).unsqueeze(1)
        return self.strings.gather(1, col).squeeze(1)


def observe(r: Rows, tok: torch.Tensor, m: torch.Tensor) -> None:
    """Advance the rows where ``m`` holds by one output token each (``tok``), in place
    on ``r.s``: :meth:`server.budget.machine.BudgetState.observe`, every branch computed and
    selected with masks."""
    s, c = r.s, r.c
    phase, think, qkind, qpos, qend = s[S_PHASE], s[S_THINK], s[S_QKIND], s[S_QPOS], s[S_QEND]
    held = s[S_HOLD] != 0
    thinkp = phase == THINKING
    end0 = r.strings[:, 0]
    cont_off, cont_len = c[C_CONT_OFF], c[C_CONT_LEN]
    # A: the token is the queued (forced) one.
    in_q = qkind != Q_NONE
    a = in_q & (tok == r.string_at(qpos))
    a_next = qpos + 1
    a_fin = a & (a_next >= qend)
    a_more = a & ~a_fin
    # B: anything else (a mismatch clears the queue first).
    b = ~a
    at_max = (c[C_MAX] >= 0) & (think >= c[C_MAX])
    bt = b & thinkp
    is_end0 = bt & (tok == end0)
    nl_cut = bt & ~is_end0 & at_max & (c[C_NL] >= 0) & (tok == c[C_NL])
    is_stop = (r.stops == tok.unsqueeze(1)).any(1)
    ended = bt & ~is_end0 & ~nl_cut & is_stop
    ordinary = bt & ~is_end0 & ~nl_cut & ~is_stop
    think_new = think + (a & (qkind == Q_CONT)).long() + ordinary.long()
    conts = s[S_CONTS]
    cont_hit = (ordinary & (cont_len > 0) & (tok == r.string_at(cont_off))
                & ((think_new <= c[C_MIN]) | (conts < c[C_WAITS])) & ~held)
    q_cont = cont_hit & (cont_len > 1)
    q_end1 = is_end0 & (c[C_END_LEN] > 1)
    hitmax = torch.where(is_end0, at_max.long(), torch.where(nl_cut, 1, s[S_HITMAX]))
    enter = (a_fin & (qkind == Q_END)) | (is_end0 & (c[C_END_LEN] == 1))
    q_prefix = enter & (hitmax != 0) & (c[C_PRE_LEN] > 0)
    # The start delimiter, matched token by token before the block opens.
    bm = b & (phase == BEFORE)
    smatch = s[S_SMATCH]
    sm_next = torch.where(tok == r.string_at(c[C_START_OFF] + smatch), smatch + 1,
                          (tok == r.string_at(c[C_START_OFF])).long())
    opened = bm & (sm_next == c[C_START_LEN])
    hold_after = c[C_HOLD_AFTER] != 0
    hold = ((a_fin & (qkind == Q_CONT) & hold_after) | (cont_hit & (cont_len == 1) & hold_after)
            | (opened & hold_after & ((c[C_MIN] > 0) | (c[C_WAITS] > 0))))
    new_phase = torch.where(enter, ANSWER, torch.where(ended, ENDED,
                                                       torch.where(opened, THINKING, phase)))
    new_kind = torch.where(a_more, qkind, Q_NONE)
    new_kind = torch.where(q_end1 | nl_cut, Q_END, torch.where(q_cont, Q_CONT, new_kind))
    new_kind = torch.where(q_prefix, Q_PREFIX, new_kind)
    new_qpos = torch.where(a_more, a_next, 0)
    new_qpos = torch.where(q_end1, 1, torch.where(q_cont, cont_off + 1, new_qpos))
    new_qpos = torch.where(q_prefix, c[C_PRE_OFF], new_qpos)  # nl_cut: from 0
    new_qend = torch.where(a_more, qend, 0)
    new_qend = torch.where(q_end1 | nl_cut, c[C_END_LEN],
                           torch.where(q_cont, cont_off + cont_len, new_qend))
    new_qend = torch.where(q_prefix, c[C_PRE_OFF] + c[C_PRE_LEN], new_qend)
    updates = {
        S_PHASE: new_phase, S_THINK: think_new, S_POS: s[S_POS] + 1, S_QKIND: new_kind,
        S_QPOS: new_qpos, S_QEND: new_qend, S_SMATCH: torch.where(bm, sm_next, smatch),
        S_LAST: tok, S_HOLD: hold.long(), S_HITMAX: hitmax, S_CONTS: conts + cont_hit.long(),
    }
    for col, value in updates.items():
        s[col] = torch.where(m, value, s[col])


def decide(r: Rows, nl_table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(action, token) per row: :meth:`BudgetState.decide`. ``token`` is the forced token
    for FORCE rows and the replacement for GUARD and GUARD_WAIT (the continuation's first
    token) and GUARD_TURN (the end delimiter's first token) rows."""
    s, c = r.s, r.c
    phase, think, qkind = s[S_PHASE], s[S_THINK], s[S_QKIND]
    thinkp = phase == THINKING
    in_q = qkind != Q_NONE
    cut = (c[C_MAX] >= 0) & (think >= c[C_MAX]) & (qkind != Q_END)
    last = s[S_LAST].clamp(min=0)
    ends_nl = torch.where(think > 0, nl_table[c[C_FMT], last].long(), c[C_OPENS_NL]) != 0
    end0 = r.strings[:, 0]
    cut_tok = torch.where((c[C_NL] >= 0) & ~ends_nl, c[C_NL], end0)
    below_min = torch.where(c[C_CONT_LEN] > 0, GUARD, HOLD)  # no string: suppress only
    settled = torch.where(think < c[C_MIN], below_min, c[C_SETTLED])
    settled = torch.where(s[S_CONTS] < c[C_WAITS], GUARD_WAIT, settled)
    thinking = torch.where(cut | in_q, FORCE, torch.where(s[S_HOLD] != 0, HOLD, settled))
    action = torch.where(thinkp, thinking, torch.where(in_q, FORCE, FREE))
    action = torch.where(c[C_ACTIVE] != 0, action, FREE)
    forced = torch.where(thinkp & cut, cut_tok, r.string_at(s[S_QPOS]))
    repl = torch.where((action == GUARD) | (action == GUARD_WAIT), r.string_at(c[C_CONT_OFF]),
                       end0)
    return action, torch.where(action == FORCE, forced, repl)


class SlotTable:
    """Per-slot budgets: a host mirror where requests are staged, and the device copy
    the state machine runs on. Rows change on the device only through :meth:`flush`
    (staged constants and fresh state) and :func:`observe`."""

    def __init__(self, max_slots: int, vocab: int, device: torch.device) -> None:
        self.max_slots, self.vocab, self.device = max_slots, vocab, device
        self.width, self.strings_width = 1, 1
        self.host_const = torch.zeros(max_slots, N_CONST, dtype=torch.int64)
        self.host_init = torch.zeros(max_slots, N_STATE, dtype=torch.int64)
        self.host_strings = torch.full((max_slots, 1), -1, dtype=torch.int64)
        self.host_sets = torch.full((max_slots, 3), -1, dtype=torch.int64)
        self.nl_sets: dict[frozenset[int], int] = {frozenset(): 0}
        self.host_nl = torch.zeros(1, vocab, dtype=torch.bool)
        self.dirty: set[int] = set()
        self.reshaped = True
        self.const = self.state = self.strings = self.sets = self.nl = torch.empty(0)

    def set_slot(self, slot: int, spec: BudgetSpec | None, seed: int = 0,
                 greedy: bool = True, inv_t_bits: int = 0) -> None:
        """Stage ``slot``'s budget (None: a request without one) for the next flush."""
        self.dirty.add(slot)
        if spec is None:
            self.host_const[slot, C_ACTIVE] = 0
            return
        strings = [*spec.end_ids, *spec.continuation_ids, *spec.answer_prefix_ids,
                   *spec.start_ids]
        stops = sorted(spec.stop_ids)
        width = max(len(spec.attempt_ids), len(stops), 1)
        if width > self.width or len(strings) > self.strings_width:
            self._grow(max(width, self.width), max(len(strings), self.strings_width))
        w = self.width
        self.host_strings[slot] = -1
        self.host_strings[slot, :len(strings)] = torch.tensor(strings, dtype=torch.int64)
        self.host_sets[slot] = -1
        for k, ids in enumerate((spec.attempt_ids, spec.turn_ids, stops)):
            if ids:
                self.host_sets[slot, k * w:k * w + len(ids)] = torch.tensor(ids)
        n_end, n_cont, n_pre = (len(spec.end_ids), len(spec.continuation_ids),
                                len(spec.answer_prefix_ids))
        const = [0] * N_CONST
        const[C_ACTIVE] = 1
        const[C_MIN] = spec.thinking_min or 0
        const[C_MAX] = -1 if spec.thinking_max is None else spec.thinking_max
        const[C_SETTLED] = GUARD_TURN if spec.turn_ends_thinking and spec.turn_ids else FREE
        const[C_NL] = -1 if spec.newline_id is None else spec.newline_id
        const[C_OPENS_NL] = int(spec.opens_on_newline)
        const[C_HOLD_AFTER] = int(spec.hold_after_continuation)
        const[C_FMT] = self._newline_row(spec.newline_ids)
        const[C_END_LEN] = n_end
        const[C_CONT_OFF], const[C_CONT_LEN] = n_end, n_cont
        const[C_PRE_OFF], const[C_PRE_LEN] = n_end + n_cont, n_pre
        const[C_START_OFF], const[C_START_LEN] = n_end + n_cont + n_pre, len(spec.start_ids)
        const[C_GREEDY], const[C_INV_T], const[C_SEED] = int(greedy), inv_t_bits, _i64(seed)
        const[C_WAITS] = spec.thinking_waits or 0
        self.host_const[slot] = torch.tensor(const, dtype=torch.int64)
        self.host_init[slot] = torch.tensor(initial_state(spec), dtype=torch.int64)

    def _newline_row(self, ids: frozenset[int]) -> int:
        """The row of ``ids`` in the newline table: one row per distinct set, built once."""
        row = self.nl_sets.get(ids)
        if row is None:
            row = self.nl_sets[ids] = len(self.nl_sets)
            new = torch.zeros(1, self.vocab, dtype=torch.bool)
            new[0, [i for i in ids if 0 <= i < self.vocab]] = True
            self.host_nl = torch.cat([self.host_nl, new])
            self.reshaped = True
        return row

    def _grow(self, width: int, strings_width: int) -> None:
        strings = torch.full((self.max_slots, strings_width), -1, dtype=torch.int64)
        strings[:, :self.strings_width] = self.host_strings
        sets = torch.full((self.max_slots, 3 * width), -1, dtype=torch.int64)
        for k in range(3):
            sets[:, k * width:k * width + self.width] = \
                self.host_sets[:, k * self.width:(k + 1) * self.width]
        self.host_strings, self.host_sets = strings, sets
        self.width, self.strings_width = width, strings_width
        self.reshaped = True

    def flush(self) -> None:
        """Copy staged slots to the device (non-blocking) and reset their state rows."""
        if self.reshaped:
            state = self.state if self.state.numel() else self.host_init.to(self.device)
            self.const = self.host_const.to(self.device, non_blocking=True)
            self.strings = self.host_strings.to(self.device, non_blocking=True)
            self.sets = self.host_sets.to(self.device, non_blocking=True)
            self.nl = self.host_nl.to(self.device, non_blocking=True)
            self.state = state
            self.reshaped = False
        if not self.dirty:
            return
        idx_host = torch.tensor(sorted(self.dirty), dtype=torch.int64)
        self.dirty.clear()
        idx = idx_host.to(self.device, non_blocking=True)
        for dev, host in ((self.const, self.host_const), (self.strings, self.host_strings),
                          (self.sets, self.host_sets), (self.state, self.host_init)):
            dev.index_copy_(0, idx, host.index_select(0, idx_host).to(self.device,
                                                                      non_blocking=True))

    def rows(self, index: torch.Tensor | None = None) -> Rows:
        """All slots (``index`` None: state columns are views to write back with
        :meth:`store`), or a copy of the rows ``index`` selects (one per logits row)."""
        pick = (lambda t: t) if index is None else (lambda t: t.index_select(0, index))  # noqa: E731
        return Rows(pick(self.state), pick(self.const), pick(self.strings), pick(self.sets),
                    self.width)

    def store(self, rows: Rows) -> None:
        self.state = rows.packed()
