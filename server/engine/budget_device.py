"""The budget state machine of :mod:`server.budget.machine`, vectorised over request slots in torch.

Why: vLLM's Model Runner V2 keeps each request's token history only on the device
(``all_token_ids`` up to ``total_len``), so a V2 logits processor that wants no host
round trip per step has to run the s1 state machine where the tokens are. This
module holds one row of int64 state per request slot (:class:`SlotTable`) and
advances every row at once: :func:`observe` is :meth:`BudgetState.observe` written
as masked tensor arithmetic, :func:`decide` is :meth:`BudgetState.decide`. Each is a
fixed sequence of tensor ops whatever the number of rows, with no data-dependent
Python control flow, so nothing here reads a device value on the host.

Every op is a kernel launch on a GPU, so the ops are few: a row's state is one
packed tensor updated by one select, the token comparisons of a step are two
batched compares, and what depends only on the request (limits folded into
sentinels, flags, the forced-string candidates) is computed once per request on the
host into the slot's constants rather than per step on the device.

It deliberately does not know vLLM: :mod:`server.engine.logits_processor_v2` feeds it the
committed tokens and the draft prefixes; the logits edit lives there too. The pure
machine stays the reference: the tests compare this one with it token for token.

Layout of a slot's row (all int64):

- ``state``: the columns ``S_*`` below (phase, counts, the forced-token queue as a
  [position, end) range into the slot's string table, the start-delimiter match,
  the last token, the hold flag, whether the maximum was hit, the forced
  continuations so far);
- ``const``: the columns ``C_*`` (limits, s1 rules, string offsets and lengths,
  sampling: greedy flag, 1/temperature as float32 bits, the decision seed), what the
  Triton kernels read;
- ``strings``: the end delimiter, the continuation string, the answer prefix and
  the start delimiter, concatenated, padded with -1;
- ``sets``: three id sets of width ``W`` padded with -1: the attempt ids (end
  delimiter's first token, then the end-of-turn ids), the end-of-turn ids without
  the end delimiter (what GUARD_TURN watches), and the stop ids.

The torch path reads one ``packed`` row per slot instead: its own constants ``T_*``
(limits and absent tokens folded into sentinels, the queue each forced string
starts), the strings, the sets and :func:`edit_sets`; and a row of flags ``F_*``.
"""

from __future__ import annotations

import torch

from server.budget.machine import FORCE, GUARD, GUARD_TURN, GUARD_WAIT, HOLD, Phase

BEFORE, THINKING, ANSWER, ENDED = (int(p) for p in Phase)
Q_NONE, Q_END, Q_CONT, Q_PREFIX = 0, 1, 2, 3

# state columns
(S_PHASE, S_THINK, S_POS, S_QKIND, S_QPOS, S_QEND, S_SMATCH, S_LAST, S_HOLD, S_HITMAX,
 S_CONTS) = range(11)
N_STATE = 11
# const columns (what the Triton kernels read)
(C_ACTIVE, C_MIN, C_MAX, C_SETTLED, C_NL, C_OPENS_NL, C_HOLD_AFTER, C_FMT, C_END_LEN,
 C_CONT_OFF, C_CONT_LEN, C_PRE_OFF, C_PRE_LEN, C_START_OFF, C_START_LEN, C_GREEDY,
 C_INV_T, C_SEED, C_WAITS) = range(19)
N_CONST = 19
# torch-path constants (``T_*``): the maximum with "none" as never reached; the end
# delimiter's first token, the newline and the continuation's first token, where an
# absent one is a token no stream holds; the minimum, the Waits; the start delimiter's
# offset and length; the newline table row; the action below the minimum and the one
# at or above it; the continuation's offset; the request's prompt length (where its
# output starts in ``all_token_ids``); the seed premixed for :func:`premixed_bits`;
# 1/temperature as float64 bits; then the (kind, position, end) each forced string
# starts a queue with: the end delimiter's rest, the whole end delimiter (after a
# newline cut), the continuation's rest, the answer prefix
(T_MAX, T_END0, T_NL, T_CONT0, T_MIN, T_WAITS, T_START_OFF, T_START_LEN, T_FMT, T_BELOW,
 T_SETTLED, T_CONT_OFF, T_PROMPT, T_SEED_MIX, T_INV_T64) = range(15)
T_QUEUES = 15
N_TCONST = T_QUEUES + 12
# torch-path flags (a bool table): active, greedy, sampled, a longer end delimiter, a
# longer continuation, an answer prefix, hold after a forced continuation, hold after a
# one-token continuation, hold at the block's first token, a newline cut, thinking that
# opens on a newline
(F_ACTIVE, F_GREEDY, F_SAMPLED, F_END_MULTI, F_CONT_MULTI, F_PRE, F_HOLD, F_HOLD1,
 F_HOLD_OPEN, F_NL_VALID, F_OPENS_NL) = range(11)
N_FLAGS = 11

