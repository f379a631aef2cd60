"""Decision seeds for budgeted requests, and n choices as n engine requests when needed.

Budget decisions below ``thinking_min`` are sampled (see
:func:`server.budget.draws.uniform_bits`) from a per-request decision seed. Under
tensor parallelism the logits processor runs in every worker, so the seed must
come from the API process: a seed drawn inside a worker could differ between
ranks and the ranks would decide differently. The API therefore always puts a
seed in the budget payload: the client's ``seed`` when given, else a fresh one.

With ``n > 1`` and a client seed, vLLM hands child ``i`` the seed ``seed + i``
and the processor prefers it, so the choices decide independently. Without a
client seed vLLM gives all children one shared ``SamplingParams`` object, so
they would share one decision seed and make the same decisions at the same
positions. In that case (budget active, no client seed, ``n > 1``) the request
is submitted as ``n`` engine requests of ``n=1``, each with its own seed.
vLLM runs ``n > 1`` as ``n`` child requests of the same prompt anyway, so this
costs the same. :func:`merge` interleaves their outputs as one stream, tagged
with the choice index.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import secrets
from collections.abc import AsyncIterator
from typing import Any

_DONE = object()


def fresh_seed() -> int:
    """A decision seed for a request whose client sent none (63 bits, non-negative)."""
    return secrets.randbits(63)


def needs_fanout(budget_active: bool, client_seed: int | None, n: int) -> bool:
    """True when the n choices must be separate engine requests to get their own seeds."""
    return budget_active and client_seed is None and n > 1


def child_params(params: Any, index: int, spec: Any) -> Any:
    """Choice ``index`` of an ``n > 1`` request as an engine request of its own: ``n=1``,
    vLLM's seed for that child (``seed + index``) when the client sent one, and, with an
    active budget (``spec``), its own decision seed (that seed, else a fresh one)."""
    from server.engine.logits_processor import budget_extra_args  # torch: only when used

    child = copy.copy(params)
    child.n = 1
    if params.seed is not None:
        child.seed = params.seed + index  # as vLLM seeds the children of an n > 1 request
    if spec is not None and spec.active:
        seed = child.seed if child.seed is not None else fresh_seed()
        child.extra_args = {**(params.extra_args or {}), **budget_extra_args(spec, seed)}
    return child


def child_id(request_id: str, index: int) -> str:
    """The engine request id of choice ``index`` of a fanned-out request."""
    return f"{request_id}-{index}"


async def merge(streams: list[AsyncIterator[Any]]) -> AsyncIterator[tuple[int, Any]]:
    """Items of all ``streams`` as they arrive, as ``(stream index, item)``.

    The first error of any stream is raised here. When the consumer stops early
    (an error, a timeout, a cancelled or closed generator) the remaining streams
    are cancelled and awaited, which makes vLLM abort their requests.
    """
    queue: asyncio.Queue[tuple[int, Any, BaseException | None]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[Any]) -> None:
        try:
            async for item in stream:
                queue.put_nowait((index, item, None))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer, which raises it
            queue.put_nowait((index, _DONE, exc))
            return
        queue.put_nowait((index, _DONE, None))

    pumps = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    live = len(pumps)
    try:
        while live:
            index, item, exc = await queue.get()
            if exc is not None:
                raise exc
            if item is _DONE:
                live -= 1
                continue
            yield index, item
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


async def as_one(streams: list[AsyncIterator[Any]], final_only: bool) -> AsyncIterator[Any]:
    """The engine outputs of ``n`` fanned-out choices as one request's outputs.

    What vLLM's serving classes expect from an ``n > 1`` request: each completion
    tagged with its choice index; with ``final_only`` (non-streaming), one output at
    the end holding every choice in index order.
    """
    finals: list[Any] = [None] * len(streams)
    # Closed with this generator (not whenever Python collects it): closing the request's
    # stream aborts every choice at once.
    async with contextlib.aclosing(merge(streams)) as merged:
        async for index, output in merged:
            for comp in output.outputs:
                comp.index = index
            if final_only:
                finals[index] = output
            else:
                yield output
    if final_only and all(f is not None for f in finals):
        first = finals[0]
        first.outputs = [c for f in finals for c in f.outputs]
        first.finished = True
        yield first
