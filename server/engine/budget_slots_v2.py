"""The slot table of the V2 budget processor: per request slot, the budget's constants
and state, staged on the host and copied to the device.

Why apart from :mod:`server.engine.budget_device`: that module is the state machine
on tensors; this one turns a :class:`~server.budget.machine.BudgetSpec` into its rows
(for the Triton kernels and for the torch path) once per request, so the per-step
code reads ready-made constants instead of deriving them on the device every step.
"""

from __future__ import annotations

import struct

import torch

from server.budget.machine import GUARD, GUARD_TURN, HOLD, BudgetSpec
from server.engine.budget_device import (
    BEFORE,
    C_ACTIVE,
    C_CONT_LEN,
    C_CONT_OFF,
    C_END_LEN,
    C_FMT,
    C_GREEDY,
    C_HOLD_AFTER,
    C_INV_T,
    C_MAX,
    C_MIN,
    C_NL,
    C_OPENS_NL,
    C_PRE_LEN,
    C_PRE_OFF,
    C_SEED,
    C_SETTLED,
    C_START_LEN,
    C_START_OFF,
    C_WAITS,
    F_ACTIVE,
    N_CONST,
    N_FLAGS,
    N_STATE,
    N_TCONST,
    NEVER,
    NO_TOKEN,
    Q_CONT,
    Q_END,
    Q_PREFIX,
    S_HOLD,
    S_LAST,
    S_PHASE,
    THINKING,
    Rows,
    action_flags,
    as_int64,
    seed_mix,
)


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


def const_rows(spec: BudgetSpec, fmt: int, greedy: bool, inv_t_bits: int, seed: int,
               prompt_len: int) -> tuple[list[int], list[int], list[bool]]:
    """A budgeted slot's kernel constants, torch-path constants and flags."""
    n_end, n_cont, n_pre = len(spec.end_ids), len(spec.continuation_ids), len(spec.answer_prefix_ids)
    lo, waits = spec.thinking_min or 0, spec.thinking_waits or 0
    hold = spec.hold_after_continuation
    settled = GUARD_TURN if spec.turn_ends_thinking and spec.turn_ids else 0
    c = [0] * N_CONST
    c[C_ACTIVE] = 1
    c[C_MIN] = lo
    c[C_MAX] = -1 if spec.thinking_max is None else spec.thinking_max
    c[C_SETTLED] = settled
    c[C_NL] = -1 if spec.newline_id is None else spec.newline_id
    c[C_OPENS_NL] = int(spec.opens_on_newline)
    c[C_HOLD_AFTER] = int(hold)
    c[C_FMT] = fmt
    c[C_END_LEN] = n_end
    c[C_CONT_OFF], c[C_CONT_LEN] = n_end, n_cont
    c[C_PRE_OFF], c[C_PRE_LEN] = n_end + n_cont, n_pre
    c[C_START_OFF], c[C_START_LEN] = n_end + n_cont + n_pre, len(spec.start_ids)
    c[C_GREEDY], c[C_INV_T], c[C_SEED] = int(greedy), inv_t_bits, as_int64(seed)
    c[C_WAITS] = waits
    inv_t = struct.unpack("<f", struct.pack("<I", inv_t_bits & 0xFFFFFFFF))[0]
    t = [NEVER if spec.thinking_max is None else spec.thinking_max, spec.end_ids[0],
         NO_TOKEN if spec.newline_id is None else spec.newline_id,
         spec.continuation_ids[0] if n_cont else NO_TOKEN, lo, waits, c[C_START_OFF],
         c[C_START_LEN], fmt, GUARD if n_cont else HOLD,  # no string: suppress only
         settled, n_end, prompt_len, seed_mix(seed),
         struct.unpack("<q", struct.pack("<d", inv_t))[0],
         Q_END, 1, n_end, Q_END, 0, n_end, Q_CONT, n_end + 1, n_end + n_cont,
         Q_PREFIX, n_end + n_cont, n_end + n_cont + n_pre]
    flags = [True, greedy, not greedy, n_end > 1, n_cont > 1, n_pre > 0, hold,
             hold and n_cont == 1, hold and (lo > 0 or waits > 0), spec.newline_id is not None,
             spec.opens_on_newline]
    return c, t, flags


def edit_sets(sets: torch.Tensor, width: int) -> torch.Tensor:
    """The attempt and end-of-turn id sets as :meth:`Rows.id_sets` reads them: for
    each, the ids with -1 padding replaced by the first id (0 for an empty set), then
    1 where an id is real; computed once per request instead of once per step."""
    out = []
    for k in range(2):
        ids = sets[:, k * width:(k + 1) * width]
        valid = ids >= 0
        out += [torch.where(valid, ids, ids[:, :1]).clamp(min=0), valid.long()]
    return torch.cat(out, 1)


