"""``s1-eval``: sweep thinking budgets on a benchmark file and report the s1 metrics.

    s1-eval --data aime24.jsonl --base-url http://127.0.0.1:8000 --api-key KEY \\
            --thinking-max 512,1024,2048,4096 --waits 4 --out runs/aime24

Writes ``<out>/table3.md`` (Control, Scaling, Performance per method, beside the paper's
Table 3), ``<out>/results.json`` (per-setting accuracy and mean thinking tokens,
Control / Scaling / Performance per method, every graded answer),
``<out>/scaling.png`` and ``<out>/cache.sqlite`` (rerun the same command to
resume). Greedy (temperature 0) by default, as in the paper. Exit status: 0
done, 1 some requests failed (rerun to retry them), 2 bad arguments or no
server.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from client import APIConnectionError, AsyncClient, S1Error
from evals.autocap import AUTO, DEFAULT_OVERHEAD, parse_cap, resolve_auto_cap
from evals.baselines import table3
from evals.benchmarks import FORMATS, load_benchmark
from evals.cache import Cache
from evals.plot import plot_scaling
from evals.presets import PRESETS, apply_preset
from evals.report import build_report, format_table, write_json
from evals.runner import RunConfig, Runner
from evals.settings import Method, build_sweep, parse_ints, parse_pairs

CACHE_FILE = "cache.sqlite"
DESCRIPTION = ("Sweep thinking budgets on a local benchmark file against a running server and "
               "report accuracy, mean thinking tokens and the s1 paper's Control, Scaling and "
               "Performance (results.json, scaling.png; cache.sqlite makes reruns resume).")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s1-eval", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group("benchmark")
    data.add_argument("--preset", choices=sorted(PRESETS),
                      help="the paper's evaluation of this benchmark (evals/presets.py): "
                           "layout, max_tokens 32768, --thinking-cap auto, Waits 0..6")
    data.add_argument("--data", help="jsonl / json / csv / parquet file (with --preset: "
                                     "default the bundled sample)")
    data.add_argument("--format", default="auto", choices=("auto", *FORMATS),
                      help="column layout (default: detected from the columns)")
    data.add_argument("--limit", type=int, help="only the first N questions")
    data.add_argument("--choice-seed", type=int, default=0,
                      help="seed of the multiple-choice shuffle (default 0)")
    data.add_argument("--prompt-template", default="{question}",
                      help="user message around the question (default: the question alone)")
    data.add_argument("--system", help="system message (default: the chat template's)")
    server = p.add_argument_group("server")
    server.add_argument("--base-url", help="default $S1_BASE_URL or http://127.0.0.1:8000")
    server.add_argument("--api-key", help="default $S1_API_KEY")
    server.add_argument("--model", help="model name (default: the server's first model)")
    server.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    server.add_argument("--request-timeout", type=float, default=3600.0,
                        help="seconds per request (default 3600)")
    sweep = p.add_argument_group("sweep")
    sweep.add_argument("--thinking-max", help="budget forcing: comma-separated maxima")
    sweep.add_argument("--thinking-min", help="extrapolation: comma-separated minima")
    sweep.add_argument("--deadline-ms", help="time budget: comma-separated thinking "
                       "deadlines in milliseconds (thinking_deadline_ms)")
    sweep.add_argument("--early-stop", help="stop when the answer settled: comma-separated "
                       "KxM, probe every K thinking tokens, cut once M probes agree "
                       "(thinking_early_stop)")
    sweep.add_argument("--waits", type=int,
                       help="ignore end-of-thinking 0..K times, each K one request with "
                            "thinking_waits=K (see evals.settings)")
    sweep.add_argument("--thinking-cap",
                       help="thinking_max sent with --thinking-min and --waits runs: N tokens, "
                            "or 'auto' = s1's cap, context - longest prompt - overhead "
                            "(see evals/autocap.py)")
    sweep.add_argument("--context-length", type=int,
                       help="context for --thinking-cap auto (default: the server's "
                            "max_model_len)")
    sweep.add_argument("--auto-cap-overhead", type=int, default=DEFAULT_OVERHEAD,
                       help="tokens --thinking-cap auto keeps for the answer and the "
                            f"delimiters (default {DEFAULT_OVERHEAD}: s1's 100 + ~20)")
    sweep.add_argument("--continuation",
                       help="thinking_continuation sent with minima and Waits (default: the "
                            "server's, 'Wait' on s1-serve); '' suppresses the end only, "
                            "with --thinking-min (Waits need a string to count)")
    sweep.add_argument("--samples", type=int, default=0,
                       help="parallel scaling: K independent samples per question, majority "
                            "vote over 1, 2, 4, ..., K of them (see evals/parallel.py)")
    sweep.add_argument("--sample-temperature", type=float, default=0.7,
                       help="temperature of the --samples draws (default 0.7; must be > 0)")
    base = p.add_argument_group("Table 3 baselines (evals/baselines.py)")
    base.add_argument("--token-conditional", help="prompt 'Think for up to N tokens.': N,...")
    base.add_argument("--step-conditional", help="prompt 'Think for up to N steps.': N,...")
    base.add_argument("--class-conditional", action="store_true",
                      help="s1's short and long thinking prompts")
    base.add_argument("--rejection", help="rejection sampling: budgets N,... (temperature 1)")
    base.add_argument("--rejection-tries", type=int, default=64,
                      help="samples per question at most (default 64)")
    sweep.add_argument("--max-tokens", type=int, help="max_tokens (thinking + answer)")
    sweep.add_argument("--temperature", type=float, default=0.0, help="default 0 (greedy)")
    sweep.add_argument("--top-p", type=float)
    sweep.add_argument("--seed", type=int)
    out = p.add_argument_group("output")
    out.add_argument("--out", default="s1-eval-out", help="output directory")
    out.add_argument("--refresh", action="store_true", help="ignore cached answers")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


async def _resolve_model(client: AsyncClient, model: str | None) -> str | None:
    """The model to ask for: the given one, else the server's first (None if unlisted)."""
    try:
        served = await client.models()
    except APIConnectionError:
        raise
    except S1Error:
        return model
    return model or (served[0].id if served else None)


