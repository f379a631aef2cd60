"""A one-minute soak of the real server: mixed budgets, 10% hang-ups, nothing lost."""

from __future__ import annotations

import asyncio

import pytest

from bench.soak import run_soak
from tests.conftest import API_KEY

pytestmark = pytest.mark.engine


def test_short_soak(api_server):
    res = asyncio.run(run_soak(api_server.base_url, clients=32, duration=45,
                               disconnect_share=0.1, seed=1, server_pid=api_server.proc.pid,
                               headers={"Authorization": f"Bearer {API_KEY}"}))
    summary = res.summary()
    assert res.completed > 32, summary
    assert not res.errors, summary
    assert res.disconnected > 0, summary
    assert res.control == 100.0, summary
    assert res.running_after == 0 and res.in_flight_after == 0, summary
