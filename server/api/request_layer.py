"""What s1-serve adds around vLLM's serving classes, on every generating surface.

vLLM's routers and serving classes (chat, completions, Responses, Anthropic Messages,
batched chat, tokenization) answer every request; this module supplies the rest:

* :func:`budget_dependency`, a dependency on each of vLLM's routes: 503 while loading,
  the field policy (:mod:`server.api.field_policy`), the server's request limits, the budget
  (:mod:`server.api.budget_request`) and admission: the request's ticket is taken here, in
  one step with the check (no await between them), and held until its response has been
  sent (:class:`ReleaseTickets` releases it), so the in-flight limits hold
  however many requests arrive at once;
* :func:`track`, around the engine stream of each such request: exact accounting
  replayed from the token ids (each choice's ``budget`` object, the budget metrics,
  time to first token, latency) and the request deadline (504); a choice whose thinking
  ``thinking_deadline_ms`` (:mod:`server.api.deadline`) or ``thinking_early_stop``
  (:mod:`server.api.early_stop`) cut is accounted with the cut's spec;
* the ``budget`` objects it fills go into the responses in :mod:`server.api.budget_objects`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

from fastapi import Request

from server.api import deadline, early_stop, field_policy, limits, metrics
from server.api.budget_request import BUDGET, BudgetRequest, budget_from_body
from server.api.errors import APIError, bad_request
from server.api.serving import Serving, StreamDeadline
from server.budget.cut import as_cut
from server.budget.interventions import from_ids
from server.budget.machine import BudgetSpec, BudgetState

# vLLM's request model of each generation route.
_SURFACES = {
    "/v1/chat/completions": ("openai.chat_completion.protocol", "ChatCompletionRequest"),
    "/v1/chat/completions/batch": ("openai.chat_completion.protocol",
                                   "BatchChatCompletionRequest"),
    "/v1/completions": ("openai.completion.protocol", "CompletionRequest"),
    "/v1/responses": ("openai.responses.protocol", "ResponsesRequest"),
    "/v1/messages": ("anthropic.protocol", "AnthropicMessagesRequest"),
}
# Where the request state keeps the admission ticket (released by ReleaseTickets).
TICKET = "s1_ticket"


def _serving(request: Request) -> Serving:
    from server.api.routes import get_serving

    return get_serving(request)


def _model(module: str, name: str) -> type:
    import importlib

    return getattr(importlib.import_module("vllm.entrypoints." + module), name)


async def budget_dependency(request: Request) -> BudgetRequest | None:
    """For vLLM's routers: 503 while loading, fields, limits, the budget, admission."""
    serving = _serving(request)
    try:
        body = await request.json()
    except ValueError:
        return None  # vLLM's router answers the malformed body
    if not isinstance(body, dict):
        return None
    path = request.url.path
    tokens = body.get("tokens")
    if path == "/detokenize" and isinstance(tokens, list):
        # vLLM's tokenizer call raises OverflowError (a 500) on ids past 2**32.
        size = serving.model.vocab_size
        if any(not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < size
               for t in tokens):
            raise bad_request(f"tokens must be token ids in [0, {size})", "tokens")
    if path not in _SURFACES:
        return None
    if path == "/v1/responses":
        _check_tool_outputs(body.get("input"))
    if body.get("structured_outputs") is not None and \
            not isinstance(body["structured_outputs"], dict):
        # vLLM 0.32's chat and completions validators call .get() on it before pydantic
        # checks its type: an AttributeError, a 500.
        raise bad_request("structured_outputs must be an object", "structured_outputs")
    known = field_policy.declared(_model(*_SURFACES[path]))
    field_policy.check(path, body, known | {"reasoning_effort"},
                       strict=serving.settings.reject_unknown_fields)
    _check_limits(body, serving)
    budget = budget_from_body(body, serving.settings.reasoning_effort_budgets)
    limits.check_waits(budget.thinking_waits, serving.settings)  # same 400 on every surface
    arrived = getattr(request.state, deadline.ARRIVAL, None)  # the front's, when it ran
    budget.arrival = deadline.now() if arrived is None else arrived
    deadline.check(budget.thinking_deadline_ms, serving.settings)
    early_stop.check(budget.early_stop, serving.settings)
    if body.get("use_beam_search") is True:
        s = serving.settings
        if budget.asked or s.default_thinking_min is not None or \
                s.default_thinking_max is not None:
            raise bad_request("beam search cannot be combined with a thinking budget (it "
                              "runs one-token steps that a budget cannot follow); drop "
                              "use_beam_search or the budget (the server's default "
                              "budgets count too)", "use_beam_search")
        budget.beam_search = True
    request.scope["state"][TICKET] = serving.admit(budget.n)  # 429 when full
    BUDGET.set(budget)
    return budget


