"""The engine-call hook: decision seeds, the n>1 fan-out, budget counters counted once.

What: every request reaches the engine through vLLM's serving classes, and s1-serve's
budget reaches it through the hook on ``engine.generate``
(:func:`server.api.engine_hook.install_hook`; accounting in :func:`server.api.request_layer.track`).
These tests call the real hook as vLLM's serving classes do: ``BUDGET`` set to the
:class:`~server.api.budget_request.BudgetRequest` the request dependency reads from the body
(:func:`~server.api.budget_request.budget_from_body`), then ``engine.generate(prompt,
SamplingParams(...), request_id)`` with vLLM's own ``TokensPrompt``, ``SamplingParams``
and ``RequestOutputKind``.

Why here, without an engine: the properties are about what the API process puts on
each engine request (a decision seed from the API, never one per worker, so
tensor-parallel ranks decide alike; a fan-out when vLLM would share one seed between
choices; nothing for beam search or unbudgeted requests; refusals as vLLM validation
errors) and about counting each finished choice exactly once, in the API process,
whatever the engine does (preemption, several ranks). A fake ``AsyncLLM`` answers
instantly and deterministically: it plays the logits processor by driving a
:class:`~server.budget.machine.BudgetState` built from the request's ``extra_args`` (forced
tokens on FORCE; the continuation on GUARD when the model tries to end; an ordinary
token on HOLD), for a model that thinks ``think`` tokens and then tries to end every
step. Every expected token list and count below is written out by hand from the s1
rules, not recomputed by the state machine under test.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY
from vllm import SamplingParams, TokensPrompt
from vllm.exceptions import VLLMValidationError
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import RequestOutputKind

from server.api import fanout
from server.api.budget_request import BUDGET, BudgetRequest, budget_from_body
from server.api.engine_hook import install_hook
from server.api.serving import Serving
from server.budget.formats import FORMATS, FormatTokens
from server.budget.machine import FORCE, GUARD, HOLD, BudgetState, Phase
from server.engine.loader import ModelInfo
from server.engine.logits_processor import EXTRA_ARGS_KEY, spec_from_params
from server.settings import Settings

DELTA, FINAL_ONLY = RequestOutputKind.DELTA, RequestOutputKind.FINAL_ONLY
EFFORTS = {"low": 3, "high": 12, "huge": 1000}
COUNTERS = ("s1_forced_ends", "s1_forced_continuations", "s1_budgeted_requests")
SEED_BOUND = 2**63


@dataclasses.dataclass(frozen=True)
class Vocab:
    """The tiny model's ids for the pieces the scripts use."""

    prompt: list[int]  # a completions prompt that opens the s1 thinking block
    word: int  # " r": an ordinary thinking or answer token
    wait: int  # "Wait", the continuation (one token)
    nl: int  # "\n", forced before a cut end
    end: tuple[int, ...]  # "<|im_start|>answer"
    prefix: tuple[int, ...]  # "\nFinal Answer:"
    stop: int  # "<|im_end|>"


