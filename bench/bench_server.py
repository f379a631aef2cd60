"""Benchmark s1-serve against vLLM's own OpenAI server, end to end over HTTP.

Why: the budget is enforced inside vLLM by a logits processor precisely so that a
budgeted request costs what an ordinary one costs, and the HTTP layer is our own
FastAPI app instead of vLLM's. This script checks both claims on one machine:

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
   tokens/s. Goals: ours >= 0.95x theirs in throughput, p99 TTFT <= 1.1x theirs.

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

    python bench/bench_server.py            # 4 rounds; ~15 min on an idle 2-core box
    python bench/bench_server.py --quick    # one round, small request counts: a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench.machine import machine_info, prepare_env  # noqa: E402 (needs ROOT on the path)

prepare_env(CACHE)

MODEL_DIR = CACHE / "bench-think"
MODEL_NAME = "bench-think"
MODEL_SHAPE: dict[str, int] = {"hidden_size": 256, "num_layers": 4, "num_heads": 4,
                               "num_kv_heads": 2, "intermediate_size": 896, "seed": 0}
# Non-norm weights are multiplied by this. At the default init scale greedy decoding
# repeats one token, and after a forced `</think>` it repeats `</think>`: a special token
# with no text, so a budgeted answer would stream (almost) nothing and be cheaper to
# serve than plain thinking. Scaled weights give varied text before and after the end
# Then the (tied) embedding rows of the special tokens (`</think>`, end of turn, ...)
# and of the 128 tokens that are a lone byte >= 0x80 are zeroed: their logit is 0
# while the best other logit stays positive, so greedy decoding never picks them.
# Every generated token is then text on its own (so the first text chunk marks the
# first token; a held-back partial UTF-8 character would otherwise delay it by a
# varying number of tokens), and thinking never ends by itself, so every budgeted
# request reaches its cap. Forcing still works: a forced token's logit is set by the
# processor, and the ignore_eos check's +100 logit bias still makes the end of turn win.
WEIGHT_SCALE = 3.0
RESULTS = Path(__file__).with_name("RESULTS.md")
LOG_DIR = CACHE / "tmp"

MAX_TOKENS = 256
THINKING_MAX = 128
ENGINE_FLAGS = ("--enforce-eager", "--dtype", "float32", "--max-model-len", "1024",
                "--max-num-seqs", "64", "--served-model-name", MODEL_NAME)
THROUGHPUT_GOAL = 0.95
TTFT_P99_GOAL = 1.1
READY_TIMEOUT_S = 900.0
REQUEST_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Workload:
    """``requests`` streamed requests from ``concurrency`` closed-loop clients."""

    concurrency: int
    requests: int
    budget: bool

    @property
    def key(self) -> str:
        return f"{'budget' if self.budget else 'plain'}@{self.concurrency}"


def _abba(concurrency: int, requests: int) -> tuple[Workload, ...]:
    """Plain, budget, budget, plain: drift within one start hits both alike."""
    plain, budget = Workload(concurrency, requests, False), Workload(concurrency, requests, True)
    return plain, budget, budget, plain


# Request counts are whole waves (with equal lengths the clients move in lockstep).
# Each run is one sample: the tables take medians over runs, so that a stall caused by
# another user of the machine spoils one sample, not a whole start.
FULL_PLAN = (Workload(1, 16, False), *_abba(64, 128), *_abba(32, 64))
QUICK_PLAN = (Workload(1, 4, False), *_abba(64, 32), *_abba(32, 16))


# ---------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ModelFacts:
    path: Path
    n_params: int
    eos_id: int
    think_end_id: int


def build_model(out: Path = MODEL_DIR) -> ModelFacts:
    """Build (or reuse) the ~3.7M-parameter ``<think>`` checkpoint (weights scaled)."""
    from training.tiny import IM_END, THINK_CLOSE, build_random_model, build_tokenizer

    stamp = out / "bench_server_build.json"
    params = {**MODEL_SHAPE, "chat_format": "think", "weight_scale": WEIGHT_SCALE,
              "version": 4}
    saved = json.loads(stamp.read_text()) if stamp.exists() else {}
    if saved.get("params") != params:
        import torch

        tokenizer = build_tokenizer(out, chat_format="think")
        model = build_random_model(out, tokenizer, **MODEL_SHAPE)
        never = sorted(set(tokenizer.all_special_ids) | {
            i for i in range(len(tokenizer)) if "\ufffd" in tokenizer.decode([i])})
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "norm" not in name:
                    param.mul_(WEIGHT_SCALE)
            model.get_input_embeddings().weight[never] = 0.0  # tied: the output rows too
        model.save_pretrained(str(out), safe_serialization=True)
        saved = {"params": params, "n_params": sum(p.numel() for p in model.parameters()),
                 "eos_id": tokenizer.convert_tokens_to_ids(IM_END),
                 "think_end_id": tokenizer.convert_tokens_to_ids(THINK_CLOSE)}
        stamp.write_text(json.dumps(saved))
    return ModelFacts(out, int(saved["n_params"]), int(saved["eos_id"]),
                      int(saved["think_end_id"]))


def prompts(count: int = 64) -> list[list[dict[str, str]]]:
    """Distinct short chat prompts (15-30 tokens with the template), same for both servers."""
    return [[{"role": "user", "content": f"What is {7 * i + 3} + {13 * i % 97}? "
              "Think step by step."}] for i in range(count)]


# -------------------------------------------------------------------------- servers
@dataclass(frozen=True)
class ServerKind:
    """How to start one of the two servers and how to ask it for a thinking cap."""

    name: str
    label: str
    module: str
    extra_flags: tuple[str, ...]
    budget_field: str

    def command(self, model: Path, port: int) -> list[str]:
        return [sys.executable, "-m", self.module, "--model", str(model), "--port", str(port),
                *ENGINE_FLAGS, *self.extra_flags]


OURS = ServerKind("ours", "s1-serve", "server",
                  ("--max-in-flight", "4096", "--thinking-format", "deepseek-r1"),
                  "thinking_max")
THEIRS = ServerKind("theirs", "vLLM api_server", "vllm.entrypoints.openai.api_server",
                    ("--no-enable-chunked-prefill", "--seed", "0",
                     "--reasoning-parser", "deepseek_r1"),
                    "thinking_token_budget")
# Diagnostic (--diagnose): vLLM's own server with our logits processor installed, no
# budgets used. Between THEIRS and OURS it tells the processor's share of a difference
# from the HTTP layer's.
THEIRS_WITH_PROCESSOR = ServerKind(
    "theirs+proc", "vLLM api_server + BudgetLogitsProcessor", THEIRS.module,
    (*THEIRS.extra_flags, "--logits-processors",
     "server.logits_processor:BudgetLogitsProcessor"), "thinking_token_budget")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningServer:
    """A server subprocess in its own process group (so the engine processes stop with it)."""

    def __init__(self, kind: ServerKind, model: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = LOG_DIR / f"bench-server-{kind.name}-{self.port}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(kind.command(model, self.port), cwd=ROOT,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

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

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


async def wait_ready(server: RunningServer, http: Any, timeout: float = READY_TIMEOUT_S) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.kind.label} exited; log tail:\n{server.log_tail()}")
        try:
            async with http.get(server.base_url + "/health",
                                timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if resp.status == 200:
                    return
        except (TimeoutError, aiohttp.ClientError):
            pass
        await asyncio.sleep(1.0)
    raise TimeoutError(f"{server.kind.label} not ready in {timeout:.0f}s; log tail:\n"
                       f"{server.log_tail()}")


# ------------------------------------------------------------------------- requests
def request_body(kind: ServerKind, messages: list[dict[str, str]], *, budget: bool,
                 stream: bool = True, max_tokens: int = MAX_TOKENS,
                 **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL_NAME, "messages": messages, "temperature": 0,
                            "max_tokens": max_tokens, "ignore_eos": True, **extra}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    if budget:
        body[kind.budget_field] = THINKING_MAX
    return body


@dataclass
class Sample:
    ttfb_s: float  # first SSE chunk of any kind (vLLM sends a role-only chunk first)
    ttft_s: float
    latency_s: float
    completion_tokens: int
    reasoning_tokens: int


def _has_text(payload: dict[str, Any]) -> bool:
    for choice in payload.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("reasoning") or delta.get("reasoning_content"):
            return True
    return False


async def stream_one(http: Any, url: str, body: dict[str, Any]) -> Sample:
    """One streamed request. Only the lines up to the first text and the usage line are
    parsed as JSON, to keep the client's share of the two cores small."""
    started = time.perf_counter()
    ttft = ttfb = float("nan")
    usage: dict[str, Any] | None = None
    async with http.post(url, json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {(await resp.text())[:300]}")
        async for raw in resp.content:
            if not raw.startswith(b"data: {"):
                continue
            if ttfb != ttfb:
                ttfb = time.perf_counter() - started
            if ttft != ttft:  # still NaN: looking for the first token
                payload = json.loads(raw[6:])
                if _has_text(payload):
                    ttft = time.perf_counter() - started
            if b'"completion_tokens"' in raw:
                usage = json.loads(raw[6:]).get("usage")
    latency = time.perf_counter() - started
    if not usage:
        raise RuntimeError("stream ended without a usage chunk")
    details = usage.get("completion_tokens_details") or {}
    return Sample(ttfb, ttft, latency, int(usage["completion_tokens"]),
                  int(details.get("reasoning_tokens") or 0))


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


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (NumPy's default method)."""
    data = sorted(v for v in values if v == v)
    if not data:
        return float("nan")
    pos = q * (len(data) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


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


async def scrape_ttft_histogram(http: Any, server: RunningServer) -> dict[float, float]:
    """{upper bound: cumulative count} of vllm:time_to_first_token_seconds, all labels."""
    async with http.get(server.base_url + "/metrics") as resp:
        text = await resp.text()
    out: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("vllm:time_to_first_token_seconds_bucket{"):
            labels, _, value = line.rpartition(" ")
            le = labels.split('le="', 1)[1].split('"', 1)[0]
            bound = float("inf") if le == "+Inf" else float(le)
            out[bound] = out.get(bound, 0.0) + float(value)
    return out


async def run_workload(http: Any, server: RunningServer, work: Workload,
                       chats: list[list[dict[str, str]]]) -> RunResult:
    url = server.base_url + "/v1/chat/completions"
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(work.requests):
        queue.put_nowait(i)
    samples: list[Sample] = []
    errors: list[str] = []

    async def client() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = request_body(server.kind, chats[i % len(chats)], budget=work.budget)
            try:
                samples.append(await stream_one(http, url, body))
            except Exception as exc:  # recorded and reported, the run goes on
                errors.append(f"{type(exc).__name__}: {exc}")

    cpu_before = server.cpu_seconds()
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(work.concurrency)))
    wall = time.perf_counter() - started
    cpu_after = server.cpu_seconds()
    return RunResult(work, wall, samples, errors, cpu_after[0] - cpu_before[0],
                     cpu_after[1] - cpu_before[1])


# --------------------------------------------------------------------------- checks
async def post_json(http: Any, server: RunningServer, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(server.base_url + "/v1/chat/completions", json=body) as resp:
        data = await resp.json(content_type=None)
        if resp.status != 200:
            raise RuntimeError(f"{server.kind.label}: HTTP {resp.status}: {data}")
        return data


async def thinking_tokens(http: Any, server: RunningServer, facts: ModelFacts,
                          messages: list[dict[str, str]], budget: bool) -> int:
    """Thinking tokens generated by one greedy 256-token request.

    Ours reports the exact count in ``usage.completion_tokens_details.reasoning_tokens``;
    vLLM's server reports 0 there, so its count is the position of the first
    ``</think>`` id in the returned ``token_ids`` (all 256 when there is none).
    """
    extra = {"return_token_ids": True} if server.kind is not OURS else {}
    data = await post_json(http, server, request_body(server.kind, messages, budget=budget,
                                                      stream=False, **extra))
    if server.kind is OURS:
        return int(data["usage"]["completion_tokens_details"]["reasoning_tokens"])
    ids = data["choices"][0]["token_ids"]
    return ids.index(facts.think_end_id) if facts.think_end_id in ids else len(ids)


async def run_checks(http: Any, server: RunningServer, facts: ModelFacts,
                     chats: list[list[dict[str, str]]]) -> dict[str, Any]:
    """ignore_eos: with the end-of-turn token pushed to the top by logit_bias, a request
    must stop at once without ignore_eos and run to max_tokens with it. Budgets: the
    thinking length with and without the cap, on a few prompts."""
    bias = {"logit_bias": {str(facts.eos_id): 100}}
    honoured = []
    for ignore in (False, True):
        body = request_body(server.kind, chats[0], budget=False, stream=False, **bias)
        body["ignore_eos"] = ignore
        honoured.append(int((await post_json(http, server, body))["usage"]["completion_tokens"]))
    capped = [await thinking_tokens(http, server, facts, chats[i], True) for i in range(3)]
    free = [await thinking_tokens(http, server, facts, chats[i], False) for i in range(3)]
    return {"eos_tokens_without_ignore": honoured[0], "eos_tokens_with_ignore": honoured[1],
            "thinking_capped": capped, "thinking_free": free}


# ------------------------------------------------------------------------ servers up
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


def new_session() -> Any:
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                 timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))


