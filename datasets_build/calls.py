"""Every model call of the pipeline: one async caller with bounded concurrency and a cache.

Why one caller: a full run makes hundreds of thousands of requests to several endpoints
(teachers, base models, judge, classifier). They all go through :class:`ModelCaller`, which
builds each request, looks it up in the SQLite cache (:mod:`s1_common.cache`), and
otherwise sends it with the project's :class:`client.AsyncClient` (timeouts, retries with
backoff on connection errors, 429 and 503), at most ``concurrency`` at a time overall and
per endpoint. Failures are sorted three ways:

- permanent (400, 413, 422: the request itself is refused, e.g. a prompt over the context):
  cached and returned as a failed :class:`Reply`, so the quality stage can count it;
- fatal (401, 403, 404: wrong key, model or URL): the stage stops at once;
- transient (unreachable, timed out, 5xx, 429 after the retries): returned as a failed
  reply and not cached; after ``abort_after`` of them in a row the stage stops, since the
  endpoint is down and every further answer would be a wasted failure. Rerunning resumes.

:func:`preflight` checks each endpoint (reachable, key accepted, model served) before any
work starts.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from tqdm import tqdm

from client import AsyncClient
from client.errors import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    NotFoundError,
    S1Error,
)
from client.types import ChatResult
from datasets_build.config import Endpoint, Generation
from datasets_build.schema import stable_int
from s1_common.cache import ResponseCache, request_key

T = TypeVar("T")
R = TypeVar("R")
_SAMPLING = ("max_tokens", "temperature", "top_p", "thinking_min", "thinking_max")
PERMANENT = frozenset({400, 413, 422})
FATAL = frozenset({401, 403, 404})


class EndpointError(RuntimeError):
    """An endpoint cannot be used (unreachable, key refused, model not served, down)."""


@dataclass(frozen=True)
class Reply:
    """One answer (or failure) as the stages use it."""

    ok: bool
    answer: str = ""
    reasoning: str | None = None
    finish_reason: str | None = None
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    error: str | None = None
    cached: bool = False

    @classmethod
    def from_raw(cls, raw: dict[str, Any], cached: bool) -> Reply:
        result = ChatResult.from_api(raw)
        if not result.choices:
            return cls(ok=False, error="the response has no choices", cached=cached)
        return cls(ok=True, answer=result.answer, reasoning=result.reasoning,
                   finish_reason=result.finish_reason,
                   completion_tokens=result.usage.completion_tokens,
                   reasoning_tokens=result.usage.reasoning_tokens, cached=cached)


def fill(template: str, **values: str) -> str:
    """Put values into ``{name}`` placeholders (plain replace: LaTeX braces stay as they are)."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


def request_body(gen: Generation, messages: list[dict[str, str]],
                 seed: int | None) -> dict[str, Any]:
    """The JSON body of a chat request (without the model), as cached and as sent."""
    body: dict[str, Any] = {"messages": messages}
    for key in _SAMPLING:
        value = getattr(gen, key)
        if value is not None:
            body[key] = value
    if seed is not None:
        body["seed"] = seed
    body.update(gen.extra_body)
    return body


def seed_for(gen: Generation, row_id: str, attempt: int = 0) -> int | None:
    """The request seed: the configured one, plus a per-question offset when
    ``seed_per_question`` is set (different questions sample differently, each repeatably),
    plus the attempt number on a retry."""
    if gen.seed is None and not gen.seed_per_question and attempt == 0:
        return None
    seed = (gen.seed or 0) + attempt
    if gen.seed_per_question:
        seed += stable_int(row_id)
    return seed % 2**31


def messages_for(gen: Generation, prompt: str) -> list[dict[str, str]]:
    msgs = [{"role": "user", "content": prompt}]
    if gen.system is not None:
        msgs.insert(0, {"role": "system", "content": gen.system})
    return msgs


