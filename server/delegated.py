"""Requests served by vLLM's serving classes, with what s1-serve adds around them.

vLLM's chat, completions, Responses and Anthropic Messages classes build the
response; this module supplies the rest, as the native path does:

* :func:`budget_dependency` (on vLLM's routers) and :func:`delegate` (chat and
  completions that use a vLLM-only field): 503 while loading, the field policy
  (:mod:`server.field_policy`), the budget (:mod:`server.budget_request`), the 429
  admission check;
* :func:`track`, around the engine stream of each such request: exact accounting
  replayed from the token ids (each choice's ``budget`` object, the budget metrics,
  time to first token, latency), the request deadline (504), the admission ticket;
* the ``budget`` objects it fills go into the responses in :mod:`server.budget_objects`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

from fastapi import Request
from pydantic import ValidationError

from server import budget_objects, field_policy, metrics
from server.budget import BudgetSpec, BudgetState
from server.budget_request import BUDGET, BUDGET_KEYS, BudgetRequest, budget_from_body
from server.errors import APIError, bad_request
from server.interventions import from_ids
from server.serving import Serving, Ticket, deadline_for, next_before

# vLLM's request model of each generation route it serves for us.
_SURFACES = {"/v1/responses": ("openai.responses.protocol", "ResponsesRequest"),
             "/v1/messages": ("anthropic.protocol", "AnthropicMessagesRequest")}


def _serving(request: Request) -> Serving:
    from server.routes import get_serving

    return get_serving(request)


def _model(module: str, name: str) -> type:
    import importlib

    return getattr(importlib.import_module("vllm.entrypoints." + module), name)


async def budget_dependency(request: Request) -> BudgetRequest | None:
    """For vLLM's routers: 503 while loading, fields, the budget, admission (429)."""
    request.state.vllm_served = True
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
    if path in _SURFACES:
        known = field_policy.declared(_model(*_SURFACES[path]))
        field_policy.check(path, body, known | {"reasoning_effort"})
    budget = budget_from_body(body, serving.settings.reasoning_effort_budgets)
    serving.admit(budget.n).release()  # the 429 check; the engine hook holds the real ticket
    BUDGET.set(budget)
    return budget


async def delegate(request: Request, kind: str) -> Any:
    """Serve a chat or completions request with vLLM's serving class, budgeted."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest
    from vllm.exceptions import GracefulHTTPError

    model = ChatCompletionRequest if kind == "chat" else CompletionRequest
    budget = await budget_dependency(request)
    body = await request.json()
    field_policy.check(request.url.path, body, field_policy.declared(model))
    clean = {k: v for k, v in body.items() if k not in BUDGET_KEYS}
    try:
        vreq = model.model_validate(clean)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err.get("loc", ())]
        raise bad_request(f"{'.'.join(loc) or 'body'}: {err['msg']}",
                          loc[0] if loc else None) from None
    state = request.app.state
    try:
        if kind == "chat":
            result = await state.openai_serving_chat.create_chat_completion(vreq, request)
        else:
            result = await state.openai_serving_completion.create_completion(vreq, request)
    except GracefulHTTPError as exc:  # the deadline, from track()
        raise APIError(int(exc.http_status), exc.message) from None
    except BudgetRejected as exc:
        raise exc.error from None
    return budget_objects.vllm_response(result, budget)


class BudgetRejected(ValueError):
    """A budget that does not fit this request, found once vLLM rendered the prompt.

    A ValueError, so vLLM's serving classes answer it as a bad request where they catch
    one; :func:`delegate` turns it into our 400 where they let it through."""

    def __init__(self, error: APIError) -> None:
        super().__init__(error.message)
        self.error = error


async def track(stream: AsyncIterator[Any], req: BudgetRequest, spec: BudgetSpec | None,
                n: int, serving: Serving, delta: bool, first_choice: int = 0
                ) -> AsyncIterator[Any]:
    """The engine stream of one prompt's ``n`` choices, accounted, under the deadline,
    holding an admission ticket while it runs.

    ``delta``: outputs carry new token ids only (streaming); otherwise all of them.
    ``first_choice``: the response's index of this prompt's first choice.
    """
    from vllm.exceptions import GracefulHTTPError

    ticket = Ticket(serving, n)
    started = time.perf_counter()
    first_at: float | None = None
    ids: dict[int, list[int]] = {}
    states: dict[int, BudgetState | None] = {}
    timeout = serving.settings.request_timeout_s
    deadline = deadline_for(timeout)
    try:
        while True:
            try:
                output = await next_before(stream, deadline)
            except StopAsyncIteration:
                break
            except TimeoutError:
                req.timed_out = True
                raise GracefulHTTPError(
                    f"the request ran past its {timeout:g} s deadline and was aborted; ask "
                    "for fewer tokens or raise the server's --request-timeout-s",
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
        ticket.release()
        await stream.aclose()  # aborts the engine request if it is still running
        if first_at is not None:
            metrics.TTFT.observe(first_at - started)
        metrics.LATENCY.observe(time.perf_counter() - started)
        for index, state in states.items():
            metrics.record_choice(state, len(ids[index]))


def _account(req: BudgetRequest, spec: BudgetSpec | None, index: int, ids: list[int],
             serving: Serving) -> BudgetState | None:
    if spec is None:
        return None
    state, details = from_ids(spec, ids, serving.model.tokenizer)
    req.budgets[index] = details
    return state