def _baselines(args: argparse.Namespace) -> dict[Method, list[int]]:
    out: dict[Method, list[int]] = {
        "token_conditional": parse_ints(args.token_conditional, "--token-conditional"),
        "step_conditional": parse_ints(args.step_conditional, "--step-conditional"),
        "class_conditional": [0, 1] if args.class_conditional else [],
        "rejection": parse_ints(args.rejection, "--rejection")}
    return {k: v for k, v in out.items() if v}


async def _run(args: argparse.Namespace) -> int:
    if args.data is None:
        raise ValueError("give --data (or --preset, which defaults to the bundled sample)")
    if args.rejection_tries < 1:
        raise ValueError("--rejection-tries must be >= 1")
    cap_arg = parse_cap(args.thinking_cap)
    if args.continuation is not None and args.continuation == "" and args.waits:
        raise ValueError("--continuation '' (suppress only) works with --thinking-min; "
                         "--waits needs a string, which the server counts the Waits by")
    if args.continuation and not args.continuation.strip():
        raise ValueError("--continuation must not be blank; '' suppresses the end only")
    settings = build_sweep(parse_ints(args.thinking_max, "--thinking-max"),
                           parse_ints(args.thinking_min, "--thinking-min"),
                           args.waits, cap_arg if isinstance(cap_arg, int) else None,
                           samples=args.samples, baselines=_baselines(args),
                           deadline_ms=parse_ints(args.deadline_ms, "--deadline-ms"),
                           early_stop=parse_pairs(args.early_stop, "--early-stop"))
    if args.samples and args.sample_temperature <= 0:
        raise ValueError("--sample-temperature must be > 0: greedy samples are all the same")
    bench = load_benchmark(args.data, args.format, choice_seed=args.choice_seed,
                           limit=args.limit, template=args.prompt_template)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    async with AsyncClient(args.base_url, args.api_key, model=args.model,
                           timeout=args.request_timeout) as client:
        try:
            model = await _resolve_model(client, args.model)
        except APIConnectionError as exc:
            print(f"s1-eval: cannot reach the server: {exc}", file=sys.stderr)
            return 2
        auto = None
        if cap_arg == AUTO:
            auto = await resolve_auto_cap(client, bench.questions, model=model,
                                          system=args.system, max_tokens=args.max_tokens,
                                          context=args.context_length,
                                          overhead=args.auto_cap_overhead,
                                          concurrency=args.concurrency)
            print(f"s1-eval: --thinking-cap auto = {auto.cap} (context {auto.context} - "
                  f"longest prompt {auto.longest_prompt} - overhead {auto.overhead})",
                  file=sys.stderr)
            build_sweep([], parse_ints(args.thinking_min, "--thinking-min"), None, auto.cap)
        config = RunConfig(model=model, temperature=args.temperature, top_p=args.top_p,
                           seed=args.seed, max_tokens=args.max_tokens,
                           thinking_cap=auto.cap if auto else cap_arg,  # type: ignore[arg-type]
                           system=args.system, continuation=args.continuation,
                           sample_temperature=args.sample_temperature,
                           rejection_tries=args.rejection_tries)
        from tqdm import tqdm

        with Cache(out / CACHE_FILE, config.signature(), fresh=args.refresh) as cache, \
                tqdm(total=len(bench.questions) * len(settings), desc=f"s1-eval {bench.name}",
                     unit="req", disable=args.no_progress, dynamic_ncols=True) as bar:
            runner = Runner(client, config, cache, concurrency=args.concurrency, progress=bar)
            sweep = await runner.run(bench.questions, settings)
    meta = {"created": datetime.now(UTC).isoformat(timespec="seconds"),
            "base_url": client.base_url, "model": model,
            "config": {**asdict(config), "concurrency": args.concurrency,
                       "choice_seed": args.choice_seed, "prompt_template": args.prompt_template,
                       "auto_thinking_cap": asdict(auto) if auto else None},
            "requests_sent": sweep.requested}
    report = build_report(bench, settings, sweep, meta)
    write_json(report, out / "results.json")
    plot_scaling(report, out / "scaling.png")
    (out / "table3.md").write_text(table3(report) + "\n", encoding="utf-8")
    print(format_table(report))
    print(f"\nwrote {out / 'results.json'}, {out / 'scaling.png'} ({sweep.requested} new "
          f"requests, cache {out / CACHE_FILE})")
    if sweep.failures:
        print(f"s1-eval: {len(sweep.failures)} request(s) failed; rerun the same command to "
              f"retry them. First: {sweep.failures[0]}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = apply_preset(parser.parse_args(argv), parser.parse_args([]))
    try:
        return asyncio.run(_run(args))
    except (ValueError, OSError) as exc:
        print(f"s1-eval: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("s1-eval: interrupted; rerun the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