class FakeEngine:
    """What ``install_hook`` and ``apply_budget`` read of vLLM's ``AsyncLLM``, scripted.

    ``generate`` records each engine request (id, params) when it is made, and returns
    an async generator of real ``RequestOutput`` objects in the request's output kind
    (DELTA: the new token; CUMULATIVE: all so far; FINAL_ONLY: one output at the end
    with every choice, as vLLM's parallel sampling does). ``closed`` lists the requests
    whose generator was closed (vLLM aborts an unfinished one then).
    """

    def __init__(self, vocab: Vocab, think: int) -> None:
        # apply_budget passes it to vllm's extract_prompt_components, which reads only
        # this (tests/test_vllm_contract.py pins that call).
        self.model_config = SimpleNamespace(is_encoder_decoder=False)
        self.vocab, self.think = vocab, think
        self.calls: list[tuple[str, SamplingParams]] = []
        self.streams: list[Any] = []
        self.emitted: dict[tuple[str, int], list[int]] = {}
        self.closed: list[str] = []

    def generate(self, prompt: Any, sampling_params: SamplingParams, request_id: str,
                 *args: Any, **kwargs: Any) -> Any:
        self.calls.append((request_id, sampling_params))
        stream = self._play(sampling_params, request_id)
        self.streams.append(stream)
        return stream

    def _token(self, state: BudgetState | None, count: int) -> int:
        """One step: the model's wish, edited as the logits processor edits it."""
        v = self.vocab
        if state is None:  # no budget: the model's own script
            script = [v.word] * self.think + list(v.end) + [v.word, v.word, v.stop]
            return script[count]
        wants_end = state.phase == Phase.THINKING and count >= self.think
        action = state.decide()
        if action == FORCE:
            return state.forced_token
        if action == GUARD and wants_end:  # the attempt happens (probability 1)
            return state.guard_continuation_token
        if action == HOLD and wants_end:  # the attempt is masked: the next choice wins
            return v.word
        if wants_end:
            return state.spec.end_ids[0]
        if state.phase >= Phase.ANSWER and state.answer >= 2:
            return v.stop
        return v.word

    async def _play(self, params: SamplingParams, request_id: str):
        found = spec_from_params(params)  # what the real processor reads
        states = [BudgetState(found[0]) if found else None for _ in range(params.n)]
        ids: list[list[int]] = [[] for _ in range(params.n)]
        reasons: list[str | None] = [None] * params.n
        for i in range(params.n):
            self.emitted[(request_id, i)] = ids[i]
        try:
            while None in reasons:
                for i, state in enumerate(states):
                    if reasons[i] is not None:
                        continue
                    tok = self._token(state, len(ids[i]))
                    if state is not None:
                        state.observe(tok)
                    ids[i].append(tok)
                    if tok == self.vocab.stop:
                        reasons[i] = "stop"
                    elif len(ids[i]) >= params.max_tokens:
                        reasons[i] = "length"
                    if params.output_kind != FINAL_ONLY:
                        got = [tok] if params.output_kind == DELTA else list(ids[i])
                        yield _output(request_id, [_completion(i, got, reasons[i])],
                                      None not in reasons)
                    await asyncio.sleep(0)  # a yield point (fanned-out choices interleave)
            if params.output_kind == FINAL_ONLY:
                yield _output(request_id, [_completion(i, list(ids[i]), reasons[i])
                                           for i in range(params.n)], True)
        finally:
            self.closed.append(request_id)


def _completion(index: int, ids: list[int], reason: str | None) -> CompletionOutput:
    return CompletionOutput(index=index, text="", token_ids=ids, cumulative_logprob=None,
                            logprobs=None, finish_reason=reason)


def _output(request_id: str, outputs: list[CompletionOutput], finished: bool) -> RequestOutput:
    return RequestOutput(request_id, None, None, None, outputs, finished)


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model(tiny_s1_open) -> ModelInfo:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_s1_open))
    stop = frozenset({tok.convert_tokens_to_ids("<|im_end|>")})
    return ModelInfo(name="tiny", tokenizer=tok, max_model_len=1024,
                     format_tokens=FormatTokens.build(FORMATS["s1"], tok, stop),
                     vocab_size=len(tok))


@pytest.fixture(scope="module")
def vocab(model) -> Vocab:
    tok, ft = model.tokenizer, model.format_tokens

    def one(text: str) -> int:
        ids = tok.encode(text, add_special_tokens=False)
        assert len(ids) == 1, f"{text!r} must be one token of the tiny tokenizer"
        return ids[0]

    return Vocab(prompt=tok.encode("count the r letters<|im_start|>think\n",
                                   add_special_tokens=False),
                 word=one(" r"), wait=one("Wait"), nl=one("\n"), end=ft.end_ids,
                 prefix=ft.answer_prefix_ids, stop=one("<|im_end|>"))


@pytest.fixture
def settings(monkeypatch) -> Settings:
    import os

    for name in [k for k in os.environ if k.startswith("S1_")]:
        monkeypatch.delenv(name)  # the shell's S1_* must not change the defaults
    return Settings(max_num_seqs=8)


def _hooked(model: ModelInfo, vocab: Vocab, settings: Settings, think: int = 50,
            max_model_len: int | None = None) -> FakeEngine:
    """A fake engine with the real hook installed, as the server's start-up does."""
    if max_model_len is not None:
        model = dataclasses.replace(model, max_model_len=max_model_len)
    engine = FakeEngine(vocab, think)
    install_hook(engine, Serving(engine, model, settings))
    return engine


