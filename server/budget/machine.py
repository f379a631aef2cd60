"""The budget-forcing state machine: one per request, pure Python, no vLLM or torch.

It watches the tokens a request produces and says, before each step, what the
sampler must do next:

- ``FREE``: sample as the model likes;
- ``FORCE``: emit exactly one given token (a delimiter, the continuation string,
  the answer prefix);
- ``GUARD``: thinking is below its minimum, so an attempt to end it (the first
  token of the end delimiter, or an end-of-turn/EOS id) must not happen. The
  caller decides, with the model's own probability of that attempt, whether it
  happened; if so it forces the continuation string's first token, otherwise it
  suppresses the attempt tokens and samples from the rest (see
  :mod:`server.budget.draws`);
- ``GUARD_TURN``: at or above the minimum, an end of turn inside the block is
  turned into the end of thinking (the same decision, with the end-of-turn ids
  as the attempt and the end delimiter as the replacement), as the s1
  evaluation does: it strips the end of turn and starts the answer;
- ``GUARD_WAIT``: ``GUARD`` while fewer than ``thinking_waits`` continuations were
  forced; the continuation's first token may then only be the replacement (the
  model's own choice of it is masked), so every one inside the block counts as a
  forced one and the count stays a function of the token ids. With the empty
  continuation (the paper's "no string") an attempt is suppressed and nothing is
  inserted, so no token records it: the engine, which sees the logits, counts those
  suppressions and tells the machine (:attr:`BudgetState.suppressed`); see
  :mod:`server.engine.logits_processor` for how that count is kept per request;
- ``HOLD``: right after a continuation string (and at the block's first token
  when there is a minimum) no attempt may happen at all: the attempt tokens are
  masked, nothing is replaced. This is s1's ``min_tokens=1`` per round. Below the
  minimum with an empty continuation string, an attempt is suppressed the same way.

Rules (the s1 paper's budget forcing, made token-exact):

- thinking is open from the start when the prompt opened the block, otherwise
  from the moment the full start delimiter has been generated;
- thinking tokens are the tokens generated inside the block, forced
  continuation tokens included, the end delimiter excluded;
- at ``thinking_max`` the end delimiter is forced (every token, in order) and
  then the answer prefix; ``thinking_max == 0`` means answer without thinking.
  When the thinking text does not end with a newline, a newline is forced
  first (s1 does: the model saw the delimiter only at the start of a line);
- once the first token of a multi-token end delimiter or continuation string is
  emitted inside the block, the rest of it is forced. This makes the machine a
  function of the output tokens alone: :func:`replay` recomputes every count
  from the token ids, and a request rebuilt after preemption lands in the same
  state;
- reaching the maximum wins over a pending continuation, and over ``thinking_waits``;
- ``thinking_waits`` k and ``thinking_min`` together: an attempt ends thinking only
  once both are satisfied (k continuations forced and the minimum reached);
- the one exception to "a function of the output tokens": ``thinking_waits`` with the
  empty continuation, whose count of suppressed attempts is not in the tokens
  (:attr:`BudgetState.suppressed`, kept by the engine). :func:`replay` leaves it at 0:
  from the ids alone the machine cannot tell how many were suppressed, only that an
  end the model wrote (not a cut) came after all k of them.

The module knows nothing of tokenizers: every string arrives as token ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

# The spec is defined next door and re-exported: callers know one module.
from server.budget.spec import BudgetError, BudgetSpec, check_budget_values

__all__ = [
    "FREE",
    "FORCE",
    "GUARD",
    "GUARD_TURN",
    "HOLD",
    "GUARD_WAIT",
    "DONE",
    "BudgetError",
    "BudgetSpec",
    "check_budget_values",
    "BudgetState",
    "Phase",
    "Accounting",
    "replay",
]

FREE, FORCE, GUARD, GUARD_TURN, HOLD = 0, 1, 2, 3, 4
DONE = 5  # returned by BudgetState.advance: nothing left to enforce
GUARD_WAIT = 6  # GUARD under thinking_waits: the continuation's first token is exclusive


class Phase(IntEnum):
    BEFORE = 0  # the start delimiter has not been generated yet
    THINKING = 1
    ANSWER = 2
    ENDED = 3  # end of turn inside the thinking block


_Q_NONE, _Q_END, _Q_CONT, _Q_PREFIX = 0, 1, 2, 3


@dataclass
class BudgetState:
    """The live state of one request. Feed it every output token with :meth:`observe`."""

    spec: BudgetSpec
    phase: Phase = Phase.THINKING
    thinking: int = 0
    answer: int = 0
    hit_max: bool = False
    continuations: int = 0  # times the continuation string started inside the block
    # Attempts suppressed under thinking_waits with the empty continuation: not in the
    # ids, so the engine adds them (it sees the logits that decide each one). Counts
    # towards the Waits like ``continuations``; always 0 with a continuation string.
    suppressed: int = 0
    position: int = 0  # output tokens observed so far
    _queue: tuple[int, ...] = ()
    _qi: int = 0
    _qkind: int = _Q_NONE
    _start_match: int = 0
    _min: int = 0
    _waits: int = 0  # continuations to force before an attempt may end thinking
    _below_min: int = GUARD  # the action below the minimum: GUARD, or HOLD (no string)
    _max: int = -1  # -1: no maximum
    _force_tok: int = -1
    _special: frozenset[int] = frozenset()
    _last: int = -1  # the last token observed
    _hold: bool = False  # no end attempt allowed at the next step
    _settled: int = FREE  # the action at or above the minimum: FREE or GUARD_TURN

    def __post_init__(self) -> None:
        spec = self.spec
        self._min = spec.thinking_min or 0
        self._waits = spec.thinking_waits or 0
        self._below_min = GUARD if spec.continuation_ids else HOLD
        self._max = -1 if spec.thinking_max is None else spec.thinking_max
        self._special = spec.special_ids
        self._settled = GUARD_TURN if spec.turn_ends_thinking and spec.turn_ids else FREE
        self.phase = Phase.BEFORE
        if spec.prompt_opens:
            self._open()

    # ------------------------------------------------------------------ decide
    def decide(self) -> int:
        """What the next step must do: FREE, FORCE (see :attr:`forced_token`), GUARD,
        GUARD_WAIT, GUARD_TURN or HOLD."""
        if self.phase == Phase.THINKING:
            if self._max >= 0 and self.thinking >= self._max and self._qkind != _Q_END:
                self._force_tok = self._cut_token()
                return FORCE
            if self._qkind:
                self._force_tok = self._queue[self._qi]
                return FORCE
            if self._hold:
                return HOLD
            if self.continuations + self.suppressed < self._waits:
                return GUARD_WAIT
            if self.thinking < self._min:
                return self._below_min
            return self._settled
        if self._qkind:  # the answer prefix
            self._force_tok = self._queue[self._qi]
            return FORCE
        return FREE

    @property
    def forced_token(self) -> int:
        """The token to emit when :meth:`decide` returned FORCE."""
        return self._force_tok

    @property
    def guard_continuation_token(self) -> int:
        """The token to emit when a GUARD step's end attempt happened."""
        return self.spec.continuation_ids[0]

    @property
    def done(self) -> bool:
        """Nothing left to enforce: the engine can stop looking at this request."""
        return self.phase >= Phase.ANSWER and not self._qkind

    def _cut_token(self) -> int:
        """The first token of a forced end: a newline unless thinking ends with one."""
        spec = self.spec
        if spec.newline_id is not None:
            ends_nl = (self._last in spec.newline_ids if self.thinking
                       else spec.opens_on_newline)
            if not ends_nl:
                return spec.newline_id
        return spec.end_ids[0]

    # ----------------------------------------------------------------- observe
    def advance(self, tok: int) -> int:
        """:meth:`observe` then :meth:`decide` in one call, or DONE when :attr:`done`.

        The engine calls this once per row and step; the common cases (an ordinary
        thinking token, or the next token of a forced string) take a few comparisons.
        """
        kind = self._qkind
        if kind:
            queue, qi = self._queue, self._qi
            if tok == queue[qi] and qi + 1 < len(queue):  # inside a forced string
                self.position += 1
                self._last = tok
                self._qi = qi + 1
                if kind == _Q_CONT:
                    self.thinking += 1
                elif kind == _Q_PREFIX:
                    self.answer += 1
                if (kind == _Q_CONT and self.phase == Phase.THINKING
                        and 0 <= self._max <= self.thinking):
                    self._force_tok = self._cut_token()  # the maximum wins
                else:
                    self._force_tok = queue[qi + 1]
                return FORCE
        elif self.phase == Phase.THINKING and tok not in self._special:
            self.position += 1
            self._last = tok
            self._hold = False
            thinking = self.thinking = self.thinking + 1
            if 0 <= self._max <= thinking:
                self._force_tok = self._cut_token()
                return FORCE
            if self.continuations + self.suppressed < self._waits:
                return GUARD_WAIT
            return self._below_min if thinking < self._min else self._settled
        self.observe(tok)
        if self.phase >= Phase.ANSWER and not self._qkind:
            return DONE
        return self.decide()

    def observe_many(self, tokens: Iterable[int]) -> None:
        for tok in tokens:
            self.observe(tok)

    def observe(self, tok: int) -> None:
        """Advance by one output token, forced or sampled."""
        self.position += 1
        held, self._hold = self._hold, False
        if self.phase == Phase.THINKING and not self._qkind and tok not in self._special:
            self.thinking += 1  # the common case: an ordinary thinking token
            self._last = tok
            return
        if self._qkind:
            if tok == self._queue[self._qi]:
                self._last = tok
                self._advance_queue()
                return
            # Not what was forced: only possible in replay of foreign tokens.
            self._clear_queue()
        phase = self.phase
        spec = self.spec
        if phase == Phase.THINKING:
            at_max = 0 <= self._max <= self.thinking
            if tok == spec.end_ids[0]:
                self.hit_max = at_max
                if len(spec.end_ids) > 1:
                    self._set_queue(spec.end_ids[1:], _Q_END)
                else:
                    self._enter_answer()
            elif at_max and tok == spec.newline_id:
                self.hit_max = True  # the newline before a cut end: part of the forced end
                self._set_queue(spec.end_ids, _Q_END)
            elif tok in spec.stop_ids:
                self.phase = Phase.ENDED
            else:
                self.thinking += 1
                cont = spec.continuation_ids
                # A continuation is what replaces an attempt at a guarded step (below the
                # minimum or the Waits, not held); the model's own string elsewhere is
                # just thinking.
                if cont and tok == cont[0] and not held and (
                        self.thinking <= self._min or self.continuations < self._waits):
                    self.continuations += 1
                    if len(cont) > 1:
                        self._set_queue(cont[1:], _Q_CONT)
                    else:
                        self._hold = spec.hold_after_continuation
        elif phase == Phase.ANSWER:
            if tok not in spec.stop_ids:
                self.answer += 1
        elif phase == Phase.BEFORE:
            start = spec.start_ids
            if tok == start[self._start_match]:
                self._start_match += 1
            else:
                self._start_match = 1 if tok == start[0] else 0
            if self._start_match == len(start):
                self._open()
        self._last = tok

    # ----------------------------------------------------------------- helpers
    def _set_queue(self, toks: Sequence[int], kind: int) -> None:
        self._queue, self._qi, self._qkind = tuple(toks), 0, kind

    def _clear_queue(self) -> None:
        self._queue, self._qi, self._qkind = (), 0, _Q_NONE

    def _advance_queue(self) -> None:
        kind = self._qkind
        if kind == _Q_CONT:
            self.thinking += 1
        elif kind == _Q_PREFIX:
            self.answer += 1
        self._qi += 1
        if self._qi < len(self._queue):
            return
        self._clear_queue()
        if kind == _Q_END:
            self._enter_answer()
        elif kind == _Q_CONT:
            self._hold = self.spec.hold_after_continuation

    def _open(self) -> None:
        """The block opens: with a minimum (or Waits), s1 allows no end attempt at its
        first token (``min_tokens=1`` of the harness's first round)."""
        self.phase = Phase.THINKING
        self._hold = self.spec.hold_after_continuation and (self._min > 0 or self._waits > 0)

    def _enter_answer(self) -> None:
        self.phase = Phase.ANSWER
        if self.hit_max and self.spec.answer_prefix_ids:
            self._set_queue(self.spec.answer_prefix_ids, _Q_PREFIX)


