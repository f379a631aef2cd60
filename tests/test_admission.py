"""Admission is race-free on every generating surface.

The in-flight limit is checked and the request's ticket taken in one step of the event
loop (server/api/request_layer.py), and the ticket is held until the response has been sent. So
with ``--max-in-flight 2`` exactly two of 50 simultaneous requests get in and 48 get a
429, whichever surface they use. The engine core is frozen (SIGSTOP) while they arrive,
so the two admitted requests cannot finish and free their slots early however fast or
slow the machine: the count is exact, every time.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import API_MODEL
from tests.server_proc import ServerProcess, engine_core, wait_until

pytestmark = pytest.mark.engine

CONCURRENT = 50
LIMIT = 2
MESSAGES = [{"role": "user", "content": "count to three"}]
SURFACES = {
    "/v1/chat/completions": {"messages": MESSAGES, "max_tokens": 40, "thinking_max": 4},
    "/v1/completions": {"prompt": "count to three", "max_tokens": 8},
    "/v1/responses": {"input": "count to three", "max_output_tokens": 16},
    "/v1/messages": {"messages": MESSAGES, "max_tokens": 16},
    "/v1/chat/completions/batch": {"messages": [MESSAGES, MESSAGES], "max_tokens": 8},
}


@pytest.fixture(scope="module")
def limited(tiny_s1_open):
    proc = ServerProcess(tiny_s1_open, "--served-model-name", API_MODEL,
                         "--max-in-flight", str(LIMIT), "--max-waiting", "0")
    try:
        yield proc.wait_ready()
    finally:
        assert proc.stop() == 0


async def _burst(server: ServerProcess, path: str, body: dict) -> tuple[list[int], list[int]]:
    """Statuses of the requests answered while the engine is frozen, then of the rest."""
    core = engine_core(server.proc)
    limits = httpx.Limits(max_connections=CONCURRENT + 4)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=300, limits=limits) as c:
        core.suspend()
        try:
            pending = {asyncio.ensure_future(c.post(path, json={"model": API_MODEL, **body}))
                       for _ in range(CONCURRENT)}
            early: list[int] = []
            while len(pending) > LIMIT:
                done, pending = await asyncio.wait(pending, timeout=300,
                                                   return_when=asyncio.FIRST_COMPLETED)
                assert done, f"{path}: no answer for 300 s with {len(pending)} pending"
                early += [t.result().status_code for t in done]
            assert sorted(early) == [429] * (CONCURRENT - LIMIT), early
            # The admitted ones are held by the frozen engine, counted as in flight.
            assert server.metric("s1_requests_in_flight") == LIMIT
        finally:
            core.resume()
        late = [r.status_code for r in await asyncio.gather(*pending)]
    return early, late


@pytest.mark.parametrize("path", list(SURFACES))
def test_exactly_the_limit_gets_in(limited: ServerProcess, path: str) -> None:
    early, late = asyncio.run(_burst(limited, path, SURFACES[path]))
    assert sorted(early) == [429] * (CONCURRENT - LIMIT), early
    assert late == [200] * LIMIT, late
    wait_until(lambda: limited.metric("s1_requests_in_flight") == 0, 60,
               "the admitted requests to be released")
