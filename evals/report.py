"""Grades a sweep and summarises it: per-setting rows, per-method metrics, the results JSON.

Grading happens here, from the stored answer text, every time (see
:mod:`evals.cache`). Accuracy counts an ungradable answer as not correct and
reports how many there were; a question whose request failed is *missing*,
not wrong, and its setting is marked incomplete.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evals import metrics
from evals.baselines import bounds
from evals.benchmarks import Benchmark
from evals.cache import Record
from evals.parallel import ks_for, majority_curve
from evals.runner import SweepResult
from evals.settings import LABELS, METHODS, Setting
from s1_common.grading import extract_answer, grade


@dataclass
class Row:
    """One setting's results."""

    method: str
    setting: str
    value: int
    n: int
    missing: int
    correct: int
    ungradable: int
    accuracy: float | None
    mean_thinking_tokens: float | None
    control: float | None
    extended: int | None  # waits rounds: questions where an end was really suppressed
    forced_cuts: int | None = None  # answers whose thinking was cut at thinking_max
    waits_realised: dict[str, int] | None = None  # realised Waits -> questions ("?" unknown)
    waits_mismatch: int | None = None  # waits settings: questions not at the requested count
    accuracy_matched: float | None = None  # waits settings: accuracy over the matched ones
    mean_probe_tokens: float | None = None  # early_stop settings: probe tokens per answer


@dataclass
class Graded:
    """One record with its grade (what the results JSON lists per question)."""

    question_id: str
    setting: str
    gold: str
    extracted: str | None
    correct: bool | None
    thinking_tokens: int
    thinking_min: int | None
    thinking_max: int | None
    thinking_source: str
    finish_reason: str | None
    waits_realised: int | None = None
    forced_cut: bool | None = None


def grade_record(record: Record, gold: str, kind: str) -> Graded:
    extracted = extract_answer(record.answer)
    return Graded(question_id=record.question_id, setting=record.setting, gold=gold,
                  extracted=extracted, correct=grade(extracted, gold, kind),  # type: ignore[arg-type]
                  thinking_tokens=record.thinking_tokens, thinking_min=record.thinking_min,
                  thinking_max=record.thinking_max, thinking_source=record.thinking_source,
                  finish_reason=record.finish_reason, waits_realised=record.waits_realised,
                  forced_cut=record.forced_cut)


def _realised_counts(s: Setting, graded: list[Graded]) -> dict[str, Any]:
    """Forced cuts, the realised-Waits histogram and, for ``waits`` settings, how many
    questions did not get the requested count and the accuracy over those that did."""
    hist: dict[str, int] = {}
    for g in graded:
        key = "?" if g.waits_realised is None else str(g.waits_realised)
        hist[key] = hist.get(key, 0) + 1
    out: dict[str, Any] = {"forced_cuts": sum(g.forced_cut is True for g in graded),
                           "waits_realised": dict(sorted(hist.items()))}
    if s.method == "waits":
        matched = [g for g in graded if g.waits_realised == s.value]
        out["waits_mismatch"] = len(graded) - len(matched)
        out["accuracy_matched"] = metrics.accuracy(sum(g.correct is True for g in matched),
                                                   len(matched))
    return out


def mismatches(rows: Sequence[Row]) -> list[str]:
    """One line per ``waits`` setting where some answers did not get the requested Waits."""
    lines = []
    for r in rows:
        if r.waits_mismatch:
            lines.append(f"{r.setting}: {r.waits_mismatch} of {r.n} answers did not get "
                         f"{r.value} Wait(s) (realised: {r.waits_realised}); accuracy over "
                         f"the {r.n - r.waits_mismatch} that did: {_fmt(r.accuracy_matched)}%")
    return lines


def _row(s: Setting, graded: list[Graded], records: list[Record], total: int) -> Row:
    n = len(graded)
    correct = sum(g.correct is True for g in graded)
    return Row(**_realised_counts(s, graded), method=s.method, setting=s.key, value=s.value, n=n, missing=total - n,
               correct=correct, ungradable=sum(g.correct is None for g in graded),
               accuracy=metrics.accuracy(correct, n),
               mean_thinking_tokens=sum(g.thinking_tokens for g in graded) / n if n else None,
               mean_probe_tokens=_mean([r.probe_tokens for r in records
                                        if r.probe_tokens is not None]),
               control=metrics.control(_runs(graded)),
               extended=(sum(bool(r.extended) for r in records)
                         if s.method == "waits" and s.value > 0 else None))


