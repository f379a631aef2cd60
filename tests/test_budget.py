"""Unit tests of the pure budget state machine (no engine)."""

from __future__ import annotations

import math
import random

import pytest

from server.budget.draws import uniform_bits, uniform_bits_block
from server.budget.machine import (
    DONE,
    FORCE,
    FREE,
    GUARD,
    GUARD_TURN,
    HOLD,
    BudgetError,
    BudgetSpec,
    BudgetState,
    Phase,
    replay,
)
from tests.budget_driver import (
    ANSWER,
    EOS,
    FINAL,
    IM_END,
    IM_START,
    NL,
    S1_RULES,
    THINK,
    WAIT,
    drive,
    spec,
)


def stops_after(n: int):
    """A model that thinks n tokens, ends thinking, answers '7', ends the turn."""
    script = [1] * n + [IM_START, ANSWER, 7, IM_END]
    return lambda i: script[i] if i < len(script) else 1


def test_no_budget_is_free_always():
    s = BudgetState(spec())
    assert not s.spec.active
    out = drive(s, stops_after(5), 50)
    assert out == [1] * 5 + [IM_START, ANSWER, 7, IM_END]
    assert s.thinking == 5 and s.answer == 1 and not s.hit_max


def test_max_forces_whole_end_delimiter_then_answer_prefix():
    s = BudgetState(spec(thinking_max=3))
    out = drive(s, stops_after(10), 50)
    assert out[:3] == [1, 1, 1]
    assert out[3:7] == [IM_START, ANSWER, NL, FINAL]
    assert s.thinking == 3 and s.hit_max
    acc = replay(s.spec, out)
    assert acc.thinking_tokens == 3 and acc.hit_max
    assert acc.thinking_span == (0, 3) and acc.answer_span == (5, len(out))


def test_max_zero_answers_without_thinking():
    s = BudgetState(spec(thinking_max=0))
    out = drive(s, stops_after(10), 8)
    assert out[:4] == [IM_START, ANSWER, NL, FINAL]
    assert replay(s.spec, out).thinking_tokens == 0


def test_natural_end_under_max_has_no_prefix():
    s = BudgetState(spec(thinking_max=10))
    out = drive(s, stops_after(4), 50)
    assert out == [1, 1, 1, 1, IM_START, ANSWER, 7, IM_END]
    assert not s.hit_max and s.answer == 1


def test_min_replaces_end_attempts_with_continuation():
    s = BudgetState(spec(thinking_min=6))
    out = drive(s, stops_after(2), 12)
    # thinks 2, tries to end -> Wait; the scripted model then keeps on.
    assert out[2] == WAIT
    acc = replay(s.spec, out)
    assert acc.thinking_tokens >= 6 and acc.continuations >= 1


def test_eos_inside_thinking_is_an_attempt_under_min():
    script = [1, 1, EOS]
    s = BudgetState(spec(thinking_min=4))
    out = drive(s, lambda i: script[i] if i < 3 else EOS, 10)
    assert out[2] == WAIT and EOS not in out[:4]
    # Above the minimum EOS ends the turn inside the block.
    s2 = BudgetState(spec(thinking_min=1))
    out2 = drive(s2, lambda i: script[i] if i < 3 else EOS, 10)
    assert out2 == [1, 1, EOS] and s2.phase == Phase.ENDED
    acc = replay(s2.spec, out2)
    assert acc.thinking_tokens == 2 and acc.answer_tokens == 0 and acc.phase == Phase.ENDED


def test_min_equals_max_is_exact():
    for n in range(0, 8):
        s = BudgetState(spec(thinking_min=n, thinking_max=n))
        drive(s, stops_after(1), 40)
        assert s.thinking == n


def test_max_wins_over_pending_multi_token_continuation():
    s = BudgetState(spec(thinking_min=3, thinking_max=3, continuation_ids=(WAIT, 5, 6)))
    out = drive(s, stops_after(2), 20)
    # 2 thoughts, attempt -> WAIT (3rd thinking token), then max: end forced at once.
    assert out[:5] == [1, 1, WAIT, IM_START, ANSWER]
    assert replay(s.spec, out).thinking_tokens == 3


