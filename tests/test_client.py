"""The client package and the ``s1-client`` CLI against real s1-serve subprocesses.

Most tests share the suite's ``api_server`` (tiny random model, s1 format whose prompt
opens thinking, an API key). Two behaviours need a server of their own: 503 while the
model loads (a server whose engine load is held until the test lets it go, see
:mod:`s1_common.launcher`), and 429 at the in-flight limit (``--max-in-flight 1``, its one
slot held by a stream the test does not read). Nothing is mocked: every request crosses a
socket; tests that need no model are in test_client_offline.py. Random weights make the
text gibberish, but budgets are exact and greedy decoding is deterministic, which is what
these tests compare.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from client import (
    AnswerDelta,
    APIConnectionError,
    APITimeoutError,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    Finished,
    Message,
    NotFoundError,
    RateLimitError,
    ServiceUnavailableError,
    ThinkingDelta,
    UsageEvent,
)
from tests.conftest import API_KEY, API_MODEL
from tests.server_proc import ServerProcess, free_port, wait_until

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "How many r in raspberry?"
THINK_PROMPT = "Q: How many r in raspberry?\n<|im_start|>think\n"  # opens thinking
SAMPLED = {"temperature": 1.0, "seed": 3}  # seeded sampling: non-empty, repeatable thinking


# ------------------------------------------------------------------ servers
@pytest.fixture(scope="module")
def server(api_server: ServerProcess) -> str:
    return api_server.base_url


@pytest.fixture
def loading_server(tiny_s1_open: Path) -> Iterator[ServerProcess]:
    """A server whose port is open and whose model load waits for ``release_load``."""
    proc = ServerProcess(tiny_s1_open, hold_load=True, name="client-loading")
    try:
        yield proc.wait_port()
    finally:
        proc.stop()


@pytest.fixture
def limited_server(tiny_s1_open: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tiny_s1_open, "--max-in-flight", "1", name="client-limited")
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[Client]:
    with Client(server, API_KEY) as c:
        yield c


@dataclass
class Cli:
    returncode: int
    stdout: str
    stderr: str


def texts(events: Iterable[object]) -> tuple[str | None, str]:
    """Streamed thinking and answer; no thinking text is None, as vLLM's whole answer says."""
    events = list(events)
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    return thinking or None, answer


