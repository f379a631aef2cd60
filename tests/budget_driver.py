"""Run a budget state machine against a scripted greedy "model", as the engine would.

The model is a function of the output position giving the token it wants. The
machine's action decides what is emitted: a forced token; the replacement when a
guarded attempt happened (below the minimum: the continuation; an end of turn
inside the block: the end delimiter); the model's next choice (``second``) when a
held step masks its attempt; otherwise what the model wants.
"""

from __future__ import annotations

from collections.abc import Callable

from server.budget import FORCE, GUARD, GUARD_TURN, HOLD, BudgetState


def drive(state: BudgetState, model: Callable[[int], int], steps: int,
          second: int = 3) -> list[int]:
    out: list[int] = []
    sp = state.spec
    for _ in range(steps):
        action = state.decide()
        want = model(len(out))
        if action == FORCE:
            tok = state.forced_token
        elif action == GUARD and want in sp.attempt_ids:
            tok = state.guard_continuation_token  # greedy: the attempt was the argmax
        elif action == GUARD_TURN and want in sp.turn_ids:
            tok = sp.end_ids[0]
        elif action == HOLD and want in sp.attempt_ids:
            tok = second
        else:
            tok = want
        out.append(tok)
        state.observe(tok)
        if tok in sp.stop_ids:
            break
    return out
