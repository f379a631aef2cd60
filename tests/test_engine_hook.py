"""The engine-call hook, what it puts on each engine request: a decision seed from the
API (never one per worker, so tensor-parallel ranks decide alike; the client's seed when
it sent one), one engine request for a seeded n>1 and a fan-out for an unseeded one,
nothing for beam search or unbudgeted requests, an effort preset clipped to leave the
answer room, and a budget that cannot fit refused as a vLLM validation error before the
engine sees it.

What: every request reaches the engine through vLLM's serving classes, and s1-serve's
budget reaches it through the hook on ``engine.generate``
(:func:`server.api.engine_hook.install_hook`). These tests call the real hook as vLLM's
serving classes do: ``BUDGET`` set to the :class:`~server.api.budget_request.BudgetRequest`
the request dependency reads from the body, then ``engine.generate(prompt,
SamplingParams(...), request_id)`` with vLLM's own types, on the scripted engine of
tests/hooked_engine.py. Why without an engine: these are properties of what the API
process sends, whatever the engine does. The fan-out's response shape is
test_budget_fanout; the counters, test_budget_metrics.
"""

from __future__ import annotations

import copy

import pytest
from vllm.exceptions import VLLMValidationError

from server.api import fanout
from server.api.budget_request import budget_from_body
from server.engine.logits_processor import spec_from_params
from tests.hooked_engine import (
    EFFORTS,
    SEED_BOUND,
    budget_payload,
    engine_call,
    hooked_engine,
)


# -------------------------------------------------------------------- seeds
def test_every_budgeted_request_carries_an_api_decision_seed(model, vocab, settings):
    engine = hooked_engine(model, vocab, settings)
    engine_call(engine, vocab, {"thinking_max": 8})
    engine_call(engine, vocab, {"thinking_max": 8}, request_id="req-2")
    (rid1, first), (rid2, second) = engine.calls
    assert (rid1, rid2) == ("req-1", "req-2") and first.n == second.n == 1
    for params in (first, second):
        seed = budget_payload(params)["seed"]
        assert isinstance(seed, int) and 0 <= seed < SEED_BOUND
        assert params.seed is None  # the client sent none: vLLM's sampling stays unseeded
        assert spec_from_params(params)[1] == seed  # what the processor decides from
    assert budget_payload(first)["seed"] != budget_payload(second)["seed"], "one fresh seed per request"

    # The client's seed, from the seed field or (surfaces without one) our extension.
    engine_call(engine, vocab, {"thinking_max": 8, "seed": 7})
    engine_call(engine, vocab, {"thinking_max": 8, "seed": 9}, seed=None)
    (_, own), (_, ext) = engine.calls[2:]
    assert (own.seed, budget_payload(own)["seed"]) == (7, 7)
    assert (ext.seed, budget_payload(ext)["seed"]) == (9, 9)


def test_a_seeded_n_request_is_one_engine_request(model, vocab, settings):
    engine = hooked_engine(model, vocab, settings)
    engine_call(engine, vocab, {"thinking_max": 8, "n": 3, "seed": 42})
    assert [(rid, p.n) for rid, p in engine.calls] == [("req-1", 3)]
    params = engine.calls[0][1]
    assert params.seed == 42 and budget_payload(params)["seed"] == 42
    # vLLM makes child i a copy with seed 42 + i; the processor prefers that seed.
    for i in range(3):
        child = copy.copy(params)
        child.seed = 42 + i
        assert spec_from_params(child)[1] == 42 + i


def test_unseeded_n_choices_fan_out_with_their_own_seeds(model, vocab, settings):
    engine = hooked_engine(model, vocab, settings)
    engine_call(engine, vocab, {"thinking_min": 4, "thinking_max": 8, "n": 4, "max_tokens": 40,
                          "temperature": 0.7})
    assert [rid for rid, _ in engine.calls] == ["req-1-0", "req-1-1", "req-1-2", "req-1-3"]
    seeds = []
    for _, child in engine.calls:
        assert child.n == 1 and child.seed is None
        assert child.max_tokens == 40 and child.temperature == 0.7
        payload = budget_payload(child)
        assert (payload["thinking_min"], payload["thinking_max"]) == (4, 8)
        assert 0 <= payload["seed"] < SEED_BOUND
        assert spec_from_params(child)[1] == payload["seed"]
        seeds.append(payload["seed"])
    assert len(set(seeds)) == 4, "each choice must decide from its own seed"
    assert fanout.needs_fanout(True, None, 2)
    assert not fanout.needs_fanout(True, 7, 2) and not fanout.needs_fanout(True, None, 1)
    assert not fanout.needs_fanout(False, None, 2)


