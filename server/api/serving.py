"""The server's hold on the engine: the loaded model, the settings and admission.

Every request is answered by vLLM's serving classes (:mod:`server.api.engine_hook`); this
module keeps what s1-serve adds that lives as long as the server: the in-flight
counters behind the 429s (:meth:`Serving.admit`), the continuation strings' token ids,
and the deadline helpers the engine-call hook uses.
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


def deadline_for(timeout: float | None) -> float | None:
    """The event-loop time a request started now must end by (None: no deadline)."""
    return asyncio.get_running_loop().time() + timeout if timeout else None


async def next_before(stream: AsyncIterator[Any], deadline: float | None) -> Any:
    """The stream's next item, or TimeoutError at ``deadline`` (StopAsyncIteration at its end).

    A timer per wait rather than asyncio.wait_for, which on Python 3.11 wraps every wait
    in a new task; the scope never spans a yield of the caller. The caller aborts the
    engine request on expiry (closing the engine stream does).
    """
    async with asyncio.timeout_at(deadline):
        return await anext(stream)