def _check_tool_outputs(items: Any) -> None:
    """vLLM 0.32's Responses path hands a tool call's output given as a list of content
    parts to its chat parser as objects, where that parser asserts on dicts (a 500): say
    what works instead."""
    if not isinstance(items, list):
        return
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("type") in (
                "function_call_output", "custom_tool_call_output") and isinstance(
                item.get("output"), list):
            raise bad_request(f"input[{i}].output: this server takes a tool call's output "
                              "as a string; send its text instead of a list of content "
                              "parts", "input")


def _check_limits(body: dict, serving: Serving) -> None:
    """The server's limits on a request's size (n, messages, stop strings, logit_bias)."""
    s = serving.settings
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > s.max_n:
        raise bad_request(f"n={n} is above this server's limit {s.max_n}", "n")
    messages = body.get("messages")
    if isinstance(messages, list) and len(messages) > s.max_messages:
        raise bad_request(f"{len(messages)} messages; at most {s.max_messages} are "
                          "accepted", "messages")
    stop = body.get("stop", body.get("stop_sequences"))
    if isinstance(stop, str | list):
        limits.stop_strings(stop, s)
    bias = body.get("logit_bias")
    if isinstance(bias, dict):
        limits.logit_bias(bias, serving.model.vocab_size, s.max_logit_bias)


class ReleaseTickets:
    """Pure ASGI middleware (streams and disconnects pass untouched): releases the request's
    admission ticket once its whole response, a stream too, has been sent or the client
    has gone."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            ticket = scope.get("state", {}).pop(TICKET, None)
            if ticket is not None:
                ticket.release()


def budget_rejected(error: APIError) -> Exception:
    """A budget that does not fit this request, found once vLLM rendered the prompt, as
    vLLM's own validation error: its serving classes answer it as a 400 naming the
    parameter, and the app's handler does where they let it through."""
    from vllm.exceptions import VLLMValidationError

    return VLLMValidationError(error.message, parameter=error.param)


async def track(stream: AsyncIterator[Any], req: BudgetRequest, spec: BudgetSpec | None,
                n: int, serving: Serving, delta: bool, first_choice: int = 0
                ) -> AsyncIterator[Any]:
    """The engine stream of one prompt's ``n`` choices, accounted, under the deadline.

    ``delta``: outputs carry new token ids only (streaming); otherwise all of them.
    ``first_choice``: the response's index of this prompt's first choice.
    """
    from vllm.exceptions import GracefulHTTPError

    started = time.perf_counter()
    first_at: float | None = None
    ids: dict[int, list[int]] = {}
    states: dict[int, BudgetState | None] = {}
    timeout = serving.settings.request_timeout_s
    deadline = StreamDeadline(timeout)
    try:
        while True:
            try:
                output = await deadline.next(stream)
            except StopAsyncIteration:
                break
            except TimeoutError:
                req.timed_out = True
                req.deadline_error = (
                    f"the request ran past its {timeout:g} s deadline and was aborted; ask "
                    "for fewer tokens or raise the server's --request-timeout-s")
                raise GracefulHTTPError(req.deadline_error,
                                        HTTPStatus.GATEWAY_TIMEOUT) from None
            for comp in output.outputs:
                got = ids.setdefault(comp.index, [])
                if delta:
                    got.extend(comp.token_ids)
                else:
                    got[:] = comp.token_ids
                if got and first_at is None:
                    first_at = time.perf_counter()
                if comp.finish_reason is not None and comp.index not in states:
                    states[comp.index] = _account(req, spec, first_choice + comp.index, got,
                                                  serving)
            yield output
    finally:
        deadline.close()
        await stream.aclose()  # aborts the engine request if it is still running
        if first_at is not None:
            metrics.TTFT.observe(first_at - started)
        metrics.LATENCY.observe(time.perf_counter() - started)
        for index, state in states.items():
            cut = req.cuts.get(first_choice + index)
            metrics.record_choice(state, len(ids[index]), cut.reason if cut else None)


def _account(req: BudgetRequest, spec: BudgetSpec | None, index: int, ids: list[int],
             serving: Serving) -> BudgetState | None:
    if spec is None:
        return None
    cut = req.cuts.get(index)
    state, details = from_ids(cut.spec if cut else spec, ids, serving.model.tokenizer)
    if cut is not None:
        details = as_cut(details, spec, cut.reason)
    details["deadline"] = req.thinking_deadline_ms
    early = req.early_stop
    details["early_stop"] = {"every": early[0], "agree": early[1]} if early else None
    details["probes"] = req.probes.get(index) if early else None
    req.budgets[index] = details
    return state
