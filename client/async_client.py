"""The asyncio client: :class:`AsyncClient` and its :class:`AsyncStream` of events.

Same methods, arguments, results, errors and retries as
:class:`client.sync_client.Client`, awaited. Streams follow the OpenAI SDK's
shape: ``stream = await client.chat(..., stream=True)`` then
``async for event in stream``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Literal, Unpack, overload

import httpx

from client.config import Options, log_retry
from client.errors import APIConnectionError, S1Error
from client.types import ChatResult, CompletionResult, Health, ModelInfo, StreamEvent
from client.wire import (
    DONE,
    ChatFields,
    Messages,
    RequestFields,
    StreamState,
    chat_body,
    completion_body,
    json_body,
    not_ready,
    request_id,
    sse_data,
    status_error,
    stream_cut_short,
    transport_error,
)


class AsyncStream(StreamState):
    """Events of one streamed request; iterate once. ``usage`` is set at the end."""

    async def iter_raw(self) -> AsyncIterator[dict[str, Any]]:
        """The decoded JSON chunks as the server sent them (``[DONE]`` excluded)."""
        self._start()
        done = False
        try:
            async for line in self.response.aiter_lines():
                data = sse_data(line)
                if data == DONE:
                    done = True  # read on to the end, so the connection can be reused
                elif data is not None and not done:
                    yield self._chunk(data)
        except httpx.TransportError as exc:
            raise transport_error(exc, self.base_url, 1) from exc
        finally:
            await self.aclose()
        if not done:
            raise stream_cut_short(self.base_url, self.request_id)

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        async for chunk in self.iter_raw():
            for event in self._events(chunk):
                yield event

    async def aclose(self) -> None:
        await self.response.aclose()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncClient:
    """Asyncio client for an s1-serve server; arguments as :class:`~client.Client`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 model: str | None = None, timeout: float | httpx.Timeout | None = 600.0,
                 connect_timeout: float = 5.0, max_retries: int = 3,
                 backoff_base: float = 0.5, backoff_max: float = 8.0,
                 headers: dict[str, str] | None = None,
                 http_client: httpx.AsyncClient | None = None) -> None:
        self.options = Options.build(base_url, api_key, model, timeout, connect_timeout,
                                     max_retries, backoff_base, backoff_max, headers)
        self._owns_http = http_client is None
        self.http = http_client or httpx.AsyncClient(timeout=self.options.timeout)

    @property
    def base_url(self) -> str:
        return self.options.base_url

    # --------------------------------------------------------------- generation
    @overload
    async def chat(self, messages: Messages, *, stream: Literal[False] = False,
                   **fields: Unpack[ChatFields]) -> ChatResult: ...

    @overload
    async def chat(self, messages: Messages, *, stream: Literal[True],
                   **fields: Unpack[ChatFields]) -> AsyncStream: ...

    async def chat(self, messages: Messages, *, stream: bool = False,
                   **fields: Unpack[ChatFields]) -> ChatResult | AsyncStream:
        """Chat completion; see :meth:`client.Client.chat`."""
        body = chat_body(messages, fields, self.options.model, stream)
        return await self._generate("/v1/chat/completions", body, stream,
                                    fields.get("timeout"), ChatResult)

    @overload
    async def complete(self, prompt: str | list[int], *, stream: Literal[False] = False,
                       **fields: Unpack[RequestFields]) -> CompletionResult: ...

    @overload
    async def complete(self, prompt: str | list[int], *, stream: Literal[True],
                       **fields: Unpack[RequestFields]) -> AsyncStream: ...

    async def complete(self, prompt: str | list[int], *, stream: bool = False,
                       **fields: Unpack[RequestFields]) -> CompletionResult | AsyncStream:
        """Text completion; see :meth:`client.Client.complete`."""
        body = completion_body(prompt, fields, self.options.model, stream)
        return await self._generate("/v1/completions", body, stream, fields.get("timeout"),
                                    CompletionResult)

    async def _generate(self, path: str, body: dict[str, Any], stream: bool,
                        timeout: float | None,
                        result: type[ChatResult] | type[CompletionResult]) -> Any:
        response = await self._send("POST", path, json=body, stream=stream, timeout=timeout)
        if stream:
            return AsyncStream(response, self.base_url)
        return result.from_api(json_body(response), request_id(response.headers))

    # ------------------------------------------------------------------- others
    async def models(self) -> list[ModelInfo]:
        """The models this server serves (``GET /v1/models``)."""
        data = json_body(await self._send("GET", "/v1/models"))
        return [ModelInfo.model_validate(m) for m in data.get("data", [])]

    async def health(self) -> Health:
        """``GET /health``; see :meth:`client.Client.health`."""
        response = await self._send("GET", "/health", accept=(503,))
        return Health.model_validate(json_body(response))

    async def wait_ready(self, timeout: float = 120.0, interval: float = 1.0) -> Health:
        """Poll ``/health`` until the model is loaded; see :meth:`client.Client.wait_ready`."""
        deadline = time.monotonic() + timeout
        while True:
            last: Any
            try:
                last = await self.health()
                if last.ok:
                    return last
            except APIConnectionError as exc:
                last = exc
            if time.monotonic() + interval > deadline:
                raise not_ready(self.base_url, timeout, last)
            await asyncio.sleep(interval)

    # ---------------------------------------------------------------- transport
    async def _send(self, method: str, path: str, *, json: Any = None, stream: bool = False,
                    timeout: float | None = None,
                    accept: tuple[int, ...] = ()) -> httpx.Response:
        policy = self.options.retry
        attempt = 0
        while True:
            attempt += 1
            request = self.http.build_request(method, self.base_url + path, json=json,
                                              headers=self.options.http_headers(),
                                              timeout=self.options.call_timeout(timeout))
            error: S1Error
            try:
                response = await self.http.send(request, stream=stream)
            except httpx.TransportError as exc:
                error = transport_error(exc, self.base_url, attempt)
                cause: BaseException | None = exc
            else:
                if response.status_code < 400 or response.status_code in accept:
                    return response
                await response.aread()
                await response.aclose()
                error, cause = status_error(response, attempt), None
            wait = policy.wait(attempt, error)
            if wait is None:
                raise error from cause
            log_retry(method, path, attempt, policy.max_retries + 1, wait, error)
            await asyncio.sleep(wait)

    async def aclose(self) -> None:
        if self._owns_http:
            await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
