"""Going on after a cut: the continuation request, spliced into the choice's stream.

When :mod:`server.api.cut_stream` cuts a choice's thinking it has aborted the choice's
engine request; :func:`continue_cut` submits the continuation (the prompt ids + the ids
so far + the forced cut, with what is left of the request's room) and gives its outputs
under the original request's id and prompt, in the output kind the serving class asked
for (:class:`Outputs`), the forced ids, their text and logprobs included, as if one
engine request had made them. :func:`cut_prompt` also builds early stop's probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from server.api.budget_request import BudgetRequest
from server.api.serving import Serving
from server.budget.cut import Cut
from server.budget.machine import BudgetSpec


@dataclasses.dataclass(frozen=True)
class Call:
    """One hooked ``engine.generate`` call, shared by every engine request made for it
    (its choices, their continuations, the probes)."""

    original: Callable[..., AsyncIterator[Any]]  # vLLM's engine.generate
    serving: Serving
    req: BudgetRequest
    spec: BudgetSpec
    prompt: dict
    args: tuple
    kwargs: dict

    def submit(self, prompt: Any, params: Any, request_id: str,
               after_cut: bool = False) -> AsyncIterator[Any]:
        """An engine request. ``after_cut``: its prompt ends after the end delimiter, so
        a grammar constrains from its first token."""
        kwargs = dict(self.kwargs)
        if after_cut and "reasoning_ended" in kwargs:
            kwargs["reasoning_ended"] = True
        return self.original(prompt, params, request_id, *self.args, **kwargs)




async def cancel(task: asyncio.Future) -> None:
    """Cancel a pending read of an engine stream (vLLM aborts the request) and wait."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):  # abandoned: its end too
        await task


def send_until(end: int, held: list[tuple[int, Any]], out: Outputs, params: Any,
                serving: Serving) -> list[Any]:
    """Send the held outputs up to output position ``end`` (the cut's), the one that
    straddles it cut short; drop the rest (generated past the cut, never sent)."""
    items: list[Any] = []
    for stop, res in held:
        start = stop - len(res.outputs[0].token_ids)
        if start >= end:
            break
        if stop > end:
            res = head_of(res, end - start, out, params, serving)
        res.finished = False
        res.outputs[0].finish_reason = None
        items += out.add(res)
    held.clear()
    return items


def head_of(res: Any, n: int, out: Outputs, params: Any, serving: Serving) -> Any:
    """An output cut short to its first ``n`` token ids (text, logprobs with them)."""
    comp = copy.copy(res.outputs[0])
    head = list(comp.token_ids[:n])
    comp.text = text_after(out, head, params, serving)
    comp.token_ids = head
    if comp.logprobs is not None:
        comp.logprobs = comp.logprobs[:n]
        comp.cumulative_logprob = (out.cumulative or 0.0) + sum(
            lp[tok].logprob for lp, tok in zip(comp.logprobs, head, strict=True))
    comp.finish_reason = comp.stop_reason = None
    res = copy.copy(res)
    res.outputs = [comp]
    return res


# ------------------------------------------------------- continue after the cut
async def continue_cut(call: Call, params: Any, cut: Cut, out: Outputs,
                       request_id: str) -> AsyncIterator[Any]:
    """The choice's outputs after ``cut`` (its engine request already aborted): the
    forced ids, then the continuation's outputs, under the original request's id and
    prompt. Closing this generator aborts the continuation."""
    prompt, serving = call.prompt, call.serving
    cont = call.submit(cut_prompt(prompt, cut), continuation(params, cut),
                       f"{request_id}-cut", after_cut=True)
    pending: asyncio.Future | None = asyncio.ensure_future(anext(cont))  # submitted now
    try:
        head = out.head
        prompt_text = head.prompt if head is not None else prompt.get("prompt")
        prompt_ids = list(prompt["prompt_token_ids"])
        # The forced ids go out at once, unless logprobs were asked for: theirs are the
        # continuation's prompt logprobs, so they lead its first output instead.
        lead = params.logprobs is None and params.prompt_logprobs is None
        if lead:
            for item in out.add(forced_output(cut, out, params, serving, request_id,
                                              prompt_text, prompt_ids)):
                yield item
        base: float | None = None  # the continuation's cumulative logprob starts here
        while True:
            try:
                res = await pending if pending is not None else await anext(cont)
            except StopAsyncIteration:
                break
            finally:
                pending = None
            comp = res.outputs[0]
            if base is None:
                base = 0.0 if lead else splice(res, cut, out, params, serving)
            elif comp.cumulative_logprob is not None:
                comp.cumulative_logprob += base
            res.request_id, res.prompt, res.prompt_token_ids = request_id, prompt_text, prompt_ids
            if res.num_cached_tokens:  # the cache held some of the output, not the prompt
                res.num_cached_tokens = min(res.num_cached_tokens, len(prompt_ids))
            for item in out.add(res):
                yield item
    finally:
        if pending is not None:  # the client left while we waited: abort the request
            await cancel(pending)
        await cont.aclose()