def _call(engine: FakeEngine, vocab: Vocab, body: dict, kind: RequestOutputKind = DELTA,
          budget: BudgetRequest | None | bool = True, request_id: str = "req-1",
          **params: Any) -> tuple[BudgetRequest | None, Any]:
    """One engine call as vLLM's serving classes make it, with ``BUDGET`` as the request
    dependency sets it from ``body`` (``budget=None``: no dependency ran). ``params``:
    the SamplingParams fields vLLM would set (by default from the body)."""
    req = budget_from_body(body, EFFORTS) if budget is True else budget
    fields = {"n": body.get("n", 1), "temperature": body.get("temperature", 1.0),
              "seed": body.get("seed"),
              "max_tokens": body.get("max_tokens", 1024 - len(vocab.prompt)), **params}
    sp = SamplingParams(output_kind=kind, **fields)
    token = BUDGET.set(req)
    try:
        return req, engine.generate(TokensPrompt(prompt_token_ids=vocab.prompt), sp,
                                    request_id)
    finally:
        BUDGET.reset(token)


def _drain(stream: Any, during: Any = None) -> list[RequestOutput]:
    """Every output of ``stream``; ``during()`` runs at each one, before the next."""
    async def main() -> list[RequestOutput]:
        out = []
        async for item in stream:
            if during is not None:
                during()
            out.append(item)
        return out

    return asyncio.run(main())


def _payload(params: SamplingParams) -> dict:
    return params.extra_args[EXTRA_ARGS_KEY]


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def _counters() -> dict[str, float]:
    return {n: _sample(f"{n}_total") for n in COUNTERS}


def _delta(before: dict[str, float]) -> dict[str, float]:
    return {n: v - before[n] for n, v in _counters().items()}


def _choices(outputs: list[RequestOutput], delta: bool) -> dict[int, list[int]]:
    got: dict[int, list[int]] = {}
    for out in outputs:
        for c in out.outputs:
            if delta:
                got.setdefault(c.index, []).extend(c.token_ids)
            else:
                got[c.index] = list(c.token_ids)
    return got


def _cut(v: Vocab, thinking: int) -> list[int]:
    """A choice cut at ``thinking`` ordinary tokens: the newline (the thinking text does
    not end with one), the end delimiter, the answer prefix; then the model stops (the
    prefix already gave it two answer tokens)."""
    return [v.word] * thinking + [v.nl, *v.end, *v.prefix, v.stop]


# -------------------------------------------------------------------- seeds
def test_every_budgeted_request_carries_an_api_decision_seed(model, vocab, settings):
    engine = _hooked(model, vocab, settings)
    _call(engine, vocab, {"thinking_max": 8})
    _call(engine, vocab, {"thinking_max": 8}, request_id="req-2")
    (rid1, first), (rid2, second) = engine.calls
    assert (rid1, rid2) == ("req-1", "req-2") and first.n == second.n == 1
    for params in (first, second):
        seed = _payload(params)["seed"]
        assert isinstance(seed, int) and 0 <= seed < SEED_BOUND
        assert params.seed is None  # the client sent none: vLLM's sampling stays unseeded
        assert spec_from_params(params)[1] == seed  # what the processor decides from
    assert _payload(first)["seed"] != _payload(second)["seed"], "one fresh seed per request"

    # The client's seed, from the seed field or (surfaces without one) our extension.
    _call(engine, vocab, {"thinking_max": 8, "seed": 7})
    _call(engine, vocab, {"thinking_max": 8, "seed": 9}, seed=None)
    (_, own), (_, ext) = engine.calls[2:]
    assert (own.seed, _payload(own)["seed"]) == (7, 7)
    assert (ext.seed, _payload(ext)["seed"]) == (9, 9)


def test_a_seeded_n_request_is_one_engine_request(model, vocab, settings):
    engine = _hooked(model, vocab, settings)
    _call(engine, vocab, {"thinking_max": 8, "n": 3, "seed": 42})
    assert [(rid, p.n) for rid, p in engine.calls] == [("req-1", 3)]
    params = engine.calls[0][1]
    assert params.seed == 42 and _payload(params)["seed"] == 42
    # vLLM makes child i a copy with seed 42 + i; the processor prefers that seed.
    for i in range(3):
        child = copy.copy(params)
        child.seed = 42 + i
        assert spec_from_params(child)[1] == 42 + i


