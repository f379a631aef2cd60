"""The blocking client: :class:`Client` and its :class:`Stream` of events.

One ``httpx.Client`` per instance, so connections are kept alive and reused
across calls; close it with ``close()`` or a ``with`` block. Retries follow
:class:`client.config.RetryPolicy`; a stream is retried only until its
response starts, never after events have been handed out.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Literal, Unpack, overload

import httpx
from httpx_sse import EventSource

from client.errors import APIConnectionError, S1Error
from client.types import ChatResult, CompletionResult, Health, ModelInfo, StreamEvent
from client.wire import (
    ChatFields,
    ClientBase,
    Messages,
    ReadyWait,
    RequestFields,
    Retrying,
    StreamState,
    answered,
    chat_body,
    completion_body,
    health_body,
    json_body,
    request_id,
    status_error,
    transport_errors,
)


class Stream(StreamState):
    """Events of one streamed request; iterate once. ``usage`` is set at the end."""

    def iter_raw(self) -> Iterator[dict[str, Any]]:
        """The decoded JSON chunks as the server sent them (``[DONE]`` excluded)."""
        self._start()
        try:
            with self._errors():
                for event in EventSource(self.response).iter_sse():
                    chunk = self._take(event)
                    if chunk is not None:
                        yield chunk
        finally:
            self.close()
        self._finish()

    def __iter__(self) -> Iterator[StreamEvent]:
        for chunk in self.iter_raw():
            yield from self._events(chunk)

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client(ClientBase):
    """Blocking client for an s1-serve server.

    ``base_url`` defaults to ``$S1_BASE_URL`` or http://127.0.0.1:8000, ``api_key`` to
    ``$S1_API_KEY``. ``timeout`` bounds each request (seconds; generation can be slow),
    ``connect_timeout`` the connection set-up. Failed connections, 429 and 503 are
    retried up to ``max_retries`` times with jittered exponential backoff starting
    at ``backoff_base`` seconds and capped at ``backoff_max``.
    """

    http: httpx.Client
    _http_class = httpx.Client

    # --------------------------------------------------------------- generation
    @overload
    def chat(self, messages: Messages, *, stream: Literal[False] = False,
             **fields: Unpack[ChatFields]) -> ChatResult: ...

    @overload
    def chat(self, messages: Messages, *, stream: Literal[True],
             **fields: Unpack[ChatFields]) -> Stream: ...

    def chat(self, messages: Messages, *, stream: bool = False,
             **fields: Unpack[ChatFields]) -> ChatResult | Stream:
        """Chat completion. ``messages``: a string (one user message) or a list of
        ``{"role", "content"}`` dicts / :class:`~client.types.Message`. Fields:
        ``thinking_min``, ``thinking_max``, ``thinking_waits`` (the end of thinking
        ignored that many times), ``thinking_continuation`` (``""``: suppress only),
        ``thinking_deadline_ms`` (cut thinking that long after arrival),
        ``thinking_early_stop`` (``{"every": k, "agree": m}``: cut once m answer probes,
        one every k thinking tokens, agreed; ``usage.probe_tokens`` counts the probes),
        ``model``,
        ``max_tokens``, ``temperature``, ``top_p``, ``n``, ``stop``, ``seed``,
        ``system``, ``extra_body`` (merged into the JSON), ``timeout``."""
        body = chat_body(messages, fields, self.options.model, stream)
        return self._generate("/v1/chat/completions", body, stream, fields.get("timeout"),
                              ChatResult)

    @overload
    def complete(self, prompt: str | list[int], *, stream: Literal[False] = False,
                 **fields: Unpack[RequestFields]) -> CompletionResult: ...

    @overload
    def complete(self, prompt: str | list[int], *, stream: Literal[True],
                 **fields: Unpack[RequestFields]) -> Stream: ...

    def complete(self, prompt: str | list[int], *, stream: bool = False,
                 **fields: Unpack[RequestFields]) -> CompletionResult | Stream:
        """Text completion of a raw prompt (text or token ids); same fields as ``chat``
        except ``system``. Thinking is budgeted when the prompt opens a thinking block."""
        body = completion_body(prompt, fields, self.options.model, stream)
        return self._generate("/v1/completions", body, stream, fields.get("timeout"),
                              CompletionResult)

    def _generate(self, path: str, body: dict[str, Any], stream: bool, timeout: float | None,
                  result: type[ChatResult] | type[CompletionResult]) -> Any:
        response = self._send("POST", path, json=body, stream=stream, timeout=timeout)
        if stream:
            return Stream(response, self.base_url)
        return result.from_api(json_body(response), request_id(response.headers))

    # ------------------------------------------------------------------- others
    def models(self) -> list[ModelInfo]:
        """The models this server serves (``GET /v1/models``)."""
        data = json_body(self._send("GET", "/v1/models"))
        return [ModelInfo.model_validate(m) for m in data.get("data", [])]

    def health(self) -> Health:
        """``GET /health``: ``ok``, or ``loading`` / ``dead`` (the server's 503 is an
        answer here, not an error, and is not retried)."""
        response = self._send("GET", "/health", accept=(503,))
        return Health.model_validate(health_body(response))

    def wait_ready(self, timeout: float = 120.0, interval: float = 1.0) -> Health:
        """Poll ``/health`` until the model is loaded; raise APITimeoutError after
        ``timeout`` seconds (connection failures count as not ready yet)."""
        waiting = ReadyWait(self.base_url, timeout, interval)
        while True:
            try:
                health: Health | APIConnectionError = self.health()
            except APIConnectionError as exc:
                health = exc
            if waiting.ready(health):
                return health  # type: ignore[return-value]
            time.sleep(waiting.next_wait())

    # ---------------------------------------------------------------- transport
    def _send(self, method: str, path: str, *, json: Any = None, stream: bool = False,
              timeout: float | None = None, accept: tuple[int, ...] = ()) -> httpx.Response:
        retrying = Retrying(self.options.retry, method, path)
        while True:
            try:
                return self._attempt(retrying.attempt, method, path, json, stream, timeout,
                                     accept)
            except S1Error as error:
                time.sleep(retrying.wait(error))

    def _attempt(self, attempt: int, method: str, path: str, json: Any, stream: bool,
                 timeout: float | None, accept: tuple[int, ...]) -> httpx.Response:
        request = self.options.request(self.http, method, path, json, timeout)
        with transport_errors(self.base_url, attempt):
            response = self.http.send(request, stream=stream)
        if answered(response, accept):
            return response
        response.read()
        response.close()
        raise status_error(response, attempt)

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
