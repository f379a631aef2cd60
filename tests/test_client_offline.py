"""Client behaviour that needs no model: error mapping, the retry policy and the waits
it asks for, settings, stream parsing, and connection failures on a closed port.

Waits are recorded, not slept (``time.sleep`` / ``asyncio.sleep`` of the client modules
are replaced), so nothing here depends on the machine's speed. The server's real 429
and 503 answers, and the client retrying them, are in test_client.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

import client.async_client
import client.sync_client
import client.wire
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


class Clock:
    """The clients' clock in these tests: sleeping records the wait and moves time on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_800_000_000.0 + self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The seconds the clients asked to wait, recorded instead of slept."""
    clock = Clock()
    monkeypatch.setattr(client.sync_client, "time", clock)
    monkeypatch.setattr(client.wire, "time", clock)
    monkeypatch.setattr(client.async_client, "asyncio", SimpleNamespace(sleep=clock.async_sleep))
    return clock.waits


def test_connection_error_is_retried(waits: list[float]) -> None:
    url = closed_port_url()
    with Client(url, max_retries=3, backoff_base=0.1) as c, \
            pytest.raises(APIConnectionError) as err:
        c.chat("hi", thinking_max=8)
    assert err.value.attempts == 4 and err.value.status is None
    assert err.value.retryable and "cannot reach" in err.value.message
    assert len(waits) == 3  # jittered exponential backoff: each in [ceiling / 2, ceiling]
    assert all(c / 2 <= w <= c for w, c in zip(waits, (0.1, 0.2, 0.4), strict=True))
    with Client(url, max_retries=0) as c, pytest.raises(APIConnectionError) as err:
        c.health()
    assert err.value.attempts == 1 and len(waits) == 3


def test_async_connection_error_is_retried(waits: list[float]) -> None:
    async def scenario() -> APIConnectionError:
        async with AsyncClient(closed_port_url(), max_retries=2, backoff_base=0.02) as c:
            try:
                await c.complete("hi")
            except APIConnectionError as exc:
                return exc
        raise AssertionError("no error")

    assert asyncio.run(scenario()).attempts == 3 and len(waits) == 2


def answers(*statuses: int) -> httpx.MockTransport:
    """A transport answering ``statuses`` in turn (429/503 with ``Retry-After: 1``)."""
    queue = list(statuses)

    def handler(request: httpx.Request) -> httpx.Response:
        status = queue.pop(0)
        if status == 200:
            return httpx.Response(200, json={"object": "list", "data": [{"id": "m"}]})
        return httpx.Response(status, headers={"Retry-After": "1", "x-request-id": "rid"},
                              json={"error": {"message": "later", "type": "x", "code": status}})

    return httpx.MockTransport(handler)


