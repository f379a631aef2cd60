"""The ``budget`` objects in responses built by vLLM's serving classes.

:func:`server.api.request_layer.track` fills ``BudgetRequest.budgets`` (choice index -> budget
object) from each finished choice's token ids; this module puts them where a client
finds them, streamed and not:

* chat and completions: ``choices[i].budget``, streamed in the chunk that carries the
  choice's ``finish_reason``; completions' usage also gets
  ``reasoning_tokens`` (vLLM's completion class has no reasoning parser);
* ``/v1/responses``: a top-level ``budget`` in the response object, streamed in the
  ``response.completed`` (or ``response.incomplete``) event's ``response``;
* ``/v1/messages`` (Anthropic): a top-level ``budget`` in the message, streamed in the
  ``message_delta`` event (the one with ``stop_reason`` and the final usage).

With ``thinking_early_stop``, every ``usage`` also gets ``probe_tokens``: the tokens its
answer probes generated, which are not completion tokens (:mod:`server.api.early_stop`).

Every SSE event also leaves here as one line of JSON (:func:`server.api.sse.one_line`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Callable
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute

from server.api import sse
from server.api.budget_request import BUDGET, BudgetRequest
from server.api.errors import CLIENT_CLOSED_REQUEST, APIError

Budgets = dict[int, dict]
# The endpoints whose answers gain a top-level ``budget``: path -> streamed events that
# carry the final object, and where in the event's data it goes (None: the data itself).
_TOP_LEVEL = {"/v1/responses": ({"response.completed", "response.incomplete"}, "response"),
              "/v1/messages": ({"message_delta"}, None)}
# The endpoints whose choices each gain a ``budget`` (streamed: in the chunk that carries
# the choice's finish_reason).
_CHOICES = frozenset({"/v1/chat/completions", "/v1/completions"})
_BUDGETED = _CHOICES | frozenset(_TOP_LEVEL)


def budgeted_router(router: APIRouter) -> APIRouter:
    """A copy of one of vLLM's routers whose generating routes answer with the ``budget``
    objects (:func:`with_budget`); other routes as they are."""
    out = APIRouter()
    for route in router.routes:
        if isinstance(route, APIRoute) and route.path in _BUDGETED and "POST" in route.methods:
            out.add_api_route(
                route.path, with_budget(route.endpoint, route.path),
                methods=list(route.methods), dependencies=route.dependencies,
                responses=route.responses, name=route.name, summary=route.summary,
                description=route.description, response_model=route.response_model,
                status_code=route.status_code, response_class=route.response_class)
        else:
            out.routes.append(route)
    return out


def with_budget(endpoint: Callable[..., Any], path: str) -> Callable[..., Any]:
    """Wrap one of vLLM's generating route functions so that its answer, a JSON or SSE
    response, carries the request's ``budget`` objects."""
    add = _add_to_choices if path in _CHOICES else _top_level_adder(path)

    @functools.wraps(endpoint)  # FastAPI reads the wrapped signature
    async def endpoint_with_budget(*args: Any, **kwargs: Any) -> Any:
        response = await endpoint(*args, **kwargs)
        if response is None:
            # vLLM's with_cancellation: the client left before a non-streamed answer (the
            # work is cancelled, its engine requests aborted). A 499, counted and logged
            # as such, rather than a 200 with a null body that nobody reads.
            raise APIError(CLIENT_CLOSED_REQUEST, "the client closed the request")
        budget = BUDGET.get()
        adds = add if budget is None or budget.early_stop is None else _with_probes(add, budget)
        if isinstance(response, StreamingResponse):
            response.body_iterator = _events(response.body_iterator, budget, adds, path)
        elif (isinstance(response, JSONResponse) and response.status_code == 200
              and budget is not None and budget.budgets):
            body = json.loads(response.body)
            adds(body, budget.budgets, finished_only=False)
            return JSONResponse(body, headers=_own_headers(response))
        return response

    return endpoint_with_budget


