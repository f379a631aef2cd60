"""What goes over the wire, independent of sync or async I/O.

Request bodies for ``/v1/chat/completions`` and ``/v1/completions``, HTTP
answers and transport failures turned into :mod:`client.errors`, and the
``data:`` lines of a server-sent-event stream turned into JSON chunks. Both
clients call these, so they behave identically.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any, TypedDict

import httpx
from pydantic import BaseModel

from client.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    error_for_status,
)
from client.types import StreamEvent, Usage, UsageEvent, events_from_chunk

DONE = "[DONE]"

Messages = str | Sequence[Mapping[str, Any] | BaseModel]


class RequestFields(TypedDict, total=False):
    """Optional fields of ``chat`` and ``complete`` (None or absent: server default)."""

    model: str | None
    thinking_min: int | None
    thinking_max: int | None
    thinking_continuation: str | None
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    n: int | None
    stop: str | list[str] | None
    seed: int | None
    extra_body: Mapping[str, Any] | None
    timeout: float | None


class ChatFields(RequestFields, total=False):
    system: str | None


_BODY_FIELDS = ("model", "thinking_min", "thinking_max", "thinking_continuation", "max_tokens",
                "temperature", "top_p", "n", "stop", "seed")
_CALL_FIELDS = frozenset(_BODY_FIELDS) | {"extra_body", "timeout"}


def _check_names(fields: Mapping[str, Any], allowed: frozenset[str], method: str) -> None:
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise TypeError(f"{method}() got unexpected keyword argument(s): {', '.join(unknown)}; "
                        "pass server extras in extra_body={...}")


def _body(fields: Mapping[str, Any], default_model: str | None, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name in _BODY_FIELDS:
        value = fields.get(name)
        if name == "model" and value is None:
            value = default_model
        if value is not None:
            body[name] = value
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    body.update(fields.get("extra_body") or {})
    return body


def chat_messages(messages: Messages, system: str | None) -> list[dict[str, Any]]:
    """A string becomes one user message; ``system`` is put first when given."""
    if isinstance(messages, str):
        items: list[dict[str, Any]] = [{"role": "user", "content": messages}]
    else:
        items = [m.model_dump(exclude_none=True) if isinstance(m, BaseModel) else dict(m)
                 for m in messages]
    if system is not None:
        items.insert(0, {"role": "system", "content": system})
    if not items:
        raise ValueError("chat() needs at least one message")
    return items


def chat_body(messages: Messages, fields: Mapping[str, Any], default_model: str | None,
              stream: bool) -> dict[str, Any]:
    _check_names(fields, _CALL_FIELDS | {"system"}, "chat")
    body = {"messages": chat_messages(messages, fields.get("system"))}
    body.update(_body(fields, default_model, stream))
    return body


def completion_body(prompt: str | list[int], fields: Mapping[str, Any],
                    default_model: str | None, stream: bool) -> dict[str, Any]:
    _check_names(fields, _CALL_FIELDS, "complete")
    return {"prompt": prompt, **_body(fields, default_model, stream)}


# ------------------------------------------------------------------- answers
def request_id(headers: httpx.Headers) -> str | None:
    """The server's ``x-request-id`` (first value if the header repeats)."""
    values = headers.get_list("x-request-id")
    return values[0] if values else None


def retry_after(headers: httpx.Headers) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date), or None."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def status_error(response: httpx.Response, attempts: int) -> APIStatusError:
    """The exception for an error answer (its body must have been read)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return error_for_status(response.status_code, body, request_id=request_id(response.headers),
                            attempts=attempts, retry_after=retry_after(response.headers))


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise APIStatusError(f"the server sent invalid JSON (HTTP {response.status_code}): "
                             f"{response.text[:200]!r}", status=response.status_code,
                             request_id=request_id(response.headers)) from None


# Failures where the request never reached the server, or the server dropped an idle
# keep-alive connection before answering: sending it again is safe.
_RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
              httpx.RemoteProtocolError)


def transport_error(exc: httpx.TransportError, base_url: str,
                    attempts: int) -> APIConnectionError:
    """An httpx transport failure as an :class:`APIConnectionError` (or timeout)."""
    retryable = isinstance(exc, _RETRYABLE)
    if isinstance(exc, httpx.TimeoutException):
        phase = "connecting to" if isinstance(exc, httpx.ConnectTimeout) else "waiting for"
        return APITimeoutError(f"timed out {phase} {base_url} ({type(exc).__name__})",
                               attempts=attempts, retryable=retryable)
    detail = str(exc) or type(exc).__name__
    return APIConnectionError(f"cannot reach {base_url}: {detail}", attempts=attempts,
                              retryable=retryable)


# ----------------------------------------------------------------- streaming
def sse_data(line: str) -> str | None:
    """The payload of a ``data:`` line; None for comments, blank and other fields."""
    if not line.startswith("data:"):
        return None
    return line[5:].strip()


def stream_chunk(data: str, request_id: str | None) -> dict[str, Any]:
    """Decode one ``data:`` payload; an error sent mid-stream is raised."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise APIConnectionError(f"the server sent an invalid stream chunk: {data[:200]!r}",
                                 request_id=request_id) from None
    if isinstance(chunk, dict) and "error" in chunk:
        info = chunk["error"] if isinstance(chunk["error"], dict) else {}
        code = info.get("code")
        status = code if isinstance(code, int) and 400 <= code < 600 else 500
        raise error_for_status(status, chunk, request_id=request_id)
    if not isinstance(chunk, dict):
        raise APIConnectionError(f"unexpected stream chunk: {data[:200]!r}",
                                 request_id=request_id)
    return chunk


def not_ready(base_url: str, timeout: float, last: object) -> APITimeoutError:
    """``wait_ready`` gave up; ``last`` is the last Health or connection error."""
    state = getattr(last, "status", None) if not isinstance(last, Exception) else last
    return APITimeoutError(f"{base_url} was not ready after {timeout:g} s (last: {state})")


def stream_cut_short(base_url: str, request_id: str | None) -> APIConnectionError:
    return APIConnectionError(f"the stream from {base_url} ended before [DONE]",
                              request_id=request_id)


class StreamState:
    """What a stream has told so far: ids, and the usage once it arrives."""

    def __init__(self, response: httpx.Response, base_url: str) -> None:
        self.response = response
        self.base_url = base_url
        self.request_id = request_id(response.headers)
        self.id: str | None = None
        self.model: str | None = None
        self.usage: Usage | None = None
        self._consumed = False

    def _start(self) -> None:
        if self._consumed:
            raise RuntimeError("a stream can be iterated only once")
        self._consumed = True

    def _chunk(self, data: str) -> dict[str, Any]:
        chunk = stream_chunk(data, self.request_id)
        self.id = self.id or chunk.get("id")
        self.model = self.model or chunk.get("model")
        return chunk

    def _events(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        events = events_from_chunk(chunk)
        for event in events:
            if isinstance(event, UsageEvent):
                self.usage = event.usage
        return events
