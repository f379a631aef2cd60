"""The real server under concurrent and abandoned streams (the session's API server): a
client that leaves mid-stream has its engine request aborted and its slot released, and
64 concurrent streams with mixed budgets each get their own response within budget.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import ExitStack

import httpx
import pytest
from httpx_sse import EventSource, connect_sse

from tests.helpers import AUTH, MSG
from tests.server_proc import frozen_engine, wait_until

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def server(api_server):
    return api_server


# --------------------------------------------------------------- concurrency
def test_disconnect_aborts_engine_request(server):
    """A streaming client that leaves mid-stream: the engine request is aborted, not run
    to its 16 x 900 tokens, and the in-flight slot is released. The engine core is frozen
    from the third event until the server has let the request go, so it cannot finish
    the request meanwhile, however fast the machine."""
    tokens_before = server.metric("vllm:generation_tokens_total")
    with ExitStack() as frozen, httpx.Client(base_url=server.base_url, headers=AUTH,
                                             timeout=60) as client:
        with connect_sse(client, "POST", "/v1/chat/completions", json={
                "messages": MSG, "stream": True, "max_tokens": 900, "ignore_eos": True,
                "n": 16, "thinking_min": 800, "thinking_max": 850}) as source:
            for seen, _ in enumerate(source.iter_sse(), 1):
                if seen == 3:
                    frozen.enter_context(frozen_engine(server))
                    break  # leave mid-stream
        # The API process notices, aborts and frees the slot with the engine still frozen.
        wait_until(lambda: server.metric("s1_requests_in_flight") == 0, 60,
                   "the request to be released")
    wait_until(lambda: server.metric("vllm:num_requests_running") == 0, 60,
               "the engine to drop the request")
    assert server.metric("vllm:num_requests_waiting") == 0
    # Ended without running to completion: it was aborted.
    assert server.metric("vllm:generation_tokens_total") - tokens_before < 16 * 900


def test_64_concurrent_streams_with_mixed_budgets(server):
    settings = [(None, None), (None, 5), (3, 9), (0, 0), (8, 8), (4, None), (2, 30), (None, 15)]

    async def one(i: int, client: httpx.AsyncClient) -> tuple[tuple, int, str, str]:
        lo, hi = settings[i % len(settings)]
        body = {"messages": MSG, "stream": True, "max_tokens": 60, "temperature": i % 2,
                "seed": i, "stream_options": {"include_usage": True}}
        if lo is not None:
            body["thinking_min"] = lo
        if hi is not None:
            body["thinking_max"] = hi
        usage, content, ids = None, "", set()
        async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
            assert resp.status_code == 200
            async for sse in EventSource(resp).aiter_sse():
                if sse.data == "[DONE]":
                    continue
                event = json.loads(sse.data)
                assert "error" not in event, event
                ids.add(event["id"])
                if event.get("usage"):
                    usage = event["usage"]
                for c in event.get("choices", []):
                    content += c["delta"].get("content") or ""
        (response_id,) = ids  # every chunk of one response carries its id
        return (lo, hi), usage["completion_tokens_details"]["reasoning_tokens"], content, \
            response_id

    async def main() -> list:
        async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH,
                                     timeout=300) as client:
            return await asyncio.gather(*(one(i, client) for i in range(64)))

    results = asyncio.run(main())
    assert len({r[3] for r in results}) == 64  # 64 responses, none answered twice
    for (lo, hi), thinking, content, _ in results:
        if hi is not None:
            assert thinking <= hi
            if thinking == hi:
                assert content.startswith("Final Answer:")
        if lo is not None:
            assert thinking >= lo
    assert server.metric("vllm:num_requests_running") == 0