NO_TOKEN = -(1 << 62)  # a token id no stream holds
NEVER = (1 << 63) - 1  # a count never reached
_MASK64 = (1 << 64) - 1


def as_int64(value: int) -> int:
    """An unsigned 64-bit value as the signed int64 with the same bits."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_SM_A, _SM_B = as_int64(0x9E3779B97F4A7C15), as_int64(0xBF58476D1CE4E5B9)
_SM_C = as_int64(0x94D049BB133111EB)


def seed_mix(seed: int) -> int:
    """The seed's share of :func:`uniform_bits` (seed * A + B, wrapping), computed once
    per request for :func:`premixed_bits`."""
    return as_int64(seed * _SM_A + _SM_B)


def uniform_bits(seed: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """:func:`server.budget.draws.uniform_bits` on int64 tensors (wrapping multiplication,
    logical shifts by masking), so a decision draws the same bits on the device as on
    the host."""
    return _mix(seed * _SM_A + (position + 1) * _SM_B)


def premixed_bits(seed_mix: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """:func:`uniform_bits` with the seed's share computed once per request
    (``T_SEED_MIX``: seed * A + B, wrapping)."""
    return _mix(torch.add(seed_mix, position, alpha=_SM_B))


def _mix(z: torch.Tensor) -> torch.Tensor:
    z = (z ^ ((z >> 30) & ((1 << 34) - 1))) * _SM_B
    z = (z ^ ((z >> 27) & ((1 << 37) - 1))) * _SM_C
    z = z ^ ((z >> 31) & ((1 << 33) - 1))
    return (z >> 11) & ((1 << 53) - 1)


def action_flags(device: torch.device) -> torch.Tensor:
    """Per action (row index): FORCE, guarded (GUARD, GUARD_TURN, GUARD_WAIT), masked
    (guarded or HOLD), GUARD_WAIT, GUARD_TURN; one lookup per step instead of a
    comparison per flag."""
    guarded = (GUARD, GUARD_TURN, GUARD_WAIT)
    return torch.tensor([[a == FORCE, a in guarded, a in (*guarded, HOLD), a == GUARD_WAIT,
                          a == GUARD_TURN] for a in range(max(FORCE, HOLD, *guarded) + 1)],
                        device=device)


class Rows:
    """Rows of state and constants (one per slot, or one per logits row): the state
    as one packed tensor, the constants as column views taken when first used."""

    def __init__(self, state: torch.Tensor, const: torch.Tensor, flags: torch.Tensor,
                 strings: torch.Tensor, sets: torch.Tensor, width: int,
                 actions: torch.Tensor) -> None:
        self.state = state
        self.const = const  # T_* columns
        self.flags = flags
        self.strings = strings
        self.sets = sets
        self.width = width
        self.actions = actions
        self._cols: dict[int, torch.Tensor] = {}
        self._flags: tuple[torch.Tensor, ...] | None = None
        self._acts: tuple[torch.Tensor, tuple[torch.Tensor, ...]] | None = None

    def acts(self, action: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """:func:`action_flags` for each row's ``action`` (looked up once per action
        tensor)."""
        if self._acts is None or self._acts[0] is not action:
            self._acts = action, self.actions.index_select(0, action).unbind(1)
        return self._acts[1]

    def c(self, col: int) -> torch.Tensor:
        """The constant column ``col`` (``T_*``)."""
        got = self._cols.get(col)
        if got is None:
            got = self._cols[col] = self.const[:, col]
        return got

    def flag(self, which: int) -> torch.Tensor:
        """The flag ``which`` (``F_*``), one bool per row."""
        if self._flags is None:
            self._flags = self.flags.unbind(1)
        return self._flags[which]

    @property
    def stops(self) -> torch.Tensor:
        return self.sets[:, 2 * self.width:3 * self.width]

    def id_sets(self, turn: torch.Tensor) -> torch.Tensor:
        """Per row, the ids an edit masks, each padding slot holding the first id
        (``[:, :W]``), and which are real (``[:, W:]``, 0/1): the end-of-turn ids where
        ``turn`` holds, the attempt ids elsewhere
        (:func:`server.engine.budget_slots_v2.edit_sets`)."""
        w = self.width
        return torch.where(turn.unsqueeze(1), self.sets[:, 5 * w:7 * w], self.sets[:, 3 * w:5 * w])

    def strings_at(self, *index: torch.Tensor) -> torch.Tensor:
        """The string table at one index per row for each of ``index`` (clamped into
        the table), in one gather: ``[rows, len(index)]``."""
        cols = torch.stack(index, 1).clamp_(0, self.strings.shape[1] - 1)
        return self.strings.gather(1, cols)


def observe(r: Rows, tok: torch.Tensor, m: torch.Tensor) -> None:
    """Advance the rows where ``m`` holds by one output token each (``tok``), in place
    on ``r.state``: :meth:`server.budget.machine.BudgetState.observe`, every branch
    computed and selected with masks (the cases below exclude each other, so
    exclusive-or and sums stand for selections)."""
    phase, think, pos, qkind, qpos, qend, smatch, _, hold, hitmax, conts = r.state.unbind(1)
    col = tok.unsqueeze(1)
    start_off = r.c(T_START_OFF)
    eq_q, eq_sm, eq_s0 = (r.strings_at(qpos, start_off + smatch, start_off) == col).unbind(1)
    eq_end0, eq_nl, eq_cont = (r.const[:, T_END0:T_CONT0 + 1] == col).unbind(1)
    is_stop = (r.stops == col).any(1)
    # A: the token is the queued (forced) one; B (not A): anything else.
    a = eq_q & (qkind != Q_NONE)
    is_cont_q = qkind == Q_CONT
    a_next = qpos + 1
    a_fin = a & (a_next >= qend)
    a_more = a ^ a_fin
    not_a = ~a
    bt = not_a & (phase == THINKING)
    at_max = think >= r.c(T_MAX)
    is_end0 = bt & eq_end0
    bt_rest = bt ^ is_end0
    nl_cut = bt_rest & eq_nl & at_max
    other = bt_rest ^ nl_cut
    ended = other & is_stop
    ordinary = other ^ ended
    think_new = think + ((a & is_cont_q) | ordinary)
    cont_hit = (ordinary & eq_cont & (hold == 0)
                & ((think_new <= r.c(T_MIN)) | (conts < r.c(T_WAITS))))
    q_end1 = is_end0 & r.flag(F_END_MULTI)
    hitmax_new = torch.where(is_end0, at_max, nl_cut | hitmax)  # 0/1
    enter = (a_fin & (qkind == Q_END)) | (is_end0 ^ q_end1)
    q_prefix = enter & hitmax_new & r.flag(F_PRE)
    # The start delimiter, matched token by token before the block opens.
    bm = not_a & (phase == BEFORE)
    sm_next = torch.where(eq_sm, smatch + 1, eq_s0)
    opened = bm & (sm_next == r.c(T_START_LEN))
    hold_new = ((a_fin & is_cont_q & r.flag(F_HOLD)) | (cont_hit & r.flag(F_HOLD1))
                | (opened & r.flag(F_HOLD_OPEN)))
    # enter: THINKING -> ANSWER, opened: BEFORE -> THINKING, ended: THINKING -> ENDED
    phase_new = torch.add(phase + (enter | opened), ended, alpha=ENDED - THINKING)
    # The queue a case starts: the slot's candidates, weighted by the (exclusive) cases;
    # a queue that advances keeps its kind and end.
    starts = torch.stack([q_end1, nl_cut, cont_hit & r.flag(F_CONT_MULTI), q_prefix], 1)
    queue = (starts.unsqueeze(2) * r.const[:, T_QUEUES:N_TCONST].unflatten(1, (4, 3))).sum(1)
    queue = torch.where(a_more.unsqueeze(1), torch.stack([qkind, a_next, qend], 1), queue)
    kind_new, qpos_new, qend_new = queue.unbind(1)
    new = torch.stack([phase_new, think_new, pos + 1, kind_new, qpos_new, qend_new,
                       torch.where(bm, sm_next, smatch), tok, hold_new, hitmax_new,
                       conts + cont_hit], 1)
    r.state = torch.where(m.unsqueeze(1), new, r.state)


def decide(r: Rows, nl_table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(action, token) per row: :meth:`BudgetState.decide`. ``token`` is the forced token
    for FORCE rows and the replacement for GUARD and GUARD_WAIT (the continuation's first
    token) and GUARD_TURN (the end delimiter's first token) rows."""
    phase, think, _, qkind, qpos, _, _, last, hold, _, conts = r.state.unbind(1)
    thinkp = phase == THINKING
    in_q = qkind != Q_NONE
    cut = (think >= r.c(T_MAX)) & (qkind != Q_END)
    ends_nl = torch.where(think > 0, nl_table[r.c(T_FMT), last.clamp(min=0)],
                          r.flag(F_OPENS_NL))
    end0 = r.c(T_END0)
    cut_tok = torch.where(r.flag(F_NL_VALID) & ~ends_nl, r.c(T_NL), end0)
    settled = torch.where(think < r.c(T_MIN), r.c(T_BELOW), r.c(T_SETTLED))
    settled = torch.where(conts < r.c(T_WAITS), GUARD_WAIT, settled)
    thinking = torch.where(cut | in_q, FORCE, torch.where(hold != 0, HOLD, settled))
    action = torch.where(thinkp, thinking, in_q) * r.flag(F_ACTIVE)  # FORCE is 1, FREE 0
    force, guarded, _, _, turn = r.acts(action)
    queued, cont0 = r.strings_at(qpos, r.c(T_CONT_OFF)).unbind(1)
    forced = torch.where(thinkp & cut, cut_tok, queued)
    repl = torch.where(guarded ^ turn, cont0, end0)  # GUARD, GUARD_WAIT: the continuation
    return action, torch.where(force, forced, repl)
