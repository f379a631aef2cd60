"""Engine-facing request logic of the native path: protocol model in, engine request
out, response back (requests with vLLM-only fields take :mod:`server.delegated`).

One path serves plain chat and completions, streamed or not:
``prepare`` validates the budget against the context window and builds the
engine request (prompt ids + ``SamplingParams`` carrying the budget);
``run_choices`` drives the engine and splits each choice into reasoning and
answer with :class:`~server.reasoning.ChoiceSplitter`, which replays the same
state machine the engine's logits processor ran. The same replay feeds the
budget counters (:func:`record_choice_metrics`), counted here once per choice
rather than in the engine, where every tensor-parallel rank and every re-add
after preemption would count again. Decision seeds are drawn here too, for the
same reason (:mod:`server.fanout`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from server import fanout, limits, metrics
from server.budget import BudgetError, BudgetSpec
from server.engine import ModelInfo
from server.errors import APIError, bad_request
from server.protocol import ChatCompletionRequest, CompletionRequest, _SamplingFields
from server.reasoning import ChoiceSplitter, Delta
from server.settings import Settings
from server.stops import stop_prefix_len, trim_stop

logger = logging.getLogger(__name__)


class Ticket:
    """An admitted request's share of the in-flight limits; release exactly once."""

    def __init__(self, serving: Serving, n: int) -> None:
        self.serving, self.n, self.live = serving, n, True
        serving.in_flight += 1
        serving.sequences += n
        metrics.IN_FLIGHT.inc()

    def release(self) -> None:
        if self.live:
            self.live = False
            self.serving.in_flight -= 1
            self.serving.sequences -= self.n
            metrics.IN_FLIGHT.dec()

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class Prepared:
    """An engine request ready to submit."""

    prompt_ids: list[int]
    sampling_params: Any
    spec: BudgetSpec | None  # active or not; None without a thinking format
    stop: list[str]
    # Set when the n choices run as n engine requests of n=1 (see server.fanout).
    choice_params: list[Any] | None = None


@dataclass
class ChoiceEvent:
    index: int
    reasoning: str = ""
    content: str = ""
    finish_reason: str | None = None
    budget: dict | None = None  # the choice's budget object, on its last event


@dataclass
class ChoiceResult:
    splitter: ChoiceSplitter
    tokens: int = 0
    finish_reason: str | None = None
    budget: dict | None = None  # the budget object, once finished
    sent: list[int] = field(default_factory=lambda: [0, 0])  # reasoning, content chars out

    def release(self, stops: list[str], final: bool) -> Delta:
        """The text that can be sent now when stop strings are set.

        The engine recognises a stop string only once its last token arrives, so text
        that may be the start of one is held back until it is known not to be (or, at
        the end, until the stop was cut off): streamed text equals the full response."""
        out = []
        for i, text in enumerate((self.splitter.reasoning_text, self.splitter.content_text)):
            end = len(text) if final else len(text) - stop_prefix_len(text, stops)
            out.append(text[self.sent[i]:end] if end > self.sent[i] else "")
            self.sent[i] = max(self.sent[i], end)
        return Delta(out[0], out[1])


@dataclass
class RunState:
    """Accumulates one request's results while it streams."""

    prompt_tokens: int = 0
    choices: dict[int, ChoiceResult] = field(default_factory=dict)
    first_token_at: float | None = None

    def usage(self) -> dict:
        completion = sum(c.tokens for c in self.choices.values())
        reasoning = sum(c.splitter.reasoning_tokens for c in self.choices.values())
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }


