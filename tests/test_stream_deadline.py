"""The request deadline of an engine stream (server.api.serving.StreamDeadline).

One timer per stream replaces a timer per chunk; these pin the behaviour the per-chunk
``asyncio.timeout_at`` had: expiry while waiting is a TimeoutError, expiry between waits
fails the next wait, a cancellation from elsewhere stays a cancellation, and items and
the end of the stream pass through. The timer's firing is simulated by calling its
callback where the test needs it, so nothing depends on the machine's speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from server.api.serving import StreamDeadline


async def _items(*values: int) -> AsyncIterator[int]:
    for v in values:
        yield v


async def _forever(started: asyncio.Event) -> AsyncIterator[int]:
    started.set()
    await asyncio.Event().wait()
    yield 0  # pragma: no cover


def test_items_and_end_pass_through_with_and_without_a_deadline() -> None:
    async def main() -> list[list[int]]:
        out = []
        for timeout in (None, 0, 3600.0):
            d, stream, got = StreamDeadline(timeout), _items(1, 2, 3), []
            with pytest.raises(StopAsyncIteration):
                while True:
                    got.append(await d.next(stream))
            d.close()
            out.append(got)
        return out

    assert asyncio.run(main()) == [[1, 2, 3]] * 3


def test_expiry_while_waiting_is_a_timeout_and_the_task_is_not_left_cancelled() -> None:
    async def main() -> tuple[bool, int]:
        started = asyncio.Event()
        d = StreamDeadline(3600.0)
        waiting = asyncio.ensure_future(d.next(_forever(started)))
        await started.wait()
        d._expire()  # the timer fires while the wait is pending
        with pytest.raises(TimeoutError):
            await waiting
        return d.expired, waiting.cancelling() if hasattr(waiting, "cancelling") else 0

    assert asyncio.run(main()) == (True, 0)


def test_a_real_timer_ends_a_stream_that_never_yields() -> None:
    async def main() -> None:
        d = StreamDeadline(0.001)
        with pytest.raises(TimeoutError):
            await d.next(_forever(asyncio.Event()))

    asyncio.run(main())


def test_expiry_between_waits_fails_the_next_wait_at_once() -> None:
    async def main() -> int:
        d, stream = StreamDeadline(3600.0), _items(1, 2)
        first = await d.next(stream)
        d._expire()  # fired while the caller was busy with the first item
        with pytest.raises(TimeoutError):
            await d.next(stream)
        return first

    assert asyncio.run(main()) == 1


def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def main() -> None:
        started = asyncio.Event()
        d = StreamDeadline(3600.0)
        waiting = asyncio.ensure_future(d.next(_forever(started)))
        await started.wait()
        waiting.cancel()  # the client left
        d._expire()  # and the deadline fired in the same loop iteration
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(main())
