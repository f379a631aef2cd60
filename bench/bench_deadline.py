"""thinking_deadline_ms under load: time from arrival to the first answer token.

Issue 27's measurement: the demo model on this machine's CPUs, 64 concurrent streaming
clients (closed loop), deadlines of 0.5, 1 and 2 s. For each request the client records
the time from sending it to the first answer token (the first ``delta.content``; the cut's
answer prefix is answer) and the gaps between its streamed thinking chunks (one engine
step each under load); the goal is p50/p99 within the deadline plus one engine step, and
every request answered. A measurement, never a test assertion: the numbers go to stdout
and, with ``--write``, are appended to bench/RESULTS.md with the machine's load average.

    python -m bench.bench_deadline [--clients 64] [--rounds 2] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.machine import machine_info, prepare_env
from bench.results import append_results
from s1_common.stats import quantile

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["horseradish", "mississippi", "raspberry", "strawberry", "banana", "assessment",
         "possession", "bookkeeper", "committee", "balloon", "cocoa", "pepper"]


@dataclass
class Result:
    deadline_s: float
    ttfa_s: list[float] = field(default_factory=list)  # arrival -> first answer token
    steps_s: list[float] = field(default_factory=list)  # gaps between thinking chunks
    step_s: float = float("nan")  # the engine's mean inter-token latency in this run
    cut: int = 0
    errors: list[str] = field(default_factory=list)


async def one(http: httpx.AsyncClient, url: str, deadline_ms: int, i: int, out: Result) -> None:
    word = WORDS[i % len(WORDS)]
    letter = word[(i // len(WORDS)) % len(word)]
    body = {"messages": [{"role": "user", "content": f"How many {letter} in {word}?"}],
            "temperature": 1, "seed": i, "max_tokens": 256, "stream": True,
            "thinking_deadline_ms": deadline_ms}
    started = time.perf_counter()
    first_answer = last_thinking = None
    answered = False
    budget = None
    async with http.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            out.errors.append(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
            return
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            now = time.perf_counter()
            for c in json.loads(line[6:]).get("choices", []):
                delta = c.get("delta") or {}
                if delta.get("reasoning") and first_answer is None:
                    if last_thinking is not None and now > last_thinking:
                        out.steps_s.append(now - last_thinking)
                    last_thinking = now
                if delta.get("content") and first_answer is None:
                    first_answer = now - started
                answered = answered or bool(delta.get("content"))
                budget = c.get("budget") or budget
    if not answered or first_answer is None:
        out.errors.append(f"request {i}: no answer (budget {budget})")
        return
    out.ttfa_s.append(first_answer)
    out.cut += bool(budget and budget.get("end") == "deadline")


def _itl(base_url: str) -> tuple[float, float]:
    """vLLM's inter-token latency histogram: (sum, count)."""
    from s1_common.launcher import metric_value

    text = httpx.get(base_url + "/metrics", timeout=30).text
    name = "vllm:inter_token_latency_seconds"
    return metric_value(text, name + "_sum"), metric_value(text, name + "_count")


async def run(base_url: str, deadline_s: float, clients: int, rounds: int) -> Result:
    out = Result(deadline_s)
    before = _itl(base_url)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        async def client(c: int) -> None:
            for r in range(rounds):
                await one(http, base_url + "/v1/chat/completions", int(deadline_s * 1000),
                          c + r * clients, out)

        await asyncio.gather(*(client(c) for c in range(clients)))
    after = _itl(base_url)
    if after[1] > before[1]:
        out.step_s = (after[0] - before[0]) / (after[1] - before[1])
    return out


def report(results: list[Result], clients: int, rounds: int, load: tuple[float, float],
           info: dict[str, str], wall_s: float) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"## Thinking deadline under load ({stamp}, bench/bench_deadline.py)", "",
             f"Machine: {info['cpu']}, {info['cores']} cores, vLLM {info['vllm']}, torch "
             f"{info['torch']}; load average (1 min) {load[0]:.2f} before, {load[1]:.2f} "
             f"after; {wall_s:.0f} s in all. The demo model, {clients} concurrent streaming "
             f"chat clients, {rounds} requests each per deadline, temperature 1, "
             "max_tokens 256. TTFA: arrival (the client's send) to the first answer token "
             "(with the s1 format, the forced answer prefix); step: one engine step, vLLM's "
             "mean inter-token latency over the run (`vllm:inter_token_latency_seconds`); "
             "chunk gap: the median gap between a client's streamed thinking chunks.", "",
             "| deadline | requests | answered | cut at the deadline | TTFA p50 | TTFA p99 "
             "| step | chunk gap p50 | deadline + step | p50 within | p99 within |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        n = len(r.ttfa_s) + len(r.errors)
        gap = statistics.median(r.steps_s) if r.steps_s else float("nan")
        p50 = quantile(r.ttfa_s, 0.5)
        p99 = quantile(r.ttfa_s, 0.99)
        bound = r.deadline_s + r.step_s
        lines.append(f"| {r.deadline_s:g} s | {n} | {len(r.ttfa_s)} | {r.cut} | {p50:.3f} s "
                     f"| {p99:.3f} s | {r.step_s * 1000:.1f} ms | {gap * 1000:.1f} ms "
                     f"| {bound:.3f} s | {'yes' if p50 <= bound else 'no'} "
                     f"| {'yes' if p99 <= bound else 'no'} |")
        for e in r.errors[:3]:
            lines.append(f"- error: {e}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--deadlines", default="0.5,1,2", help="seconds, comma-separated")
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    prepare_env(ROOT / ".cache")
    from s1_common.launcher import ServerProcess
    from server.settings import DEMO_MODEL

    server = ServerProcess(DEMO_MODEL, name="bench-deadline")
    try:
        server.wait_ready()
        asyncio.run(run(server.base_url, 2.0, 4, 1))  # warm-up
        before = os.getloadavg()[0]
        started = time.perf_counter()
        results = [asyncio.run(run(server.base_url, float(d), args.clients, args.rounds))
                   for d in args.deadlines.split(",")]
        wall = time.perf_counter() - started
        after = os.getloadavg()[0]
    finally:
        server.stop()
    text = report(results, args.clients, args.rounds, (before, after), machine_info(), wall)
    print(text)
    if args.write:
        append_results(text)


if __name__ == "__main__":
    main()