def test_unseeded_n_choices_fan_out_with_their_own_seeds(model, vocab, settings):
    engine = _hooked(model, vocab, settings)
    _call(engine, vocab, {"thinking_min": 4, "thinking_max": 8, "n": 4, "max_tokens": 40,
                          "temperature": 0.7})
    assert [rid for rid, _ in engine.calls] == ["req-1-0", "req-1-1", "req-1-2", "req-1-3"]
    seeds = []
    for _, child in engine.calls:
        assert child.n == 1 and child.seed is None
        assert child.max_tokens == 40 and child.temperature == 0.7
        payload = _payload(child)
        assert (payload["thinking_min"], payload["thinking_max"]) == (4, 8)
        assert 0 <= payload["seed"] < SEED_BOUND
        assert spec_from_params(child)[1] == payload["seed"]
        seeds.append(payload["seed"])
    assert len(set(seeds)) == 4, "each choice must decide from its own seed"
    assert fanout.needs_fanout(True, None, 2)
    assert not fanout.needs_fanout(True, 7, 2) and not fanout.needs_fanout(True, None, 1)
    assert not fanout.needs_fanout(False, None, 2)


def test_unbudgeted_requests_carry_no_budget_payload(model, vocab, settings):
    engine = _hooked(model, vocab, settings)
    _call(engine, vocab, {"n": 3, "max_tokens": 30})  # the dependency ran: no budget asked
    _call(engine, vocab, {"n": 3}, budget=None, max_tokens=77)  # no dependency ran
    assert [(rid, p.n) for rid, p in engine.calls] == [("req-1", 3), ("req-1", 3)]
    for _, params in engine.calls:
        assert not params.extra_args and params.seed is None
    assert [p.max_tokens for _, p in engine.calls] == [30, 77]


# ------------------------------------------------------------ the one path
def test_beam_search_leaves_the_engine_call_untouched(model, vocab, settings):
    """vLLM's beam search calls generate once per step with max_tokens=1; rewriting it to
    the client's max_tokens (as every other request gets) would break the search."""
    engine = _hooked(model, vocab, settings)
    beam = budget_from_body({"max_tokens": 50, "use_beam_search": True}, EFFORTS)
    beam.beam_search = True  # what the dependency sets for use_beam_search
    _, stream = _call(engine, vocab, {}, budget=beam, max_tokens=1, logprobs=4)
    _, control = _call(engine, vocab, {"max_tokens": 50}, max_tokens=1, logprobs=4)
    (_, passed), (_, rewritten) = engine.calls
    assert passed.max_tokens == 1 and not passed.extra_args and passed.logprobs == 4
    assert stream is engine.streams[0], "the engine's own stream: no accounting around it"
    assert rewritten.max_tokens == 50 and control is not engine.streams[1]


def test_an_effort_preset_is_clipped_to_leave_the_answer_room(model, vocab, settings):
    forced = len(vocab.end) + len(vocab.prefix)
    engine = _hooked(model, vocab, settings)
    _call(engine, vocab, {"reasoning_effort": "high", "max_tokens": 15})  # 12 asked
    params = engine.calls[-1][1]
    assert params.max_tokens == 15
    assert _payload(params)["thinking_max"] == 15 - forced - 1 < EFFORTS["high"]
    _call(engine, vocab, {"reasoning_effort": "low", "max_tokens": 15})  # fits: as asked
    assert _payload(engine.calls[-1][1])["thinking_max"] == EFFORTS["low"]

    # Without max_tokens, half of the context the prompt leaves.
    small = _hooked(model, vocab, settings, max_model_len=len(vocab.prompt) + 40)
    _call(small, vocab, {"reasoning_effort": "huge"}, max_tokens=40)
    params = small.calls[-1][1]
    assert _payload(params)["thinking_max"] == 20 and params.max_tokens == 40


@pytest.mark.parametrize(("body", "param", "text"), [
    ({"thinking_max": 12, "max_tokens": 15}, "max_tokens", "thinking_max (12)"),
    ({"thinking_max": 2000}, "thinking_max", "does not fit in the context"),
    ({"thinking_min": 5, "thinking_max": 4}, "thinking_min", "larger than thinking_max"),
])
def test_an_explicit_budget_that_cannot_fit_is_refused(model, vocab, settings, body, param,
                                                       text):
    engine = _hooked(model, vocab, settings)
    with pytest.raises(VLLMValidationError, match=text.replace("(", r"\(").replace(")", r"\)")
                       ) as err:
        _call(engine, vocab, body, max_tokens=body.get("max_tokens", 100))
    assert err.value.parameter == param
    assert engine.calls == [], "a refused request never reaches the engine"


