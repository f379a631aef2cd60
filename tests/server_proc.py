"""The tests' server starter: :mod:`s1_common.launcher` (shared with bench/ and the soak),
and the waits the server tests share."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psutil

from s1_common.launcher import VLLM_SERVER, ServerProcess, free_port, metric_value

__all__ = ["HOLD", "HOLD_TOKENS", "VLLM_SERVER", "KeyedServerProcess", "ServerProcess",
           "engine_core", "free_port", "frozen_engine", "held_streams", "metric_value", "small_window_client", "wait_until"]


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               poll: float = 0.05) -> None:
    """Poll ``predicate`` (a look at the server's own state) until it holds; fail after
    ``timeout`` seconds. The timeout only bounds a hang: nothing is asserted about time."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(poll)


class KeyedServerProcess(ServerProcess):
    """A server whose /health and /metrics want an API key (``--no-auth-exempt-health``):
    ``key``, one the flags give it, goes with the readiness polls and :meth:`metric`."""

    def __init__(self, model: Path | str, *flags: str, key: str, **kwargs) -> None:
        super().__init__(model, *flags, **kwargs)
        self.headers = {"Authorization": f"Bearer {key}"}

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(self.base_url + "/metrics", headers=self.headers, timeout=30).text
        return metric_value(text, name, **labels)

    def wait_ready(self, timeout: float = 600.0) -> KeyedServerProcess:
        self.wait_port(timeout)

        def ready() -> bool:
            self.check_alive()
            try:
                return httpx.get(self.base_url + "/health", headers=self.headers,
                                 timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout, "/health 200", poll=0.1)
        return self


# What an unread stream holds: the events of a token with 20 top logprobs take ~1.5 kB, so
# 4000 tokens are ~6 MB, more than the server's socket send buffer (4 MiB at most) and a
# client receive buffer of 4 KiB can take. The server's writer blocks, and the request stays
# in flight, however fast the engine, until the client reads on or leaves. (The server needs
# a 4096-token context.)
HOLD_TOKENS = 4000
HOLD = {"max_tokens": HOLD_TOKENS, "ignore_eos": True, "logprobs": True, "top_logprobs": 20,
        "stream": True}


def small_window_client(server: ServerProcess, **kwargs) -> httpx.Client:
    """An httpx client whose sockets have a 4 KiB receive buffer (see HOLD)."""
    transport = httpx.HTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
    return httpx.Client(base_url=server.base_url, transport=transport, timeout=600, **kwargs)


@contextmanager
def held_streams(server: ServerProcess, messages: list[dict], count: int) -> Iterator[None]:
    """``count`` HOLD streams, admitted and held open: the engine has generated all their
    tokens, and only their unread output keeps them in flight. When the block ends the
    client leaves, and the slots are free again."""
    generated = server.metric("vllm:generation_tokens_total")
    with ExitStack() as stack:
        client = stack.enter_context(small_window_client(
            server, headers=getattr(server, "headers", None)))
        for _ in range(count):
            resp = stack.enter_context(client.stream("POST", "/v1/chat/completions",
                                                     json={"messages": messages, **HOLD}))
            assert resp.status_code == 200, resp.read()
        wait_until(lambda: server.metric("vllm:generation_tokens_total") - generated
                   == count * HOLD_TOKENS, 600, "the engine to finish the held requests")
        assert server.metric("s1_requests_in_flight") == count
        yield
    wait_until(lambda: server.metric("s1_requests_in_flight") == 0, 60,
               "the held requests to be released")


@contextmanager
def frozen_engine(server: ServerProcess) -> Iterator[psutil.Process]:
    """The server's engine core stopped (SIGSTOP) for the block, then resumed: nothing is
    generated meanwhile, however fast the machine, while the API process keeps serving."""
    core = engine_core(server.proc)
    core.suspend()
    try:
        yield core
    finally:
        core.resume()


def engine_core(server: subprocess.Popen) -> psutil.Process:
    """The vLLM engine-core child of the server (vLLM titles it ``VLLM::EngineCore``)."""
    seen = []
    for child in psutil.Process(server.pid).children(recursive=True):
        try:
            text = f"{child.name()} {' '.join(child.cmdline())}"
        except psutil.Error:
            continue
        if "EngineCore" in text:
            return child
        seen.append(f"{child.pid}: {text}")
    raise AssertionError(f"no EngineCore process under the server; children: {seen}")
