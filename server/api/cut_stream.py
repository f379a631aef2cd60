"""Cutting one choice's thinking from the API process: abort, continue, splice.

Shared by the two cuts decided outside the engine, ``thinking_deadline_ms``
(:mod:`server.api.deadline`) and ``thinking_early_stop`` (:mod:`server.api.early_stop`):
they differ in *when* they cut; *how* is this module. Once a cut
(:class:`server.budget.cut.Cut`) is decided after the choice's output ids so far, its
engine request is aborted by the caller and :func:`continue_cut` submits the
continuation: the prompt ids + the ids generated so far + the forced cut (the newline
rule, the end delimiter, the answer prefix, exactly as the machine forces them at
``thinking_max``), with no budget left to enforce, ``max_tokens``/``min_tokens`` reduced
by what is already generated, the same seed and sampling. With prefix caching the shared
prefix is not computed again. Its outputs are spliced into the choice's stream
(:class:`Outputs`, in the output kind the serving class asked for) as if one engine
request had made them; see :mod:`server.api.deadline` for the details.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

from server.api import fanout
from server.api.serving import Serving
from server.budget.cut import Cut, plan
from server.budget.machine import BudgetSpec, BudgetState, Phase

# Makes one choice's stream: (its params, its engine request id, its index in the
# response, its index within this prompt's choices).
ChoiceMaker = Callable[[Any, str, int, int], AsyncIterator[Any]]


def per_choice(params: Any, spec: BudgetSpec, request_id: str, first_choice: int,
               make: ChoiceMaker) -> AsyncIterator[Any]:
    """One prompt's ``n`` choices, each its own engine request (so that each is cut
    alone), seeded as vLLM seeds the children of an ``n > 1`` request, as one stream."""
    from vllm.sampling_params import RequestOutputKind

    from server.engine.logits_processor import budget_extra_args

    n = params.n
    if n == 1:
        return make(params, request_id, first_choice, 0)
    children = []
    for i in range(n):
        child = copy.copy(params)
        child.n = 1
        if params.seed is not None:
            child.seed = params.seed + i  # as vLLM seeds the children of an n > 1 request
        if spec.active:
            child.extra_args = {**params.extra_args,
                                **budget_extra_args(spec, child.seed if child.seed is not None
                                                    else fanout.fresh_seed())}
        children.append(make(child, fanout.child_id(request_id, i), first_choice + i, i))
    return fanout.as_one(children, params.output_kind == RequestOutputKind.FINAL_ONLY)


def cut_after(spec: BudgetSpec, state: BudgetState, ids: list[int], params: Any,
              reason: str = "deadline") -> Cut | None:
    """The cut after ``ids``, if thinking can be cut there and the answer gets room.
    ``state`` (the machine fed ``ids``) rules out most outputs without a replay."""
    if state.phase != Phase.THINKING or state.thinking < (spec.thinking_min or 0):
        return None
    if params.max_tokens is None or (  # no room even without a newline: skip the replay
            params.max_tokens - len(ids) < len(spec.end_ids) + len(spec.answer_prefix_ids) + 1):
        return None
    cut = plan(spec, ids, reason)
    if cut is None or params.max_tokens is None or (
            params.max_tokens - len(ids) < len(cut.forced) + 1):
        return None
    return cut


async def continue_cut(original: Callable[..., AsyncIterator[Any]], serving: Serving,
                       prompt: dict, params: Any, cut: Cut, out: Outputs, request_id: str,
                       args: tuple, kwargs: dict) -> AsyncIterator[Any]:
    """The choice's outputs after ``cut`` (its engine request already aborted): the
    forced ids, then the continuation's outputs, under the original request's id and
    prompt. Closing this generator aborts the continuation."""
    cont = original(*continuation(prompt, params, cut, serving), f"{request_id}-cut",
                    *args, **cut_kwargs(kwargs))
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


async def cancel(task: asyncio.Future) -> None:
    """Cancel a pending read of an engine stream (vLLM aborts the request) and wait."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):  # abandoned: its end too
        await task


def continuation(prompt: dict, params: Any, cut: Cut, serving: Serving) -> tuple[dict, Any]:
    """The continuation request's prompt (ids + output + forced cut) and sampling params."""
    from vllm.inputs.engine import tokens_input
    from vllm.sampling_params import RequestOutputKind

    from server.engine.logits_processor import EXTRA_ARGS_KEY

    ids = list(prompt["prompt_token_ids"]) + list(cut.prefix)
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
    return tokens_input(ids, cache_salt=prompt.get("cache_salt")), p


def cut_kwargs(kwargs: dict) -> dict:
    """engine.generate's keyword arguments for the continuation: its prompt ends after the
    end delimiter, so a grammar constrains from its first token."""
    out = dict(kwargs)
    if "reasoning_ended" in out:
        out["reasoning_ended"] = True
    return out


def forced_text(cut: Cut, out: Outputs, params: Any, serving: Serving) -> str:
    """The text of the forced ids, continuing what the choice has streamed so far."""
    skip = params.skip_special_tokens
    decode = serving.model.tokenizer.decode
    full = decode(list(cut.prefix), skip_special_tokens=skip)
    return full[len(out.text):] if full.startswith(out.text) else decode(
        list(cut.forced), skip_special_tokens=skip)


def forced_output(cut: Cut, out: Outputs, params: Any, serving: Serving,
                   request_id: str, prompt_text: str | None, prompt_ids: list[int]) -> Any:
    """The forced ids as an output of their own, sent at the cut."""
    from vllm.outputs import CompletionOutput, RequestOutput

    comp = CompletionOutput(index=out.index, text=forced_text(cut, out, params, serving),
                            token_ids=list(cut.forced), cumulative_logprob=None,
                            logprobs=None, finish_reason=None)
    return RequestOutput(request_id, prompt_text, prompt_ids, None, [comp], False)


def splice(res: Any, cut: Cut, out: Outputs, params: Any, serving: Serving) -> float:
    """Lead the continuation's first output with the forced ids, their text and logprobs;
    its prompt logprobs become the original prompt's. Returns the cumulative logprob the
    continuation's own starts from."""
    comp = res.outputs[0]
    comp.token_ids = list(cut.forced) + list(comp.token_ids)
    comp.text = forced_text(cut, out, params, serving) + comp.text
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
