"""The server's hold on the engine: the loaded model, the settings and admission.

Every request is answered by vLLM's serving classes (:mod:`server.api.engine_hook`); this
module keeps what s1-serve adds that lives as long as the server: the in-flight
counters behind the 429s (:meth:`Serving.admit`), the continuation strings' token ids,
and the request deadline of each engine stream (:class:`StreamDeadline`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from server.api import metrics
from server.api.errors import APIError
from server.engine.loader import ModelInfo
from server.settings import Settings

logger = logging.getLogger(__name__)


class Ticket:
    """An admitted request's share of the in-flight limits; release exactly once."""

    def __init__(self, serving: Serving, n: int) -> None:
        self.serving, self.n, self.live = serving, n, True
        serving.in_flight += 1
        serving.sequences += n
        metrics.IN_FLIGHT.inc()

    def release(self) -> None:
        if self.live:
            self.live = False
            self.serving.in_flight -= 1
            self.serving.sequences -= self.n
            metrics.IN_FLIGHT.dec()


class Serving:
    """The engine, the model and the settings, and the admission counters. One per server."""

    def __init__(self, engine: Any, model: ModelInfo, settings: Settings) -> None:
        self.engine = engine
        self.model = model
        self.settings = settings
        # The engine's batch size as vLLM resolved it for this device (its default
        # depends on the GPU and the usage context when the command line sets none).
        self.max_num_seqs = int(settings.max_num_seqs or
                                engine.vllm_config.scheduler_config.max_num_seqs)
        self.in_flight = 0  # generation requests admitted and not finished
        self.sequences = 0  # their sequences (n per request)
        self._continuations: dict[str, tuple[int, ...]] = {}

    def admit(self, n: int) -> Ticket:
        """Reserve room for a request of ``n`` sequences, or answer 429.

        Check and reservation happen in one step of the event loop, so concurrent
        requests cannot all pass the check before any reserves."""
        s = self.settings
        retry = {"Retry-After": "1"}
        if self.in_flight >= s.max_in_flight:
            raise APIError(429, f"the server is at its limit of {s.max_in_flight} requests in "
                           "flight; retry after a second", headers=retry)
        if self.sequences + n - self.max_num_seqs > s.max_waiting:
            raise APIError(429, f"more than {s.max_waiting} sequences are already waiting for "
                           "the engine; retry after a second", headers=retry)
        return Ticket(self, n)

    def continuation_ids(self, text: str) -> tuple[int, ...]:
        ids = self._continuations.get(text)
        if ids is None:
            ids = tuple(self.model.tokenizer.encode(text, add_special_tokens=False))
            if len(self._continuations) < 1024:
                self._continuations[text] = ids
        return ids


class StreamDeadline:
    """The request deadline of one engine stream, as one timer for the whole stream.

    A timer per chunk (``asyncio.timeout_at`` around each wait) was the largest cost of
    the s1 layer in the HTTP process at 64 streaming clients (~4.5 % of its samples).
    Here the timer is set once; when it fires it cancels the task only while that task
    waits for the stream's next item, as a per-wait timeout would, and the cancellation is
    turned into :class:`TimeoutError` unless someone else cancelled the task too. Past the
    deadline, the next wait fails at once. The caller aborts the engine request on expiry
    (closing the engine stream does) and calls :meth:`close` at the end.
    """

    __slots__ = ("expired", "_handle", "_waiter", "_cancelled")

    def __init__(self, timeout: float | None) -> None:
        self.expired = False
        self._waiter: asyncio.Task[Any] | None = None
        self._cancelled = False
        self._handle = (asyncio.get_running_loop().call_later(timeout, self._expire)
                        if timeout else None)

    def _expire(self) -> None:
        self.expired = True
        if self._waiter is not None:
            self._cancelled = True
            self._waiter.cancel()

    async def next(self, stream: AsyncIterator[Any]) -> Any:
        """The stream's next item; TimeoutError past the deadline, StopAsyncIteration at
        its end."""
        if self._handle is None:
            return await anext(stream)
        if self.expired:
            raise TimeoutError
        # The task of this wait (vLLM drives several prompts' streams from tasks of its own).
        task = self._waiter = asyncio.current_task()
        try:
            return await anext(stream)
        except asyncio.CancelledError:
            if self._cancelled and task is not None and task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            self._waiter = None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
