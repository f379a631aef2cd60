"""Self-healing: notice a dead inference engine and exit so that a restart policy acts.

vLLM runs the engine core in its own process. When that process dies (a crash, the OOM
killer, a GPU fault) or the engine never starts, the HTTP server cannot serve again: the
in-process ``AsyncLLM`` is not restartable. Staying up and answering 503 forever keeps a
deployment down, because Docker's ``restart: unless-stopped`` (like most supervisors)
restarts a container whose process exited, not one that is merely unhealthy.

So :func:`watch_engine` waits for the engine to be dead and then, with
``exit_on_engine_death`` on (the default), asks the HTTP server to stop with
:data:`ENGINE_DEATH_EXIT_CODE`. Requests learn of the death from vLLM itself (its output
handler raises ``EngineDeadError`` into every request), so by then streams are ending
with an SSE error event and other requests with a 503; uvicorn's graceful shutdown lets
those responses flush before the process exits. With the setting off the server stays up
and ``/health`` answers 503 ``dead``, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

# uvicorn's own status for a failed startup; a supervisor treats any non-zero one as a crash.
ENGINE_DEATH_EXIT_CODE = 3

# vLLM offers no event or callback for engine death: its monitor thread sets a flag
# (AsyncLLM.errored). Checking it twice a second costs nothing and bounds the delay.
POLL_S = 0.5

# Longest the graceful stop may take once the engine is dead; then the process exits
# anyway. In-flight requests fail at once when the engine dies, so this is only a guard
# against a hang in shutdown code that was written for a live engine.
HARD_EXIT_S = 5.0


async def watch_engine(front: Any, exit_on_death: bool) -> None:
    """Return after handling the engine's death (or never, while it lives).

    ``front.engine_dead()`` covers both a failed load and a dead engine core;
    ``front.request_exit`` (set by ``python -m server``) stops the HTTP server with a
    status. Without it (the app hosted some other way) the server stays up.
    """
    while not front.engine_dead():
        await asyncio.sleep(POLL_S)
    what = _what_happened(front)
    request_exit: Callable[[int], None] | None = getattr(front, "request_exit", None)
    if not exit_on_death:
        logger.error("%s; staying up and answering 503 because exit_on_engine_death is off; "
                     "restart the server to serve again", what)
        return
    if request_exit is None:
        logger.error("%s; no server to stop here (not started by `python -m server`), so "
                     "it stays up and answers 503", what)
        return
    log_exit(front)
    request_exit(ENGINE_DEATH_EXIT_CODE)


def log_exit(front: Any) -> None:
    """Say why the process exits with :data:`ENGINE_DEATH_EXIT_CODE` (also when vLLM's
    own error handler stopped the server before this watchdog looked)."""
    logger.error("%s; exiting with status %d so that a restart policy (e.g. Docker's "
                 "restart: unless-stopped) can bring the server back", _what_happened(front),
                 ENGINE_DEATH_EXIT_CODE)


def _what_happened(front: Any) -> str:
    if front.load_error:
        return f"the engine failed to start ({front.load_error})"
    return "the inference engine died (its engine-core process is gone)"