def test_unbudgeted_requests_carry_no_budget_payload(model, vocab, settings):
    engine = hooked_engine(model, vocab, settings)
    engine_call(engine, vocab, {"n": 3, "max_tokens": 30})  # the dependency ran: no budget asked
    engine_call(engine, vocab, {"n": 3}, budget=None, max_tokens=77)  # no dependency ran
    assert [(rid, p.n) for rid, p in engine.calls] == [("req-1", 3), ("req-1", 3)]
    for _, params in engine.calls:
        assert not params.extra_args and params.seed is None
    assert [p.max_tokens for _, p in engine.calls] == [30, 77]


# ------------------------------------------------------------ the one path
def test_beam_search_leaves_the_engine_call_untouched(model, vocab, settings):
    """vLLM's beam search calls generate once per step with max_tokens=1; rewriting it to
    the client's max_tokens (as every other request gets) would break the search."""
    engine = hooked_engine(model, vocab, settings)
    beam = budget_from_body({"max_tokens": 50, "use_beam_search": True}, EFFORTS)
    beam.beam_search = True  # what the dependency sets for use_beam_search
    _, stream = engine_call(engine, vocab, {}, budget=beam, max_tokens=1, logprobs=4)
    _, control = engine_call(engine, vocab, {"max_tokens": 50}, max_tokens=1, logprobs=4)
    (_, passed), (_, rewritten) = engine.calls
    assert passed.max_tokens == 1 and not passed.extra_args and passed.logprobs == 4
    assert stream is engine.streams[0], "the engine's own stream: no accounting around it"
    assert rewritten.max_tokens == 50 and control is not engine.streams[1]


def test_an_effort_preset_is_clipped_to_leave_the_answer_room(model, vocab, settings):
    forced = len(vocab.end) + len(vocab.prefix)
    engine = hooked_engine(model, vocab, settings)
    engine_call(engine, vocab, {"reasoning_effort": "high", "max_tokens": 15})  # 12 asked
    params = engine.calls[-1][1]
    assert params.max_tokens == 15
    assert budget_payload(params)["thinking_max"] == 15 - forced - 1 < EFFORTS["high"]
    engine_call(engine, vocab, {"reasoning_effort": "low", "max_tokens": 15})  # fits: as asked
    assert budget_payload(engine.calls[-1][1])["thinking_max"] == EFFORTS["low"]

    # Without max_tokens, half of the context the prompt leaves.
    small = hooked_engine(model, vocab, settings, max_model_len=len(vocab.prompt) + 40)
    engine_call(small, vocab, {"reasoning_effort": "huge"}, max_tokens=40)
    params = small.calls[-1][1]
    assert budget_payload(params)["thinking_max"] == 20 and params.max_tokens == 40


@pytest.mark.parametrize(("body", "param", "text"), [
    ({"thinking_max": 12, "max_tokens": 15}, "max_tokens", "thinking_max (12)"),
    ({"thinking_max": 2000}, "thinking_max", "does not fit in the context"),
    ({"thinking_min": 5, "thinking_max": 4}, "thinking_min", "larger than thinking_max"),
])
def test_an_explicit_budget_that_cannot_fit_is_refused(model, vocab, settings, body, param,
                                                       text):
    engine = hooked_engine(model, vocab, settings)
    with pytest.raises(VLLMValidationError, match=text.replace("(", r"\(").replace(")", r"\)")
                       ) as err:
        engine_call(engine, vocab, body, max_tokens=body.get("max_tokens", 100))
    assert err.value.parameter == param
    assert engine.calls == [], "a refused request never reaches the engine"

