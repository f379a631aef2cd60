"""Benchmark s1-serve against vLLM's own OpenAI server, end to end over HTTP.

Why: the budget is enforced inside vLLM by a logits processor precisely so that a
budgeted request costs what an ordinary one costs, and s1-serve's HTTP layer (vLLM's own
app with the s1 plugin behind s1's front) costs what vLLM's costs. This script checks
both claims on one machine:

1. **Plain serving.** ``python -m server`` vs ``python -m
   vllm.entrypoints.openai.api_server``, same model, same engine settings
   (``--enforce-eager --dtype float32 --max-model-len 1024 --max-num-seqs 64``,
   chunked prefill off, seed 0, prefix caching at vLLM's default), same requests:
   streamed chat completions, greedy, ``max_tokens=256`` with ``ignore_eos`` so
   every request generates exactly 256 tokens. 1 and 64 concurrent clients (each
   client sends its next request when the previous one ends). Reported:
   requests/s, time to first token (TTFT: first streamed chunk carrying text)
   p50/p99 as the client sees it and as the server records it (vLLM's own
   ``vllm:time_to_first_token_seconds`` histogram, the same code in both servers,
   which excludes the load generator's own scheduling delays), generated
   tokens/s. Goals: ours >= 0.97x theirs in throughput, p99 TTFT <= 1.1x theirs, and the HTTP
   process's CPU per 1,000 tokens <= 1.1x theirs at every concurrency, plain and budgeted.

2. **Max-only budgets.** ``thinking_max=128`` on ours vs vLLM's built-in
   ``thinking_token_budget=128`` (vLLM started with ``--reasoning-parser
   deepseek_r1``), at 32 and 64 clients. Goal: ours at least as fast as the
   built-in; each server's budgeted / plain share is shown too.

vLLM's server runs with the reasoning parser for both parts, so both servers
split reasoning from the answer in every response (ours always does), and the
plain runs of part 1 double as the part 2 baselines.

Method: both servers are started (one after the other) and stay up; each start waits
for ``/health``, warms up, and checks that ``ignore_eos`` is honoured and that the
budgets really cap the thinking. Then every workload runs on both servers back to
back, the order flipping from one workload to the next (ABBA), for ``--rounds``
rounds; plain and budgeted runs are ABBA too. On a shared 2-core machine the load
drifts by more than the differences being measured, so the goals are judged on the
median ratio of adjacent runs, not on ratios of separate medians. The idle server's
CPU use while the other is measured is recorded (it stays near zero). The model is a
~3.7M-parameter random Qwen2 (``training.tiny``, ``<think>`` chat format with the
block opened by the prompt, weights scaled by ``WEIGHT_SCALE`` so that greedy text
varies) built into ``.cache/bench-think``: a tiny model makes the per-step and
per-request overheads of the serving layer as visible as they can be. The CPU time of
the HTTP server process and of the engine processes is measured per run, to show where
a difference comes from. The markdown result is printed and appended to
``bench/RESULTS.md``.

    python -m bench.bench_server            # 4 rounds; ~15 min on an idle 2-core box
    python -m bench.bench_server --quick    # one round, small request counts: a smoke run

The parts: the model (bench/server_model.py), the servers and their CPU use
(bench/servers.py, started by s1_common/launcher.py), load generation and checks
(bench/load.py), what is measured (bench/results.py) and the report (bench/report.py);
this module schedules the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Sequence

from bench.load import (
    new_session,
    post_json,
    request_body,
    run_checks,
    run_workload,
    scrape_ttft_histogram,
)
from bench.machine import machine_info, prepare_env
from bench.report import report
from bench.results import (
    MAX_TOKENS,
    RESULTS,
    THINKING_MAX,
    StartResult,
    Workload,
    append_results,
)
from bench.server_model import ROOT, ModelFacts, build_model, prompts
from bench.servers import (
    OURS,
    READY_TIMEOUT_S,
    THEIRS,
    THEIRS_WITH_PROCESSOR,
    RunningServer,
    ServerKind,
    settle,
)

CACHE = ROOT / ".cache"
LOG_DIR = CACHE / "tmp"


def _abba(concurrency: int, requests: int) -> tuple[Workload, ...]:
    """Plain, budget, budget, plain: drift within one start hits both alike."""
    plain, budget = Workload(concurrency, requests, False), Workload(concurrency, requests, True)
    return plain, budget, budget, plain


# Request counts are whole waves (with equal lengths the clients move in lockstep).
# Each run is one sample: the tables take medians over runs, so that a stall caused by
# another user of the machine spoils one sample, not a whole start.
FULL_PLAN = (*_abba(1, 16), *_abba(64, 128), *_abba(32, 64))
QUICK_PLAN = (*_abba(1, 4), *_abba(64, 32), *_abba(32, 16))


async def bring_up(server: RunningServer, facts: ModelFacts,
                   chats: list[list[dict[str, str]]]) -> StartResult:
    """Wait for /health, warm both code paths with a full batch, run the checks."""
    t0 = time.perf_counter()
    kind = server.kind
    await asyncio.to_thread(server.wait_ready, READY_TIMEOUT_S)
    async with new_session() as http:
        ready_s = time.perf_counter() - t0
        log(f"{kind.label} ready after {ready_s:.0f}s (port {server.port})")
        for budget in (False, True):
            await asyncio.gather(*(post_json(http, server, request_body(
                kind, chats[i], budget=budget, stream=False, max_tokens=THINKING_MAX + 8))
                for i in range(64)))
        checks = await run_checks(http, server, facts, chats)
    log(f"  checks: {checks}")
    return StartResult(kind, ready_s, checks)


def schedule(kinds: Sequence[ServerKind], plan: Sequence[Workload],
             rounds: int) -> list[tuple[Workload, ServerKind]]:
    """Every workload of the plan runs on every server back to back, the servers'
    order flipping from one workload to the next (ABBA), so that slow drift in the
    machine's load hits all servers alike and adjacent runs can be paired."""
    out: list[tuple[Workload, ServerKind]] = []
    flip = False
    for _ in range(rounds):
        for work in plan:
            for kind in (kinds[::-1] if flip else kinds):
                out.append((work, kind))
            flip = not flip
    return out


