"""``thinking_waits`` and the empty continuation in the pure budget state machine.

A scripted greedy model (``tests/budget_driver.py``) against the machine; the Waits are
counted on the emitted ids, and :func:`replay` must find the same from the ids alone.
"""

from __future__ import annotations

import pytest

from server.budget.machine import (
    GUARD_TURN,
    GUARD_WAIT,
    HOLD,
    BudgetError,
    BudgetSpec,
    BudgetState,
    replay,
)
from tests.budget_driver import ANSWER, IM_END, IM_START, NL, S1_RULES, WAIT, drive, spec

always_ends = lambda i: IM_START  # noqa: E731  a model that tries to end at every step


@pytest.mark.parametrize("k", [0, 1, 2, 4, 6])
def test_waits_force_exactly_k_continuations_then_end(k: int):
    s = BudgetState(spec(thinking_waits=k, **S1_RULES))
    out = drive(s, always_ends, 3 * k + 4)
    # Counted on the raw ids: the first k attempts became Wait, the next one ended.
    end = out.index(IM_START)
    assert out[end:end + 2] == [IM_START, ANSWER]
    assert out[:end].count(WAIT) == k
    assert out[:end] == ([3, WAIT] * k + [3] if k else [])
    assert replay(s.spec, out).continuations == k


def test_waits_hold_the_first_token_as_the_harness_first_round():
    s = BudgetState(spec(thinking_waits=1, **S1_RULES))
    assert s.decide() == HOLD
    s.observe(1)
    assert s.decide() == GUARD_WAIT and s.advance(1) == GUARD_WAIT
    s.observe(WAIT)
    assert s.decide() == HOLD
    s.observe(1)
    assert s.decide() == GUARD_TURN  # one Wait forced: an end attempt now ends thinking


def test_the_models_own_continuation_is_masked_below_the_waits():
    """Below the Waits the continuation's first token only ever comes forced, so the
    count on the ids is the count of replaced attempts."""
    script = [1, WAIT, 1, IM_START, 1, IM_START, ANSWER, 7, IM_END]
    s = BudgetState(spec(thinking_waits=1))
    log: dict = {}
    out = drive(s, lambda i: script[i] if i < len(script) else 1, 20, second=4, log=log)
    assert out[:4] == [1, 4, 1, WAIT]  # the model's own Wait masked (second choice 4)
    assert log["replaced"] == 1 == replay(s.spec, out).continuations
    # Once the Waits are spent the model writes Wait freely, and it is not counted.
    free = BudgetState(spec(thinking_waits=1))
    out2 = drive(free, lambda i: [IM_START, WAIT, 1, IM_START, ANSWER][i] if i < 5 else 7, 8)
    assert out2[:4] == [WAIT, WAIT, 1, IM_START]
    assert replay(free.spec, out2).continuations == 1


def test_waits_and_min_both_hold():
    """An attempt ends thinking only once k Waits were forced and the minimum is met."""
    few = BudgetState(spec(thinking_waits=1, thinking_min=6, **S1_RULES))
    out = drive(few, always_ends, 20)
    end = out.index(IM_START)
    assert end >= 6 and out[:end].count(WAIT) == 3  # the minimum asked for more Waits
    many = BudgetState(spec(thinking_waits=3, thinking_min=2, **S1_RULES))
    out = drive(many, always_ends, 20)
    assert out[:out.index(IM_START)] == [3, WAIT] * 3 + [3]  # the Waits asked for more


def test_the_cap_wins_over_waits():
    s = BudgetState(spec(thinking_waits=4, thinking_max=5, **S1_RULES))
    out = drive(s, always_ends, 12)
    assert out[:5] == [3, WAIT, 3, WAIT, 3]
    assert out[5:9] == [NL, IM_START, ANSWER, NL]  # cut: newline, end, answer prefix
    acc = replay(s.spec, out)
    assert acc.hit_max and acc.continuations == 2 and acc.thinking_tokens == 5


def test_empty_continuation_suppresses_only():
    s = BudgetState(spec(thinking_min=3, continuation_ids=()))
    assert s.decide() == HOLD
    out = drive(s, always_ends, 8, second=4)
    assert out[:5] == [4, 4, 4, IM_START, ANSWER]
    acc = replay(s.spec, out)
    assert acc.thinking_tokens == 3 and acc.continuations == 0


def test_bad_counts_and_the_spec_round_trip():
    # No string with Waits (Table 4's ablation): allowed, the engine counts the Waits.
    assert spec(thinking_waits=2, continuation_ids=()).active
    with pytest.raises(BudgetError, match="thinking_waits must be >= 0"):
        spec(thinking_waits=-1)
    with pytest.raises(BudgetError, match="thinking_waits must be an integer"):
        spec(thinking_waits=1.5)
    assert spec(thinking_min=2, continuation_ids=()).active  # suppress only: allowed
    w = spec(thinking_waits=3, thinking_max=40)
    assert BudgetSpec.from_dict(w.to_dict()) == w and w.active
    assert not spec(thinking_waits=0).active
