"""The budget counters (forced ends, forced continuations, budgeted requests, thinking
tokens, deadline cuts) are counted in the API process, once per finished choice, when
the response's stream ends: not while the engine runs, not twice for a request the
engine replays, not for unbudgeted choices, and a deadline cut as one deadline cut.

Runs the real engine-call hook and accounting (:func:`server.api.request_layer.track`)
on the scripted engine of tests/hooked_engine.py: counting must hold whatever the engine
does (preemption, several ranks), so no engine is needed. Every expected token list and
count is written out by hand from the s1 rules, not recomputed by the state machine
under test.
"""

from __future__ import annotations

import pytest
from vllm.sampling_params import RequestOutputKind

from server.engine.logits_processor import EXTRA_ARGS_KEY
from tests.hooked_engine import (
    COUNTERS,
    DELTA,
    FINAL_ONLY,
    choice_tokens,
    counters_now,
    counters_since,
    cut_choice,
    drain,
    engine_call,
    hooked_engine,
    metric_sample,
)


# ----------------------------------------------------------------- counters
@pytest.mark.parametrize("seed", [None, 1], ids=["fanned-out", "seeded"])
@pytest.mark.parametrize("kind", [DELTA, RequestOutputKind.CUMULATIVE, FINAL_ONLY])
def test_counters_count_each_finished_choice_once(model, vocab, settings, seed, kind):
    """Counted in the API process when the response's stream ends (track's finally), one
    per finished choice, and not at all while the engine runs."""
    engine = hooked_engine(model, vocab, settings, think=50)  # a forced end for each choice
    body = {"thinking_max": 5, "n": 2, "max_tokens": 40, "seed": seed}
    req, stream = engine_call(engine, vocab, body, kind)
    before = counters_now()
    running = []
    outputs = drain(stream, during=lambda: running.append(counters_since(before)))
    assert running and all(d == dict.fromkeys(COUNTERS, 0.0) for d in running)
    assert len(engine.calls) == (2 if seed is None else 1)
    assert choice_tokens(outputs, delta=kind == DELTA) == {0: cut_choice(vocab, 5), 1: cut_choice(vocab, 5)}
    assert counters_since(before) == {"s1_forced_ends": 2.0, "s1_forced_continuations": 0.0,
                              "s1_budgeted_requests": 2.0}


def test_forced_continuations_are_counted_once_per_request(model, vocab, settings):
    """thinking_min=6 for a model that tries to end at every step: the s1 rules hold the
    first step and the step after each continuation (the attempt is masked, an ordinary
    token wins), and each guarded step between turns the attempt into "Wait". HOLD,
    GUARD, HOLD, GUARD, HOLD, GUARD reaches 6 with 3 continuations; the hold after the
    third gives a 7th thinking token, then the model's end stands."""
    v = vocab
    expected = [v.word, v.wait, v.word, v.wait, v.word, v.wait, v.word, *v.end, v.word,
                v.word, v.stop]
    # Two requests over the same tokens (what a preempted and re-added request replays in
    # the engine) are two requests here: each counts its 3 exactly once.
    for rid in ("req-1", "req-2"):
        engine = hooked_engine(model, vocab, settings, think=0)
        req, stream = engine_call(engine, vocab, {"thinking_min": 6, "thinking_max": 20},
                            request_id=rid)
        before = counters_now()
        outputs = drain(stream)
        assert engine.emitted[(rid, 0)] == expected
        assert choice_tokens(outputs, delta=True) == {0: expected}
        assert counters_since(before) == {"s1_forced_ends": 0.0, "s1_forced_continuations": 3.0,
                                  "s1_budgeted_requests": 1.0}
        budget = req.budgets[0]
        assert budget["continuation_count"] == 3 and budget["thinking_tokens"] == 7
        assert [c["output_index"] for c in budget["continuations"]] == [1, 3, 5]
        assert (budget["hit_max"], budget["end"]) == (False, "natural")


def test_unbudgeted_choices_are_not_counted(model, vocab, settings):
    engine = hooked_engine(model, vocab, settings, think=4)
    thinking = "s1_thinking_tokens_count"
    req, stream = engine_call(engine, vocab, {"n": 2, "max_tokens": 30})
    before, seen = counters_now(), metric_sample(thinking)
    drain(stream)
    assert counters_since(before) == dict.fromkeys(COUNTERS, 0.0)
    assert metric_sample(thinking) - seen == 2, "both choices were accounted, as unbudgeted"
    assert [b["thinking_tokens"] for b in req.budgets.values()] == [4, 4]
    assert all(b["thinking_max"] is None and b["thinking_min"] is None
               for b in req.budgets.values())

    # No request dependency (no BUDGET): the engine's stream as it is, nothing accounted.
    _, raw = engine_call(engine, vocab, {"n": 2}, budget=None, max_tokens=30)
    seen = metric_sample(thinking)
    drain(raw)
    assert metric_sample(thinking) == seen and counters_since(before) == dict.fromkeys(COUNTERS, 0.0)


def test_a_deadline_cut_is_accounted_as_one(model, vocab, settings):
    """thinking_deadline_ms through the real hook and track (server/api/deadline.py): a
    deadline already past cuts before the first token; the continuation is the engine's
    only request, its prompt the prompt plus the forced cut, without a budget payload; the
    choice's budget object says ``deadline``; counted as a deadline cut, not a forced end."""
    engine = hooked_engine(model, vocab, settings)
    before, cuts = counters_now(), metric_sample("s1_deadline_cuts_total")
    req, stream = engine_call(engine, vocab, {"thinking_deadline_ms": 0, "max_tokens": 60},
                        FINAL_ONLY)
    (out,) = drain(stream)
    (request_id, params), = engine.calls
    assert request_id == "req-1-cut" and EXTRA_ARGS_KEY not in (params.extra_args or {})
    forced = [*vocab.end, *vocab.prefix]  # the prompt ends with a newline: none forced
    ids = list(out.outputs[0].token_ids)
    assert ids[:len(forced)] == forced and params.max_tokens == 60 - len(forced)
    b = req.budgets[0]
    assert (b["end"], b["thinking_tokens"], b["deadline"], b["hit_max"]) == (
        "deadline", 0, 0, False)
    assert b["cut"] == {"token": 0, "char": 0, "output_index": 0}
    assert counters_since(before) == {"s1_forced_ends": 0, "s1_forced_continuations": 0,
                              "s1_budgeted_requests": 1}
    assert metric_sample("s1_deadline_cuts_total") == cuts + 1