def _mean(values: list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def _runs(graded: list[Graded]) -> list[tuple[float, float | None, float | None]]:
    """(used, a_min, a_max) per generation; methods without a token budget have none."""
    out = []
    for g in graded:
        method, _, value = g.setting.partition("=")
        b = bounds(method, int(value.partition("x")[0]), g.thinking_min, g.thinking_max)
        if b is not None:
            out.append((float(g.thinking_tokens), *b))
    return out


def _method_summary(rows: list[Row], graded: list[Graded]) -> dict[str, Any]:
    points = [(r.mean_thinking_tokens, r.accuracy) for r in rows
              if r.mean_thinking_tokens is not None and r.accuracy is not None]
    by_setting = [_runs([g for g in graded if g.setting == r.setting]) for r in rows]
    return {"label": LABELS[rows[0].method], "settings": [r.setting for r in rows],
            "points": [[x, y] for x, y in points],
            "control": metrics.control(_runs(graded)),
            "control_settings": metrics.control_by_setting(by_setting),
            "scaling": metrics.scaling(points),
            "performance": metrics.performance(points)}


def build_report(bench: Benchmark, settings: Sequence[Setting], sweep: SweepResult,
                 meta: dict[str, Any]) -> dict[str, Any]:
    """The whole results document (what ``results.json`` holds)."""
    by_id = {q.id: q for q in bench.questions}
    rows: list[Row] = []
    graded_all: list[Graded] = []
    per_method: dict[str, tuple[list[Row], list[Graded]]] = {}
    for s in settings:
        records = [sweep.records[(q.id, s.key)] for q in bench.questions
                   if (q.id, s.key) in sweep.records]
        graded = [grade_record(r, by_id[r.question_id].gold, by_id[r.question_id].kind)
                  for r in records]
        row = _row(s, graded, records, len(bench.questions))
        rows.append(row)
        graded_all += graded
        m_rows, m_graded = per_method.setdefault(s.method, ([], []))
        m_rows.append(row)
        m_graded += graded
    methods = {m: _method_summary(*per_method[m]) for m in METHODS
               if m in per_method and m != "sample"}
    sample_settings = [s for s in settings if s.method == "sample"]
    if sample_settings:  # parallel scaling: majority@k from the per-question samples
        per_q = {q.id: [sweep.records[(q.id, s.key)] for s in sorted(sample_settings)
                        if (q.id, s.key) in sweep.records] for q in bench.questions}
        golds = {q.id: (q.gold, q.kind) for q in bench.questions}
        methods["majority"] = majority_curve(per_q, golds, ks_for(len(sample_settings)))
    return {
        **meta,
        "benchmark": {"name": bench.name, "path": bench.path, "format": bench.format,
                      "questions": len(bench.questions)},
        "complete": not sweep.failures and all(r.missing == 0 for r in rows),
        "failures": sweep.failures,
        "budget_mismatches": mismatches(rows),
        "units": {"accuracy": "%", "control": "%", "performance": "%",
                  "mean_thinking_tokens": "tokens",
                  "scaling": "accuracy points per 1000 thinking tokens"},
        "settings": [asdict(r) for r in rows],
        "methods": methods,
        "rejection_tries": _tries(settings, sweep),
        "questions": [asdict(g) for g in graded_all],
    }


def _tries(settings: Sequence[Setting], sweep: SweepResult) -> dict[str, dict[str, float]]:
    """Rejection sampling: samples drawn per question until one fit, per setting."""
    out: dict[str, dict[str, float]] = {}
    for s in settings:
        if s.method == "rejection":
            tries = [r.tries or 1 for (_, key), r in sweep.records.items() if key == s.key]
            if tries:
                out[s.key] = {"mean": sum(tries) / len(tries), "max": max(tries)}
    return out


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(report: dict[str, Any]) -> str:
    """The per-setting and per-method tables as plain text."""
    lines = [f"{'setting':<20} {'n':>4} {'acc %':>6} {'ungr.':>5} {'mean think':>10} "
             f"{'control %':>9} {'cut':>4} realised Waits"]
    for r in report["settings"]:
        lines.append(f"{r['setting']:<20} {r['n']:>4} {_fmt(r['accuracy']):>6} "
                     f"{r['ungradable']:>5} {_fmt(r['mean_thinking_tokens']):>10} "
                     f"{_fmt(r['control']):>9} {r.get('forced_cuts') or 0:>4} "
                     f"{r.get('waits_realised') or '-'}")
    lines.append("")
    lines.append(f"{'method':<14} {'control %':>9} {'scaling':>8} {'performance %':>13}")
    for name, m in report["methods"].items():
        lines.append(f"{name:<14} {_fmt(m['control']):>9} {_fmt(m['scaling'], 2):>8} "
                     f"{_fmt(m['performance']):>13}")
    lines.append("(scaling: accuracy points per 1000 thinking tokens)")
    for line in report.get("budget_mismatches") or []:
        lines.append(f"WARNING {line}")
    return "\n".join(lines)