def test_retry_after_is_honoured_by_both_clients(waits: list[float],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    with Client("http://s1", max_retries=0,
                http_client=httpx.Client(transport=answers(429))) as c, \
            pytest.raises(RateLimitError) as err:
        c.models()
    assert (err.value.retry_after, err.value.request_id, err.value.attempts) == (1.0, "rid", 1)
    assert waits == []
    with caplog.at_level(logging.INFO, logger="client"), \
            Client("http://s1", max_retries=3, backoff_base=0.01,
                   http_client=httpx.Client(transport=answers(429, 503, 200))) as c:
        assert [m.id for m in c.models()] == ["m"]
    assert waits == [1.0, 1.0]  # what the server asked for, not the ~10 ms backoff
    assert ["HTTP 429" in r.getMessage() for r in caplog.records] == [True, False]

    async def scenario() -> list[str]:
        http = httpx.AsyncClient(transport=answers(503, 200))
        async with AsyncClient("http://s1", max_retries=1, http_client=http) as c:
            return [m.id for m in await c.models()]

    assert asyncio.run(scenario()) == ["m"] and waits == [1.0, 1.0, 1.0]


def test_wait_ready_polls_until_the_deadline(waits: list[float]) -> None:
    with Client(closed_port_url(), max_retries=0) as c, \
            pytest.raises(APITimeoutError, match="not ready after 3 s") as err:
        c.wait_ready(timeout=3, interval=1)
    assert "cannot reach" in str(err.value)
    assert waits == [1, 1, 1]  # looks at 0, 1, 2 and 3 s; the next would be past the deadline


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


def test_stream_events_per_the_sse_format() -> None:
    """An event's data may span several ``data:`` lines (joined with newlines); comments,
    other fields and CRLF line ends are part of the format; [DONE] ends the stream."""
    chunk = {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": "4"}}]}
    text = json.dumps(chunk, indent=1)  # a multi-line JSON document
    body = (": keep-alive\r\n\r\nevent: message\n"
            + "".join(f"data: {line}\n" for line in text.splitlines())
            + "\ndata: [DONE]\n\n")
    transport = httpx.MockTransport(lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, text=body))
    with Client("http://s1", http_client=httpx.Client(transport=transport)) as c:
        stream = c.chat("hi", stream=True)
        assert list(stream.iter_raw()) == [chunk] and stream.id == "c1"
    cut = httpx.MockTransport(lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, text=f"data: {json.dumps(chunk)}\n\n"))
    with Client("http://s1", http_client=httpx.Client(transport=cut)) as c, \
            pytest.raises(APIConnectionError, match="ended before"):
        list(c.chat("hi", stream=True))


# ----------------------------------------------------------------------- CLI
def test_cli_connection_error_exit_code() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S1_")}
    env["S1_BASE_URL"] = closed_port_url()
    out = subprocess.run([sys.executable, "-m", "client", "health", "--retries", "1"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 3 and out.stdout == ""
    assert "after 2 attempts" in out.stderr and "S1_BASE_URL" in out.stderr


def test_budget_fields_reach_the_body() -> None:
    """thinking_waits and an empty continuation (no string) are sent as given; None is
    left out, so the server's default applies."""
    from client.wire import chat_body, completion_body

    body = chat_body("hi", {"thinking_waits": 2, "thinking_continuation": "Hmm",
                            "thinking_min": None}, "m", False)
    assert body["thinking_waits"] == 2 and body["thinking_continuation"] == "Hmm"
    assert "thinking_min" not in body
    body = completion_body("p", {"thinking_min": 8, "thinking_continuation": ""}, None, False)
    assert body["thinking_continuation"] == "" and body["thinking_min"] == 8


def test_the_deadline_goes_in_the_body() -> None:
    from client.cli import _fields, build_parser
    from client.wire import chat_body

    body = chat_body("hi", {"thinking_deadline_ms": 1500, "thinking_max": 64}, None, False)
    assert body["thinking_deadline_ms"] == 1500 and body["thinking_max"] == 64
    args = build_parser().parse_args(["chat", "hi", "--deadline-ms", "800"])
    assert _fields(args)["thinking_deadline_ms"] == 800


def test_early_stop_goes_in_the_body_and_probe_tokens_come_back() -> None:
    from client.cli import _fields, build_parser
    from client.types import Usage
    from client.wire import chat_body

    early = {"every": 16, "agree": 2}
    assert chat_body("hi", {"thinking_early_stop": early}, None, False)[
        "thinking_early_stop"] == early
    args = build_parser().parse_args(["chat", "hi", "--early-stop", "16,2"])
    assert _fields(args)["thinking_early_stop"] == early
    with pytest.raises(SystemExit):
        build_parser().parse_args(["chat", "hi", "--early-stop", "16"])
    usage = Usage.from_api({"completion_tokens": 9, "probe_tokens": 12,
                            "completion_tokens_details": {"reasoning_tokens": 4}})
    assert (usage.probe_tokens, usage.answer_tokens) == (12, 5)
    assert Usage.from_api({}).probe_tokens == 0
