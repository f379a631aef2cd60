"""Deadlines and shutdown of the real server (subprocess, tiny model).

Waits are on events and on the server's own state (``GET /metrics``), never on sleeps.
Each SIGTERM test starts and stops its own server. (The 429s of the admission limits are
in test_server_settings.py.)
"""

from __future__ import annotations

import signal
import socket
import threading

import httpx
import pytest

from tests.server_proc import (
    HOLD,
    HOLD_TOKENS,
    ServerProcess,
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
@pytest.fixture
def strict(tiny_s1_open):  # one test: stopped as soon as it is done
    proc = ServerProcess(tiny_s1_open, "--request-timeout-s", "1.5", "--max-model-len", "4096")
    try:
        yield proc.wait_ready()
    finally:
        assert proc.stop() == 0


def test_deadline_aborts_request(strict):
    # 16 x 4000 tokens: several seconds even on an idle CPU, so the 1.5 s deadline fires
    # first (a slower machine only makes it surer); the token count below shows it did.
    body = {"messages": MSG, "max_tokens": 4000, "ignore_eos": True, "n": 16,
            "temperature": 1}
    tokens_before = strict.metric("vllm:generation_tokens_total")
    r = httpx.post(strict.base_url + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 504, r.text
    err = r.json()["error"]
    assert "deadline" in err["message"] and err["request_id"]
    rec = StreamRecord()
    with httpx.Client(base_url=strict.base_url, timeout=120) as client:
        read_stream(client, {**body, "stream": True}, rec)
    assert rec.status == 200 and "deadline" in rec.error["message"]
    assert rec.done
    wait_until(lambda: strict.metric("vllm:num_requests_running") == 0
               and strict.metric("s1_requests_in_flight") == 0, 60, "the aborts")
    assert strict.metric("vllm:num_requests_waiting") == 0
    assert strict.metric("vllm:generation_tokens_total") - tokens_before < 2 * 16 * 4000


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
