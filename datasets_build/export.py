"""Stage 7, export: the selection in the s1K (or s1K-1.1) column layout, plus the report.

Layouts (``layout: auto`` picks s1K for one teacher, s1K-1.1 for two or more):

- s1K: ``question, solution, cot_type, source_type, metadata, cot, thinking_trajectories,
  attempt``; ``thinking_trajectories`` is a list holding the primary teacher's thinking,
  ``cot`` is empty (as in s1K).
- s1K-1.1: ``question, solution, cot_type, source_type, metadata``, then per teacher ``t``
  ``t_thinking_trajectory, t_attempt`` and afterwards ``t_grade, t_grade_reason`` ("Yes" /
  "No" from the difficulty stage). Teachers named ``gemini`` and ``deepseek`` give exactly
  the published s1K-1.1 columns.

``metadata`` is a JSON string: the source's own fields plus what the pipeline learned (id,
answer, domain, trace length, base-model results, selection order). The output directory
holds ``train.parquet`` (loadable by ``training/`` and by ``datasets.load_dataset("parquet",
...)``), ``report.json`` and ``report.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

from datasets_build.config import Export
from datasets_build.domains import msc_codes
from datasets_build.report import build_report, render_markdown
from datasets_build.schema import Row, col, dump_metadata, metadata
from datasets_build.tables import StageStats, Table, with_stage, write_table

_PIPELINE_FIELDS = ("id", "answer", "domain", "domain_name", "domain_source", "trace_tokens",
                    "solved_by", "selection_order", "selected_by")


def _metadata(row: Row, base_models: list[str]) -> str:
    meta = metadata(row)
    meta.update({k: row[k] for k in _PIPELINE_FIELDS if k in row})
    for m in base_models:
        meta[f"{m}_correct"] = row.get(col(m, "correct"))
        meta[f"{m}_answer"] = row.get(col(m, "answer"))
    return dump_metadata(meta)


def to_layout(row: Row, layout: str, teachers: list[str], base_models: list[str]) -> Row:
    out: Row = {k: row.get(k) for k in ("question", "solution", "cot_type", "source_type")}
    out["metadata"] = _metadata(row, base_models)
    if layout == "s1k":
        t = teachers[0]
        out.update(cot=None, thinking_trajectories=[row.get(col(t, "thinking")) or ""],
                   attempt=row.get(col(t, "attempt")) or "")
        return out
    for t in teachers:
        out[col(t, "thinking_trajectory")] = row.get(col(t, "thinking")) or ""
        out[col(t, "attempt")] = row.get(col(t, "attempt")) or ""
    for t in teachers:
        out[col(t, "grade")] = row.get(col(t, "grade"))
        out[col(t, "grade_reason")] = row.get(col(t, "grade_reason"))
    return out


def resolve_layout(layout: str, teachers: list[str]) -> str:
    if not teachers:
        raise ValueError("the input table names no teachers: run the traces stage first")
    if layout == "auto":
        return "s1k" if len(teachers) == 1 else "s1k-1.1"
    if layout == "s1k-1.1" and len(teachers) < 2:
        raise ValueError("the s1K-1.1 layout needs traces from two teachers; "
                         f"this table has {teachers}")
    return layout


def run_export(table: Table, cfg: Export, out_dir: Path) -> tuple[Path, StageStats, dict]:
    """Write ``out_dir/train.parquet``, ``report.json`` and ``report.md``."""
    teachers = table.teachers
    layout = resolve_layout(cfg.layout, teachers)
    base_models = list(table.meta.get("base_models", []))
    rows = sorted(table.rows, key=lambda r: r.get("selection_order", 0))
    out_rows = [to_layout(r, layout, teachers, base_models) for r in rows]
    stats = StageStats("export", rows_in=len(rows), rows_out=len(out_rows),
                       notes={"layout": layout})
    meta = with_stage(table.meta, stats, layout=layout)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = write_table(Table(out_rows, meta), out_dir / "train.parquet")
    report = build_report(meta["funnel"], rows, layout)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text(render_markdown(report, msc_codes()))
    return path, stats, report