def test_multi_token_continuation_is_completed():
    s = BudgetState(spec(thinking_min=8, continuation_ids=(WAIT, 5)))
    out = drive(s, stops_after(1), 20)
    assert out[1:3] == [WAIT, 5]
    assert s.thinking >= 8


def test_block_opened_by_the_model():
    s = BudgetState(spec(thinking_max=2, prompt_opens=False))
    script = [9, IM_START, THINK, 1, 1, 1, 1]
    out = drive(s, lambda i: script[i] if i < len(script) else 1, 9)
    assert out[:5] == [9, IM_START, THINK, 1, 1]
    assert out[5:9] == [IM_START, ANSWER, NL, FINAL]
    acc = replay(s.spec, out)
    assert acc.thinking_tokens == 2 and acc.thinking_span == (3, 5)


VOCAB = [1, 2, 3, IM_START, THINK, ANSWER, EOS, IM_END, WAIT, NL]
MODEL_VOCAB = [t for t in VOCAB if t != WAIT]


def _count_by_hand(sp: BudgetSpec, out: list[int]) -> dict:
    """:func:`_spans_by_hand`, and from the same scan: ``hit_max`` (thinking stopped at the
    maximum with a forced token after it) and ``continuations`` (the continuation's first
    id inside the thinking; the scripted model never writes it)."""
    hand = _spans_by_hand(sp, out)
    t0, t1 = hand["thinking_span"]
    hand["hit_max"] = (hand["phase"] != Phase.BEFORE and sp.thinking_max is not None
                       and t1 - t0 == sp.thinking_max and t1 < len(out)
                       and out[t1] not in sp.stop_ids)
    hand["continuations"] = out[t0:t1].count(sp.continuation_ids[0])
    return hand


def _spans_by_hand(sp: BudgetSpec, out: list[int]) -> dict:
    """Where thinking starts and stops in ``out``, found by scanning for the delimiters
    (no state machine): the start delimiter (unless the prompt opened the block); then the
    first end-delimiter token, end-of-turn id, or the newline forced at the maximum."""
    n = len(out)
    if sp.prompt_opens:
        t0 = 0
    else:
        k = len(sp.start_ids)
        starts = [i + k for i in range(n - k + 1) if tuple(out[i:i + k]) == sp.start_ids]
        if not starts:  # never opened: all of it is answer
            return {"thinking": 0, "answer": sum(t not in sp.stop_ids for t in out),
                    "phase": Phase.BEFORE, "thinking_span": (0, 0), "answer_span": (0, n)}
        t0 = starts[0]
    t1 = t0
    while t1 < n:
        tok = out[t1]
        if tok == sp.end_ids[0] or tok in sp.stop_ids:
            break
        if tok == sp.newline_id and t1 - t0 == sp.thinking_max:
            break
        t1 += 1
    if t1 == n:
        return {"thinking": t1 - t0, "answer": 0, "phase": Phase.THINKING,
                "thinking_span": (t0, t1), "answer_span": (n, n)}
    if out[t1] in sp.stop_ids:
        return {"thinking": t1 - t0, "answer": 0, "phase": Phase.ENDED,
                "thinking_span": (t0, t1), "answer_span": (n, n)}
    end = (out[t1] == sp.newline_id) + len(sp.end_ids)  # the whole delimiter, forced
    a0 = t1 + end
    if a0 > n:  # the output stops inside the forced delimiter
        return {"thinking": t1 - t0, "answer": 0, "phase": Phase.THINKING,
                "thinking_span": (t0, t1), "answer_span": (n, n)}
    assert tuple(out[t1 + end - len(sp.end_ids):a0]) == sp.end_ids, out
    return {"thinking": t1 - t0, "answer": sum(t not in sp.stop_ids for t in out[a0:]),
            "phase": Phase.ANSWER, "thinking_span": (t0, t1), "answer_span": (a0, n)}


