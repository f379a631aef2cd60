"""A short soak of the real server: 32 concurrent streaming clients, 4 requests each with
mixed budgets, about 10% hang-ups; every request is accounted for and nothing is lost."""

from __future__ import annotations

import asyncio

import pytest

from bench.soak import run_soak
from tests.conftest import API_KEY

pytestmark = pytest.mark.engine

CLIENTS, EACH = 32, 4


def test_short_soak(api_server):
    """A fixed number of requests, not a duration: the counts hold on any machine."""
    res = asyncio.run(run_soak(api_server.base_url, clients=CLIENTS, duration=None,
                               requests_per_client=EACH, disconnect_share=0.1, seed=1,
                               server_pid=api_server.proc.pid,
                               headers={"Authorization": f"Bearer {API_KEY}"}))
    summary = res.summary()
    assert not res.errors, summary
    assert res.completed + res.disconnected == CLIENTS * EACH, summary
    assert res.disconnected > 0 and res.checked == res.completed, summary
    assert res.control == 100.0, summary
    assert res.running_after == 0 and res.in_flight_after == 0, summary