def cut_prompt(prompt: dict, cut: Cut) -> Any:
    """The prompt of a request made at ``cut`` (its continuation, a probe): the prompt
    ids + the output ids so far + the forced cut."""
    from vllm.inputs.engine import tokens_input

    ids = list(prompt["prompt_token_ids"]) + list(cut.prefix)
    return tokens_input(ids, cache_salt=prompt.get("cache_salt"))


def continuation(params: Any, cut: Cut) -> Any:
    """The continuation's sampling params."""
    from vllm.sampling_params import RequestOutputKind

    from server.engine.logits_processor import EXTRA_ARGS_KEY

    used = len(cut.prefix)
    p = copy.copy(params)
    p.output_kind = RequestOutputKind.DELTA
    p.n = 1
    p.max_tokens = params.max_tokens - used
    p.min_tokens = max(0, (params.min_tokens or 0) - used)
    # Thinking is over: nothing left for the budget processor.
    p.extra_args = {k: v for k, v in (params.extra_args or {}).items()
                    if k != EXTRA_ARGS_KEY} or None
    # The forced ids' logprobs, as the prompt logprobs of the continuation's last ids.
    wanted = [k for k in (params.logprobs, params.prompt_logprobs) if k is not None]
    p.prompt_logprobs = max(wanted) if wanted else None
    return p


def text_after(out: Outputs, ids: Sequence[int], params: Any, serving: Serving) -> str:
    """The text of ``ids``, continuing what the choice has streamed so far."""
    skip = params.skip_special_tokens
    decode = serving.model.tokenizer.decode
    whole = decode(out.ids + list(ids), skip_special_tokens=skip)
    return whole[len(out.text):] if whole.startswith(out.text) else decode(
        list(ids), skip_special_tokens=skip)


def forced_output(cut: Cut, out: Outputs, params: Any, serving: Serving,
                  request_id: str, prompt_text: str | None, prompt_ids: list[int]) -> Any:
    """The forced ids as an output of their own, sent at the cut."""
    from vllm.outputs import CompletionOutput, RequestOutput

    comp = CompletionOutput(index=out.index, text=text_after(out, cut.forced, params, serving),
                            token_ids=list(cut.forced), cumulative_logprob=None,
                            logprobs=None, finish_reason=None)
    return RequestOutput(request_id, prompt_text, prompt_ids, None, [comp], False)


def splice(res: Any, cut: Cut, out: Outputs, params: Any, serving: Serving) -> float:
    """Lead the continuation's first output with the forced ids, their text and logprobs;
    its prompt logprobs become the original prompt's. Returns the cumulative logprob the
    continuation's own starts from."""
    comp = res.outputs[0]
    comp.token_ids = list(cut.forced) + list(comp.token_ids)
    comp.text = text_after(out, cut.forced, params, serving) + comp.text
    base = out.cumulative or 0.0
    plps = res.prompt_logprobs
    if plps is not None and params.logprobs is not None and comp.logprobs is not None:
        forced = plps[len(plps) - len(cut.forced):]
        base += sum(lp[tok].logprob for lp, tok in zip(forced, cut.forced, strict=True))
        forced.extend(comp.logprobs)
        comp.logprobs = forced
    if comp.cumulative_logprob is not None:
        comp.cumulative_logprob += base
    # The original prompt's own prompt logprobs, when it never ran (a cut before it).
    prompt_len = len(plps) - len(cut.prefix) if plps is not None else 0
    res.prompt_logprobs = (plps[:prompt_len] if plps is not None and out.head is None
                           and params.prompt_logprobs is not None else None)
    return base


class Outputs:
    """The choice's outputs as the serving class asked for them (DELTA: as they come;
    CUMULATIVE: everything so far each time; FINAL_ONLY: everything, once), with the
    original request's prompt fields, whichever engine request made them."""

    def __init__(self, kind: Any, index: int) -> None:
        from vllm.sampling_params import RequestOutputKind

        self.kind, self.index, self.delta = kind, index, kind == RequestOutputKind.DELTA
        self.final_only = kind == RequestOutputKind.FINAL_ONLY
        self.ids: list[int] = []
        self.text = ""
        self.logprobs: Any = None
        self.cumulative: float | None = None
        self.head: Any = None  # the first output
        self.prompt_logprobs: Any = None

    def add(self, res: Any) -> list[Any]:
        comp = res.outputs[0]
        comp.index = self.index
        if self.head is None:
            self.head = res
            self.prompt_logprobs = res.prompt_logprobs
        elif not self.delta:  # every output carries them (the last one counts)
            res.prompt_logprobs = self.prompt_logprobs
        self.ids.extend(comp.token_ids)
        self.text += comp.text
        if comp.logprobs is not None and not self.delta:
            if self.logprobs is None:
                self.logprobs = comp.logprobs[:0]
            self.logprobs.extend(comp.logprobs)
        self.cumulative = comp.cumulative_logprob
        if self.delta:
            return [res]
        if self.final_only and not res.finished:
            return []
        whole = copy.copy(comp)
        whole.token_ids, whole.text = list(self.ids), self.text
        whole.logprobs = None if self.logprobs is None else self.logprobs[:]
        res.outputs = [whole]
        return [res]
