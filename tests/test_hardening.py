"""Deadlines and shutdown of the real server (subprocess, tiny model).

Waits are on events and on the server's own state (``GET /metrics``), never on sleeps.
Each SIGTERM test starts and stops its own server. (The 429s of the admission limits are
in test_server_settings.py.)
"""

from __future__ import annotations

import json
import signal
import threading
from dataclasses import dataclass, field

import httpx
import pytest

from tests.server_proc import ServerProcess, wait_until

pytestmark = pytest.mark.engine
MSG = [{"role": "user", "content": "How many r in raspberry?"}]
# Longer than the test lets it run: the deadline or the shutdown cuts it first.
HOLD = {"messages": MSG, "max_tokens": 4000, "ignore_eos": True}


@dataclass
class StreamRecord:
    """What one SSE reader saw. ``chunks_seen(k)`` is set once k chunks have arrived."""

    status: int | None = None
    chunks: int = 0
    done: bool = False
    error: object = None
    ended: threading.Event = field(default_factory=threading.Event)
    _waiters: list[tuple[int, threading.Event]] = field(default_factory=list)

    def chunks_seen(self, k: int) -> threading.Event:
        event = threading.Event()
        self._waiters.append((k, event))
        return event

    def count(self) -> None:
        self.chunks += 1
        for k, event in self._waiters:
            if self.chunks >= k:
                event.set()


def read_stream(base_url: str, body: dict, rec: StreamRecord) -> None:
    """Read one SSE stream to its end; record chunks, [DONE], and errors."""
    try:
        with httpx.stream("POST", base_url + "/v1/chat/completions", json=body,
                          timeout=600) as resp:
            rec.status = resp.status_code
            for line in resp.iter_lines():
                if line == "data: [DONE]":
                    rec.done = True
                elif line.startswith("data: "):
                    event = json.loads(line[6:])
                    if "error" in event:
                        rec.error = event["error"]
                    rec.count()
    except httpx.HTTPError as exc:
        rec.error = repr(exc)
    finally:
        for _, event in rec._waiters:  # never leave the test waiting on a failed stream
            event.set()
        rec.ended.set()


def start_reader(base_url: str, body: dict) -> tuple[StreamRecord, threading.Thread]:
    rec = StreamRecord()
    thread = threading.Thread(target=read_stream, args=(base_url, body, rec))
    return rec, thread


# ---------------------------------------------------------------------- deadlines
@pytest.fixture
def strict(tiny_s1_open):  # one test: stopped as soon as it is done
    proc = ServerProcess(tiny_s1_open, "--request-timeout-s", "1.5", "--max-model-len", "4096")
    try:
        yield proc.wait_ready()
    finally:
        assert proc.stop() == 0


def test_deadline_aborts_request(strict):
    # 16 x 4000 tokens: far longer than the 1.5 s deadline on any hardware this runs on.
    body = {"messages": MSG, "max_tokens": 4000, "ignore_eos": True, "n": 16,
            "temperature": 1}
    tokens_before = strict.metric("vllm:generation_tokens_total")
    r = httpx.post(strict.base_url + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 504, r.text
    err = r.json()["error"]
    assert "deadline" in err["message"] and err["request_id"]
    rec = StreamRecord()
    read_stream(strict.base_url, {**body, "stream": True}, rec)
    assert rec.status == 200 and "deadline" in rec.error["message"]
    assert rec.done
    wait_until(lambda: strict.metric("vllm:num_requests_running") == 0
               and strict.metric("s1_requests_in_flight") == 0, 60, "the aborts")
    assert strict.metric("vllm:num_requests_waiting") == 0
    assert strict.metric("vllm:generation_tokens_total") - tokens_before < 2 * 16 * 4000


# ----------------------------------------------------------------------- shutdown
LONG = {"messages": MSG, "stream": True, "max_tokens": 900, "ignore_eos": True,
        "thinking_min": 850, "thinking_max": 880}


def test_sigterm_lets_in_flight_requests_finish(tiny_s1_open):
    server = ServerProcess(tiny_s1_open, "--shutdown-grace-s", "600")
    try:
        server.wait_ready()
        rec, thread = start_reader(server.base_url, LONG)
        started = rec.chunks_seen(3)
        thread.start()
        assert started.wait(120) and not rec.ended.is_set(), rec
        at_signal = rec.chunks
        server.proc.send_signal(signal.SIGTERM)
        assert rec.ended.wait(600)
        thread.join()
        assert rec.done and rec.error is None, rec  # finished, not cut
        assert rec.chunks > at_signal + 100  # most of it was generated after the signal
        assert server.proc.wait(120) == 0
        with pytest.raises(httpx.HTTPError):  # no longer accepting
            httpx.get(server.base_url + "/health", timeout=2)
    finally:
        server.stop()


def test_sigterm_past_grace_aborts_and_exits_0(tiny_s1_open):
    server = ServerProcess(tiny_s1_open, "--shutdown-grace-s", "1", "--max-model-len", "4096")
    try:
        server.wait_ready()
        body = {**HOLD, "stream": True, "n": 16, "temperature": 1}
        rec, thread = start_reader(server.base_url, body)
        started = rec.chunks_seen(2)
        thread.start()
        assert started.wait(120) and not rec.ended.is_set(), rec
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(120) == 0
        assert rec.ended.wait(60)
        thread.join()
        assert not rec.done  # cut at the grace period
        log = server.log_path.read_text()
        assert "timeout graceful shutdown exceeded" in log, log[-3000:]
    finally:
        server.stop()
