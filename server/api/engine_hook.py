"""vLLM's own OpenAI/Anthropic serving layer on our in-process engine, with budgets.

Every surface is vLLM 0.32's: the chat and completion serving classes (logprobs,
structured outputs, tools, echo, ...), Responses, Anthropic Messages and tokenization,
with their routers. Only what s1-serve adds is here:

* the budget (:mod:`server.api.budget_request`), read from the body on every surface and
  carried to the engine call in a context variable (:mod:`server.api.request_layer` reads it
  and adds accounting, ``budget`` objects, metrics and the deadline);
* a hook on ``engine.generate`` (:func:`install_hook`) that turns it into the
  processor's ``SamplingParams.extra_args`` with a decision seed per choice and
  applies the answer reserve to ``max_tokens``, and puts each choice under its thinking
  deadline (:mod:`server.api.deadline`) or early stop (:mod:`server.api.early_stop`)
  when it has one. The prompt's token ids are known
  there, so whether the prompt opens the thinking block is exact. Constrained
  answers (structured outputs, named or required tool calls) get no forced answer
  prefix, so the grammar is not broken;
* (the chat template that opens the thinking block, and vLLM's reasoning parser ``s1``,
  are vLLM arguments: :func:`server.engine.loader.configure_args`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

from server.api import deadline, early_stop, fanout, limits
from server.api.budget_request import BUDGET, BudgetRequest
from server.api.errors import APIError
from server.api.request_layer import budget_rejected, track
from server.api.serving import Serving
from server.budget.machine import BudgetError, BudgetSpec

logger = logging.getLogger(__name__)

# --------------------------------------------------------------- the budget
def _prompt_opens(ft: Any, ids: list[int]) -> bool:
    from server.engine.reasoning_parser import _last

    if not ft.fmt.start:
        return True
    start = _last(ids, ft.start_ids)
    return start >= 0 and start > _last(ids, ft.end_ids)


def _prompt_closes(ft: Any, ids: list[int], tokenizer: Any) -> bool:
    """The prompt ends right after a closed thinking block (see FormatTokens)."""
    from server.engine.reasoning_parser import _last

    end = _last(ids, ft.end_ids)
    return end >= 0 and end > _last(ids, ft.start_ids) and not tokenizer.decode(
        ids[end:]).strip()


def apply_budget(serving: Serving, req: BudgetRequest, prompt: Any,
                 params: Any) -> BudgetSpec | None:
    """Budget -> ``params.extra_args``; the answer reserve -> ``params.max_tokens``.

    Returns the budget spec (active or not; None without a thinking format)."""
    from vllm.renderers.inputs.preprocess import extract_prompt_components

    from server.engine.logits_processor import budget_extra_args

    if req.seed is not None and params.seed is None:
        params.seed = req.seed  # our extension on surfaces without a seed field
    # vLLM's Anthropic class turns thinking.budget_tokens into vLLM's own budget field;
    # our processor enforces it (as thinking_max), vLLM's would refuse it without a
    # --reasoning-config.
    params.thinking_token_budget = None
    ft = serving.model.format_tokens
    ids = list(extract_prompt_components(serving.engine.model_config, prompt).token_ids or [])
    closed = ft is not None and _prompt_closes(ft, ids, serving.model.tokenizer)
    try:
        lo, hi = limits.resolve_budget(req.thinking_min,
                                       None if closed and req.soft_max else req.thinking_max,
                                       serving.settings, closed)
        limits.check_waits(req.thinking_waits, serving.settings, closed)
    except APIError as exc:
        raise budget_rejected(exc) from None
    refused = (deadline.refusal(req, ft is not None, prompt)  # no format, or not token ids
               or early_stop.refusal(req, ft is not None, prompt, serving.model.max_model_len))
    if refused is not None:
        raise budget_rejected(refused)
    if closed:  # the template closed the block: nothing to cut
        req.thinking_deadline_ms = req.early_stop = None
    waits = req.thinking_waits
    if ft is None:
        if (lo is not None or hi is not None or waits) and not req.soft_max:
            raise budget_rejected(APIError(
                400, "this model has no thinking format, so thinking_min/thinking_max/"
                "thinking_waits cannot be enforced; start the server with --thinking-format",
                "thinking_max" if hi is not None else "thinking_min" if lo is not None
                else "thinking_waits"))
        return None
    room = serving.model.max_model_len - len(ids)
    if req.soft_max and hi is not None:
        # An effort level is our reading of a hint: it leaves the answer room, in the
        # context and within the client's max_tokens (one answer token at least).
        forced = len(ft.end_ids) + len(ft.answer_prefix_ids) + 1
        hi = min(hi, max(0, room // 2))
        if req.max_tokens is not None:
            hi = min(hi, max(0, req.max_tokens - forced))
            if req.max_tokens < forced:  # not even a forced end fits: no budget at all
                hi = None
        lo = None if lo is None or hi is None else min(lo, hi)
    cont = req.thinking_continuation
    if cont is None:  # '' is a request too: suppress the end attempt only
        cont = serving.settings.thinking_continuation
    try:
        spec = ft.spec(thinking_min=lo, thinking_max=hi, thinking_waits=waits or None,
                       continuation_ids=serving.continuation_ids(cont),
                       prompt_opens=_prompt_opens(ft, ids),
                       # only its ending matters (does thinking start on a new line?)
                       prompt_text=serving.model.tokenizer.decode(ids[-4:]))
    except BudgetError as exc:  # e.g. a continuation containing the end delimiter
        raise budget_rejected(APIError(400, str(exc), exc.param)) from None
    if params.structured_outputs is not None:
        spec = dataclasses.replace(spec, answer_prefix_ids=())  # the grammar owns the answer
    if req.max_tokens is not None or spec.active:  # else vLLM's own default stands
        try:
            params.max_tokens = limits.max_tokens_for(req.max_tokens, spec, room,
                                                      serving.model.max_model_len)
        except APIError as exc:
            raise budget_rejected(exc) from None
    if spec.active:
        seed = params.seed if params.seed is not None else fanout.fresh_seed()
        params.extra_args = {**(params.extra_args or {}), **budget_extra_args(spec, seed)}
    req.spec = spec  # for the reasoning parser's count (server.engine.reasoning_parser)
    return spec


def install_hook(engine: Any, serving: Serving) -> None:
    """Wrap ``engine.generate``: requests from vLLM's serving layer get the budget,
    their own decision seed per choice, accounting and the deadline."""
    from vllm.sampling_params import RequestOutputKind


    original = engine.generate

    def generate(prompt: Any, sampling_params: Any, request_id: str, *args: Any,
                 **kwargs: Any) -> AsyncIterator[Any]:
        req = BUDGET.get()
        if req is None or req.beam_search:
            # No budget dependency ran; or beam search, whose one-token steps must stay
            # as vLLM made them (a budget with it is refused up front).
            return original(prompt, sampling_params, request_id, *args, **kwargs)
        spec = apply_budget(serving, req, prompt, sampling_params)
        n = sampling_params.n
        first_choice = req.calls * n
        if req.early_stop is not None and spec is not None:
            # Each choice probed and cut where its answer settled (server.api.early_stop),
            # and under its deadline if it has one too.
            stream = early_stop.generate(original, serving, req, spec, prompt,
                                         sampling_params, request_id, first_choice, args,
                                         kwargs)
        elif req.thinking_deadline_ms is not None and spec is not None:
            # Each choice under the deadline, cut from here (server.api.deadline).
            stream = deadline.generate(original, serving, req, spec, prompt, sampling_params,
                                       request_id, first_choice, args, kwargs)
        elif fanout.needs_fanout(spec is not None and spec.active, sampling_params.seed, n):
            # No client seed here (needs_fanout): each child gets a fresh decision seed.
            children = [original(prompt, fanout.child_params(sampling_params, i, spec),
                                 fanout.child_id(request_id, i), *args, **kwargs)
                        for i in range(n)]
            stream = fanout.as_one(children, sampling_params.output_kind
                                   == RequestOutputKind.FINAL_ONLY)
        else:
            stream = original(prompt, sampling_params, request_id, *args, **kwargs)
        delta = sampling_params.output_kind == RequestOutputKind.DELTA
        req.calls += 1
        return track(stream, req, spec, n, serving, delta, first_choice)

    engine.generate = generate