def run_cli(*args: str, base_url: str | None = None, api_key: str | None = None,
            program: tuple[str, ...] = (sys.executable, "-m", "client")) -> Cli:
    """Run the CLI; output decoded as UTF-8 without newline translation."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("S1_")}
    env["PYTHONIOENCODING"] = "utf-8"
    if base_url:
        env["S1_BASE_URL"] = base_url
    if api_key:
        env["S1_API_KEY"] = api_key
    done = subprocess.run([*program, *args], cwd=ROOT, env=env, capture_output=True,
                          timeout=120)
    return Cli(done.returncode, done.stdout.decode(), done.stderr.decode())


# ------------------------------------------- loading (503), authentication (401), 429
def test_503_while_loading_then_retry(loading_server: ServerProcess,
                                      caplog: pytest.LogCaptureFixture) -> None:
    url = loading_server.base_url
    with Client(url, max_retries=0) as c:
        health = c.health()
        assert health.status == "loading" and not health.ok
        with pytest.raises(ServiceUnavailableError) as err:
            c.models()
    e = err.value
    assert e.status == 503 and e.retry_after == 5 and e.request_id and e.attempts == 1
    cli = run_cli("health", base_url=url)
    assert cli.returncode == 4 and cli.stdout.strip() == "loading"
    turned_away: list[int] = []

    def load_after_the_first_503(response: httpx.Response) -> None:
        if response.status_code == 503 and not turned_away:
            turned_away.append(503)
            loading_server.release_load()  # the engine starts loading only now

    with caplog.at_level(logging.INFO, logger="client"), \
            httpx.Client(event_hooks={"response": [load_after_the_first_503]}) as http, \
            Client(url, max_retries=200, http_client=http) as c:
        r = c.chat(QUESTION, thinking_max=4, max_tokens=30, temperature=0)
    assert turned_away == [503] and r.usage.reasoning_tokens == 4
    retries = [rec.getMessage() for rec in caplog.records if "retrying" in rec.getMessage()]
    assert retries and "still loading" in retries[0]


def test_401_without_or_with_wrong_key(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("S1_API_KEY", raising=False)
    for key in (None, "wrong"):
        with Client(server, key) as c:
            with pytest.raises(AuthenticationError) as err:
                c.models()
            assert c.health().ok  # /health needs no key
        assert err.value.status == 401 and err.value.request_id and err.value.attempts == 1
    monkeypatch.setenv("S1_API_KEY", API_KEY)
    with Client(server) as c:
        assert [m.id for m in c.models()] == [API_MODEL]
    cli = run_cli("models", base_url=server)
    assert cli.returncode == 1 and "HTTP 401" in cli.stderr and "--api-key" in cli.stderr
    cli = run_cli("models", "--api-key", API_KEY, base_url=server)
    assert cli.returncode == 0 and cli.stdout.startswith(API_MODEL)


# The slot holder: 8 sampled choices of 900 tokens with 20 logprobs each, about 11 MB of
# events (~1.5 kB a token), far more than the socket buffers between the server and a client
# whose receive buffer is 4 KiB (the server's send buffer grows to 4 MiB at most). Unread,
# the stream blocks the server's writer, so the request stays in flight, however long the
# test takes, until the stream is closed.
HOLD = {"n": 8, "max_tokens": 900, "temperature": 1.0, "seed": 5,
        "extra_body": {"ignore_eos": True, "logprobs": True, "top_logprobs": 20}}


def test_429_at_the_in_flight_limit(limited_server: ServerProcess,
                                    caplog: pytest.LogCaptureFixture) -> None:
    proc = limited_server
    args = dict(thinking_max=4, max_tokens=30, temperature=0)
    small_window = httpx.HTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
    with httpx.Client(transport=small_window, timeout=600) as raw, \
            Client(proc.base_url, http_client=raw) as holder:
        generated = proc.metric("vllm:generation_tokens_total")
        held = holder.chat(QUESTION, stream=True, **HOLD)
        # The engine generates every token of the held request; then only the unread
        # stream keeps it in flight.
        wait_until(lambda: proc.metric("vllm:generation_tokens_total") - generated
                   == HOLD["n"] * HOLD["max_tokens"], 300, "the engine to finish")
        assert proc.metric("s1_requests_in_flight") == 1
        with Client(proc.base_url, max_retries=0) as probe, \
                pytest.raises(RateLimitError) as err:
            probe.chat(QUESTION, **args)
        e = err.value
        assert e.status == 429 and e.retry_after == 1 and e.request_id and e.attempts == 1

        def free_the_slot(response: httpx.Response) -> None:
            if response.status_code == 429 and not held.response.is_closed:
                held.close()
                wait_until(lambda: proc.metric("s1_requests_in_flight") == 0, 300,
                           "the closed stream to free its slot")

        with caplog.at_level(logging.INFO, logger="client"), \
                httpx.Client(event_hooks={"response": [free_the_slot]}) as http, \
                Client(proc.base_url, max_retries=1, http_client=http) as patient:
            assert patient.chat(QUESTION, **args).usage.reasoning_tokens == 4
    assert held.response.is_closed
    assert [rec.getMessage().count("HTTP 429") for rec in caplog.records] == [1]


# --------------------------------------------------------------- sync client
def test_health_and_models(client: Client, server: str) -> None:
    assert client.health().ok
    [model] = client.models()
    assert model.id == API_MODEL
    assert model.thinking_format == "s1" and model.max_model_len == 1024


@pytest.mark.parametrize("thinking_max", [4, 16])
def test_chat_thinking_max_is_exact(client: Client, thinking_max: int) -> None:
    r = client.chat(QUESTION, thinking_max=thinking_max, temperature=0, max_tokens=64)
    assert r.usage.reasoning_tokens == thinking_max
    assert r.answer.startswith("Final Answer:")  # cut at thinking_max: the forced prefix
    assert r.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 64 and r.usage.total_tokens > r.usage.prompt_tokens
    assert r.request_id and r.id.startswith("chatcmpl-")


def test_chat_thinking_min_and_fields(client: Client) -> None:
    r = client.chat([{"role": "system", "content": "Be brief."},
                     Message(role="user", content=QUESTION)],
                    thinking_min=12, thinking_max=20, thinking_continuation="Hmm",
                    max_tokens=40, top_p=0.9, n=2, stop=["zzzz"], **SAMPLED)
    assert len(r.choices) == 2 and [c.index for c in r.choices] == [0, 1]
    assert 24 <= r.usage.reasoning_tokens <= 40  # two choices, each within [12, 20]
    assert r.usage.completion_tokens <= 80


def test_extra_body(client: Client) -> None:
    r = client.chat(QUESTION, extra_body={"max_thinking_tokens": 5}, temperature=0,
                    max_tokens=40)  # the server's alias of thinking_max
    assert r.usage.reasoning_tokens == 5


@pytest.mark.parametrize("sampling", [{"temperature": 0}, SAMPLED], ids=["greedy", "seeded"])
def test_chat_stream_equals_non_stream(client: Client, sampling: dict) -> None:
    args = dict(thinking_max=8, max_tokens=40, **sampling)
    whole = client.chat(QUESTION, **args)
    with client.chat(QUESTION, stream=True, **args) as stream:
        events = list(stream)
    assert texts(events) == (whole.reasoning, whole.answer)
    assert [e.finish_reason for e in events if isinstance(e, Finished)] == [whole.finish_reason]
    assert isinstance(events[-1], UsageEvent) and events[-1].usage == whole.usage
    assert stream.usage == whole.usage and stream.usage.reasoning_tokens == 8
    assert stream.id and stream.model == API_MODEL and stream.request_id
    if sampling is SAMPLED:
        assert whole.reasoning  # the comparison above was not of two empty strings


def test_complete_and_stream(client: Client) -> None:
    whole = client.complete(THINK_PROMPT, thinking_max=6, max_tokens=30, **SAMPLED)
    # vLLM's completions have no reasoning split: the text keeps the thinking and the cut.
    assert whole.usage.reasoning_tokens == 6 and whole.reasoning is None
    assert "answer\nFinal Answer:" in whole.answer
    stream = client.complete(THINK_PROMPT, thinking_max=6, max_tokens=30, stream=True,
                             **SAMPLED)
    assert texts(stream) == (whole.reasoning, whole.answer)
    assert stream.usage == whole.usage
    raw = client.complete(THINK_PROMPT, thinking_max=6, max_tokens=30, stream=True, **SAMPLED)
    chunks = list(raw.iter_raw())
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert chunks[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 6


def test_connection_is_reused(server: str) -> None:
    seen: list[object] = []
    with Client(server, API_KEY) as c:
        c.http.event_hooks["response"].append(
            lambda r: seen.append(r.extensions["network_stream"].get_extra_info("client_addr")))
        c.health()
        list(c.chat(QUESTION, thinking_max=2, max_tokens=20, stream=True))
        c.chat(QUESTION, thinking_max=2, max_tokens=20)
        c.models()
    assert len(seen) == 4 and len(set(seen)) == 1


def test_settings_from_environment(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S1_BASE_URL", server + "/v1/")
    monkeypatch.setenv("S1_API_KEY", "from-env")
    with Client() as c:
        assert c.base_url == server
        assert c.options.http_headers()["Authorization"] == "Bearer from-env"
        assert c.health().ok
    monkeypatch.delenv("S1_BASE_URL")
    assert Client().base_url == "http://127.0.0.1:8000"


# -------------------------------------------------------------- async client
def test_async_client(server: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(server, API_KEY) as c:
            assert (await c.health()).ok
            assert [m.id for m in await c.models()] == [API_MODEL]
            whole = await c.chat(QUESTION, thinking_max=8, max_tokens=40, temperature=0)
            assert whole.usage.reasoning_tokens == 8
            stream = await c.chat(QUESTION, thinking_max=8, max_tokens=40, temperature=0,
                                  stream=True)
            assert texts([e async for e in stream]) == (whole.reasoning, whole.answer)
            assert stream.usage == whole.usage
            done = await c.complete(THINK_PROMPT, thinking_max=6, max_tokens=30, **SAMPLED)
            assert done.usage.reasoning_tokens == 6
            async with await c.complete(THINK_PROMPT, thinking_max=6, max_tokens=30,
                                        stream=True, **SAMPLED) as s:
                assert texts([e async for e in s]) == (done.reasoning, done.answer)
            with pytest.raises(BadRequestError) as bad:
                await c.chat(QUESTION, thinking_min=9, thinking_max=3)
            assert bad.value.param == "thinking_min" and bad.value.request_id
            with pytest.raises(NotFoundError):
                await c.complete(THINK_PROMPT, model="nope", stream=True)
        async with AsyncClient(f"http://127.0.0.1:{free_port()}", max_retries=2,
                               backoff_base=0.02) as dead:
            with pytest.raises(APIConnectionError) as err:
                await dead.models()
            assert err.value.attempts == 3

    asyncio.run(scenario())


# -------------------------------------------------------------------- errors
def test_400_bad_budget(client: Client) -> None:
    for stream in (False, True):  # a stream's errors are raised by the call itself
        with pytest.raises(BadRequestError) as err:
            client.chat(QUESTION, thinking_min=10, thinking_max=5, stream=stream)
        e = err.value
        assert e.status == 400 and e.param == "thinking_min" and e.type == "BadRequestError"
        assert "thinking_min" in e.message and e.request_id and "," not in e.request_id
        assert e.attempts == 1  # 4xx is not retried
    with pytest.raises(BadRequestError) as err:
        client.chat(QUESTION, thinking_continuation="x" * 201)
    assert err.value.param == "thinking_continuation"


def test_404_unknown_model(client: Client) -> None:
    with pytest.raises(NotFoundError) as err:
        client.chat(QUESTION, model="no-such-model")
    assert err.value.status == 404 and err.value.param == "model"
    assert API_MODEL in err.value.message


def test_read_timeout_is_raised_and_not_retried() -> None:
    # A peer that takes the connection (the kernel's listen backlog) and never answers:
    # the read times out whatever the machine's load. (Against the real server with a
    # long request, the test process was once descheduled for the whole generation and
    # then found the answer waiting: no timeout.)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with Client(url, timeout=0.2, max_retries=3) as c, \
                pytest.raises(APITimeoutError) as err:
            c.chat(QUESTION, max_tokens=5)
    assert err.value.attempts == 1  # a read timeout is not retried: the server got it


# ----------------------------------------------------------------------- CLI
def test_cli_chat_stream(client: Client, server: str) -> None:
    whole = client.chat(QUESTION, thinking_max=8, thinking_min=4, max_tokens=40, **SAMPLED)
    args = ["chat", QUESTION, "--thinking-max", "8", "--thinking-min", "4", "--max-tokens",
            "40", "--temperature", "1", "--seed", "3"]
    plain = run_cli(*args, "--stream", base_url=server, api_key=API_KEY)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.startswith(f"{whole.reasoning}\n\n{whole.answer}\n[usage]")  # no ANSI
    usage = plain.stdout.rstrip("\n").rsplit("\n", 1)[-1]
    assert "thinking 8," in usage and f"finish: {whole.finish_reason}" in usage
    colored = run_cli(*args, "--stream", "--color", "always", base_url=server,
                      api_key=API_KEY)
    assert colored.stdout.startswith(f"\x1b[2m{whole.reasoning}\x1b[0m\n\n{whole.answer}\n")
    batch = run_cli(*args, base_url=server, api_key=API_KEY)  # not streamed: same text
    assert batch.stdout == plain.stdout


def test_cli_json_models_health(server: str) -> None:
    out = run_cli("--base-url", server, "chat", QUESTION, "--thinking-max", "6", "--json",
                  "--temperature", "0", "--max-tokens", "30", api_key=API_KEY)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["object"] == "chat.completion"
    assert data["usage"]["completion_tokens_details"]["reasoning_tokens"] == 6
    out = run_cli("complete", THINK_PROMPT, "--thinking-max", "6", "--stream", "--json",
                  base_url=server, api_key=API_KEY)
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines[0]["object"] == "text_completion" and "usage" in lines[-1]
    out = run_cli("models", base_url=server, api_key=API_KEY)
    assert out.returncode == 0 and out.stdout.startswith(API_MODEL)


def test_cli_entry_point(server: str) -> None:
    """``pip install`` (``make install``) puts ``s1-client`` beside the interpreter."""
    from importlib.metadata import entry_points

    from client.cli import main

    [script] = entry_points(group="console_scripts", name="s1-client")
    assert script.load() is main
    entry = Path(sys.executable).with_name("s1-client")
    assert entry.is_file(), f"{entry}: the package is not installed in this environment"
    out = run_cli("health", "--base-url", server, program=(str(entry),))
    assert out.returncode == 0 and out.stdout.strip() == "ok"


def test_cli_errors(server: str) -> None:
    out = run_cli("chat", QUESTION, "--thinking-min", "9", "--thinking-max", "3",
                  base_url=server, api_key=API_KEY)
    assert out.returncode == 1 and out.stdout == ""
    assert "HTTP 400" in out.stderr and "thinking_min" in out.stderr and "request id" in out.stderr
    out = run_cli("chat")
    assert out.returncode == 2 and "prompt" in out.stderr
