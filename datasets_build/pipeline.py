"""Run stages alone or chained, with every check done before the first one starts.

Each stage reads one table and writes the next; by default they live in the config's
``workdir`` as ``01_collect.parquet`` ... ``06_select.parquet`` and the ``07_export/``
directory, each with ``.stats.json`` and (where rows are dropped) ``.removed.jsonl`` beside
it. :func:`check` validates everything a run will need (config sections, input files,
sources, tokenizer, and each endpoint: reachable, key accepted, model served) so that a bad
config or an unreachable endpoint is reported before any work or spending starts.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from datasets_build.calls import ModelCaller, preflight
from datasets_build.config import STAGES, Config, ConfigError
from datasets_build.tables import (
    StageStats,
    Table,
    read_table,
    with_stage,
    write_side_files,
    write_table,
)
from s1_common.cache import ResponseCache

OUTPUTS = {"collect": "01_collect.parquet", "traces": "02_traces.parquet",
           "quality": "03_quality.parquet", "difficulty": "04_difficulty.parquet",
           "domains": "05_domains.parquet", "select": "06_select.parquet",
           "export": "07_export"}

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def default_output(cfg: Config, stage: str) -> Path:
    return cfg.workdir / OUTPUTS[stage]


def default_input(cfg: Config, stage: str) -> Path | None:
    i = STAGES.index(stage)
    return None if i == 0 else default_output(cfg, STAGES[i - 1])


def stage_range(start: str | None, stop: str | None) -> list[str]:
    for name in (start, stop):
        if name is not None and name not in STAGES:
            raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    a = STAGES.index(start) if start else 0
    b = STAGES.index(stop) if stop else len(STAGES) - 1
    if a > b:
        raise ConfigError(f"--from {start} comes after --to {stop}")
    return list(STAGES[a:b + 1])


def check(cfg: Config, stages: list[str], first_input: Path | None) -> None:
    """Raise ConfigError / FileNotFoundError / EndpointError before any work starts."""
    for stage in stages:
        if stage in ("collect", "traces", "difficulty", "domains"):
            cfg.section(stage)
    if stages[0] != "collect":
        path = first_input or default_input(cfg, stages[0])
        if path is None or not path.exists():
            raise FileNotFoundError(f"input table for {stages[0]!r} not found: {path} "
                                    "(run the earlier stages or pass --input)")
    if "collect" in stages:
        assert cfg.collect is not None
        for src in [*cfg.collect.sources, *cfg.collect.eval_sets]:
            if not src.path.exists():
                raise FileNotFoundError(f"source not found: {src.path}")
    if "difficulty" in stages:
        assert cfg.difficulty is not None
        from datasets_build.tokens import TokenCounter

        TokenCounter(cfg.difficulty.tokenizer)
        for model in cfg.difficulty.base_models:
            if model.attempts is not None and not model.attempts.exists():
                raise FileNotFoundError(f"attempts of base model {model.name!r} not found: "
                                        f"{model.attempts}")
    endpoints = cfg.endpoints_for(stages)
    if endpoints:
        asyncio.run(preflight(endpoints))


def _with_caller(cfg: Config, cache: ResponseCache,
                 work: Callable[[ModelCaller], Coroutine[Any, Any, Any]]) -> Any:
    async def go() -> Any:
        caller = ModelCaller(cfg.endpoints, cache, concurrency=cfg.concurrency,
                             abort_after=cfg.abort_after_failures, progress=cfg.progress)
        try:
            return await work(caller)
        finally:
            await caller.aclose()

    return asyncio.run(go())


def run_stage(cfg: Config, stage: str, cache: ResponseCache, input_path: Path | None = None,
              output_path: Path | None = None, log: Log = _stderr) -> StageStats:
    """Run one stage from its input table to its output; returns its stats."""
    from datasets_build import collect, difficulty, domains, export, quality, selection, traces

    output = output_path or default_output(cfg, stage)
    removed: list[dict[str, Any]] = []
    if stage == "collect":
        table, stats, removed = collect.run_collect(cfg.section("collect"))
    else:
        source = input_path or default_input(cfg, stage)
        assert source is not None
        table_in = read_table(source)
        if stage == "export":
            path, stats, report = export.run_export(table_in, cfg.export, output)
            chain = " -> ".join(f"{h['count']} ({h['step']})" for h in report["headline"])
            log(f"[export] {len(table_in.rows)} rows, {stats.notes['layout']} layout -> {path}")
            log(f"[export] funnel: {chain}")
            return stats
        if stage == "traces":
            table, stats = _with_caller(cfg, cache, lambda c: traces.run_traces(
                table_in, cfg.section("traces"), c))
        elif stage == "quality":
            table, stats, removed = quality.run_quality(table_in, cfg.quality)
        elif stage == "difficulty":
            table, stats, removed = _with_caller(cfg, cache, lambda c: difficulty.run_difficulty(
                table_in, cfg.section("difficulty"), c))
        elif stage == "domains":
            table, stats, removed = _with_caller(cfg, cache, lambda c: domains.run_domains(
                table_in, cfg.section("domains"), c))
        elif stage == "select":
            table, stats = selection.run_select(table_in, cfg.select)
        else:
            raise ConfigError(f"unknown stage {stage!r}")
    write_table(Table(table.rows, with_stage(table.meta, stats)), output)
    write_side_files(output, stats, removed)
    log(f"[{stage}] {stats.summary()} -> {output}")
    return stats


def run_pipeline(cfg: Config, stages: list[str], input_path: Path | None = None,
                 output_path: Path | None = None, log: Log = _stderr) -> list[StageStats]:
    """Check, then run ``stages`` in order, each reading what the previous one wrote.

    ``input_path`` replaces the first stage's input and ``output_path`` the last stage's
    output (the stages in between use the workdir)."""
    check(cfg, stages, input_path)
    results = []
    with ResponseCache(cfg.cache) as cache:
        for i, stage in enumerate(stages):
            source = input_path if i == 0 else default_output(cfg, stages[i - 1])
            target = output_path if i == len(stages) - 1 else None
            results.append(run_stage(cfg, stage, cache, source, target, log=log))
    return results