class ModelCaller:
    """Cached, bounded, retried chat calls to the configured endpoints."""

    def __init__(self, endpoints: dict[str, Endpoint], cache: ResponseCache, *,
                 concurrency: int = 16, abort_after: int = 20, progress: bool = True) -> None:
        self.endpoints = endpoints
        self.cache = cache
        self.progress = progress
        self.abort_after = max(1, abort_after)
        self.counts: Counter[str] = Counter()
        self._total = asyncio.Semaphore(concurrency)
        self._per: dict[str, asyncio.Semaphore] = {
            name: asyncio.Semaphore(e.concurrency or concurrency) for name, e in endpoints.items()}
        self._clients: dict[str, AsyncClient] = {}
        self._failures_in_a_row: Counter[str] = Counter()
        self._concurrency = concurrency

    def _client(self, endpoint: Endpoint) -> AsyncClient:
        if endpoint.name not in self._clients:
            limit = endpoint.concurrency or self._concurrency
            http = httpx.AsyncClient(limits=httpx.Limits(max_connections=limit,
                                                         max_keepalive_connections=limit))
            self._clients[endpoint.name] = AsyncClient(
                endpoint.base_url, endpoint.api_key, model=endpoint.model,
                timeout=endpoint.timeout, max_retries=endpoint.max_retries, http_client=http)
        return self._clients[endpoint.name]

    async def chat(self, gen: Generation, messages: list[dict[str, str]],
                   seed: int | None = None) -> Reply:
        """One chat request: from the cache, or sent (and cached when it is final)."""
        endpoint = self.endpoints[gen.endpoint]
        body = request_body(gen, messages, seed)
        key = request_key(endpoint.model, body)
        hit = self.cache.get(key)
        if hit is not None:
            self.counts["cached"] += 1
            raw, error = hit
            return Reply.from_raw(raw, True) if raw is not None else Reply(
                ok=False, error=error, cached=True)
        async with self._per[endpoint.name], self._total:
            reply = await self._send(endpoint, gen, messages, body, key)
        self.counts["made"] += 1
        if not reply.ok:
            self.counts["failed"] += 1
        return reply

    async def _send(self, endpoint: Endpoint, gen: Generation, messages: list[dict[str, str]],
                    body: dict[str, Any], key: str) -> Reply:
        extra = {k: v for k, v in body.items() if k not in ("messages", "seed", *_SAMPLING)}
        try:
            result = await self._client(endpoint).chat(
                messages, max_tokens=gen.max_tokens, temperature=gen.temperature,
                top_p=gen.top_p, thinking_min=gen.thinking_min, thinking_max=gen.thinking_max,
                seed=body.get("seed"), extra_body=extra or None)
        except APIStatusError as exc:
            message = f"HTTP {exc.status}: {exc.message}"
            if exc.status in FATAL or isinstance(exc, AuthenticationError | NotFoundError):
                raise EndpointError(f"endpoint {endpoint.name!r} ({endpoint.base_url}) refused "
                                    f"the request: {message}") from exc
            if exc.status in PERMANENT:
                self.cache.put(key, endpoint.name, body, error=message)
                return Reply(ok=False, error=message)
            return self._transient(endpoint, message)
        except APIConnectionError as exc:
            return self._transient(endpoint, str(exc))
        except S1Error as exc:  # pragma: no cover - any other client error
            return self._transient(endpoint, str(exc))
        self._failures_in_a_row[endpoint.name] = 0
        self.cache.put(key, endpoint.name, body, response=result.raw)
        return Reply.from_raw(result.raw, False)

    def _transient(self, endpoint: Endpoint, message: str) -> Reply:
        self._failures_in_a_row[endpoint.name] += 1
        if self._failures_in_a_row[endpoint.name] >= self.abort_after:
            raise EndpointError(
                f"endpoint {endpoint.name!r} ({endpoint.base_url}) failed "
                f"{self.abort_after} times in a row (last: {message}); stopping. Finished "
                "calls are cached: run the same command again to resume.")
        return Reply(ok=False, error=message)

    async def map(self, items: Sequence[T], work: Callable[[T], Awaitable[R]],
                  desc: str) -> list[R]:
        """``work(item)`` for every item, concurrently, in order, with a progress bar."""
        results: list[Any] = [None] * len(items)
        bar = tqdm(total=len(items), desc=desc, unit="q", disable=None if self.progress else True,
                   leave=False, dynamic_ncols=True)

        async def one(i: int, item: T) -> None:
            results[i] = await work(item)
            bar.update(1)

        try:
            async with asyncio.TaskGroup() as group:
                for i, item in enumerate(items):
                    group.create_task(one(i, item))
        except* EndpointError as eg:
            raise eg.exceptions[0] from None
        finally:
            bar.close()
        return results

    def stats(self) -> dict[str, int]:
        return {k: self.counts[k] for k in ("made", "cached", "failed")}

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.http.aclose()
        self._clients.clear()


async def _check(endpoint: Endpoint) -> str | None:
    """Why ``endpoint`` cannot be used, or None when it can."""
    where = f"endpoint {endpoint.name!r} ({endpoint.base_url})"
    if endpoint.missing_env:
        return f"{where}: environment variable(s) not set: {', '.join(endpoint.missing_env)}"
    try:
        async with AsyncClient(endpoint.base_url, endpoint.api_key, timeout=15.0,
                               connect_timeout=5.0, max_retries=1, backoff_base=0.2) as c:
            models = await c.models()
    except AuthenticationError as exc:
        return f"{where}: the API key was refused ({exc.message})"
    except NotFoundError:
        return None  # no /v1/models on this server: nothing more to check
    except S1Error as exc:
        return f"{where}: {exc}"
    served = [m.id for m in models]
    if endpoint.model and served and endpoint.model not in served:
        return f"{where}: model {endpoint.model!r} is not served; it serves {served}"
    return None


async def preflight(endpoints: Sequence[Endpoint]) -> None:
    """Raise :class:`EndpointError` listing every endpoint that cannot be used."""
    problems = [p for p in await asyncio.gather(*(_check(e) for e in endpoints)) if p]
    if problems:
        raise EndpointError("cannot start:\n  " + "\n  ".join(problems))