def _with_probes(add: Callable[..., None], budget: BudgetRequest) -> Callable[..., None]:
    """``add``, and ``usage.probe_tokens`` (thinking_early_stop's probes, which are not
    completion tokens) wherever the body carries a ``usage``."""

    def add_with_probes(body: dict, budgets: Budgets, finished_only: bool = True) -> None:
        add(body, budgets, finished_only)
        for holder in (body, body.get("response")):
            if isinstance(holder, dict) and isinstance(holder.get("usage"), dict):
                holder["usage"]["probe_tokens"] = budget.probe_tokens

    return add_with_probes


def _own_headers(response: JSONResponse) -> dict[str, str]:
    """The response's headers other than those a new JSONResponse computes itself."""
    return {k: v for k, v in response.headers.items()
            if k.lower() not in ("content-length", "content-type")}


def _top_level_adder(path: str) -> Callable[..., None]:
    events, where = _TOP_LEVEL[path]

    def add(body: dict, budgets: Budgets, finished_only: bool = True) -> None:
        if finished_only:  # a streamed event: only the final one gets it
            if body.get("type") not in events:
                return
            body = body.get(where) if where else body
            if not isinstance(body, dict):
                return
        # One generation per request on these surfaces; the last one made the answer.
        body["budget"] = budgets[max(budgets)]

    return add


async def _events(events: AsyncIterator[str | bytes], budget: BudgetRequest | None,
                  add: Callable[[dict, Budgets], None], path: str = "") -> AsyncIterator[str]:
    """vLLM's SSE events, one line of JSON each, with ``add`` applied to each event's
    data once budget objects exist, and the request deadline's error reported in the
    surface's own shape where vLLM 0.32 loses it: its Responses stream fails on its own
    error event (the stream just stopped), and its Messages stream reports the chat
    error chunk it could not parse instead of the error."""
    sent = 0
    try:
        async for event in events:
            if isinstance(event, bytes):
                event = event.decode()
            if budget is not None and budget.budgets:
                event = _edit(event, budget.budgets, add)
            if path == "/v1/messages" and budget is not None and budget.deadline_error \
                    and event.startswith("event: error"):
                event = _sse("error", {"type": "error", "error": {
                    "type": "timeout_error", "message": budget.deadline_error}})
            sent += 1
            yield sse.one_line(event)  # vLLM's JSON may carry raw U+2028 and the like
    except Exception as exc:
        if path != "/v1/responses" or budget is None or not budget.deadline_error or \
                getattr(exc, "http_status", None) != HTTPStatus.GATEWAY_TIMEOUT:
            raise
        yield sse.one_line(_sse("error", {  # OpenAI's Responses error event
            "type": "error", "code": "timeout_error", "message": budget.deadline_error,
            "param": None, "sequence_number": sent}))
    finally:
        await events.aclose()  # on disconnect too: vLLM's generator aborts the request


def _sse(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _edit(event: str, budgets: Budgets, add: Callable[[dict, Budgets], None]) -> str:
    """``event`` (optional ``event:`` line, one ``data:`` line) with its data edited."""
    at = 0 if event.startswith("data: ") else event.find("\ndata: ") + 1
    if at == 0 and not event.startswith("data: "):  # no data line at all
        return event
    head, data = event[:at], event[at + 6:]
    if not data.startswith("{"):
        return event
    try:
        body = json.loads(data)
    except ValueError:
        return event
    add(body, budgets)
    return head + "data: " + json.dumps(body, ensure_ascii=False,
                                        separators=(",", ":")) + "\n\n"


def _add_to_choices(body: dict, budgets: Budgets, finished_only: bool = True) -> None:
    for choice in body.get("choices") or ():
        if (choice.get("finish_reason") or not finished_only) and (
                choice.get("index") in budgets):
            choice["budget"] = budgets[choice["index"]]
    _add_reasoning_tokens(body, budgets)


def _add_reasoning_tokens(body: dict, budgets: Budgets) -> None:
    """vLLM's completions class has no reasoning parser: its usage gets ours. (The text
    stays vLLM's, thinking included, so that logprobs and offsets still line up.)"""
    usage = body.get("usage")
    if body.get("object") == "text_completion" and isinstance(usage, dict) and not usage.get(
            "completion_tokens_details"):
        usage["completion_tokens_details"] = {
            "reasoning_tokens": sum(b["thinking_tokens"] for b in budgets.values())}
