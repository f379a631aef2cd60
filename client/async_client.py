"""The asyncio client: :class:`AsyncClient` and its :class:`AsyncStream` of events.

Same methods, arguments, results, errors and retries as
:class:`client.sync_client.Client`, awaited. Streams follow the OpenAI SDK's
shape: ``stream = await client.chat(..., stream=True)`` then
``async for event in stream``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
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


class AsyncStream(StreamState):
    """Events of one streamed request; iterate once. ``usage`` is set at the end."""

    async def iter_raw(self) -> AsyncIterator[dict[str, Any]]:
        """The decoded JSON chunks as the server sent them (``[DONE]`` excluded)."""
        self._start()
        try:
            with self._errors():
                async for event in EventSource(self.response).aiter_sse():
                    chunk = self._take(event)
                    if chunk is not None:
                        yield chunk
        finally:
            await self.aclose()
        self._finish()

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


class AsyncClient(ClientBase):
    """Asyncio client for an s1-serve server; arguments as :class:`~client.Client`."""

    http: httpx.AsyncClient
    _http_class = httpx.AsyncClient

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
        return Health.model_validate(health_body(response))

    async def wait_ready(self, timeout: float = 120.0, interval: float = 1.0) -> Health:
        """Poll ``/health`` until the model is loaded; see :meth:`client.Client.wait_ready`."""
        waiting = ReadyWait(self.base_url, timeout, interval)
        while True:
            try:
                health: Health | APIConnectionError = await self.health()
            except APIConnectionError as exc:
                health = exc
            if waiting.ready(health):
                return health  # type: ignore[return-value]
            await asyncio.sleep(waiting.next_wait())

    # ---------------------------------------------------------------- transport
    async def _send(self, method: str, path: str, *, json: Any = None, stream: bool = False,
                    timeout: float | None = None,
                    accept: tuple[int, ...] = ()) -> httpx.Response:
        retrying = Retrying(self.options.retry, method, path)
        while True:
            try:
                return await self._attempt(retrying.attempt, method, path, json, stream,
                                           timeout, accept)
            except S1Error as error:
                await asyncio.sleep(retrying.wait(error))

    async def _attempt(self, attempt: int, method: str, path: str, json: Any, stream: bool,
                       timeout: float | None, accept: tuple[int, ...]) -> httpx.Response:
        request = self.options.request(self.http, method, path, json, timeout)
        with transport_errors(self.base_url, attempt):
            response = await self.http.send(request, stream=stream)
        if answered(response, accept):
            return response
        await response.aread()
        await response.aclose()
        raise status_error(response, attempt)

    async def aclose(self) -> None:
        if self._owns_http:
            await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
