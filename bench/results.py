"""What a benchmark run measures: workloads, per-request samples, per-run and per-start results;
and the one writer of bench/RESULTS.md that every bench script appends its report with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.servers import ServerKind
from s1_common.stats import quantile

MAX_TOKENS = 256
THINKING_MAX = 128


@dataclass(frozen=True)
class Workload:
    """``requests`` streamed requests from ``concurrency`` closed-loop clients."""

    concurrency: int
    requests: int
    budget: bool

    @property
    def key(self) -> str:
        return f"{'budget' if self.budget else 'plain'}@{self.concurrency}"


@dataclass
class Sample:
    ttfb_s: float  # first SSE chunk of any kind (vLLM sends a role-only chunk first)
    ttft_s: float
    latency_s: float
    completion_tokens: int
    reasoning_tokens: int


@dataclass
class RunResult:
    """One workload on one server start."""

    workload: Workload
    wall_s: float
    samples: list[Sample]
    errors: list[str] = field(default_factory=list)
    # CPU seconds used during the run by the HTTP server process and by the engine
    # processes (engine core and worker): where the serving layer's cost shows.
    api_cpu_s: float = float("nan")
    engine_cpu_s: float = float("nan")
    # CPU seconds the servers not under test used meanwhile (they stay up, idle).
    idle_cpu_s: float = float("nan")
    # Time to first token as the server itself saw it: vLLM's own histogram
    # (vllm:time_to_first_token_seconds, the same code in both servers), differenced over
    # the run. Unlike the client's figure it cannot include the load generator waiting
    # for a CPU, which on this 2-core VM happened for up to a second at a time.
    server_ttft_hist: dict[float, float] = field(default_factory=dict)

    def server_ttft_ms(self, q: float) -> float:
        return 1000 * histogram_quantile(self.server_ttft_hist, q)

    def cpu_ms_per_1k_tokens(self, which: str) -> float:
        tokens = sum(s.completion_tokens for s in self.samples)
        cpu = self.api_cpu_s if which == "api" else self.engine_cpu_s
        return 1e6 * cpu / tokens if tokens else float("nan")

    @property
    def requests_per_s(self) -> float:
        return len(self.samples) / self.wall_s

    @property
    def tokens_per_s(self) -> float:
        return sum(s.completion_tokens for s in self.samples) / self.wall_s

    def ttft_ms(self, q: float) -> float:
        return 1000 * quantile([s.ttft_s for s in self.samples], q)

    def ttfb_ms(self, q: float) -> float:
        return 1000 * quantile([s.ttfb_s for s in self.samples], q)

    def summary(self) -> dict[str, Any]:
        return {"workload": self.workload.key, "requests": len(self.samples),
                "errors": len(self.errors), "wall_s": round(self.wall_s, 3),
                "tokens_per_s": round(self.tokens_per_s, 1),
                "requests_per_s": round(self.requests_per_s, 3),
                "ttft_p50_ms": round(self.ttft_ms(0.5), 1),
                "ttft_p99_ms": round(self.ttft_ms(0.99), 1),
                "first_chunk_p50_ms": round(self.ttfb_ms(0.5), 1),
                "api_cpu_s": round(self.api_cpu_s, 3),
                "engine_cpu_s": round(self.engine_cpu_s, 3),
                "idle_servers_cpu_s": round(self.idle_cpu_s, 3),
                "server_ttft_p50_ms": round(self.server_ttft_ms(0.5), 1),
                "server_ttft_p99_ms": round(self.server_ttft_ms(0.99), 1)}

    @property
    def wrong_length(self) -> int:
        return sum(s.completion_tokens != MAX_TOKENS for s in self.samples)


def histogram_quantile(buckets: dict[float, float], q: float) -> float:
    """Quantile of a cumulative histogram ({upper bound: count}), interpolated linearly
    inside the bucket it falls in (as Prometheus' histogram_quantile does)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return float("nan")
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below or 1.0)
        lower, below = bound, count
    return lower


@dataclass
class StartResult:
    """One server, started once, and every run it served (in the order they ran)."""

    kind: ServerKind
    ready_s: float
    checks: dict[str, Any]
    sequence: list[RunResult] = field(default_factory=list)
    load: list[float] = field(default_factory=list)

    @property
    def runs(self) -> dict[str, list[RunResult]]:
        by_key: dict[str, list[RunResult]] = {}
        for run in self.sequence:
            by_key.setdefault(run.workload.key, []).append(run)
        return by_key


# ------------------------------------------------------------------------ bench/RESULTS.md
RESULTS = Path(__file__).with_name("RESULTS.md")
_HEADER = ("# Benchmark results\n\nAppended by the bench/ scripts (`make bench`, "
           "`make bench-server` and the others docs/benchmarks.md lists); newest last. See "
           "each script's docstring for what is measured and how.\n")


def append_results(text: str, path: Path = RESULTS) -> None:
    """Append one run's report to bench/RESULTS.md (started with its header if absent),
    one blank line before it: every bench script records its runs through this."""
    existing = path.read_text() if path.exists() else _HEADER
    path.write_text(existing.rstrip("\n") + "\n\n" + text.strip("\n") + "\n")