@dataclass(frozen=True)
class Accounting:
    """Where a finished output's tokens went, recomputed from the token ids alone."""

    thinking_tokens: int
    answer_tokens: int
    hit_max: bool
    continuations: int
    phase: Phase
    # Token index ranges [start, stop) into the output: the thinking text and the answer text.
    thinking_span: tuple[int, int] = field(default=(0, 0))
    answer_span: tuple[int, int] = field(default=(0, 0))


def replay(spec: BudgetSpec, output_ids: Sequence[int]) -> Accounting:
    """Recompute thinking/answer counts and the split points for ``output_ids``."""
    state = BudgetState(spec)
    n = len(output_ids)
    think_start: int | None = 0 if spec.prompt_opens else None
    think_stop: int | None = None
    answer_start: int | None = None if spec.prompt_opens else 0
    for i, tok in enumerate(output_ids):
        before = state.phase
        state.observe(tok)
        after = state.phase
        if before == Phase.BEFORE and after == Phase.THINKING:
            think_start, answer_start = i + 1, None
        elif before == Phase.THINKING and think_stop is None and (
            after != Phase.THINKING or state._qkind == _Q_END
        ):
            think_stop = i  # the end delimiter (or end of turn) begins here
        if before != Phase.ANSWER and after == Phase.ANSWER:
            answer_start = i + 1
    answer_tokens = state.answer
    if think_start is None:  # the block never opened: everything is answer
        think_start = think_stop = 0
        answer_tokens = sum(1 for t in output_ids if t not in spec.stop_ids)
    elif think_stop is None:
        think_stop = n
    if answer_start is None:
        answer_start = n
    return Accounting(
        thinking_tokens=state.thinking,
        answer_tokens=answer_tokens,
        hit_max=state.hit_max,
        continuations=state.continuations,
        phase=state.phase,
        thinking_span=(think_start, think_stop),
        answer_span=(answer_start, n),
    )