def test_replay_matches_a_count_by_hand_on_random_streams():
    """Replay recomputes, from the ids alone, what the run did: checked against a scan for
    the delimiters and against the run's own log of interventions."""
    rng = random.Random(0)
    seen = {"cut": 0, "replaced": 0, "before": 0, "ended": 0, "answer": 0}
    for _ in range(400):
        lo = rng.choice([None, 0, 1, 3, 7])
        hi = rng.choice([None, 0, 2, 5, 9, 20])
        if lo is not None and hi is not None and lo > hi:
            lo, hi = hi, lo
        rules = S1_RULES if rng.random() < 0.5 else {}
        sp = spec(thinking_min=lo, thinking_max=hi, prompt_opens=rng.random() < 0.8,
                  continuation_ids=rng.choice([(WAIT,), (WAIT, 3)]), **rules)
        # The model never writes the continuation itself: replay, seeing ids only, takes a
        # model-written one at a guarded step for a forced one (see the hand-written cases).
        log = {"replaced": 0, "cut": False}
        out = drive(BudgetState(sp), lambda i: rng.choice(MODEL_VOCAB), 40, log=log)
        acc = replay(sp, out)
        hand = _count_by_hand(sp, out)
        assert acc.thinking_tokens == hand["thinking"], (sp, out)
        assert acc.answer_tokens == hand["answer"], (sp, out)
        assert acc.phase == hand["phase"], (sp, out)
        assert acc.thinking_span == hand["thinking_span"], (sp, out)
        assert acc.answer_span == hand["answer_span"], (sp, out)
        assert acc.hit_max == hand["hit_max"] == log["cut"], (sp, out)
        assert acc.continuations == hand["continuations"] == log["replaced"], (sp, out)
        if hi is not None:
            assert acc.thinking_tokens <= hi
        if lo is not None and acc.phase >= Phase.ANSWER:
            assert acc.thinking_tokens >= lo
        seen["cut"] += log["cut"]
        seen["replaced"] += log["replaced"] > 0
        seen[{Phase.BEFORE: "before", Phase.ENDED: "ended", Phase.ANSWER: "answer"}.get(
            acc.phase, "answer")] += acc.phase != Phase.THINKING
    assert min(seen.values()) >= 10, seen  # every kind of ending happened, repeatedly


# Hand-written streams: (spec settings, output ids, thinking, answer, hit_max, continuations).
REPLAY_CASES = [
    (dict(thinking_max=2), [1, 1, IM_START, ANSWER, NL, FINAL, 7, IM_END], 2, 3, True, 0),
    (dict(thinking_max=9), [1, 1, 1, IM_START, ANSWER, 7, 7, IM_END], 3, 2, False, 0),
    (dict(thinking_min=3), [1, WAIT, 1, 1, IM_START, ANSWER, 7], 4, 1, False, 1),
    (dict(thinking_min=3, continuation_ids=(WAIT, 5)), [1, WAIT, 5, 1, IM_START, ANSWER], 4,
     0, False, 1),
    # Ids alone cannot tell a Wait the model wrote at a guarded step from a forced one: the
    # first counts as forced; the second, above the minimum, is the model's own thinking.
    (dict(thinking_min=3), [WAIT, 1, 1, WAIT, IM_START, ANSWER], 4, 0, False, 1),
    (dict(thinking_max=5), [1, 1, EOS], 2, 0, False, 0),  # the turn ends inside the block
    (dict(thinking_max=2, prompt_opens=False), [9, IM_START, THINK, 1, 1, IM_START, ANSWER,
                                                NL, FINAL, 7], 2, 3, True, 0),
    (dict(thinking_max=2, prompt_opens=False), [9, 9, IM_END], 0, 2, False, 0),  # never opened
    (dict(thinking_max=3, **S1_RULES), [1, 1, 1, NL, IM_START, ANSWER, NL, FINAL], 3, 2, True,
     0),
    (dict(thinking_max=3, **S1_RULES), [1, 1, NL, IM_START, ANSWER, NL, FINAL, 7], 3, 3, True,
     0),
    (dict(thinking_max=0), [IM_START, ANSWER, NL, FINAL, 7, IM_END], 0, 3, True, 0),
]


@pytest.mark.parametrize("settings,out,thinking,answer,hit_max,continuations", REPLAY_CASES)
def test_replay_on_hand_written_streams(settings, out, thinking, answer, hit_max,
                                        continuations):
    acc = replay(spec(**settings), out)
    assert (acc.thinking_tokens, acc.answer_tokens, acc.hit_max, acc.continuations) == (
        thinking, answer, hit_max, continuations)


