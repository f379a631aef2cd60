"""Overload, deadlines and shutdown of the real server (subprocess, tiny model)."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest

from tests.server_proc import ServerProcess
from tests.test_server import metric

pytestmark = pytest.mark.engine
MSG = [{"role": "user", "content": "How many r in raspberry?"}]
LONG = {"messages": MSG, "stream": True, "max_tokens": 900, "ignore_eos": True,
        "thinking_min": 850, "thinking_max": 880}


def _read_stream(base_url: str, body: dict, out: dict, key: str) -> None:
    """Read one SSE stream to its end; record chunks, [DONE], and errors."""
    rec = out.setdefault(key, {"chunks": 0, "done": False, "status": None, "error": None})
    try:
        with httpx.stream("POST", base_url + "/v1/chat/completions", json=body,
                          timeout=120) as resp:
            rec["status"] = resp.status_code
            for line in resp.iter_lines():
                if line == "data: [DONE]":
                    rec["done"] = True
                elif line.startswith("data: "):
                    event = json.loads(line[6:])
                    if "error" in event:
                        rec["error"] = event["error"]
                    rec["chunks"] += 1
    except httpx.HTTPError as exc:
        rec["error"] = repr(exc)


@pytest.fixture(scope="module")
def limited(tiny_s1_open):
    proc = ServerProcess(tiny_s1_open, "--max-in-flight", "2", "--shutdown-grace-s", "60")
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


def test_overload_answers_429_with_retry_after(limited):
    out: dict = {}
    threads = [threading.Thread(target=_read_stream, args=(limited.base_url, LONG, out, f"s{i}"))
               for i in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while metric(limited, "s1_requests_in_flight") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    r = httpx.post(limited.base_url + "/v1/chat/completions",
                   json={"messages": MSG, "max_tokens": 5})
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"]["type"] == "rate_limit_error"
    # Health stays fast under load. Best of three: on this 2-core VM the test process
    # itself was seen waiting up to 1 s for a CPU, which says nothing about the server.
    took = []
    for _ in range(3):
        t0 = time.monotonic()
        assert httpx.get(limited.base_url + "/health").status_code == 200
        took.append(time.monotonic() - t0)
    assert min(took) < 1.0, took
    for t in threads:
        t.join()
    assert all(rec["done"] and rec["error"] is None for rec in out.values())
    r = httpx.post(limited.base_url + "/v1/chat/completions",
                   json={"messages": MSG, "max_tokens": 5})
    assert r.status_code == 200


def test_sigterm_lets_in_flight_requests_finish(limited):
    out: dict = {}
    t = threading.Thread(target=_read_stream, args=(limited.base_url, LONG, out, "s"))
    t.start()
    while out.get("s", {}).get("chunks", 0) < 3:
        time.sleep(0.02)
    limited.proc.send_signal(signal.SIGTERM)
    t.join(120)
    assert out["s"]["done"] and out["s"]["error"] is None  # finished, not cut
    assert limited.proc.wait(120) == 0
    with pytest.raises(httpx.HTTPError):  # no longer accepting
        httpx.get(limited.base_url + "/health", timeout=2)


@pytest.fixture(scope="module")
def strict(tiny_s1_open):
    proc = ServerProcess(tiny_s1_open, "--request-timeout-s", "1.5", "--shutdown-grace-s", "1")
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


def test_deadline_aborts_request(strict):
    body = {"messages": MSG, "max_tokens": 900, "ignore_eos": True, "n": 16}
    r = httpx.post(strict.base_url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 504, r.text
    err = r.json()["error"]
    assert "deadline" in err["message"] and err["request_id"]
    out: dict = {}
    _read_stream(strict.base_url, {**body, "stream": True}, out, "s")
    assert out["s"]["status"] == 200 and "deadline" in out["s"]["error"]["message"]
    assert out["s"]["done"]
    time.sleep(0.5)
    assert metric(strict, "vllm:num_requests_running") == 0


def test_sigterm_past_grace_aborts_and_exits_0(strict):
    out: dict = {}
    body = {**LONG, "n": 16}
    t = threading.Thread(target=_read_stream, args=(strict.base_url, body, out, "s"))
    t.start()
    while out.get("s", {}).get("chunks", 0) < 2:
        time.sleep(0.02)
    strict.proc.send_signal(signal.SIGTERM)
    assert strict.proc.wait(120) == 0
    t.join(30)
    assert not out["s"]["done"]  # cut at the grace period
