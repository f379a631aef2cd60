"""Prometheus metrics: ``s1_*`` for the API and the budget, plus vLLM's own ``vllm:*``.

Names use base units and counters end in ``_total``. Forced ends and forced
continuations happen inside the engine process; they arrive here through
:mod:`server.engine_counters` and are exported by a custom collector at scrape
time, so the numbers are exact and need no extra IPC per request.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from server import engine_counters

PREFIX = "s1"
_TOKEN_BUCKETS = (0, 1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
_TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter(f"{PREFIX}_requests", "HTTP requests by endpoint and status code.",
                   ["endpoint", "status"])
IN_FLIGHT = Gauge(f"{PREFIX}_requests_in_flight", "Generation requests being served now.")
TTFT = Histogram(f"{PREFIX}_time_to_first_token_seconds",
                 "Time from request arrival to its first generated token.",
                 buckets=_TIME_BUCKETS)
LATENCY = Histogram(f"{PREFIX}_request_duration_seconds",
                    "End-to-end time of generation requests.", buckets=_TIME_BUCKETS)
THINKING_TOKENS = Histogram(f"{PREFIX}_thinking_tokens", "Thinking tokens per choice.",
                            buckets=_TOKEN_BUCKETS)
ANSWER_TOKENS = Histogram(f"{PREFIX}_answer_tokens", "Answer tokens per choice.",
                          buckets=_TOKEN_BUCKETS)

_HELP = {
    "forced_ends": "Thinking blocks ended by force at thinking_max (counted in the engine).",
    "forced_continuations": "End-of-thinking attempts replaced by the continuation string "
                            "below thinking_min (counted in the engine).",
    "budgeted_requests": "Requests the engine enforced a thinking budget on.",
}


class EngineCounterCollector(Collector):
    """Reads the engine process's counter files at each scrape."""

    def __init__(self) -> None:
        self.directory: str | None = None

    def collect(self) -> Iterator[CounterMetricFamily]:
        values = (engine_counters.read_counters(self.directory) if self.directory
                  else dict.fromkeys(engine_counters.NAMES, 0))
        for name in engine_counters.NAMES:
            family = CounterMetricFamily(f"{PREFIX}_{name}", _HELP[name])
            family.add_metric([], values[name])
            yield family


ENGINE_COUNTERS = EngineCounterCollector()
REGISTRY.register(ENGINE_COUNTERS)


def render() -> bytes:
    """The whole default registry: ours and vLLM's."""
    return generate_latest(REGISTRY)
