"""Stage 3, quality: drop failed teacher calls and badly formatted questions, counting each reason.

In the paper's order: first what the API got wrong (``api_error``: the call failed;
``empty_trace``: no thinking came back; ``empty_attempt``: no answer after it;
``truncated``: the reply hit ``max_tokens``, when ``drop_truncated`` is on), then
rows s1 also drops (``missing_answer``: no reference answer, ``drop_missing_answer``;
``asy_figure``: an ``[asy]`` figure in a question not from AIME, ``drop_asy`` /
``asy_keep_sources``), then formatting (:mod:`datasets_build.checks`). A row is counted under its first reason; the
removed file lists all of them, and ``notes.flagged`` counts every filter's hits on its own
(the funnel report shows them, filters that are off shown as such). Every teacher must pass, so that the export has all of its
columns filled.
"""

from __future__ import annotations

from collections import Counter
from fnmatch import fnmatchcase

from datasets_build.checks import CHECKS
from datasets_build.config import Quality
from datasets_build.schema import Row, col
from datasets_build.tables import StageStats, Table

_ALWAYS = ("api_error", "empty_trace", "empty_attempt", "truncated", "missing_answer",
           "asy_figure")


def reasons(row: Row, teachers: list[str], cfg: Quality) -> list[tuple[str, str]]:
    """Every (reason, detail) that drops ``row``; empty when it stays."""
    found: list[tuple[str, str]] = []
    for t in teachers:
        if row.get(col(t, "error")):
            found.append(("api_error", f"{t}: {row[col(t, 'error')]}"))
        elif not str(row.get(col(t, "thinking")) or "").strip():
            found.append(("empty_trace", f"{t}: no thinking in the reply"))
        elif not str(row.get(col(t, "attempt")) or "").strip():
            found.append(("empty_attempt", f"{t}: no answer after the thinking"))
        elif cfg.drop_truncated and row.get(col(t, "finish_reason")) == "length":
            found.append(("truncated", f"{t}: stopped at max_tokens"))
    if cfg.drop_missing_answer and not str(row.get("answer") or "").strip():
        found.append(("missing_answer", "no reference answer"))
    if cfg.drop_asy and "[asy]" in row["question"].lower() and not any(
            fnmatchcase(str(row.get("source_type") or ""), p) for p in cfg.asy_keep_sources):
        found.append(("asy_figure", "an [asy] figure outside AIME"))
    for name in cfg.checks:
        detail = CHECKS[name](row["question"])
        if detail:
            found.append((name, detail))
    return found


def run_quality(table: Table, cfg: Quality) -> tuple[Table, StageStats, list[Row]]:
    teachers = table.teachers
    if not teachers:
        raise ValueError("the input table names no teachers: run the traces stage first")
    stats = StageStats("quality", rows_in=len(table.rows))
    kept: list[Row] = []
    removed: list[Row] = []
    flagged: Counter[str] = Counter()  # every filter's own count (a row may hit several)
    for row in table.rows:
        found = reasons(row, teachers, cfg)
        flagged.update({r for r, _ in found})
        if not found:
            kept.append(row)
            continue
        stats.dropped[found[0][0]] += 1
        removed.append({"id": row["id"], "source_type": row["source_type"],
                        "reason": found[0][0], "detail": found[0][1],
                        "all_reasons": [r for r, _ in found], "question": row["question"][:300]})
    stats.rows_out = len(kept)
    stats.notes["flagged"] = {name: flagged[name] for name in (*_ALWAYS, *cfg.checks)}
    stats.notes["checks"] = list(cfg.checks)
    return Table(kept, table.meta), stats, removed