async def bring_up(server: RunningServer, facts: ModelFacts,
                   chats: list[list[dict[str, str]]]) -> StartResult:
    """Wait for /health, warm both code paths with a full batch, run the checks."""
    t0 = time.perf_counter()
    kind = server.kind
    async with new_session() as http:
        await wait_ready(server, http)
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


# -------------------------------------------------------------------------- report
def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(x: float, digits: int = 0) -> str:
    return "n/a" if x != x else f"{x:,.{digits}f}"


def run_value(run: RunResult, name: str) -> float:
    return {"rps": run.requests_per_s, "tps": run.tokens_per_s, "p50": run.ttft_ms(0.5),
            "p99": run.ttft_ms(0.99), "fb50": run.ttfb_ms(0.5),
            "sp50": run.server_ttft_ms(0.5), "sp99": run.server_ttft_ms(0.99),
            "api_cpu": run.cpu_ms_per_1k_tokens("api"),
            "engine_cpu": run.cpu_ms_per_1k_tokens("engine")}[name]


def metric(starts: list[StartResult], kind: ServerKind, key: str, name: str) -> float:
    """Median over every run of one workload on one server (all its starts)."""
    return med([run_value(r, name) for s in starts if s.kind is kind
                for r in s.runs.get(key, []) if r.samples])


