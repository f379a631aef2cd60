"""Where budget forcing intervened in one choice: forced continuations, the cut, the end.

Why a module of its own: :mod:`server.budget.machine` is the state machine the engine runs and
stays pure and small; this one only *watches* a :class:`~server.budget.machine.BudgetState` being
fed the choice's output ids (the same replay that gives ``reasoning_tokens``) and notes:

- every forced continuation: the step where the continuation string's first token
  started inside the block below the minimum (what the state machine counts in
  ``continuations``; the model's own "Wait" elsewhere is ordinary thinking). With the
  empty continuation nothing is inserted, so there is no mark to place, and the count
  of ``thinking_waits`` is reported only where the ids back it
  (:func:`suppressed_waits`);
- the cut: the step where thinking stopped at ``thinking_max`` (the optional newline,
  then the end delimiter, were forced);
- how thinking ended: ``natural`` (the end delimiter came from the model, or an end of
  turn inside the block was turned into it), ``cut`` (at ``thinking_max``),
  ``end_of_turn`` (the turn ended inside the block), ``unfinished`` (the output stopped
  inside the block: ``max_tokens`` or a stop string), ``no_thinking`` (no block).

Positions are token offsets into the thinking tokens (how many thinking tokens came
before) and output indices (into the choice's token ids); :func:`char_offsets` maps
token offsets to character offsets in the reasoning text the API returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.budget.machine import BudgetSpec, BudgetState, Phase

__all__ = ["Mark", "Tracker", "from_ids", "char_offsets", "details", "suppressed_waits"]


@dataclass(frozen=True)
class Mark:
    """One intervention: ``token`` thinking tokens came before it; ``output_index`` is
    its first token's index in the choice's output ids."""

    token: int
    output_index: int


@dataclass
class Tracker:
    """Feed it each output token together with the state machine (:meth:`step`)."""

    continuations: list[Mark] = field(default_factory=list)
    cut: Mark | None = None
    ended_phase: Phase | None = None  # the phase thinking ended into (None: not ended)
    opened: bool = False
    unopened_tokens: int = 0  # text tokens while the block was not open (answer if never)

    def step(self, state: BudgetState, tok: int) -> None:
        """Observe ``tok`` on ``state`` and note what changed."""
        before_phase, before_cont, before_hit = state.phase, state.continuations, state.hit_max
        thinking_before = state.thinking
        state.observe(tok)
        index = state.position - 1
        if state.phase == Phase.THINKING or before_phase == Phase.THINKING:
            self.opened = True
        elif before_phase == Phase.BEFORE and tok not in state.spec.stop_ids:
            self.unopened_tokens += 1
        if state.continuations > before_cont:
            self.continuations.append(Mark(thinking_before, index))
        if state.hit_max and not before_hit:
            self.cut = Mark(state.thinking, index)
        if before_phase == Phase.THINKING and state.phase != Phase.THINKING:
            self.ended_phase = state.phase

    def end(self, state: BudgetState) -> str:
        """How thinking ended (see the module doc)."""
        if not self.opened:
            return "no_thinking"
        if state.hit_max:
            return "cut"
        if self.ended_phase == Phase.ENDED:
            return "end_of_turn"
        if self.ended_phase == Phase.ANSWER:
            return "natural"
        return "unfinished"


def from_ids(spec: BudgetSpec, output_ids: Sequence[int],
             tokenizer: Any) -> tuple[BudgetState, dict[str, Any]]:
    """Replay a finished choice's ids: its final state and its ``budget`` object.

    For responses whose text someone else decoded (vLLM's serving classes): the
    reasoning text is taken as the thinking tokens decoded, newlines around it removed,
    as the s1 reasoning parser returns it.
    """
    state, tracker = BudgetState(spec), Tracker()
    thinking_ids: list[int] = []
    for tok in output_ids:
        before = state.thinking
        tracker.step(state, tok)
        if state.thinking > before:
            thinking_ids.append(tok)
    text = tokenizer.decode(thinking_ids, skip_special_tokens=True).strip("\n")
    return state, details(spec, state, tracker, thinking_ids, text, tokenizer)


def char_offsets(decode: Callable[[Sequence[int]], str], thinking_ids: Sequence[int],
                 token_offsets: Sequence[int], text_len: int) -> list[int]:
    """Character offsets in the reasoning text of the given thinking-token offsets.

    The reasoning text is the thinking ids decoded (special tokens skipped) with the
    newlines around it removed (as the s1 reasoning parser gives it), so the offset of
    token ``k`` is the length of the first ``k`` ids decoded, less those newlines,
    clipped to ``text_len`` (a stop string may have cut the text shorter).
    """
    full = decode(list(thinking_ids))
    lead = len(full) - len(full.lstrip("\n"))
    out = []
    for k in token_offsets:
        n = len(decode(list(thinking_ids[:k]))) if k < len(thinking_ids) else len(full)
        out.append(max(0, min(text_len, n - lead)))
    return out


def suppressed_waits(spec: BudgetSpec, end: str) -> int | None:
    """The Waits of ``thinking_waits`` with the empty continuation, where the ids back a
    number: none otherwise.

    Such a suppression inserts nothing, so the ids do not record it, and the engine's
    count stays in the engine. But the engine masks every end attempt (the end delimiter
    and the end-of-turn ids) until it has suppressed k of them, so an end the model wrote
    itself (``natural``, or ``end_of_turn``) means exactly k were. A cut, an unfinished
    output or a deadline's cut may come after any number from 0 to k, and with a
    ``thinking_min`` too, attempts below it after the k-th are suppressed as well (a
    string would count them; nothing does here): ``None``.
    """
    if spec.thinking_min or end not in ("natural", "end_of_turn"):
        return None
    return spec.thinking_waits


def details(spec: BudgetSpec, state: BudgetState, tracker: Tracker, thinking_ids: Sequence[int],
            reasoning_text: str, tokenizer: Any) -> dict[str, Any]:
    """The per-choice ``budget`` object of the API (documented in the README)."""

    def decode(ids: Sequence[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True)

    marks = list(tracker.continuations) + ([tracker.cut] if tracker.cut else [])
    chars = char_offsets(decode, thinking_ids, [m.token for m in marks], len(reasoning_text))
    placed = [{"token": m.token, "char": c, "output_index": m.output_index}
              for m, c in zip(marks, chars, strict=True)]
    cut = placed.pop() if tracker.cut else None
    end = tracker.end(state)
    count: int | None = len(tracker.continuations)
    if spec.thinking_waits and not spec.continuation_ids:
        count = suppressed_waits(spec, end)
    return {
        "thinking_min": spec.thinking_min,
        "thinking_max": spec.thinking_max,
        "thinking_waits": spec.thinking_waits,
        "thinking_continuation": (decode(spec.continuation_ids)
                                  if spec.thinking_min or spec.thinking_waits else None),
        "thinking_tokens": state.thinking,
        "answer_tokens": state.answer if tracker.opened else tracker.unopened_tokens,
        "continuation_count": count,
        "continuations": placed,
        "hit_max": state.hit_max,
        "cut": cut,
        "natural_end": end == "natural",
        "end": end,
    }