class Serving:
    """Turns validated requests into engine calls. One instance per server."""

    def __init__(self, engine: Any, model: ModelInfo, settings: Settings) -> None:
        self.engine = engine
        self.model = model
        self.settings = settings
        self.in_flight = 0  # generation requests admitted and not finished
        self.sequences = 0  # their sequences (n per request)
        self._continuations: dict[str, tuple[int, ...]] = {}
        self._template: str | None = None

    # --------------------------------------------------------------- admission
    def admit(self, n: int) -> Ticket:
        """Reserve room for a request of ``n`` sequences, or answer 429."""
        s = self.settings
        retry = {"Retry-After": "1"}
        if self.in_flight >= s.max_in_flight:
            raise APIError(429, f"the server is at its limit of {s.max_in_flight} requests in "
                           "flight; retry after a second", headers=retry)
        if self.sequences + n - s.max_num_seqs > s.max_waiting:
            raise APIError(429, f"more than {s.max_waiting} sequences are already waiting for "
                           "the engine; retry after a second", headers=retry)
        return Ticket(self, n)

    # ----------------------------------------------------------------- prompts
    def chat_prompt(self, req: ChatCompletionRequest) -> str:
        if len(req.messages) > self.settings.max_messages:
            raise bad_request(f"{len(req.messages)} messages; at most "
                              f"{self.settings.max_messages} are accepted", "messages")
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        tok = self.model.tokenizer
        try:
            prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                             chat_template=self._chat_template(),
                                             **(req.chat_template_kwargs or {}))
        except Exception as exc:
            raise bad_request(f"the chat template could not render these messages: {exc}",
                              "messages") from None
        ft = self.model.format_tokens
        if ft is not None and ft.fmt.start and not ft.prompt_opens(prompt) \
                and not prompt.rstrip().endswith(ft.fmt.end.rstrip()):
            # (A prompt that closes the block, e.g. Qwen3's enable_thinking=False, stays so.)
            # As the s1 evaluation does: open the thinking block after the assistant header.
            prompt += ft.fmt.start
        return prompt

    def _chat_template(self) -> str | None:
        """``--chat-template`` (a file or the template itself), resolved as vLLM does."""
        if self._template is None and self.settings.chat_template:
            from vllm.renderers.chat_utils import load_chat_template

            self._template = load_chat_template(self.settings.chat_template)
        return self._template

    def completion_prompt(self, req: CompletionRequest) -> tuple[str | None, list[int]]:
        prompt = req.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            prompt = prompt[0]  # one text prompt in a list (several go to vLLM's class)
        if isinstance(prompt, str):
            return prompt, self.model.tokenizer.encode(prompt, add_special_tokens=False)
        if not prompt:
            raise bad_request("prompt is empty", "prompt")
        if any(t < 0 or t >= self.model.vocab_size for t in prompt):
            raise bad_request(f"prompt token ids must lie in [0, {self.model.vocab_size})",
                              "prompt")
        return self.model.tokenizer.decode(prompt), list(prompt)

    # ------------------------------------------------------------------ budget
    def continuation_ids(self, text: str) -> tuple[int, ...]:
        ids = self._continuations.get(text)
        if ids is None:
            ids = tuple(self.model.tokenizer.encode(text, add_special_tokens=False))
            if len(self._continuations) < 1024:
                self._continuations[text] = ids
        return ids

    def prepare(self, req: _SamplingFields, prompt_text: str | None,
                prompt_ids: list[int], prompt_param: str) -> Prepared:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        from server.logits_processor import budget_extra_args

        if req.model is not None and req.model != self.model.name:
            raise APIError(404, f"model {req.model!r} does not exist; this server serves "
                           f"{self.model.name!r} (see GET /v1/models)", "model")
        if req.n > self.settings.max_n:
            raise bad_request(f"n={req.n} is above this server's limit {self.settings.max_n}",
                              "n")
        unknown = req.unknown_fields()
        if unknown:
            logger.debug("ignoring unknown request fields: %s", ", ".join(unknown))

        ft = self.model.format_tokens
        lo, hi = limits.resolve_budget(req.thinking_min, req.thinking_max, self.settings,
                                       closed=ft is not None and prompt_text is not None
                                       and ft.prompt_closes(prompt_text))
        if (lo is not None or hi is not None) and ft is None:
            raise bad_request("this model has no thinking format, so thinking_min/thinking_max "
                              "cannot be enforced; start the server with --thinking-format "
                              "(s1, deepseek-r1, qwen3 or custom)", "thinking_max"
                              if hi is not None else "thinking_min")
        spec: BudgetSpec | None = None
        if ft is not None:
            cont_text = req.thinking_continuation or self.settings.thinking_continuation
            opens = ft.prompt_opens(prompt_text) if prompt_text is not None else True
            try:
                spec = ft.spec(thinking_min=lo, thinking_max=hi,
                               continuation_ids=self.continuation_ids(cont_text),
                               prompt_opens=opens, prompt_text=prompt_text)
            except BudgetError as exc:
                raise bad_request(str(exc), exc.param) from None

        room = self.model.max_model_len - len(prompt_ids)
        if room < 1:
            raise bad_request(f"the prompt is {len(prompt_ids)} tokens, which leaves no room in "
                              f"the {self.model.max_model_len}-token context; shorten it",
                              prompt_param)
        max_tokens = limits.max_tokens_for(req.max_tokens, spec, room,
                                           self.model.max_model_len,
                                           completions=isinstance(req, CompletionRequest))

        logit_bias = limits.logit_bias(req.logit_bias, self.model.vocab_size,
                                       self.settings.max_logit_bias)
        stop = limits.stop_strings(req.stop, self.settings)
        kwargs: dict[str, Any] = dict(
            n=req.n,
            temperature=1.0 if req.temperature is None else req.temperature,
            max_tokens=max_tokens,
            seed=req.seed,
            stop=stop or None,
            logit_bias=logit_bias,
            ignore_eos=req.ignore_eos,
            output_kind=RequestOutputKind.DELTA,
        )
        for name in ("top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
                     "repetition_penalty"):
            value = getattr(req, name)
            if value is not None:
                kwargs[name] = value
        active = spec is not None and spec.active
        if active:
            # Always an explicit decision seed, so tensor-parallel ranks decide alike.
            seed = req.seed if req.seed is not None else fanout.fresh_seed()
            kwargs["extra_args"] = budget_extra_args(spec, seed)
        from vllm.exceptions import VLLMClientError

        try:
            params = SamplingParams(**kwargs)
        except VLLMClientError as exc:  # e.g. n > 1 with greedy sampling
            raise bad_request(str(exc), getattr(exc, "parameter", None)) from None
        except (ValueError, TypeError) as exc:
            raise bad_request(str(exc)) from None
        choice_params = None
        if fanout.needs_fanout(active, req.seed, req.n):
            choice_params = [SamplingParams(**{**kwargs, "n": 1, "extra_args": budget_extra_args(
                spec, fanout.fresh_seed())}) for _ in range(req.n)]
        return Prepared(prompt_ids, params, spec, stop, choice_params)

    # -------------------------------------------------------------- generation
    async def run_choices(self, prepared: Prepared, request_id: str,
                          state: RunState) -> AsyncIterator[ChoiceEvent]:
        """Drive the engine; yield text deltas per choice; fill ``state``."""
        from vllm.inputs import TokensPrompt

        state.prompt_tokens = len(prepared.prompt_ids)
        tokenizer = self.model.tokenizer
        prompt = TokensPrompt(prompt_token_ids=prepared.prompt_ids)
        fanned = prepared.choice_params is not None
        if fanned:  # n engine requests of n=1: merge() tags each output with its choice index
            stream = fanout.merge([
                self.engine.generate(prompt, params, fanout.child_id(request_id, i))
                for i, params in enumerate(prepared.choice_params)])
        else:
            stream = self.engine.generate(prompt, prepared.sampling_params, request_id)
        deadline = deadline_for(self.settings.request_timeout_s)
        while True:
            try:
                output = await next_before(stream, deadline)
            except StopAsyncIteration:
                break
            offset = 0
            if fanned:
                offset, output = output
            for comp in output.outputs:
                index = offset + comp.index
                choice = state.choices.get(index)
                if choice is None:
                    choice = ChoiceResult(ChoiceSplitter(prepared.spec, tokenizer))
                    state.choices[index] = choice
                new = list(comp.token_ids)
                if new and state.first_token_at is None:
                    state.first_token_at = time.perf_counter()
                choice.tokens += len(new)
                delta = choice.splitter.push(new)
                finish = budget = None
                if comp.finish_reason is not None:
                    tail = choice.splitter.flush()
                    delta.reasoning += tail.reasoning
                    delta.content += tail.content
                    finish = "length" if comp.finish_reason == "length" else "stop"
                    choice.finish_reason = finish
                    if isinstance(comp.stop_reason, str):
                        delta = trim_stop(choice.splitter, delta, comp.stop_reason)
                    budget = choice.budget = choice.splitter.budget_details()
                if prepared.stop:
                    delta = choice.release(prepared.stop, finish is not None)
                if delta.reasoning or delta.content or finish:
                    yield ChoiceEvent(index, delta.reasoning, delta.content, finish, budget)
            # vLLM hands over queued output without suspending, so a request with a
            # backlog (a fast engine, a busy or slow-reading client) would keep the event
            # loop to itself and stall every other request, new ones included, until it
            # caught up. One turn of the loop per engine output keeps serving fair.
            await asyncio.sleep(0)

    async def abort(self, request_id: str) -> None:
        # A fanned-out request's choices run under child ids; unknown ids are ignored.
        ids = [request_id, *(fanout.child_id(request_id, i) for i in range(self.settings.max_n))]
        try:
            await self.engine.abort(ids)
        except Exception:  # the engine may be gone already; nothing left to free
            logger.debug("abort of %s failed", request_id, exc_info=True)