class SlotTable:
    """Per-slot budgets: a host mirror where requests are staged, and the device copy
    the state machine runs on. Rows change on the device only through :meth:`flush`
    (staged constants and fresh state) and :func:`observe`."""

    def __init__(self, max_slots: int, vocab: int, device: torch.device) -> None:
        self.max_slots, self.vocab, self.device = max_slots, vocab, device
        self.width, self.strings_width = 1, 1
        self.host_const = torch.zeros(max_slots, N_CONST, dtype=torch.int64)
        self.host_tconst = torch.zeros(max_slots, N_TCONST, dtype=torch.int64)
        self.host_flags = torch.zeros(max_slots, N_FLAGS, dtype=torch.bool)
        self.host_init = torch.zeros(max_slots, N_STATE, dtype=torch.int64)
        self.host_strings = torch.full((max_slots, 1), -1, dtype=torch.int64)
        self.host_sets = torch.full((max_slots, 3), -1, dtype=torch.int64)
        self.nl_sets: dict[frozenset[int], int] = {frozenset(): 0}
        self.host_nl = torch.zeros(1, vocab, dtype=torch.bool)
        self.dirty: set[int] = set()
        self.reshaped = True
        self.const = self.state = self.strings = self.sets = self.nl = torch.empty(0)
        self.actions = action_flags(device)
        self.packed = self.flags = torch.empty(0)

    def set_slot(self, slot: int, spec: BudgetSpec | None, seed: int = 0,
                 greedy: bool = True, inv_t_bits: int = 0, prompt_len: int = 0) -> None:
        """Stage ``slot``'s budget (None: a request without one) for the next flush."""
        self.dirty.add(slot)
        if spec is None:
            self.host_const[slot, C_ACTIVE] = 0
            self.host_flags[slot, F_ACTIVE] = False
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
        const, tconst, flags = const_rows(spec, self._newline_row(spec.newline_ids), greedy,
                                          inv_t_bits, seed, prompt_len)
        self.host_const[slot] = torch.tensor(const, dtype=torch.int64)
        self.host_tconst[slot] = torch.tensor(tconst, dtype=torch.int64)
        self.host_flags[slot] = torch.tensor(flags)
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
        """Copy staged slots to the device (non-blocking) and reset their state rows.
        The constants, strings and sets are kept twice: apart (the Triton kernels'
        layout) and side by side in ``packed``, so the torch path gathers a row's
        constants in one op."""
        if self.reshaped:
            state = self.state if self.state.numel() else self.host_init.to(self.device)
            self.const = self.host_const.to(self.device, non_blocking=True)
            self.strings = self.host_strings.to(self.device, non_blocking=True)
            self.sets = self.host_sets.to(self.device, non_blocking=True)
            self.flags = self.host_flags.to(self.device, non_blocking=True)
            self.packed = torch.cat([self.host_tconst, self.host_strings, self.host_sets,
                                     edit_sets(self.host_sets, self.width)],
                                    1).to(self.device, non_blocking=True)
            self.nl = self.host_nl.to(self.device, non_blocking=True)
            self.state = state
            self.reshaped = False
        if not self.dirty:
            return
        idx_host = torch.tensor(sorted(self.dirty), dtype=torch.int64)
        self.dirty.clear()
        idx = idx_host.to(self.device, non_blocking=True)
        pick = [host.index_select(0, idx_host) for host in
                (self.host_const, self.host_strings, self.host_sets, self.host_init,
                 self.host_flags, self.host_tconst)]
        pick.append(torch.cat([pick[5], *pick[1:3], edit_sets(pick[2], self.width)], 1))
        for dev, host in zip((self.const, self.strings, self.sets, self.state, self.flags,
                              self.packed), pick[:5] + pick[6:], strict=True):
            dev.index_copy_(0, idx, host.to(self.device, non_blocking=True))

    def _rows(self, state: torch.Tensor, packed: torch.Tensor, flags: torch.Tensor) -> Rows:
        strings_end = N_TCONST + self.strings_width
        return Rows(state, packed[:, :N_TCONST], flags, packed[:, N_TCONST:strings_end],
                    packed[:, strings_end:], self.width, self.actions)

    def rows(self, index: torch.Tensor | None = None) -> Rows:
        """All slots (``index`` None; write the state back with :meth:`store`), or a copy
        of the rows ``index`` selects (one per batch request or per logits row)."""
        if index is None:
            return self._rows(self.state, self.packed, self.flags)
        return self._rows(self.state.index_select(0, index), self.packed.index_select(0, index),
                          self.flags.index_select(0, index))

    def store(self, rows: Rows, index: torch.Tensor | None = None) -> None:
        """Write ``rows``' state back: all slots, or the (distinct) slots ``index`` names."""
        if index is None:
            self.state = rows.state
        else:
            self.state.index_put_((index,), rows.state)
