"""The tests' server starter: :mod:`server.launcher` (shared with bench/ and the soak),
and the waits the server tests share."""

from __future__ import annotations

import time
from collections.abc import Callable

from server.launcher import VLLM_SERVER, ServerProcess, free_port, metric_value

__all__ = ["VLLM_SERVER", "ServerProcess", "free_port", "metric_value", "wait_until"]


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               poll: float = 0.05) -> None:
    """Poll ``predicate`` (a look at the server's own state) until it holds; fail after
    ``timeout`` seconds. The timeout only bounds a hang: nothing is asserted about time."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(poll)
