"""A scripted vLLM ``AsyncLLM`` with s1-serve's real engine-call hook installed, and the
calls vLLM's serving classes make on it, for the hook tests (test_engine_hook,
test_budget_fanout, test_budget_metrics; their docstrings say why without an engine).

The fake answers instantly and deterministically: it plays the logits processor by
driving a :class:`~server.budget.machine.BudgetState` built from the request's
``extra_args`` (forced tokens on FORCE; the continuation on GUARD when the model tries
to end; an ordinary token on HOLD), for a model that thinks ``think`` tokens and then
tries to end every step."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY
from vllm import SamplingParams, TokensPrompt
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import RequestOutputKind

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
        # this (tests/test_vllm_contract_request.py pins that call).
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
                        yield request_output(request_id,
                                             [completion_output(i, got, reasons[i])],
                                             None not in reasons)
                    await asyncio.sleep(0)  # a yield point (fanned-out choices interleave)
            if params.output_kind == FINAL_ONLY:
                yield request_output(request_id,
                                     [completion_output(i, list(ids[i]), reasons[i])
                                      for i in range(params.n)], True)
        finally:
            self.closed.append(request_id)



def completion_output(index: int, ids: list[int], reason: str | None) -> CompletionOutput:
    return CompletionOutput(index=index, text="", token_ids=ids, cumulative_logprob=None,
                            logprobs=None, finish_reason=reason)


def request_output(request_id: str, outputs: list[CompletionOutput],
                   finished: bool) -> RequestOutput:
    return RequestOutput(request_id, None, None, None, outputs, finished)


# ------------------------------------------------------------- model and settings
def tiny_model_info(checkpoint: Path) -> ModelInfo:
    """What the server knows of the tiny s1-open model (its tokenizer, the s1 format)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(checkpoint))
    stop = frozenset({tok.convert_tokens_to_ids("<|im_end|>")})
    return ModelInfo(name="tiny", tokenizer=tok, max_model_len=1024,
                     format_tokens=FormatTokens.build(FORMATS["s1"], tok, stop),
                     vocab_size=len(tok))


def vocab_of(model: ModelInfo) -> Vocab:
    tok, ft = model.tokenizer, model.format_tokens

    def one(text: str) -> int:
        ids = tok.encode(text, add_special_tokens=False)
        assert len(ids) == 1, f"{text!r} must be one token of the tiny tokenizer"
        return ids[0]

    return Vocab(prompt=tok.encode("count the r letters<|im_start|>think\n",
                                   add_special_tokens=False),
                 word=one(" r"), wait=one("Wait"), nl=one("\n"), end=ft.end_ids,
                 prefix=ft.answer_prefix_ids, stop=one("<|im_end|>"))


def default_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The server's default settings (8 sequences), whatever S1_* the shell holds."""
    for name in [k for k in os.environ if k.startswith("S1_")]:
        monkeypatch.delenv(name)  # the shell's S1_* must not change the defaults
    return Settings(max_num_seqs=8)


# ------------------------------------------------------------------- engine calls
def hooked_engine(model: ModelInfo, vocab: Vocab, settings: Settings, think: int = 50,
                  max_model_len: int | None = None) -> FakeEngine:
    """A fake engine with the real hook installed, as the server's start-up does."""
    if max_model_len is not None:
        model = dataclasses.replace(model, max_model_len=max_model_len)
    engine = FakeEngine(vocab, think)
    install_hook(engine, Serving(engine, model, settings))
    return engine


def engine_call(engine: FakeEngine, vocab: Vocab, body: dict,
                kind: RequestOutputKind = DELTA, budget: BudgetRequest | None | bool = True,
                request_id: str = "req-1", **params: Any) -> tuple[BudgetRequest | None, Any]:
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


def drain(stream: Any, during: Any = None) -> list[RequestOutput]:
    """Every output of ``stream``; ``during()`` runs at each one, before the next."""
    async def main() -> list[RequestOutput]:
        out = []
        async for item in stream:
            if during is not None:
                during()
            out.append(item)
        return out

    return asyncio.run(main())


def budget_payload(params: SamplingParams) -> dict:
    return params.extra_args[EXTRA_ARGS_KEY]


def metric_sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def counters_now() -> dict[str, float]:
    return {n: metric_sample(f"{n}_total") for n in COUNTERS}


def counters_since(before: dict[str, float]) -> dict[str, float]:
    return {n: v - before[n] for n, v in counters_now().items()}


def choice_tokens(outputs: list[RequestOutput], delta: bool) -> dict[int, list[int]]:
    got: dict[int, list[int]] = {}
    for out in outputs:
        for c in out.outputs:
            if delta:
                got.setdefault(c.index, []).extend(c.token_ids)
            else:
                got[c.index] = list(c.token_ids)
    return got


def cut_choice(v: Vocab, thinking: int) -> list[int]:
    """A choice cut at ``thinking`` ordinary tokens: the newline (the thinking text does
    not end with one), the end delimiter, the answer prefix; then the model stops (the
    prefix already gave it two answer tokens)."""
    return [v.word] * thinking + [v.nl, *v.end, *v.prefix, v.stop]
