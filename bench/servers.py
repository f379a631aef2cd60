"""The benchmarked servers: how each kind starts, and its processes' CPU use.

Started with the project's one launcher (:class:`s1_common.launcher.ServerProcess`), in a
session of their own so that the engine processes stop with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.server_model import MODEL_NAME
from s1_common.launcher import S1_SERVE, VLLM_SERVER, ServerProcess

ENGINE_FLAGS = ("--enforce-eager", "--dtype", "float32", "--max-model-len", "1024",
                "--max-num-seqs", "64", "--served-model-name", MODEL_NAME)
READY_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class ServerKind:
    """How to start one of the two servers and how to ask it for a thinking cap."""

    name: str
    label: str
    module: str
    extra_flags: tuple[str, ...]
    budget_field: str


OURS = ServerKind("ours", "s1-serve", S1_SERVE,
                  ("--max-in-flight", "4096", "--thinking-format", "deepseek-r1"),
                  "thinking_max")
THEIRS = ServerKind("theirs", "vLLM api_server", VLLM_SERVER,
                    ("--no-enable-chunked-prefill", "--seed", "0",
                     "--reasoning-parser", "deepseek_r1"),
                    "thinking_token_budget")
# Diagnostic (--diagnose): vLLM's own server with our logits processor installed, no
# budgets used. Between THEIRS and OURS it tells the processor's share of a difference
# from the HTTP layer's.
THEIRS_WITH_PROCESSOR = ServerKind(
    "theirs+proc", "vLLM api_server + BudgetLogitsProcessor", THEIRS.module,
    (*THEIRS.extra_flags, "--logits-processors",
     "server.engine.logits_processor:BudgetLogitsProcessor"), "thinking_token_budget")


class RunningServer(ServerProcess):
    """One started server of a kind; :meth:`cpu_seconds` splits its CPU use."""

    def __init__(self, kind: ServerKind, model: Path) -> None:
        # One keep-alive for both (s1-serve's default): at vLLM's 5 s a client can reuse a
        # connection just as the server closes it (a ReadError between warm-up and checks).
        super().__init__(model, *kind.extra_flags, module=kind.module,
                         engine_flags=ENGINE_FLAGS, name=f"bench-server-{kind.name}",
                         env={"VLLM_HTTP_TIMEOUT_KEEP_ALIVE": "30"})
        self.kind = kind

    def cpu_seconds(self) -> tuple[float, float]:
        """(HTTP server process, its descendants: engine core and worker) CPU seconds."""
        import psutil

        try:
            main = psutil.Process(self.proc.pid)
            procs = main.children(recursive=True)
            api = sum(main.cpu_times()[:2])
            engine = 0.0
            for child in procs:
                with contextlib.suppress(psutil.Error):
                    engine += sum(child.cpu_times()[:2])
            return api, engine
        except psutil.Error:
            return float("nan"), float("nan")


async def settle(servers: Iterable[RunningServer], quiet_cpu_s: float = 0.02,
                 step_s: float = 0.25, limit_s: float = 15.0) -> None:
    """Wait until no server uses CPU. After its last request vLLM's engine worker keeps
    polling for new work at full speed for about a second; on two cores that stalls
    whichever server is measured next, so every run starts from a quiet machine."""
    servers = list(servers)
    before = [sum(s.cpu_seconds()) for s in servers]
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        await asyncio.sleep(step_s)
        now = [sum(s.cpu_seconds()) for s in servers]
        if all(b - a < quiet_cpu_s for a, b in zip(before, now, strict=True)):
            return
        before = now
