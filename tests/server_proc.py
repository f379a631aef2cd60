"""The tests' server starter: :mod:`server.launcher` (shared with bench/ and the soak),
and the waits the server tests share."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from server.launcher import VLLM_SERVER, ServerProcess, free_port, metric_value

__all__ = ["VLLM_SERVER", "KeyedServerProcess", "ServerProcess", "free_port", "held_streams",
           "metric_value", "wait_until"]


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


@contextmanager
def held_streams(server: ServerProcess, body: dict, count: int,
                 path: str = "/v1/chat/completions") -> Iterator[None]:
    """``count`` streaming requests admitted and held open: each has sent its first chunk, so
    the server has counted it in flight. Long ones (``body``) stay in flight until the block
    ends, when the client leaves and the server aborts them; then the slots are free again."""
    with ExitStack() as stack:
        client = stack.enter_context(httpx.Client(
            base_url=server.base_url, headers=getattr(server, "headers", None), timeout=120))
        readers = []  # kept: a line iterator that is dropped closes its connection
        for _ in range(count):
            resp = stack.enter_context(client.stream("POST", path, json={**body, "stream": True}))
            assert resp.status_code == 200, resp.read()
            readers.append(resp.iter_lines())
            assert next(line for line in readers[-1] if line).startswith("data: ")
        assert server.metric("s1_requests_in_flight") == count
        yield
    wait_until(lambda: server.metric("s1_requests_in_flight") == 0
               and server.metric("vllm:num_requests_running") == 0, 60,
               "the held requests to be aborted")