async def watch_disconnect(receive: Any, task: asyncio.Task) -> None:
    """Cancel ``task`` when the client goes away (non-streaming requests).

    ``receive`` is the request's ASGI receive, its body already read: the next message
    is ``http.disconnect``, sent when the connection closes. (Waiting on it, rather than
    polling ``Request.is_disconnected``, also keeps the server reading the socket.)"""
    while not task.done():
        message = await receive()
        if message["type"] == "http.disconnect":
            task.cancel()
            return


def deadline_for(timeout: float | None) -> float | None:
    """The event-loop time a request started now must end by (None: no deadline)."""
    return asyncio.get_running_loop().time() + timeout if timeout else None


async def next_before(stream: AsyncIterator[Any], deadline: float | None) -> Any:
    """The stream's next item, or TimeoutError at ``deadline`` (StopAsyncIteration at its end).

    A timer per wait rather than asyncio.wait_for, which on Python 3.11 wraps every wait
    in a new task; the scope never spans a yield of the caller. The caller aborts the
    engine request on expiry (closing the engine stream does).
    """
    async with asyncio.timeout_at(deadline):
        return await anext(stream)


def record_choice_metrics(state: RunState) -> None:
    """Per-choice histograms and budget counters; called once per request, at its end."""
    for choice in state.choices.values():
        metrics.record_choice(choice.splitter.state, choice.tokens)