def distinct(plan: Sequence[Workload]) -> list[tuple[Workload, int]]:
    """Each workload once, in first-run order, with its number of runs per start."""
    counts: dict[Workload, int] = {}
    for w in plan:
        counts[w] = counts.get(w, 0) + 1
    return list(counts.items())


def budget_ratios(starts: list[StartResult], kind: ServerKind, conc: int) -> list[float]:
    """Budgeted tokens/s over plain tokens/s, pairing the runs of one start in order
    (ABBA: the first budget run with the first plain run, the second with the second)."""
    out = []
    for s in starts:
        if s.kind is not kind:
            continue
        for plain, budget in zip(s.runs.get(f"plain@{conc}", []),
                                 s.runs.get(f"budget@{conc}", []), strict=False):
            if plain.samples and budget.samples:
                out.append(budget.tokens_per_s / plain.tokens_per_s)
    return out


def paired(starts: list[StartResult], key: str, name: str) -> list[float]:
    """s1-serve / vLLM for each pair of adjacent runs of one workload."""
    by_kind = {s.kind: s.runs.get(key, []) for s in starts}
    return [run_value(a, name) / run_value(b, name)
            for a, b in zip(by_kind.get(OURS, []), by_kind.get(THEIRS, []), strict=False)
            if a.samples and b.samples and run_value(b, name)]


