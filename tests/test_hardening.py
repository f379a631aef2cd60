"""Deadlines and shutdown of the real server (subprocess, tiny model).

Waits are on events and on the server's own state (``GET /metrics``), never on sleeps.
Each SIGTERM test starts and stops its own server. (The 429s of the admission limits are
in test_server_settings.py.)
"""

from __future__ import annotations

import json
import signal
import socket
import threading

import httpx
import pytest

from tests.server_proc import (
    HOLD,
    HOLD_TOKENS,
    ServerProcess,
    frozen_engine,
    wait_until,
)
from tests.stream_reader import StreamRecord, read_in_thread, read_stream

pytestmark = pytest.mark.engine
MSG = [{"role": "user", "content": "How many r in raspberry?"}]


# A stream held unread: 2 choices of HOLD (tests/server_proc.py), ~12 MB of events, far more
# than the server's send buffer (4 MiB at most) and the receive window of a client that has
# stopped reading can take. The engine finishes it; then only its unread output keeps it in
# flight, until the client reads on (its window opens again) or the server gives up on it.
HELD_N = 2


def hold_one(server: ServerProcess) -> tuple[StreamRecord, threading.Thread]:
    """A held stream, read to its third chunk and paused there (``rec.go`` resumes it)."""
    generated = server.metric("vllm:generation_tokens_total")
    rec = StreamRecord(pause_after=3)
    body = {"messages": MSG, **HOLD, "n": HELD_N, "temperature": 1}
    thread = read_in_thread(server.base_url, body, rec)
    assert rec.paused.wait(120) and not rec.ended.is_set(), rec
    wait_until(lambda: server.metric("vllm:generation_tokens_total") - generated
               == HELD_N * HOLD_TOKENS, 600, "the engine to finish the held request")
    assert server.metric("s1_requests_in_flight") == 1
    return rec, thread


def refuses_connections(server: ServerProcess) -> bool:
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    except OSError:
        return True
    return False


# ---------------------------------------------------------------------- deadlines
@pytest.fixture(scope="module")
def strict(tiny_s1_open):
    """A 1.5 s deadline, and (so one server start serves both) no thinking format."""
    proc = ServerProcess(tiny_s1_open, "--request-timeout-s", "1.5", "--served-model-name", "tiny",
                         "--thinking-format", "none")
    try:
        yield proc.wait_ready()
    finally:
        assert proc.stop() == 0


# Every generating surface; the engine core is frozen while each request waits, so the
# 1.5 s deadline fires before any token, however fast the machine.
DEADLINE_BODIES = {
    "/v1/chat/completions": {"messages": MSG, "max_tokens": 40},
    "/v1/completions": {"prompt": "How many r", "max_tokens": 40},
    "/v1/responses": {"input": "How many r", "max_output_tokens": 40},
    "/v1/messages": {"messages": MSG, "max_tokens": 40},
}
DEADLINE_MESSAGE = "the request ran past its 1.5 s deadline and was aborted"


@pytest.mark.parametrize("path", list(DEADLINE_BODIES))
def test_deadline_aborts_request(strict, path):
    body = {"model": "tiny", **DEADLINE_BODIES[path]}
    with frozen_engine(strict):
        r = httpx.post(strict.base_url + path, json=body, timeout=120)
        assert r.status_code == 504, r.text
        err = r.json()["error"]
        assert err["message"].startswith(DEADLINE_MESSAGE), err
        if path != "/v1/messages":  # vLLM's error shape (Anthropic's: type and message)
            assert err["code"] == 504, err
        assert r.headers["x-request-id"]  # the front's id, on every response
        assert strict.metric("s1_requests_in_flight") == 0
    wait_until(lambda: strict.metric("vllm:num_requests_running") == 0, 60, "the aborts")
    assert strict.metric("vllm:num_requests_waiting") == 0


@pytest.mark.parametrize("path", [
    "/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages"])
def test_deadline_ends_the_stream_with_its_error(strict, path):
    body = {"model": "tiny", **DEADLINE_BODIES[path]}
    with frozen_engine(strict):
        rec = StreamRecord()
        with httpx.Client(base_url=strict.base_url, timeout=120) as client:
            read_stream(client, {**body, "stream": True}, rec, path=path)
        # The stream had begun (200): its last event is the error, in the surface's shape.
        assert rec.status == 200 and rec.events, rec
        assert DEADLINE_MESSAGE in json.dumps(rec.events[-1]), rec.events
        # The API process let both go while the engine was still frozen.
        assert strict.metric("s1_requests_in_flight") == 0
    wait_until(lambda: strict.metric("vllm:num_requests_running") == 0, 60, "the aborts")
    assert strict.metric("vllm:num_requests_waiting") == 0


def test_budgets_without_a_thinking_format_are_400(strict):
    """--thinking-format none: a budget cannot be enforced, so it is refused; an effort
    level (a hint, not a promise) is served without one."""
    body = {"model": "tiny", "messages": MSG, "max_tokens": 8}
    for budget, param in (({"thinking_max": 4}, "thinking_max"),
                          ({"thinking_min": 2}, "thinking_min")):
        r = httpx.post(strict.base_url + "/v1/chat/completions", json={**body, **budget})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == param and "no thinking format" in err["message"], err
    r = httpx.post(strict.base_url + "/v1/chat/completions", timeout=120,
                   json={**body, "reasoning_effort": "low"})
    assert r.status_code == 200 and r.json()["choices"][0].get("budget") is None, r.text


# ----------------------------------------------------------------------- shutdown
def test_sigterm_lets_in_flight_requests_finish(tiny_s1_open):
    server = ServerProcess(tiny_s1_open, "--shutdown-grace-s", "600", "--max-model-len", "4096")
    try:
        server.wait_ready()
        rec, thread = hold_one(server)
        server.proc.send_signal(signal.SIGTERM)
        # Stopping: no new connections, while the held response is still unfinished.
        wait_until(lambda: refuses_connections(server), 60, "the listener to close")
        assert server.proc.poll() is None and not rec.ended.is_set()
        rec.go.set()  # the client reads on: the response finishes within the grace period
        assert rec.ended.wait(600)
        thread.join()
        assert rec.done and rec.error is None, rec  # finished, not cut
        assert server.proc.wait(120) == 0
    finally:
        server.stop()


def test_sigterm_past_grace_aborts_and_exits_0(tiny_s1_open):
    server = ServerProcess(tiny_s1_open, "--shutdown-grace-s", "1", "--max-model-len", "4096")
    try:
        server.wait_ready()
        rec, thread = hold_one(server)
        server.proc.send_signal(signal.SIGTERM)
        # The held response cannot finish while unread: the grace period runs out.
        assert server.proc.wait(120) == 0
        rec.go.set()
        assert rec.ended.wait(60)
        thread.join()
        assert not rec.done  # cut at the grace period
        log = server.log_path.read_text()
        assert "timeout graceful shutdown exceeded" in log, log[-3000:]
    finally:
        server.stop()
