"""Decision seeds from the API process, the n>1 fan-out, and budget counters counted once.

No engine: a scripted fake ``AsyncLLM`` plays the logits processor's part by
driving a :class:`~server.budget.BudgetState` exactly as the processor would
(forced tokens when it says FORCE; an end attempt, hence a continuation, when it
says GUARD), so every expected count is known in advance.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import REGISTRY

from server import fanout
from server.budget import FORCE, GUARD, HOLD, BudgetState, Phase, replay
from server.engine import ModelInfo
from server.formats import FORMATS, FormatTokens
from server.protocol import CompletionRequest
from server.reasoning import ChoiceSplitter
from server.serving import ChoiceResult, RunState, Serving, record_choice_metrics
from server.settings import Settings

PROMPT = "count the r letters"


@dataclass
class _Comp:
    index: int
    token_ids: list[int]
    finish_reason: str | None = None
    stop_reason: Any = None


@dataclass
class _Output:
    outputs: list[_Comp]


class FakeEngine:
    """Scripted stand-in for ``AsyncLLM``: one token per output, outputs interleaved.

    Each choice thinks ``think`` ordinary tokens and then tries to end; the budget
    (read from the request as the real processor reads it) forces and guards as the
    processor would. ``attempt_first`` makes every guarded step an end attempt.
    """

    def __init__(self, tokenizer: Any, stop_id: int, think: int = 50,
                 attempt_first: bool = False) -> None:
        self.word = tokenizer.encode(" r", add_special_tokens=False)[0]
        self.stop_id, self.think, self.attempt_first = stop_id, think, attempt_first
        self.requests: list[tuple[str, Any]] = []
        self.aborted: list[Any] = []

    async def generate(self, prompt: Any, params: Any, request_id: str):
        from server.logits_processor import spec_from_params

        self.requests.append((request_id, params))
        found = spec_from_params(params)
        assert found is not None, "the fake engine only plays budgeted requests"
        spec = found[0]
        states = [BudgetState(spec) for _ in range(params.n)]
        counts = [0] * params.n
        done = [False] * params.n
        while not all(done):
            for i, state in enumerate(states):
                if done[i]:
                    continue
                action = state.decide()
                if action == FORCE:
                    tok = state.forced_token
                elif action == GUARD and self.attempt_first:
                    tok = state.guard_continuation_token
                elif state.phase == Phase.THINKING and counts[i] >= self.think:
                    tok = spec.end_ids[0]  # the model ends its thinking itself
                elif state.phase == Phase.ANSWER and state.done and state.answer >= 2:
                    tok = self.stop_id
                else:
                    tok = self.word
                state.observe(tok)
                counts[i] += 1
                finished = tok == self.stop_id or counts[i] >= params.max_tokens
                done[i] = finished
                yield _Output([_Comp(i, [tok], "stop" if finished else None)])
                await asyncio.sleep(0)  # let fanned-out requests interleave

    async def abort(self, request_id: Any) -> None:
        self.aborted.append(request_id)


@pytest.fixture(scope="module")
def model(tiny_s1_open) -> ModelInfo:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_s1_open)
    stop = frozenset({tok.convert_tokens_to_ids("<|im_end|>")})
    return ModelInfo(name="tiny", tokenizer=tok, max_model_len=1024,
                     format_tokens=FormatTokens.build(FORMATS["s1"], tok, stop),
                     vocab_size=len(tok))


def _serving(model: ModelInfo, **engine_kw: Any) -> Serving:
    stop_id = next(iter(model.format_tokens.stop_ids))
    return Serving(FakeEngine(model.tokenizer, stop_id, **engine_kw), model, Settings())


def _prepare(serving: Serving, **body: Any):
    req = CompletionRequest(prompt=PROMPT + "<|im_start|>think\n", **body)
    text, ids = serving.completion_prompt(req)
    return serving.prepare(req, text, ids, "prompt")


def _payload_seed(params: Any) -> int:
    return params.extra_args["s1_budget"]["seed"]


def _counter(name: str) -> float:
    return REGISTRY.get_sample_value(f"{name}_total") or 0.0


def _run(serving: Serving, prepared: Any) -> RunState:
    state = RunState()

    async def main() -> None:
        async for _ in serving.run_choices(prepared, "req-1", state):
            pass

    asyncio.run(main())
    return state


# -------------------------------------------------------------------- seeds
def test_every_budgeted_request_carries_an_api_decision_seed(model):
    serving = _serving(model)
    unseeded = _prepare(serving, thinking_max=8, temperature=1.0)
    assert unseeded.choice_params is None
    assert isinstance(_payload_seed(unseeded.sampling_params), int)
    assert _payload_seed(_prepare(serving, thinking_max=8).sampling_params) \
        != _payload_seed(unseeded.sampling_params)  # drawn per request
    seeded = _prepare(serving, thinking_max=8, n=3, temperature=1.0, seed=42)
    assert seeded.choice_params is None  # vLLM gives child i the seed 42 + i
    assert _payload_seed(seeded.sampling_params) == 42
    assert seeded.sampling_params.seed == 42
    plain = _prepare(serving, n=3, temperature=1.0)  # no budget: nothing to decide
    assert plain.choice_params is None and not plain.sampling_params.extra_args


def test_unseeded_n_choices_get_their_own_decision_seeds(model):
    prepared = _prepare(_serving(model), thinking_min=4, thinking_max=8, n=4,
                        temperature=1.0, max_tokens=40)
    children = prepared.choice_params
    assert children is not None and len(children) == 4
    seeds = [_payload_seed(p) for p in children]
    assert len(set(seeds)) == 4, "each choice must decide from its own seed"
    for p in children:
        assert p.n == 1 and p.seed is None
        assert p.max_tokens == 40 and p.temperature == 1.0
        assert p.extra_args["s1_budget"]["thinking_min"] == 4
    assert fanout.needs_fanout(True, None, 2)
    assert not fanout.needs_fanout(True, 7, 2) and not fanout.needs_fanout(True, None, 1)
    assert not fanout.needs_fanout(False, None, 2)


def test_fanned_out_response_has_the_usual_shape(model):
    serving = _serving(model, think=50)
    prepared = _prepare(serving, thinking_max=6, n=3, temperature=1.0, max_tokens=40)
    state = _run(serving, prepared)
    assert [rid for rid, _ in serving.engine.requests] == ["req-1-0", "req-1-1", "req-1-2"]
    assert sorted(state.choices) == [0, 1, 2]
    usage = state.usage()
    assert usage["prompt_tokens"] == len(prepared.prompt_ids)
    assert usage["completion_tokens"] == sum(c.tokens for c in state.choices.values())
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 3 * 6
    for choice in state.choices.values():
        assert choice.finish_reason == "stop"
        assert choice.splitter.content_text.startswith("Final Answer:")


def test_merge_raises_the_first_error_and_cancels_the_rest():
    cancelled = []

    async def ok():
        try:
            while True:
                yield "tick"
                await asyncio.sleep(0)
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


# ----------------------------------------------------------------- counters
def test_counters_count_each_finished_choice_once(model):
    serving = _serving(model, think=50)  # thinks past thinking_max: a forced end each
    prepared = _prepare(serving, thinking_max=5, n=2, temperature=1.0, max_tokens=40, seed=1)
    names = ("s1_forced_ends", "s1_forced_continuations", "s1_budgeted_requests")
    before = {n: _counter(n) for n in names}
    state = _run(serving, prepared)
    assert [(rid, p.n) for rid, p in serving.engine.requests] == [("req-1", 2)]
    assert {n: _counter(n) for n in names} == before  # the engine run itself counts nothing
    record_choice_metrics(state)  # what routes do once, when the response ends
    assert all(c.splitter.state.hit_max for c in state.choices.values())
    assert _counter("s1_forced_ends") - before["s1_forced_ends"] == 2
    assert _counter("s1_budgeted_requests") - before["s1_budgeted_requests"] == 2
    assert _counter("s1_forced_continuations") == before["s1_forced_continuations"]


def test_continuations_and_replay_agree(model):
    tok = model.tokenizer
    spec = model.format_tokens.spec(thinking_min=6, thinking_max=20,
                                    continuation_ids=tok.encode("Wait", add_special_tokens=False),
                                    prompt_opens=True)
    # What the engine emits when the model tries to stop at once, every time, below 6
    # (a held step masks the attempt: the model's next choice, an ordinary token, wins).
    ordinary = tok.encode("a", add_special_tokens=False)[0]
    state, ids = BudgetState(spec), []
    while state.phase == Phase.THINKING:
        action = state.decide()
        tok_id = (state.forced_token if action == FORCE else
                  state.guard_continuation_token if action == GUARD else
                  ordinary if action == HOLD else spec.end_ids[0])
        state.observe(tok_id)
        ids.append(tok_id)
    acc = replay(spec, ids)
    assert acc.continuations == state.continuations > 0 and not acc.hit_max

    def counted() -> tuple[float, float]:
        return _counter("s1_forced_continuations"), _counter("s1_budgeted_requests")

    # Two runs over the same tokens (as a preempted and re-added request would replay
    # them in the engine) are two requests here, and each counts exactly once: counting
    # happens per finished choice in the API process, so there is no re-add to double.
    for _ in range(2):
        run = RunState()
        splitter = ChoiceSplitter(spec, tok)
        splitter.push(ids)
        run.choices[0] = ChoiceResult(splitter, tokens=len(ids))
        before = counted()
        record_choice_metrics(run)
        after = counted()
        assert after[0] - before[0] == acc.continuations
        assert after[1] - before[1] == 1


def test_unbudgeted_choices_are_not_counted(model):
    tok = model.tokenizer
    spec = model.format_tokens.spec(thinking_min=None, thinking_max=None,
                                    continuation_ids=tok.encode("Wait", add_special_tokens=False),
                                    prompt_opens=True)
    run = RunState()
    splitter = ChoiceSplitter(spec, tok)
    splitter.push(tok.encode("hmm<|im_start|>answer\nok", add_special_tokens=False))
    run.choices[0] = ChoiceResult(splitter, tokens=3)
    before = _counter("s1_budgeted_requests")
    record_choice_metrics(run)
    assert _counter("s1_budgeted_requests") == before


def test_abort_reaches_fanned_out_choices(model):
    serving = _serving(model)
    asyncio.run(serving.abort("req-9"))
    ids = serving.engine.aborted[-1]
    assert ids[0] == "req-9"
    assert {fanout.child_id("req-9", i) for i in range(serving.settings.max_n)} <= set(ids)


def _outputs(index_tokens: list[list[int]]):
    from types import SimpleNamespace

    async def stream():
        for toks in index_tokens:
            yield SimpleNamespace(outputs=[SimpleNamespace(index=0, token_ids=toks)],
                                  finished=False)
            await asyncio.sleep(0)
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