# ------------------------------------------------------------ fan-out shape
@pytest.mark.parametrize("kind", [DELTA, FINAL_ONLY])
def test_fanned_out_response_has_the_usual_shape(model, vocab, settings, kind):
    engine = _hooked(model, vocab, settings, think=50)  # thinks past thinking_max
    req, stream = _call(engine, vocab, {"thinking_max": 6, "n": 3, "max_tokens": 40}, kind)
    outputs = _drain(stream)
    assert [rid for rid, _ in engine.calls] == ["req-1-0", "req-1-1", "req-1-2"]
    if kind == FINAL_ONLY:  # non-streaming: one output with the n choices in order
        assert len(outputs) == 1 and outputs[0].finished
        assert [c.index for c in outputs[0].outputs] == [0, 1, 2]
    choices = _choices(outputs, delta=kind == DELTA)
    assert choices == {i: _cut(vocab, 6) for i in range(3)}
    assert "Final Answer:" in model.tokenizer.decode(choices[0])
    assert sorted(req.budgets) == [0, 1, 2]
    for b in req.budgets.values():
        assert (b["thinking_tokens"], b["hit_max"], b["end"]) == (6, True, "cut")
    assert sorted(engine.closed) == ["req-1-0", "req-1-1", "req-1-2"]


def _close_after_first(engine: FakeEngine, stream: Any) -> list[str]:
    """Read one output, close the stream as a serving class does when its client leaves,
    and return the engine requests closed by the time ``aclose()`` returned."""
    async def main() -> list[str]:
        first = await anext(stream)
        assert first.outputs[0].finish_reason is None
        await stream.aclose()
        return sorted(engine.closed)

    return asyncio.run(main())


def test_a_closed_stream_counts_no_unfinished_choice(model, vocab, settings):
    engine = _hooked(model, vocab, settings)
    _, stream = _call(engine, vocab, {"thinking_max": 6, "n": 3, "max_tokens": 40})
    before = _counters()
    _close_after_first(engine, stream)
    assert all(len(engine.emitted[(f"req-1-{i}", 0)]) < len(_cut(vocab, 6)) for i in range(3))
    assert _delta(before) == dict.fromkeys(COUNTERS, 0.0)


def test_closing_a_fanned_out_stream_aborts_every_choice_at_once(model, vocab, settings):
    """track's finally awaits ``stream.aclose()`` to abort the engine requests: for a
    fanned-out request that must reach every child before it returns."""
    engine = _hooked(model, vocab, settings)
    _, stream = _call(engine, vocab, {"thinking_max": 6, "n": 3, "max_tokens": 40})
    assert _close_after_first(engine, stream) == ["req-1-0", "req-1-1", "req-1-2"]


def test_merge_raises_the_first_error_and_cancels_the_rest():
    cancelled = []

    async def ok():
        try:
            while True:
                yield "tick"
                await asyncio.sleep(0)  # a yield point, not a wait
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def bad():
        yield "one"
        raise ValueError("engine said no")

    async def main() -> list:
        seen = []
        with pytest.raises(ValueError, match="engine said no"):
            async for item in fanout.merge([ok(), bad()]):
                seen.append(item)
        return seen

    seen = asyncio.run(main())
    assert (1, "one") in seen
    assert cancelled == [True]


def _outputs(index_tokens: list[list[int]]):
    async def stream():
        for toks in index_tokens:
            yield SimpleNamespace(outputs=[SimpleNamespace(index=0, token_ids=toks)],
                                  finished=False)
            await asyncio.sleep(0)  # a yield point, not a wait
    return stream()


@pytest.mark.parametrize("final_only", [False, True])
def test_as_one_looks_like_one_request_of_n_choices(final_only):
    """vLLM's serving classes read n > 1 as completions tagged 0..n-1 (streaming), or one
    final output holding all n in index order (non-streaming)."""
    async def main() -> list:
        streams = [_outputs([[1], [2]]), _outputs([[3]]), _outputs([[4], [5], [6]])]
        return [out async for out in fanout.as_one(streams, final_only)]

    got = asyncio.run(main())
    if final_only:
        assert len(got) == 1 and got[0].finished
        assert [(c.index, c.token_ids) for c in got[0].outputs] == [(0, [2]), (1, [3]),
                                                                     (2, [6])]
    else:
        seen = {}
        for out in got:
            for c in out.outputs:
                seen.setdefault(c.index, []).extend(c.token_ids)
        assert seen == {0: [1, 2], 1: [3], 2: [4, 5, 6]}