def test_invalid_settings_raise_clear_errors():
    with pytest.raises(BudgetError, match="thinking_min .* larger than thinking_max"):
        spec(thinking_min=5, thinking_max=4)
    with pytest.raises(BudgetError, match=">= 0"):
        spec(thinking_max=-1)
    with pytest.raises(BudgetError, match="integer"):
        spec(thinking_max=2.5)
    with pytest.raises(BudgetError, match="integer"):
        spec(thinking_min=True)
    with pytest.raises(BudgetError, match="continuation"):
        spec(thinking_min=2, continuation_ids=(IM_END,))


def test_spec_dict_round_trip():
    s = spec(thinking_min=1, thinking_max=4)
    assert BudgetSpec.from_dict(s.to_dict()) == s


def test_uniform_bits_are_deterministic_and_uniform():
    assert uniform_bits(1, 5) == uniform_bits(1, 5)
    assert uniform_bits(1, 5) != uniform_bits(2, 5)
    draws = [uniform_bits(42, i) for i in range(20000)]
    assert all(0 <= u < 1 << 53 for u in draws)
    mean = sum(draws) / len(draws) / (1 << 53)
    assert abs(mean - 0.5) < 0.01


@pytest.mark.parametrize(("seed", "start", "count"), [(0, 0, 1), (7, 0, 500),
                                                      (2**63 - 1, 1000, 64), (12345, 3, 0)])
def test_uniform_bits_block_is_the_scalar_draws(seed, start, count):
    """Production draws a block with numpy; it must be the scalar definition, bit for bit."""
    assert uniform_bits_block(seed, start, count) == [
        uniform_bits(seed, p) for p in range(start, start + count)]


def test_probability_rule_matches_model_probability():
    """The device rule (logits_edit, a sampled guarded row) replaces the attempt with the
    model's own probability of it: 20,000 rows whose softmax gives the end token p = 0.3."""
    import torch

    from server.engine.logits_edit import GUARD_SAMPLED, apply_plan, float32_bits

    p, n, attempt, repl = 0.3, 20000, 0, 3
    row = torch.log(torch.tensor([p, (1 - p) / 3, (1 - p) / 3, (1 - p) / 3]))
    logits = row.repeat(n, 1)
    u = uniform_bits_block(7, 0, n)
    plan = torch.tensor([[i, repl, GUARD_SAMPLED, float32_bits(1.0), attempt, u[i]]
                         for i in range(n)], dtype=torch.int64)
    apply_plan(logits, plan, 0, 0, 0)
    hit = torch.isinf(logits[:, 1])  # tried: only the replacement is left
    assert torch.equal(hit, torch.isinf(logits[:, 2]))
    assert bool((logits[hit, repl] == 0).all())
    assert bool(torch.isinf(logits[~hit, attempt]).all())  # not tried: the attempt is masked
    assert torch.equal(hit, torch.tensor([b < p * 2**53 for b in u]))
    sd = math.sqrt(n * p * (1 - p))  # binomial: within 4 standard deviations
    assert abs(int(hit.sum()) - n * p) < 4 * sd
    for p_edge, tried in ((0.0, False), (1.0, True)):
        edge = torch.log(torch.tensor([[p_edge, 1 - p_edge, 0.0, 0.0]]))
        apply_plan(edge, torch.tensor([[0, repl, GUARD_SAMPLED, float32_bits(1.0), attempt,
                                        (1 << 53) - 1 if tried else 0]]), 0, 0, 0)
        assert bool(edge[0, repl] == 0) is tried


def test_decide_states():
    s = BudgetState(spec(thinking_min=1, thinking_max=2))
    assert s.decide() == GUARD
    s.observe(1)
    assert s.decide() == FREE
    s.observe(1)
    assert s.decide() == FORCE and s.forced_token == IM_START


