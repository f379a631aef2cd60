"""The markdown report of a server benchmark: goals judged on paired ratios, every run, checks."""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Sequence

from bench.results import MAX_TOKENS, THINKING_MAX, RunResult, StartResult, Workload
from bench.server_model import MODEL_SHAPE, WEIGHT_SCALE, ModelFacts
from bench.servers import OURS, THEIRS, THEIRS_WITH_PROCESSOR, ServerKind
from s1_common.stats import quantile

THROUGHPUT_GOAL = 0.97  # issue 22: paired throughput at 1 and 64 clients
TTFT_P99_GOAL = 1.1
API_CPU_GOAL = 1.1  # HTTP process CPU per 1,000 tokens, s1-serve / vLLM (issue 22)
SLOW_FACTOR = 2.0  # engine CPU per token over this x the workload's median: slow mode


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
    lines += cpu_text(starts, plan, misses)
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


def slow_runs(starts: list[StartResult], key: str) -> set[int]:
    """The runs of one workload (ids of RunResult objects) in this machine's slow mode:
    engine CPU per token over SLOW_FACTOR x the workload's median over both servers. In
    that mode the engine spins with few requests running while requests wait to reach
    it (the client's TTFT is seconds, vLLM's own server-side TTFT milliseconds); every
    per-token figure of such a run measures the mode, not the serving layer."""
    runs = [r for s in starts for r in s.runs.get(key, []) if r.samples]
    typical = med([run_value(r, "engine_cpu") for r in runs])
    return {id(r) for r in runs if run_value(r, "engine_cpu") > SLOW_FACTOR * typical}


def cpu_text(starts: list[StartResult], plan: Sequence[Workload],
             misses: list[str]) -> list[str]:
    """The serving layer's own cost: HTTP process CPU per 1,000 streamed tokens, every
    workload, plain and budgeted (the steadier figure on a shared machine). Judged on the
    pairs where neither run is in the slow mode (:func:`slow_runs`); all pairs shown too."""
    lines = ["", "**HTTP process CPU per 1,000 streamed tokens** (ms; goal: s1-serve / vLLM "
             f"paired <= {API_CPU_GOAL} at every concurrency, with and without budgets, "
             "judged on the pairs where neither run was in the slow mode, i.e. engine CPU "
             f"per token over {SLOW_FACTOR:g}x the workload's median; slow runs counted per "
             "server; engine processes for comparison):", "",
             "| workload | s1-serve HTTP | vLLM HTTP | paired, fast pairs (min-max) | goal "
             "| paired, all pairs | slow runs s1-serve / vLLM | s1-serve engine "
             "| vLLM engine |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for work, _ in sorted(distinct(plan), key=lambda wt: (wt[0].concurrency, wt[0].budget)):
        slow = slow_runs(starts, work.key)
        by_kind = {s.kind: [r for r in s.runs.get(work.key, []) if r.samples] for s in starts}
        fast = [run_value(a, "api_cpu") / run_value(b, "api_cpu")
                for a, b in zip(by_kind.get(OURS, []), by_kind.get(THEIRS, []), strict=False)
                if id(a) not in slow and id(b) not in slow]
        pair = med(fast)
        goal = "n/a" if pair != pair else ("met" if pair <= API_CPU_GOAL else "**missed**")
        if goal == "**missed**":
            misses.append(f"HTTP CPU per 1k tokens, {work.key}: {pair:.3f}")
        spread = f" ({min(fast):.2f}-{max(fast):.2f})" if fast else ""
        n_slow = [sum(id(r) in slow for r in by_kind.get(k, [])) for k in (OURS, THEIRS)]
        lines.append(f"| {work.key} | {fmt(metric(starts, OURS, work.key, 'api_cpu'))} "
                     f"| {fmt(metric(starts, THEIRS, work.key, 'api_cpu'))} "
                     f"| {fmt(pair, 3)}{spread} | {goal} "
                     f"| {fmt(med(paired(starts, work.key, 'api_cpu')), 3)} "
                     f"| {n_slow[0]} / {n_slow[1]} "
                     f"| {fmt(metric(starts, OURS, work.key, 'engine_cpu'))} "
                     f"| {fmt(metric(starts, THEIRS, work.key, 'engine_cpu'))} |")
    return lines


def diagnosis_text(starts: list[StartResult], plan: Sequence[Workload]) -> list[str]:
    kinds = (OURS, THEIRS_WITH_PROCESSOR, THEIRS)
    lines = ["", "**Diagnostic**: vLLM's server with `--logits-processors "
             "server.engine.logits_processor:BudgetLogitsProcessor` (installed, no budgets), plain "
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
