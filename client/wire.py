"""What goes over the wire, independent of sync or async I/O.

Request bodies for ``/v1/chat/completions`` and ``/v1/completions``, HTTP
answers and transport failures turned into :mod:`client.errors`, the events of a
server-sent-event stream (parsed by httpx-sse) turned into JSON chunks, and the
bookkeeping of the retry loop and of ``wait_ready``. Both clients call these and
keep only their I/O (plain or awaited), so they behave identically.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any, TypedDict

import httpx
from httpx_sse import ServerSentEvent, SSEError
from pydantic import BaseModel

from client.config import Options, RetryPolicy, log_retry
from client.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    S1Error,
    error_for_status,
)
from client.types import Health, StreamEvent, Usage, UsageEvent, events_from_chunk

DONE = "[DONE]"

Messages = str | Sequence[Mapping[str, Any] | BaseModel]


class RequestFields(TypedDict, total=False):
    """Optional fields of ``chat`` and ``complete`` (None or absent: server default)."""

    model: str | None
    thinking_min: int | None
    thinking_max: int | None
    thinking_waits: int | None
    thinking_continuation: str | None
    thinking_deadline_ms: int | None
    thinking_early_stop: Mapping[str, int] | None  # {"every": k, "agree": m}
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


_BODY_FIELDS = ("model", "thinking_min", "thinking_max", "thinking_waits",
                "thinking_continuation", "thinking_deadline_ms", "thinking_early_stop",
                "max_tokens", "temperature",
                "top_p", "n", "stop", "seed")
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


class ClientBase:
    """Settings and the HTTP connection pool of a client (see :class:`client.Client`)."""

    _http_class: type[httpx.Client] | type[httpx.AsyncClient]

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 model: str | None = None, timeout: float | httpx.Timeout | None = 600.0,
                 connect_timeout: float = 5.0, max_retries: int = 3,
                 backoff_base: float = 0.5, backoff_max: float = 8.0,
                 headers: dict[str, str] | None = None,
                 http_client: httpx.Client | httpx.AsyncClient | None = None) -> None:
        self.options = Options.build(base_url, api_key, model, timeout, connect_timeout,
                                     max_retries, backoff_base, backoff_max, headers)
        self._owns_http = http_client is None
        self.http = http_client or self._http_class(timeout=self.options.timeout)

    @property
    def base_url(self) -> str:
        return self.options.base_url


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


def health_body(response: httpx.Response) -> Any:
    """``/health``'s body: s1-serve's JSON while it loads or after its engine died; vLLM's
    own ``/health`` (s1-serve's once loaded, and stock ``vllm serve``'s) has an empty
    body, 200 or 503."""
    if not response.content.strip():
        return {"status": "ok" if response.status_code == 200 else "dead"}
    return json_body(response)


def answered(response: httpx.Response, accept: tuple[int, ...]) -> bool:
    """True when ``response`` is the answer (success, or a status the caller takes)."""
    return response.status_code < 400 or response.status_code in accept


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


@contextlib.contextmanager
def transport_errors(base_url: str, attempts: int) -> Iterator[None]:
    """Raise httpx's transport failures (and a body that is no event stream) as ours."""
    try:
        yield
    except httpx.TransportError as exc:
        raise transport_error(exc, base_url, attempts) from exc
    except SSEError as exc:
        raise APIConnectionError(f"{base_url} did not answer with an event stream: {exc}",
                                 attempts=attempts) from exc


class Retrying:
    """The attempts of one request under a :class:`RetryPolicy` (both clients' loop)."""

    def __init__(self, policy: RetryPolicy, method: str, path: str) -> None:
        self.policy, self.method, self.path = policy, method, path
        self.attempt = 1

    def wait(self, error: S1Error) -> float:
        """Seconds to wait before the next attempt (logged); ``error`` is raised when
        there is none."""
        wait = self.policy.wait(self.attempt, error)
        if wait is None:
            raise error
        log_retry(self.method, self.path, self.attempt, self.policy.max_retries + 1, wait,
                  error)
        self.attempt += 1
        return wait


class ReadyWait:
    """``wait_ready``'s bookkeeping: is the model loaded, and how long to wait if not."""

    def __init__(self, base_url: str, timeout: float, interval: float) -> None:
        self.base_url, self.timeout, self.interval = base_url, timeout, interval
        self.deadline = time.monotonic() + timeout
        self.last: Health | APIConnectionError | None = None

    def ready(self, answer: Health | APIConnectionError) -> bool:
        """Take a ``/health`` answer (a connection failure counts as not ready yet)."""
        self.last = answer
        return isinstance(answer, Health) and answer.ok

    def next_wait(self) -> float:
        """Seconds until the next look; APITimeoutError when that is past the deadline."""
        if time.monotonic() + self.interval > self.deadline:
            raise not_ready(self.base_url, self.timeout, self.last)
        return self.interval


# ----------------------------------------------------------------- streaming
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
    """What a stream has told so far: ids, and the usage once it arrives. The clients'
    ``iter_raw`` feed it every event (:meth:`_take`) and call :meth:`_finish` at the end."""

    def __init__(self, response: httpx.Response, base_url: str) -> None:
        self.response = response
        self.base_url = base_url
        self.request_id = request_id(response.headers)
        self.id: str | None = None
        self.model: str | None = None
        self.usage: Usage | None = None
        self._consumed = False
        self._done = False

    def _start(self) -> None:
        if self._consumed:
            raise RuntimeError("a stream can be iterated only once")
        self._consumed = True

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return transport_errors(self.base_url, 1)

    def _take(self, event: ServerSentEvent) -> dict[str, Any] | None:
        """The JSON chunk of one event; None for ``[DONE]`` and what follows it (read on
        to the end all the same, so that the connection can be reused)."""
        if event.data == DONE:
            self._done = True
            return None
        if self._done or not event.data:
            return None
        return self._chunk(event.data)

    def _finish(self) -> None:
        if not self._done:
            raise stream_cut_short(self.base_url, self.request_id)

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
