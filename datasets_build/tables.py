"""Reading and writing stage tables (parquet files or HF ``datasets`` directories).

Why: every stage is a command from one table to the next, so the table has to carry what a
later stage needs to know about the earlier ones without a side channel: the funnel (rows in,
rows out and why rows were dropped, per stage) and which teachers and base models made the
columns. That travels as JSON in the parquet schema metadata (key ``s1_data``), or in
``s1_data.json`` beside a ``save_to_disk`` directory. Dropped rows are written next to the
output as ``<output>.removed.jsonl`` and the stage's numbers as ``<output>.stats.json``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets_build.schema import Row

META_KEY = b"s1_data"
META_FILE = "s1_data.json"


@dataclass
class Table:
    """Rows plus the pipeline's metadata (``funnel``, ``teachers``, ``base_models``)."""

    rows: list[Row]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def funnel(self) -> list[dict[str, Any]]:
        return list(self.meta.get("funnel", []))

    @property
    def teachers(self) -> list[str]:
        return list(self.meta.get("teachers", []))


@dataclass
class StageStats:
    """What one stage did: rows in and out, drops by reason, model calls."""

    stage: str
    rows_in: int
    rows_out: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    calls: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "in": self.rows_in, "out": self.rows_out,
                "dropped": dict(sorted(self.dropped.items())), "calls": dict(self.calls),
                "notes": self.notes}

    def summary(self) -> str:
        drops = ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())) or "none"
        text = f"{self.stage}: {self.rows_in} -> {self.rows_out} (dropped: {drops})"
        if self.calls:
            text += "; calls: " + ", ".join(f"{k} {v}" for k, v in self.calls.items())
        return text


def read_table(path: str | Path) -> Table:
    """A stage table from a parquet file or a ``datasets`` directory."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input table not found: {path}")
    if path.is_dir():
        from datasets import load_from_disk

        meta_file = path / META_FILE
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        return Table([dict(r) for r in load_from_disk(str(path))], meta)
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(META_KEY)
    return Table(table.to_pylist(), json.loads(raw) if raw else {})


def write_table(table: Table, path: str | Path) -> Path:
    """Write ``table`` as parquet (``.parquet`` suffix) or as a ``datasets`` directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps(table.meta, ensure_ascii=False, default=str)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrow = pa.Table.from_pylist(table.rows) if table.rows else pa.table({})
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}),
                                               META_KEY: meta.encode()})
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(arrow, tmp)
        tmp.replace(path)
    else:
        from datasets import Dataset

        Dataset.from_list(table.rows).save_to_disk(str(path))
        (path / META_FILE).write_text(meta)
    return path


def with_stage(meta: dict[str, Any], stats: StageStats, **extra: Any) -> dict[str, Any]:
    """A copy of ``meta`` with this stage appended to the funnel (replacing an earlier run)."""
    funnel = [f for f in meta.get("funnel", []) if f.get("stage") != stats.stage]
    return {**meta, **extra, "funnel": [*funnel, stats.as_dict()]}


def side_path(output: Path, suffix: str) -> Path:
    """``out.parquet`` -> ``out.<suffix>`` (also for a directory output)."""
    stem = output.name[: -len(".parquet")] if output.suffix == ".parquet" else output.name
    return output.with_name(f"{stem}.{suffix}")


def write_side_files(output: Path, stats: StageStats, removed: list[Row]) -> None:
    """``<output>.stats.json`` and ``<output>.removed.jsonl`` (one line per dropped row)."""
    side_path(output, "stats.json").write_text(json.dumps(stats.as_dict(), indent=2) + "\n")
    with side_path(output, "removed.jsonl").open("w") as f:
        for row in removed:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
