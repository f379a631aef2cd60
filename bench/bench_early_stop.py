"""thinking_early_stop on the demo task: accuracy against thinking tokens, and probe cost.

Issue 27's measurement: the demo model (server/demo_model) on the 400 held-out demo
questions (training/demo_eval.py's split, greedy), answered by the real server through the
chat API. Settings: natural thinking, ``thinking_early_stop`` at a few (every, agree), and
a ``thinking_max`` sweep; each early-stop point is set against the ``thinking_max`` curve
interpolated at its mean thinking tokens (and the nearest measured cap). Graded as
training/demo_eval.py grades (the number after the last ``Answer:``). Probe overhead per
request: probes, probe tokens (``usage.probe_tokens``), and the engine's own counters
(vLLM's generated and computed-prompt tokens) against the natural run. The goal: at least
20 % fewer thinking tokens than natural at no more than 1 point lower accuracy, and more
accurate than ``thinking_max`` at the same mean tokens. A measurement, never a test
assertion: the table goes to stdout and, with ``--write``, to bench/RESULTS.md with the
machine's load average.

    python -m bench.bench_early_stop [--base-url URL --api-key KEY] [--n 400] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.machine import machine_info, prepare_env
from bench.results import append_results

ROOT = Path(__file__).resolve().parents[1]
ANSWER_RE = re.compile(r"Answer:\s*(-?\d+)")  # training/demo_eval.py's grading
ENGINE_COUNTERS = {"generated": "vllm:generation_tokens_total",
                   "prompt_computed": 'vllm:prompt_tokens_by_source_total{engine="0",'
                                      'model_name="s1-demo",source="local_compute"}'}


@dataclass
class Point:
    label: str
    body: dict[str, Any]
    correct: int = 0
    n: int = 0
    thinking: list[int] = field(default_factory=list)
    probes: list[int] = field(default_factory=list)
    probe_tokens: list[int] = field(default_factory=list)
    settled: int = 0
    errors: list[str] = field(default_factory=list)
    engine: dict[str, float] = field(default_factory=dict)  # counter deltas per request
    wall_s: float = 0.0

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / self.n if self.n else float("nan")

    @property
    def mean_thinking(self) -> float:
        return sum(self.thinking) / len(self.thinking) if self.thinking else float("nan")


def questions(n: int) -> list[tuple[str, int]]:
    from training.demo_data import build_splits

    _, rows = build_splits(0, n, 0)  # the held-out split of training/demo_eval.py
    return [(r.question, json.loads(r.metadata)["count"]) for r in rows]


def counter(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name if "{" in name else name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def run_point(http: httpx.AsyncClient, point: Point, qs: list[tuple[str, int]],
                    concurrency: int) -> None:
    slots = asyncio.Semaphore(concurrency)
    before = (await http.get("/metrics")).text

    async def one(question: str, truth: int) -> None:
        body = {"messages": [{"role": "user", "content": question}], "temperature": 0,
                "max_tokens": 600, **point.body}
        async with slots:
            r = await http.post("/v1/chat/completions", json=body)
        if r.status_code != 200:
            point.errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
            return
        out = r.json()
        choice, usage = out["choices"][0], out["usage"]
        found = ANSWER_RE.findall(choice["message"]["content"] or "")
        point.n += 1
        point.correct += bool(found) and int(found[-1]) == truth
        point.thinking.append(usage["completion_tokens_details"]["reasoning_tokens"])
        b = choice["budget"]
        if "thinking_early_stop" in point.body:
            point.probes.append(len(b["probes"]))
            point.probe_tokens.append(usage["probe_tokens"])
            point.settled += b["end"] == "settled"

    started = time.perf_counter()
    await asyncio.gather(*(one(q, t) for q, t in qs))
    point.wall_s = time.perf_counter() - started
    after = (await http.get("/metrics")).text
    point.engine = {k: (counter(after, name) - counter(before, name)) / max(1, point.n)
                    for k, name in ENGINE_COUNTERS.items()}


def interpolate(curve: list[tuple[float, float, int]], x: float) -> float:
    """Accuracy of the thinking_max curve (mean tokens, accuracy, cap) at mean tokens x."""
    pts = sorted((t, a) for t, a, _ in curve)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return float("nan")


def report(points: list[Point], caps: list[Point], natural: Point, n: int,
           load: tuple[tuple[float, ...], tuple[float, ...]], machine: dict[str, str],
           wall: float, block_size: str) -> str:
    curve = [(p.mean_thinking, p.accuracy, p.body["thinking_max"]) for p in caps]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"## Early stop on the demo task ({when})", "",
             f"- bench/bench_early_stop.py: {n} held-out demo questions, greedy, "
             "max_tokens 600, the real server (chat API, 32 requests in flight). "
             f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
             f"no GPU, shared with other engineers' test runs; load average (1/5/15 min) at start "
             f"{'/'.join(f'{x:.1f}' for x in load[0])}, at end "
             f"{'/'.join(f'{x:.1f}' for x in load[1])}. Whole run {wall / 60:.1f} min.",
             "- Accuracy and thinking tokens are exact (greedy, token counts from the "
             "server); wall time depends on the load. `vs thinking_max`: the thinking_max "
             "curve's accuracy interpolated at the same mean thinking tokens. Engine tokens "
             "per request: vLLM's generated tokens and computed (not cached) prompt tokens, "
             "probes included. The KV cache's block size here is "
             f"{block_size} tokens and the prefix cache only shares whole blocks, so on "
             "these short demo sequences (prompt ~40 tokens, thinking ~19) a probe shares "
             "nothing and recomputes its whole prompt: the prompt column is the worst case "
             "of probe overhead, not what a GPU (16-token blocks) or long thinking pays.",
             "",
             "| setting | accuracy % | mean thinking | vs natural | thinking_max at same "
             "tokens, acc % | probes / req | probe tokens / req | settled | engine gen / "
             "req | engine prompt / req | wall s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def row(p: Point, matched: str) -> str:
        saving = 100 * (p.mean_thinking / natural.mean_thinking - 1)
        versus = "-" if p is natural else f"{saving:+.0f} %"
        probes = (f"{sum(p.probes) / len(p.probes):.2f}" if p.probes else "-")
        ptoks = (f"{sum(p.probe_tokens) / len(p.probe_tokens):.1f}" if p.probe_tokens
                 else "-")
        settled = f"{p.settled}" if p.probes else "-"
        return (f"| {p.label} | {p.accuracy:.1f} | {p.mean_thinking:.1f} | "
                f"{versus} | {matched} | {probes} | {ptoks} | {settled} | "
                f"{p.engine.get('generated', 0):.1f} | {p.engine.get('prompt_computed', 0):.1f}"
                f" | {p.wall_s:.0f} |")

    lines.append(row(natural, "-"))
    verdicts = []
    for p in points:
        at = interpolate(curve, p.mean_thinking)
        lines.append(row(p, f"{at:.1f}"))
        fewer = 1 - p.mean_thinking / natural.mean_thinking
        loss = natural.accuracy - p.accuracy
        met = fewer >= 0.2 and loss <= 1.0 and p.accuracy > at
        verdicts.append(f"- {p.label}: {100 * fewer:.0f} % fewer thinking tokens than "
                        f"natural at {-loss:+.1f} points of accuracy; {p.accuracy - at:+.1f} "
                        f"points against thinking_max at the same mean tokens ({at:.1f} %): "
                        f"goal {'met' if met else 'not met'}.")
    for p in caps:
        lines.append(row(p, "-"))
    errors = [e for p in [natural, *points, *caps] for e in p.errors]
    lines += ["", *verdicts, *(f"- error: {e}" for e in errors[:10])]
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace, base_url: str, key: str | None) -> str:
    qs = questions(args.n)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    natural = Point("natural", {})
    points = [Point(f"early stop every {k} agree {m}",
                    {"thinking_early_stop": {"every": k, "agree": m}})
              for k, m in (tuple(int(x) for x in s.split("x")) for s in args.settings.split(","))]
    caps = [Point(f"thinking_max {c}", {"thinking_max": c})
            for c in (int(x) for x in args.caps.split(","))]
    load0 = os.getloadavg()
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=600) as http:
        await run_point(http, Point("warm-up", {}), qs[:16], 16)
        found = re.search(r'block_size="(\d+)"', (await http.get("/metrics")).text)
        block_size = found.group(1) if found else "?"
        for p in [natural, *points, *caps]:
            await run_point(http, p, qs, args.concurrency)
            print(f"{p.label}: acc {p.accuracy:.1f} % thinking {p.mean_thinking:.1f} "
                  f"({p.wall_s:.0f} s)", flush=True)
    wall = time.perf_counter() - started
    return report(points, caps, natural, args.n, (load0, os.getloadavg()), machine_info(),
                  wall, block_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="an s1-serve on the demo model (default: start one)")
    parser.add_argument("--api-key")
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--settings", default="2x2,4x2,4x3,8x2,2x4",
                        help="early stop settings, comma-separated EVERYxAGREE")
    parser.add_argument("--caps", default="0,4,8,10,12,14,16,18,20,24,32",
                        help="thinking_max values of the comparison curve")
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    prepare_env(ROOT / ".cache")
    server = None
    base_url, key = args.base_url, args.api_key
    if base_url is None:
        from s1_common.launcher import ServerProcess
        from server.settings import DEMO_MODEL

        server = ServerProcess(DEMO_MODEL, name="bench-early-stop")
    try:
        if server is not None:
            server.wait_ready()
            base_url = server.base_url
        text = asyncio.run(main_async(args, base_url, key))
    finally:
        if server is not None:
            server.stop()
    print(text)
    if args.write:
        append_results(text)


if __name__ == "__main__":
    main()