def report(starts: list[StartResult], plan: Sequence[Workload], rounds: int,
           facts: ModelFacts, info: dict[str, str], started: dt.datetime, elapsed_s: float,
           command: str) -> str:
    loads = [x for s in starts for x in s.load]
    lines = [
        f"## Server benchmark: s1-serve vs vLLM's OpenAI server ({started:%Y-%m-%d %H:%M})",
        "",
        f"`{command}` (bench/bench_server.py). "
        f"Machine: {info['cpu']}, {info['cores']} cores, shared with other users during the "
        f"run: 1-minute load average {min(loads):.1f}-{max(loads):.1f} "
        f"(median {med(loads):.1f}). vLLM {info['vllm']} (CPU), torch {info['torch']}, "
        f"Python {info['python']}. Model: random Qwen2, {facts.n_params / 1e6:.2f}M parameters "
        f"(hidden {MODEL_SHAPE['hidden_size']}, {MODEL_SHAPE['num_layers']} layers, weights "
        f"x{WEIGHT_SCALE:g} so that greedy text varies), "
        "`<think>` chat template that opens the block, float32, eager; "
        f"`--max-model-len 1024 --max-num-seqs 64`, chunked prefill off, seed 0. "
        f"Streamed chat completions, greedy, {MAX_TOKENS} tokens each (`ignore_eos`). "
        f"All servers up at once (idle while another is measured; their CPU use then is "
        f"logged), loaded one after the other; {rounds} rounds of the plan, each workload run "
        "on every server back to back with the order flipped from one workload to the next "
        "(ABBA), and plain and budgeted runs ABBA too. Medians over all runs of a server; "
        "paired = median of the ratios of adjacent runs (min-max in brackets), which cancels "
        "the machine's drift; goals are judged on it. vLLM's server ran with "
        f"`--reasoning-parser deepseek_r1` throughout. Total time {elapsed_s / 60:.0f} min.",
        "",
        "**Plain serving** (ratio = s1-serve / vLLM; goal: throughput >= "
        f"{THROUGHPUT_GOAL}, p99 TTFT <= {TTFT_P99_GOAL}):",
        "",
        "| clients | requests x runs | metric | s1-serve | vLLM | ratio of medians "
        "| paired ratio | goal |",
        "|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    misses: list[str] = []
    for work, times in distinct(plan):
        if work.budget or work.concurrency not in (1, 64):
            continue
        for name, label, digits in (("rps", "requests/s", 2), ("tps", "tokens/s", 0),
                                    ("p50", "TTFT p50 (ms)", 0), ("p99", "TTFT p99 (ms)", 0),
                                    ("fb50", "first chunk p50 (ms)", 0),
                                    ("sp50", "server-side TTFT p50 (ms)", 1),
                                    ("sp99", "server-side TTFT p99 (ms)", 1),
                                    ("api_cpu", "HTTP process CPU ms / 1k tokens", 0),
                                    ("engine_cpu", "engine processes CPU ms / 1k tokens", 0)):
            ours = metric(starts, OURS, work.key, name)
            theirs = metric(starts, THEIRS, work.key, name)
            ratio = ours / theirs if theirs else float("nan")
            pairs = paired(starts, work.key, name)
            pair = med(pairs)
            goal = ""
            if pair != pair:  # NaN: nothing measured (e.g. no histogram)
                goal = "n/a" if name in ("rps", "tps", "p99", "sp99") else ""
            elif name in ("rps", "tps"):
                goal = "met" if pair >= THROUGHPUT_GOAL else "**missed**"
            elif name in ("p99", "sp99"):
                goal = "met" if pair <= TTFT_P99_GOAL else "**missed**"
            if goal == "**missed**":
                misses.append(f"{label} at {work.concurrency} clients: {pair:.3f}")
            spread = f" ({min(pairs):.2f}-{max(pairs):.2f})" if pairs else ""
            lines.append(f"| {work.concurrency} | {work.requests} x{times * rounds} | {label} "
                         f"| {fmt(ours, digits)} | {fmt(theirs, digits)} | {fmt(ratio, 3)} "
                         f"| {fmt(pair, 3)}{spread} | {goal} |")
    lines += [
        "",
        f"**Max-only budgets** (`thinking_max={THINKING_MAX}` on s1-serve, "
        f"`thinking_token_budget={THINKING_MAX}` on vLLM). Goal: s1-serve's budgeted "
        "throughput at least vLLM's (paired ratio >= 1; \"within noise\" when it is below 1 "
        "but the middle half of the pairs, in brackets, reaches 1). kept = budgeted / plain "
        "tokens/s of adjacent runs on one server; the plain paired ratio is the control:",
        "",
        "| clients | s1-serve plain | s1-serve budget | s1-serve kept | vLLM plain "
        "| vLLM budget | vLLM kept | budgeted ours / vLLM, paired | plain ours / vLLM, "
        "paired | goal |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for conc in sorted({w.concurrency for w in plan if w.budget}):
        cells = []
        for kind in (OURS, THEIRS):
            kept = budget_ratios(starts, kind, conc)
            cells += [metric(starts, kind, f"plain@{conc}", "tps"),
                      metric(starts, kind, f"budget@{conc}", "tps"), med(kept)]
        budget_pairs = paired(starts, f"budget@{conc}", "tps")
        plain_pairs = paired(starts, f"plain@{conc}", "tps")
        pair, q1, q3 = (med(budget_pairs), quantile(budget_pairs, 0.25),
                        quantile(budget_pairs, 0.75))
        if pair >= 1.0:
            goal = "met"
        elif q3 >= 1.0:
            goal = "within noise"
        else:
            goal = "**missed**"
            misses.append(f"budgeted throughput at {conc} clients: {pair:.3f} of vLLM's")
        lines.append(f"| {conc} | {fmt(cells[0])} | {fmt(cells[1])} | {fmt(cells[2], 3)} "
                     f"| {fmt(cells[3])} | {fmt(cells[4])} | {fmt(cells[5], 3)} "
                     f"| {fmt(pair, 3)} ({fmt(q1, 2)}-{fmt(q3, 2)}) "
                     f"| {fmt(med(plain_pairs), 3)} | {goal} |")
    if any(s.kind is THEIRS_WITH_PROCESSOR for s in starts):
        lines += diagnosis_text(starts, plan)
    keys = [w.key for w, _ in distinct(plan)]
    lines += ["", "Every run (tokens/s, in run order; the spread is the noise):",
              "",
              "| # | server | ready (s) | " + " | ".join(keys) + " | load during runs |",
              "|---:|---|---:|" + "---:|" * len(keys) + "---|"]
    for i, s in enumerate(starts, 1):
        cells = [" / ".join(fmt(r.tokens_per_s) for r in s.runs.get(k, [])) or "-"
                 for k in keys]
        lines.append(f"| {i} | {s.kind.label} | {s.ready_s:.0f} | " + " | ".join(cells)
                     + f" | {min(s.load):.1f}-{max(s.load):.1f} |")
    lines += ["", *checks_text(starts, plan)]
    lines += ["", "Goals: " + ("all met." if not misses else "missed: " + "; ".join(misses)
                               + ".")]
    return "\n".join(lines) + "\n"


def diagnosis_text(starts: list[StartResult], plan: Sequence[Workload]) -> list[str]:
    kinds = (OURS, THEIRS_WITH_PROCESSOR, THEIRS)
    lines = ["", "**Diagnostic**: vLLM's server with `--logits-processors "
             "server.logits_processor:BudgetLogitsProcessor` (installed, no budgets), plain "
             "requests. Close to vLLM: the processor costs little and a gap is the HTTP "
             "layer's; close to s1-serve: the processor's.", "",
             "| clients | metric | " + " | ".join(k.label for k in kinds) + " |",
             "|---:|---|" + "---:|" * len(kinds)]
    for work, _ in distinct(plan):
        if work.budget:
            continue
        for name, label in (("tps", "tokens/s"), ("api_cpu", "HTTP CPU ms / 1k tokens")):
            cells = [fmt(metric(starts, k, work.key, name)) for k in kinds]
            lines.append(f"| {work.concurrency} | {label} | " + " | ".join(cells) + " |")
    return lines


def checks_text(starts: list[StartResult], plan: Sequence[Workload]) -> list[str]:
    out = ["Checks:"]
    for kind in (OURS, THEIRS, THEIRS_WITH_PROCESSOR):
        mine = [s for s in starts if s.kind is kind]
        if not mine:
            continue
        c = mine[0].checks
        wrong = sum(r.wrong_length for s in mine for r in s.sequence)
        errors = sum(len(r.errors) for s in mine for r in s.sequence)
        total = sum(len(r.samples) for s in mine for r in s.sequence)
        capped = sorted({x for s in mine for x in s.checks["thinking_capped"]})
        free = sorted({x for s in mine for x in s.checks["thinking_free"]})
        honoured = (c["eos_tokens_without_ignore"] < MAX_TOKENS
                    and c["eos_tokens_with_ignore"] == MAX_TOKENS)
        capped_ok = all(x <= THINKING_MAX for x in capped) and all(x > THINKING_MAX
                                                                  for x in free)
        line = (f"- {kind.label}: `ignore_eos` {'honoured' if honoured else '**NOT honoured**'} "
                "(end-of-turn forced by logit_bias: "
                f"{c['eos_tokens_without_ignore']} token(s) without it, "
                f"{c['eos_tokens_with_ignore']} with it); {total} measured requests, "
                f"{errors} errors, {wrong} not exactly {MAX_TOKENS} tokens; thinking "
                f"{'capped' if capped_ok else '**NOT capped**'}: thinking tokens with the cap "
                f"{capped}, without {free}")
        if kind is OURS:
            streamed = [s.reasoning_tokens for st in mine for r in st.sequence
                        if r.workload.budget for s in r.samples]
            if streamed:
                early = sum(x < THINKING_MAX for x in streamed)
                line += (f"; streamed budgeted requests: at most {max(streamed)} reasoning tokens "
                         f"(usage), {len(streamed) - early} of {len(streamed)} at the cap, "
                         f"{early} ended thinking by themselves earlier (the random model emits "
                         f"`</think>` on a few prompts; fewest {min(streamed)})")
        else:
            line += (" (position of the first `</think>` id in `token_ids`; vLLM counts the "
                     "prompt's newline after `<think>` as one thinking token)")
        out.append(line + ".")
    return out


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
    command = " ".join(["python bench/bench_server.py", *(argv if argv is not None
                                                          else sys.argv[1:])])
    text = report(starts, plan, rounds, facts, info, started, time.perf_counter() - t0, command)
    print("\n" + text)
    if not args.no_append:
        with RESULTS.open("a") as f:
            f.write("\n" + text)
        log(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