async def measure(servers: dict[ServerKind, RunningServer],
                  results: dict[ServerKind, StartResult],
                  order: Sequence[tuple[Workload, ServerKind]],
                  chats: list[list[dict[str, str]]]) -> None:
    for work, kind in order:
        await settle(servers.values())
        server, result = servers[kind], results[kind]
        idle_before = {k: s.cpu_seconds() for k, s in servers.items() if k is not kind}
        # Fresh connections for every run: a pooled keep-alive connection left idle past
        # the server's keep-alive timeout can be closed just as a request is written on
        # it, and fails as "disconnected".
        async with new_session() as fresh:
            hist_before = await scrape_ttft_histogram(fresh, server)
            run = await run_workload(fresh, server, work, chats)
            hist_after = await scrape_ttft_histogram(fresh, server)
        run.server_ttft_hist = {b: hist_after[b] - hist_before.get(b, 0.0) for b in hist_after}
        run.idle_cpu_s = sum(sum(s.cpu_seconds()) - sum(idle_before[k])
                             for k, s in servers.items() if k is not kind)
        result.sequence.append(run)
        result.load.append(os.getloadavg()[0])
        log(f"  {kind.name:>11} {work.key:>10}: {run.tokens_per_s:7.0f} tok/s "
            f"{run.requests_per_s:6.2f} req/s  TTFT p50 {run.ttft_ms(0.5):6.0f} ms "
            f"p99 {run.ttft_ms(0.99):6.0f} ms  CPU ms/1k tokens: HTTP "
            f"{run.cpu_ms_per_1k_tokens('api'):4.0f} engine "
            f"{run.cpu_ms_per_1k_tokens('engine'):4.0f}  idle servers "
            f"{run.idle_cpu_s:.2f} CPU s  ({run.wall_s:.1f}s, {len(run.errors)} errors, "
            f"{run.wrong_length} not {MAX_TOKENS} tokens, load {result.load[-1]:.1f})")
        for err in run.errors[:3]:
            log(f"    error: {err}")


async def bench_all(kinds: Sequence[ServerKind], facts: ModelFacts,
                    plan: Sequence[Workload], rounds: int,
                    chats: list[list[dict[str, str]]]) -> list[StartResult]:
    """Start every server (one at a time, so that loading does not overlap), keep them
    all up, and run the interleaved schedule against them."""
    servers: dict[ServerKind, RunningServer] = {}
    results: dict[ServerKind, StartResult] = {}
    try:
        for kind in kinds:
            servers[kind] = RunningServer(kind, facts.path)
            results[kind] = await bring_up(servers[kind], facts, chats)
        await measure(servers, results, schedule(kinds, plan, rounds), chats)
    finally:
        for server in servers.values():
            server.stop()
    return [results[k] for k in kinds]


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one round with small request counts (smoke run)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds of the plan on every server (default 4, --quick 1)")
    parser.add_argument("--diagnose", action="store_true",
                        help="also start vLLM's server with our logits processor installed "
                        "(a third server in the rotation; plain requests only matter)")
    parser.add_argument("--no-append", action="store_true",
                        help=f"print the table only, do not append to {RESULTS.name}")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 4)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    plan = QUICK_PLAN if args.quick else FULL_PLAN

    prepare_env(CACHE)  # before vLLM or torch is imported, here and in the servers
    started, t0 = dt.datetime.now(), time.perf_counter()
    facts = build_model()
    info = machine_info()
    chats = prompts()
    kinds = [OURS, THEIRS, *([THEIRS_WITH_PROCESSOR] if args.diagnose else [])]
    log(f"model {facts.path} ({facts.n_params / 1e6:.2f}M params); {rounds} round(s) on "
        f"{len(kinds)} servers; load average {os.getloadavg()[0]:.1f}")
    starts = asyncio.run(bench_all(kinds, facts, plan, rounds, chats))
    raw = LOG_DIR / f"bench-server-{started:%Y%m%d-%H%M%S}.json"
    raw.write_text(json.dumps([{"server": s.kind.name, "ready_s": round(s.ready_s, 1),
                                "checks": s.checks, "load": s.load,
                                "runs": [r.summary() for r in s.sequence]}
                               for s in starts], indent=1))
    log(f"raw numbers in {raw}")
    command = " ".join(["python -m bench.bench_server", *(argv if argv is not None
                                                             else sys.argv[1:])])
    text = report(starts, plan, rounds, facts, info, started, time.perf_counter() - t0, command)
    print("\n" + text)
    if not args.no_append:
        append_results(text)
        log(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
