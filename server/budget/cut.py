"""Cutting thinking at a point chosen outside the engine: the deadline's and early stop's cut.

``thinking_max`` is enforced inside the engine, token by token, by the state machine
(:mod:`server.budget.machine`). A deadline (``thinking_deadline_ms``) is wall-clock time,
which the engine's tensor-parallel ranks must not each read on their own (they could
decide differently), so the API process decides *when* (:mod:`server.api.deadline`); so it
does for ``thinking_early_stop`` (:mod:`server.api.early_stop`: the answer probed every k
thinking tokens has settled). This module says *whether* and *how*, from the choice's
output ids alone:

- :func:`plan`: can thinking be cut now? Only inside the thinking block, at or above
  ``thinking_min`` (the minimum holds; a deadline that comes first waits for it), and
  not while a forced string is under way (the maximum's own cut, a continuation
  string): the maximum wins. If so, the cut is the one the machine forces at
  ``thinking_max``, computed by running the machine itself with ``thinking_max`` set to
  the thinking so far: the newline rule, the end delimiter, the answer prefix;
- :func:`as_cut`: the choice's ``budget`` object, replayed with that spec (so the
  forced newline is not thinking and the answer prefix is the forced one, exactly as at
  ``thinking_max``), with ``end`` the cut's reason (``"deadline"``, ``"settled"``) and the
  request's own ``thinking_max``.

Pure Python, token ids only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from server.budget.machine import FORCE, BudgetSpec, BudgetState, Phase

__all__ = ["Cut", "as_cut", "as_deadline", "plan", "still_thinking"]


@dataclasses.dataclass(frozen=True)
class Cut:
    """A cut decided after ``output`` (the choice's ids so far)."""

    spec: BudgetSpec  # the request's spec with thinking_max = ``thinking``
    thinking: int  # thinking tokens before the cut
    forced: tuple[int, ...]  # what the machine forces: newline?, end delimiter, answer prefix
    output: tuple[int, ...]  # the output ids the cut follows
    reason: str = "deadline"  # the budget object's ``end``: "deadline" or "settled"

    @property
    def prefix(self) -> tuple[int, ...]:
        """The choice's output ids up to and including the forced tokens."""
        return self.output + self.forced


def still_thinking(state: BudgetState) -> bool:
    """True while a deadline may still matter: the block is open, or not opened yet."""
    return state.phase <= Phase.THINKING


def plan(spec: BudgetSpec, output: Sequence[int], reason: str = "deadline") -> Cut | None:
    """The cut to make after ``output``, or None when thinking cannot be cut there."""
    state = BudgetState(spec)
    state.observe_many(output)
    if state.phase != Phase.THINKING or state.thinking < (spec.thinking_min or 0):
        return None
    if state.decide() == FORCE:  # a forced string is under way, or the maximum's cut
        return None
    cut_spec = dataclasses.replace(spec, thinking_max=state.thinking)
    machine = BudgetState(cut_spec)
    machine.observe_many(output)
    forced: list[int] = []
    limit = 1 + len(spec.end_ids) + len(spec.answer_prefix_ids)
    while not machine.done:
        if machine.decide() != FORCE or len(forced) >= limit:  # pragma: no cover
            raise AssertionError("the state machine did not force a cut at thinking_max")
        forced.append(machine.forced_token)
        machine.observe(machine.forced_token)
    return Cut(cut_spec, state.thinking, tuple(forced), tuple(output), reason)


def as_cut(details: dict[str, Any], spec: BudgetSpec, reason: str) -> dict[str, Any]:
    """A ``budget`` object replayed with a cut's spec, as that cut (``end: reason``)."""
    return {**details, "thinking_max": spec.thinking_max, "hit_max": False,
            "natural_end": False, "end": reason}


def as_deadline(details: dict[str, Any], spec: BudgetSpec) -> dict[str, Any]:
    """A ``budget`` object replayed with a cut's spec, as the deadline's cut."""
    return as_cut(details, spec, "deadline")
