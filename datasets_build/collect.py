"""Stage 1, collect: load the sources, map them to the common schema, deduplicate, decontaminate.

Each source's columns are mapped by ``fields`` (``question``, ``solution``, ``answer``,
``cot_type``; unmapped names fall back to the usual ones: question/problem/prompt,
solution, answer/final_answer). Every other column of the source goes into ``metadata``.
The short ``answer`` used for grading is taken from the mapped column, else from the last
``\\boxed{}`` / ``Answer:`` of the solution.

Removed rows are written with their reason: ``empty_question``, ``duplicate`` (the same
question after whitespace and case normalisation; the first one in source order
stays)
``contaminated:<eval set>`` (an 8-gram shared with that evaluation set; the shared
words are in the detail) and, with ``dedup: ngram`` (the default), ``near_duplicate``: an
8-gram shared with a kept question of another source (the earlier source's row stays;
:class:`datasets_build.decontam.CrossSourceIndex`). ``dedup: exact`` keeps only the exact
check.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from datasets_build.config import Collect, Source
from datasets_build.decontam import CrossSourceIndex, Decontaminator
from datasets_build.schema import Row, dump_metadata, question_id
from datasets_build.tables import StageStats, Table
from s1_common.grading import extract_answer
from s1_common.rows import read_rows

_DEFAULTS = {"question": ("question", "problem", "prompt"), "solution": ("solution",),
             "answer": ("answer", "final_answer"), "cot_type": ("cot_type",)}


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _pick(raw: dict[str, Any], source: Source, name: str) -> tuple[str | None, str]:
    """(the source column used for ``name``, its text)."""
    if name in source.fields:
        column = source.fields[name]
        if column not in raw:
            raise ValueError(f"source {source.path}: no column {column!r} (fields.{name}); "
                             f"columns: {sorted(raw)}")
        return column, _text(raw[column])
    for column in _DEFAULTS[name]:
        if column in raw:
            return column, _text(raw[column])
    return None, ""


def map_row(raw: dict[str, Any], source: Source) -> Row:
    """One source row in the common schema."""
    used: set[str] = set()
    values: dict[str, str] = {}
    for name in ("question", "solution", "answer", "cot_type"):
        column, values[name] = _pick(raw, source, name)
        if column:
            used.add(column)
    if source.source_type_field:
        if source.source_type_field not in raw:
            raise ValueError(f"source {source.path}: no column {source.source_type_field!r} "
                             "(source_type_field)")
        used.add(source.source_type_field)
        source_type = _text(raw[source.source_type_field]) or str(source.source_type or "")
    else:
        source_type = str(source.source_type)
    answer = values["answer"] or (extract_answer(values["solution"]) or "")
    meta = {k: v for k, v in raw.items() if k not in used}
    return {"id": question_id(values["question"]), "question": values["question"],
            "solution": values["solution"] or answer, "answer": answer,
            "cot_type": values["cot_type"] or source.cot_type, "source_type": source_type,
            "metadata": dump_metadata(meta)}


def _removed(row: Row, reason: str, detail: str) -> Row:
    return {"id": row["id"], "source_type": row["source_type"], "reason": reason,
            "detail": detail, "question": row["question"][:300]}


def run_collect(cfg: Collect) -> tuple[Table, StageStats, list[Row]]:
    """Load, map, deduplicate and decontaminate; returns (table, stats, removed rows)."""
    rows: list[Row] = []
    loaded: Counter[str] = Counter()
    for source in cfg.sources:
        raw_rows = read_rows(source.path, source.format, source.split)
        if source.limit is not None:
            raw_rows = raw_rows[: source.limit]
        loaded[str(source.path.name)] += len(raw_rows)
        rows.extend(map_row(r, source) for r in raw_rows)

    decon = Decontaminator(cfg.ngram)
    for ev in cfg.eval_sets:
        ev_rows = read_rows(ev.path, ev.format, ev.split)
        if ev_rows and ev.question_field not in ev_rows[0]:
            raise ValueError(f"eval set {ev.name}: no column {ev.question_field!r}; "
                             f"columns: {sorted(ev_rows[0])}")
        decon.add(ev.name, (_text(r.get(ev.question_field)) for r in ev_rows))

    stats = StageStats("collect", rows_in=len(rows))
    stats.notes["loaded"] = dict(loaded)
    kept: list[Row] = []
    removed: list[Row] = []
    first: dict[str, Row] = {}
    near = CrossSourceIndex(cfg.ngram) if cfg.dedup == "ngram" else None
    for row in rows:
        if not row["question"]:
            reason, detail = "empty_question", "no question text"
        elif row["id"] in first:
            reason = "duplicate"
            detail = f"same question as an earlier row from {first[row['id']]['source_type']}"
        elif (hit := decon.match(row["question"])) is not None:
            name, index, shared = hit
            first[row["id"]] = row
            reason, detail = f"contaminated:{name}", f"shares {shared!r} with {name} #{index}"
        elif near is not None and (dup := near.match(row["source_type"], row["question"])):
            other, other_id, shared = dup
            first[row["id"]] = row
            reason, detail = "near_duplicate", f"shares {shared!r} with {other} row {other_id}"
        else:
            first[row["id"]] = row
            kept.append(row)
            if near is not None:
                near.add(row["source_type"], row["id"], row["question"])
            continue
        stats.dropped[reason] += 1
        removed.append(_removed(row, reason, detail))
    stats.rows_out = len(kept)
    return Table(kept, {}), stats, removed