# ----------------------------------------------------------------- counters
@pytest.mark.parametrize("seed", [None, 1], ids=["fanned-out", "seeded"])
@pytest.mark.parametrize("kind", [DELTA, RequestOutputKind.CUMULATIVE, FINAL_ONLY])
def test_counters_count_each_finished_choice_once(model, vocab, settings, seed, kind):
    """Counted in the API process when the response's stream ends (track's finally), one
    per finished choice, and not at all while the engine runs."""
    engine = _hooked(model, vocab, settings, think=50)  # a forced end for each choice
    body = {"thinking_max": 5, "n": 2, "max_tokens": 40, "seed": seed}
    req, stream = _call(engine, vocab, body, kind)
    before = _counters()
    running = []
    outputs = _drain(stream, during=lambda: running.append(_delta(before)))
    assert running and all(d == dict.fromkeys(COUNTERS, 0.0) for d in running)
    assert len(engine.calls) == (2 if seed is None else 1)
    assert _choices(outputs, delta=kind == DELTA) == {0: _cut(vocab, 5), 1: _cut(vocab, 5)}
    assert _delta(before) == {"s1_forced_ends": 2.0, "s1_forced_continuations": 0.0,
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
        engine = _hooked(model, vocab, settings, think=0)
        req, stream = _call(engine, vocab, {"thinking_min": 6, "thinking_max": 20},
                            request_id=rid)
        before = _counters()
        outputs = _drain(stream)
        assert engine.emitted[(rid, 0)] == expected
        assert _choices(outputs, delta=True) == {0: expected}
        assert _delta(before) == {"s1_forced_ends": 0.0, "s1_forced_continuations": 3.0,
                                  "s1_budgeted_requests": 1.0}
        budget = req.budgets[0]
        assert budget["continuation_count"] == 3 and budget["thinking_tokens"] == 7
        assert [c["output_index"] for c in budget["continuations"]] == [1, 3, 5]
        assert (budget["hit_max"], budget["end"]) == (False, "natural")


def test_unbudgeted_choices_are_not_counted(model, vocab, settings):
    engine = _hooked(model, vocab, settings, think=4)
    thinking = "s1_thinking_tokens_count"
    req, stream = _call(engine, vocab, {"n": 2, "max_tokens": 30})
    before, seen = _counters(), _sample(thinking)
    _drain(stream)
    assert _delta(before) == dict.fromkeys(COUNTERS, 0.0)
    assert _sample(thinking) - seen == 2, "both choices were accounted, as unbudgeted"
    assert [b["thinking_tokens"] for b in req.budgets.values()] == [4, 4]
    assert all(b["thinking_max"] is None and b["thinking_min"] is None
               for b in req.budgets.values())

    # No request dependency (no BUDGET): the engine's stream as it is, nothing accounted.
    _, raw = _call(engine, vocab, {"n": 2}, budget=None, max_tokens=30)
    seen = _sample(thinking)
    _drain(raw)
    assert _sample(thinking) == seen and _delta(before) == dict.fromkeys(COUNTERS, 0.0)


def test_a_deadline_cut_is_accounted_as_one(model, vocab, settings):
    """thinking_deadline_ms through the real hook and track (server/api/deadline.py): a
    deadline already past cuts before the first token; the continuation is the engine's
    only request, its prompt the prompt plus the forced cut, without a budget payload; the
    choice's budget object says ``deadline``; counted as a deadline cut, not a forced end."""
    engine = _hooked(model, vocab, settings)
    before, cuts = _counters(), _sample("s1_deadline_cuts_total")
    req, stream = _call(engine, vocab, {"thinking_deadline_ms": 0, "max_tokens": 60},
                        FINAL_ONLY)
    (out,) = _drain(stream)
    (request_id, params), = engine.calls
    assert request_id == "req-1-cut" and EXTRA_ARGS_KEY not in (params.extra_args or {})
    forced = [*vocab.end, *vocab.prefix]  # the prompt ends with a newline: none forced
    ids = list(out.outputs[0].token_ids)
    assert ids[:len(forced)] == forced and params.max_tokens == 60 - len(forced)
    b = req.budgets[0]
    assert (b["end"], b["thinking_tokens"], b["deadline"], b["hit_max"]) == (
        "deadline", 0, 0, False)
    assert b["cut"] == {"token": 0, "char": 0, "output_index": 0}
    assert _delta(before) == {"s1_forced_ends": 0, "s1_forced_continuations": 0,
                              "s1_budgeted_requests": 1}
    assert _sample("s1_deadline_cuts_total") == cuts + 1
