"""Prometheus metrics: ``s1_*`` for the API and the budget, plus vLLM's own ``vllm:*``.

Names use base units and counters end in ``_total``. Everything ``s1_*`` is
counted in the API process. The budget counters (forced ends, forced
continuations, budgeted choices) are derived from each finished choice's output
token ids, replayed through the same state machine the engine ran
(:func:`record_choice`): the logits processor runs in
every tensor-parallel worker and again for a request re-added after preemption,
so counting there would count one decision several times.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from server.budget.machine import BudgetState

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

# The budget counters: one increment per choice (a request with n choices counts n),
# when its response ends (streamed: however it ends; non-streamed: when it succeeds),
# from the token ids the engine returned.
BUDGETED_REQUESTS = Counter(
    f"{PREFIX}_budgeted_requests",
    "Choices generated under an active thinking budget (thinking_min or thinking_max); "
    "a request with n choices counts n.")
FORCED_ENDS = Counter(
    f"{PREFIX}_forced_ends",
    "Budgeted choices whose thinking block was ended by force at thinking_max.")
FORCED_CONTINUATIONS = Counter(
    f"{PREFIX}_forced_continuations",
    "Continuation strings (e.g. 'Wait') started inside the thinking block below "
    "thinking_min, summed over budgeted choices.")


DEADLINE_CUTS = Counter(
    f"{PREFIX}_deadline_cuts",
    "Choices whose thinking was cut at thinking_deadline_ms (counted when the response "
    "ends, as the other budget counters).")
DEADLINE_LATENESS = Histogram(
    f"{PREFIX}_deadline_lateness_seconds",
    "Time from a choice's thinking deadline to its cut (its continuation submitted).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))


def render() -> bytes:
    """The whole default registry: ours and vLLM's."""
    return generate_latest(REGISTRY)


def record_choice(state: BudgetState | None, tokens: int, deadline_cut: bool = False) -> None:
    """One finished choice's histograms and budget counters (``state``: its replayed
    budget state machine, None without a thinking format; ``tokens``: all it generated).

    The state machine replayed exactly the token ids the engine returned, so
    ``hit_max`` and ``continuations`` are what the logits processor did, counted once
    however many tensor-parallel ranks ran it. A request re-added after preemption is
    still one choice here, so nothing counts twice. ``deadline_cut``: thinking_deadline_ms
    cut the choice (``state`` was replayed with the cut's spec, so its ``hit_max`` is that
    cut, not a forced end).
    """
    THINKING_TOKENS.observe(state.thinking if state is not None else 0)
    ANSWER_TOKENS.observe(state.answer if state is not None else tokens)
    if deadline_cut:  # replayed with the cut's spec: its hit_max is the deadline's cut
        DEADLINE_CUTS.inc()
    if state is not None and state.spec.active:
        BUDGETED_REQUESTS.inc()
        if state.hit_max and not deadline_cut:
            FORCED_ENDS.inc()
        if state.continuations:
            FORCED_CONTINUATIONS.inc(state.continuations)
