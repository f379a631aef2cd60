"""Client behaviour that needs no model: error mapping, retry policy, settings,
stream parsing, connection failures on a closed port, and 429 handling.

s1-serve has no rate limiter, so the 429 test talks to a small stand-in HTTP
server on a real socket (http.server in a thread); everything else that needs
a model is in test_client.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from client import (
    AnswerDelta,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    Finished,
    NotFoundError,
    RateLimitError,
    RetryPolicy,
    S1Error,
    ServerError,
    ServiceUnavailableError,
    ThinkingDelta,
    Usage,
    UsageEvent,
)
from client.config import resolve_base_url
from client.errors import error_for_status
from client.types import events_from_chunk

ROOT = Path(__file__).resolve().parents[1]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # closed once we return


# ------------------------------------------------------------------ mapping
@pytest.mark.parametrize(("status", "cls"), [
    (400, BadRequestError), (401, AuthenticationError), (404, NotFoundError),
    (429, RateLimitError), (500, ServerError), (502, ServerError),
    (503, ServiceUnavailableError), (413, APIStatusError)])
def test_error_for_status(status: int, cls: type[APIStatusError]) -> None:
    body = {"error": {"message": "boom", "type": "x_error", "param": "thinking_max",
                      "code": status}}
    e = error_for_status(status, body, request_id="rid", retry_after=2.0)
    assert type(e) is cls and isinstance(e, S1Error)
    assert (e.status, e.message, e.param, e.request_id, e.type) == \
        (status, "boom", "thinking_max", "rid", "x_error")
    assert str(e) == "boom (param: thinking_max) [request id rid]"


def test_error_hierarchy_and_plain_bodies() -> None:
    assert issubclass(ServiceUnavailableError, ServerError)
    assert issubclass(APITimeoutError, APIConnectionError)
    assert not issubclass(APIConnectionError, APIStatusError)
    e = error_for_status(502, "<html>bad gateway</html>")
    assert isinstance(e, ServerError) and e.message == "HTTP 502: <html>bad gateway</html>"
    assert e.param is None


# ------------------------------------------------------------------- retries
def test_retry_policy() -> None:
    policy = RetryPolicy(max_retries=3, backoff_base=1.0, backoff_max=3.0)
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 3.0), (9, 3.0)):
        waits = [policy.backoff(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1  # jittered
    status = {s: error_for_status(s, {}) for s in (400, 401, 404, 429, 500, 503)}
    assert all(policy.wait(1, status[s]) is None for s in (400, 401, 404, 500))
    assert policy.wait(1, status[429]) is not None and policy.wait(1, status[503]) is not None
    assert policy.wait(4, status[503]) is None  # out of retries
    assert policy.wait(1, error_for_status(429, {}, retry_after=7.0)) == 7.0
    assert policy.wait(1, error_for_status(503, {}, retry_after=3600.0)) is None
    assert policy.wait(1, APIConnectionError("refused", retryable=True)) is not None
    assert policy.wait(1, APITimeoutError("read timeout")) is None


def test_connection_error_is_retried() -> None:
    url = closed_port_url()
    started = time.monotonic()
    with Client(url, max_retries=3, backoff_base=0.1) as c, \
            pytest.raises(APIConnectionError) as err:
        c.chat("hi", thinking_max=8)
    assert err.value.attempts == 4 and err.value.status is None
    assert err.value.retryable and "cannot reach" in err.value.message
    assert time.monotonic() - started >= 0.05 + 0.1 + 0.2  # each wait is >= half its ceiling
    with Client(url, max_retries=0) as c, pytest.raises(APIConnectionError) as err:
        c.health()
    assert err.value.attempts == 1


def test_async_connection_error_is_retried() -> None:
    async def scenario() -> APIConnectionError:
        async with AsyncClient(closed_port_url(), max_retries=2, backoff_base=0.02) as c:
            try:
                await c.complete("hi")
            except APIConnectionError as exc:
                return exc
        raise AssertionError("no error")

    assert asyncio.run(scenario()).attempts == 3


class RateLimited(BaseHTTPRequestHandler):
    """Stand-in server: 429 with ``Retry-After: 1`` for the first ``limit`` requests."""

    hits = 0
    limit = 1

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        type(self).hits += 1
        if type(self).hits <= self.limit:
            body = {"error": {"message": "slow down", "type": "rate_limit_error",
                              "param": None, "code": 429}}
            self._reply(429, body, {"Retry-After": "1", "x-request-id": "rl-1"})
        else:
            self._reply(200, {"object": "list", "data": [{"id": "stub"}]}, {})

    def _reply(self, status: int, body: dict, headers: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for key, value in {**headers, "Content-Type": "application/json",
                           "Content-Length": str(len(data))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def rate_limited() -> Iterator[str]:
    stub = ThreadingHTTPServer(("127.0.0.1", 0), RateLimited)
    RateLimited.hits, RateLimited.limit = 0, 1
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{stub.server_address[1]}"
    finally:
        stub.shutdown()
        stub.server_close()


def test_429_honours_retry_after(rate_limited: str) -> None:
    with Client(rate_limited, max_retries=0) as c, pytest.raises(RateLimitError) as err:
        c.models()
    assert err.value.status == 429 and err.value.retry_after == 1.0
    assert err.value.request_id == "rl-1" and err.value.attempts == 1
    RateLimited.hits, RateLimited.limit = 0, 2
    started = time.monotonic()
    with Client(rate_limited, max_retries=3, backoff_base=0.01) as c:
        assert [m.id for m in c.models()] == ["stub"]
    # Two 429s, each followed by the 1 s the server asked for (the backoff alone is ~10 ms).
    assert RateLimited.hits == 3 and time.monotonic() - started >= 2.0


# ------------------------------------------------------------------ settings
def test_base_url_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("S1_BASE_URL", raising=False)
    monkeypatch.delenv("S1_API_KEY", raising=False)
    assert resolve_base_url(None) == "http://127.0.0.1:8000"
    assert resolve_base_url("localhost:9000/v1/") == "http://localhost:9000"
    monkeypatch.setenv("S1_BASE_URL", "https://s1.example/v1")
    monkeypatch.setenv("S1_API_KEY", "env-key")
    with Client() as c:
        assert c.base_url == "https://s1.example"
        assert c.options.http_headers()["Authorization"] == "Bearer env-key"
    with Client("http://h:1", "arg-key", timeout=3, connect_timeout=1) as c:
        assert c.base_url == "http://h:1" and c.options.api_key == "arg-key"
        assert c.options.timeout.read == 3 and c.options.timeout.connect == 1
    with Client() as c:
        with pytest.raises(TypeError, match="thinking_maximum"):
            c.chat("hi", thinking_maximum=5)  # type: ignore[call-arg]
        with pytest.raises(ValueError, match="at least one message"):
            c.chat([])


# ----------------------------------------------------------------- streaming
def test_events_from_chunks() -> None:
    chat = {"choices": [{"index": 1, "delta": {"reasoning": "hm", "content": "4"},
                         "finish_reason": "stop"}]}
    assert events_from_chunk(chat) == [ThinkingDelta(index=1, text="hm"),
                                       AnswerDelta(index=1, text="4"),
                                       Finished(index=1, finish_reason="stop")]
    legacy = {"choices": [{"index": 0, "delta": {"reasoning_content": "hm"}}]}
    assert events_from_chunk(legacy) == [ThinkingDelta(text="hm")]
    completion = {"choices": [{"index": 0, "text": "x", "reasoning": None}]}
    assert events_from_chunk(completion) == [AnswerDelta(text="x")]
    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5,
                                      "total_tokens": 8,
                                      "completion_tokens_details": {"reasoning_tokens": 2}}}
    [event] = events_from_chunk(usage)
    assert event == UsageEvent(usage=Usage(prompt_tokens=3, completion_tokens=5,
                                           total_tokens=8, reasoning_tokens=2))
    assert event.usage.answer_tokens == 3


# ----------------------------------------------------------------------- CLI
def test_cli_connection_error_exit_code() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S1_")}
    env["S1_BASE_URL"] = closed_port_url()
    out = subprocess.run([sys.executable, "-m", "client", "health", "--retries", "1"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 3 and out.stdout == ""
    assert "after 2 attempts" in out.stderr and "S1_BASE_URL" in out.stderr
