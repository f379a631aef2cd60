"""Soak and load test of a running s1-serve over loopback (bounded, stops by itself).

N concurrent streaming clients loop for a fixed time, each request with a
random budget setting; a share of them hang up at a random point of the
stream. Reported: requests completed, errors by status, Control (share of
finished responses whose thinking lies within [thinking_min, thinking_max]),
engine requests still running after the run, server memory (RSS of the server
and its engine processes) at start and end, and latency percentiles.

    python -m bench.soak --clients 256 --duration 180            # starts its own server
    python -m bench.soak --base-url http://127.0.0.1:8000 ...    # or drives one
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse

from s1_common.launcher import ServerProcess, metric_value
from s1_common.stats import quantile

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = [(None, None), (None, 8), (4, 16), (0, 0), (12, 12), (6, None), (2, 40), (None, 24)]
MESSAGES = [{"role": "user", "content": "How many r in raspberry?"}]


@dataclass
class SoakResult:
    completed: int = 0
    disconnected: int = 0
    errors: Counter = field(default_factory=Counter)
    within_budget: int = 0
    checked: int = 0
    latencies: list[float] = field(default_factory=list)
    running_after: float = -1
    in_flight_after: float = -1
    rss_start_mb: float = 0
    rss_end_mb: float = 0

    @property
    def control(self) -> float:
        return 100.0 * self.within_budget / self.checked if self.checked else float("nan")

    def summary(self) -> dict:
        lat = self.latencies
        return {
            "completed": self.completed, "disconnected_on_purpose": self.disconnected,
            "errors_by_status": dict(self.errors), "control_pct": round(self.control, 2),
            "engine_running_after": self.running_after, "in_flight_after": self.in_flight_after,
            "rss_start_mb": round(self.rss_start_mb, 1), "rss_end_mb": round(self.rss_end_mb, 1),
            "latency_p50_s": round(quantile(lat, 0.50), 3),
            "latency_p99_s": round(quantile(lat, 0.99), 3),
            "latency_mean_s": round(statistics.fmean(lat), 3) if lat else float("nan"),
        }


def rss_mb(pid: int | None) -> float:
    """RSS of a process and its children (the engine core and workers)."""
    if pid is None:
        return 0.0
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20
    except psutil.Error:
        return 0.0


async def _one(client: httpx.AsyncClient, rng: random.Random, result: SoakResult,
               disconnect_share: float, max_tokens: int) -> None:
    lo, hi = rng.choice(BUDGETS)
    body: dict = {"messages": MESSAGES, "stream": True, "max_tokens": max_tokens,
                  "temperature": rng.choice([0.0, 1.0]), "seed": rng.randrange(1 << 30),
                  "stream_options": {"include_usage": True}}
    if lo is not None:
        body["thinking_min"] = lo
    if hi is not None:
        body["thinking_max"] = hi
    hang_up_after = rng.randrange(1, 20) if rng.random() < disconnect_share else None
    started = time.perf_counter()
    usage = None
    try:
        async with aconnect_sse(client, "POST", "/v1/chat/completions", json=body) as source:
            resp = source.response
            if resp.status_code != 200:
                await resp.aread()
                result.errors[str(resp.status_code)] += 1
                return
            events = 0
            async for sse in source.aiter_sse():
                if sse.data == "[DONE]":
                    continue
                events += 1
                if hang_up_after is not None and events >= hang_up_after:
                    result.disconnected += 1
                    return  # leaving the context manager closes the connection
                try:
                    event = json.loads(sse.data)
                except json.JSONDecodeError:
                    result.errors["broken_event"] += 1
                    return
                if "error" in event:
                    result.errors[str(event["error"].get("code"))] += 1
                    return
                usage = event.get("usage") or usage
    except httpx.HTTPError as exc:
        result.errors[type(exc).__name__] += 1
        return
    if usage is None:
        result.errors["no_usage"] += 1
        return
    result.completed += 1
    result.latencies.append(time.perf_counter() - started)
    thinking = usage["completion_tokens_details"]["reasoning_tokens"]
    result.checked += 1
    ok = (hi is None or thinking <= hi) and (lo is None or thinking >= lo
                                              or usage["completion_tokens"] >= max_tokens)
    result.within_budget += ok


async def run_soak(base_url: str, clients: int, duration: float | None,
                   disconnect_share: float = 0.1, seed: int = 0, server_pid: int | None = None,
                   max_tokens: int = 64, headers: dict | None = None,
                   requests_per_client: int | None = None) -> SoakResult:
    """Drive the server with ``clients`` concurrent loops, for ``duration`` seconds or
    (``duration`` None) ``requests_per_client`` requests each: a fixed workload, the same
    on any machine."""
    if (duration is None) == (requests_per_client is None):
        raise ValueError("give either duration or requests_per_client")
    result = SoakResult(rss_start_mb=rss_mb(server_pid))
    deadline = time.monotonic() + (duration or 0.0)
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=limits,
                                 headers=headers) as client:
        async def loop(i: int) -> None:
            rng = random.Random(seed * 100003 + i)
            sent = 0
            while (time.monotonic() < deadline if requests_per_client is None
                   else sent < requests_per_client):
                await _one(client, rng, result, disconnect_share, max_tokens)
                sent += 1

        await asyncio.gather(*(loop(i) for i in range(clients)))
        # Give aborted requests a moment to leave the engine, then look.
        for _ in range(50):
            text = (await client.get("/metrics")).text
            result.running_after = metric_value(text, "vllm:num_requests_running")
            result.in_flight_after = metric_value(text, "s1_requests_in_flight")
            if result.running_after == 0 and result.in_flight_after == 0:
                break
            await asyncio.sleep(0.2)
    result.rss_end_mb = rss_mb(server_pid)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="drive this server instead of starting one")
    parser.add_argument("--model", default=str(ROOT / "server" / "demo_model"))
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--duration", type=float, default=180.0, help="seconds")
    parser.add_argument("--disconnect", type=float, default=0.1, help="share that hang up")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    proc = None
    base_url, pid = args.base_url, None
    if base_url is None:
        proc = ServerProcess(args.model, "--max-in-flight", str(args.clients * 2)).wait_ready()
        base_url, pid = proc.base_url, proc.proc.pid
    try:
        res = asyncio.run(run_soak(base_url, args.clients, args.duration, args.disconnect,
                                   args.seed, pid, args.max_tokens))
    finally:
        code = proc.stop() if proc else 0
    out = res.summary() | {"clients": args.clients, "duration_s": args.duration,
                           "server_exit_code": code}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
