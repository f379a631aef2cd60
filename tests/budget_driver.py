"""Run a budget state machine against a scripted greedy "model", as the engine would; the
toy vocabulary and s1 spec the state-machine tests share.

The model is a function of the output position giving the token it wants. The
machine's action decides what is emitted: a forced token; the replacement when a
guarded attempt happened (below the minimum or the Waits: the continuation; an end
of turn inside the block: the end delimiter); the model's next choice (``second``)
when a held step masks its attempt, or when a step below the Waits masks the
continuation the model wanted itself; otherwise what the model wants.
"""

from __future__ import annotations

from collections.abc import Callable

from server.budget.machine import (
    FORCE,
    GUARD,
    GUARD_TURN,
    GUARD_WAIT,
    HOLD,
    BudgetSpec,
    BudgetState,
    Phase,
)

# A toy vocabulary: 0-9 ordinary tokens, then the special ones.
IM_START, THINK, ANSWER, IM_END, EOS, WAIT, NL, FINAL = 100, 101, 102, 103, 104, 105, 106, 107
S1 = dict(
    start_ids=(IM_START, THINK),
    end_ids=(IM_START, ANSWER),  # a multi-token delimiter
    stop_ids=frozenset({IM_END, EOS}),
    continuation_ids=(WAIT,),
    answer_prefix_ids=(NL, FINAL),
)


# The s1 evaluation's details (the server's defaults).
S1_RULES = dict(newline_id=NL, newline_ids=frozenset({NL}), turn_ends_thinking=True,
                hold_after_continuation=True)


def spec(**kw) -> BudgetSpec:
    return BudgetSpec(**{**S1, **kw})


def drive(state: BudgetState, model: Callable[[int], int], steps: int,
          second: int = 3, log: dict | None = None) -> list[int]:
    """The emitted tokens. ``log``, when given, records what the engine did, facts that
    replay must rediscover from the ids alone: ``replaced`` (attempts replaced by the
    continuation) and ``cut`` (the end forced at the maximum)."""
    out: list[int] = []
    sp = state.spec
    for _ in range(steps):
        action = state.decide()
        want = model(len(out))
        if action == FORCE:
            tok = state.forced_token
            if log is not None and state.phase == Phase.THINKING and tok in (
                    sp.end_ids[0], sp.newline_id) and state.thinking == sp.thinking_max:
                log["cut"] = True
        elif action in (GUARD, GUARD_WAIT) and want in sp.attempt_ids:
            tok = state.guard_continuation_token  # greedy: the attempt was the argmax
            if log is not None:
                log["replaced"] = log.get("replaced", 0) + 1
        elif action == GUARD_TURN and want in sp.turn_ids:
            tok = sp.end_ids[0]
        elif (action == HOLD and want in sp.attempt_ids
              or action == GUARD_WAIT and want == sp.continuation_ids[0]):
            tok = second
        else:
            tok = want
        out.append(tok)
        state.observe(tok)
        if tok in sp.stop_ids:
            break
    return out