def test_advance_is_observe_then_decide():
    """The engine's one-call fast path must agree with the two-call definition."""
    rng = random.Random(1)
    for _ in range(300):
        lo = rng.choice([None, 0, 1, 3, 7])
        hi = rng.choice([None, 0, 2, 5, 9, 20])
        if lo is not None and hi is not None and lo > hi:
            lo, hi = hi, lo
        if lo is None and hi is None:
            hi = 4
        waits = rng.choice([None, 0, 1, 3])
        rules = S1_RULES if rng.random() < 0.5 else {}
        conts = [(WAIT,), (WAIT, 3)] + ([()] if not waits else [])
        sp = spec(thinking_min=lo, thinking_max=hi, thinking_waits=waits,
                  prompt_opens=rng.random() < 0.8, continuation_ids=rng.choice(conts), **rules)
        fast, slow = BudgetState(sp), BudgetState(sp)
        for _ in range(40):
            # Mostly the token the machine asks for, sometimes anything (as a sampler may).
            slow.decide()
            tok = slow.forced_token if rng.random() < 0.5 and slow.decide() == FORCE \
                else rng.choice(VOCAB)
            slow.observe(tok)
            expected = DONE if slow.done else slow.decide()
            got = fast.advance(tok)
            assert got == expected
            if got == FORCE:
                assert fast.forced_token == slow.forced_token
            assert (fast.position, fast.thinking, fast.phase, fast.continuations) == (
                slow.position, slow.thinking, slow.phase, slow.continuations)
            if got == DONE:
                break


# ------------------------------------------------------------- the s1 harness's details


def test_cut_mid_line_forces_a_newline_before_the_end():
    s = BudgetState(spec(thinking_max=3, **S1_RULES))
    out = drive(s, lambda i: 1, 8)
    assert out == [1, 1, 1, NL, IM_START, ANSWER, NL, FINAL]
    acc = replay(s.spec, out)
    assert acc.thinking_tokens == 3 and acc.hit_max
    assert acc.thinking_span == (0, 3) and acc.answer_span == (6, 8)


def test_cut_right_after_a_newline_adds_none():
    script = [1, 1, NL, 1, 1]
    s = BudgetState(spec(thinking_max=3, **S1_RULES))
    out = drive(s, lambda i: script[i] if i < len(script) else 1, 7)
    assert out == [1, 1, NL, IM_START, ANSWER, NL, FINAL]
    assert replay(s.spec, out).thinking_tokens == 3


def test_max_zero_newline_depends_on_what_opened_the_block():
    out = drive(BudgetState(spec(thinking_max=0, **S1_RULES)), lambda i: 1, 5)
    assert out == [NL, IM_START, ANSWER, NL, FINAL]
    opened = spec(thinking_max=0, opens_on_newline=True, **S1_RULES)
    assert drive(BudgetState(opened), lambda i: 1, 4) == [IM_START, ANSWER, NL, FINAL]


def test_end_of_turn_inside_thinking_starts_the_answer():
    script = [1, 1, EOS, 9, 7, IM_END]
    s = BudgetState(spec(thinking_max=10, **S1_RULES))
    out = drive(s, lambda i: script[i] if i < len(script) else 1, 10)
    assert out == [1, 1, IM_START, ANSWER, 7, IM_END]
    assert s.phase == Phase.ANSWER and not s.hit_max and s.answer == 1
    # Without the rule the turn ends inside the block, as before.
    old = BudgetState(spec(thinking_max=10))
    assert drive(old, lambda i: script[i], 10) == [1, 1, EOS]


def test_no_end_attempt_right_after_a_continuation_or_at_the_start():
    always_ends = lambda i: IM_START  # noqa: E731
    s = BudgetState(spec(thinking_min=4, **S1_RULES))
    out = drive(s, always_ends, 7)
    assert out == [3, WAIT, 3, WAIT, 3, IM_START, ANSWER]
    assert replay(s.spec, out).continuations == 2
    without = BudgetState(spec(thinking_min=4))
    assert drive(without, always_ends, 6) == [WAIT, WAIT, WAIT, WAIT, IM_START, ANSWER]


def test_hold_follows_a_multi_token_continuation():
    s = BudgetState(spec(thinking_min=3, continuation_ids=(WAIT, 5), **S1_RULES))
    out = drive(s, lambda i: IM_START, 6)
    assert out == [3, WAIT, 5, 3, IM_START, ANSWER]


def test_actions_under_the_s1_rules():
    s = BudgetState(spec(thinking_min=2, **S1_RULES))
    assert s.decide() == HOLD  # the block's first token
    s.observe(1)
    assert s.decide() == GUARD
    s.observe(1)
    assert s.decide() == GUARD_TURN  # at the minimum: only an end of turn is watched
    assert s.advance(1) == GUARD_TURN
    no_turn = BudgetState(spec(thinking_min=2, stop_ids=frozenset(), **S1_RULES))
    no_turn.observe_many([1, 1])
    assert no_turn.decide() == FREE

