"""Read question files of any common shape into rows: jsonl, json, csv, parquet, ``datasets`` dirs.

Why: the s1 pool mixes sixteen sources, each in whatever form it was published. This module
only reads; mapping the columns to the common schema is the ``collect`` stage's job.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

FORMATS = ("jsonl", "json", "csv", "parquet", "datasets")


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "datasets"
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("jsonl", "ndjson"):
        return "jsonl"
    if suffix in FORMATS:
        return suffix
    raise ValueError(f"{path}: cannot tell the format from the name; set format: "
                     f"one of {', '.join(FORMATS)}")


def read_rows(path: Path, fmt: str | None = None, split: str = "train") -> list[dict[str, Any]]:
    """All rows of ``path`` as dicts (a DatasetDict directory gives its ``split``)."""
    if not path.exists():
        raise FileNotFoundError(f"source not found: {path}")
    fmt = fmt or detect_format(path)
    if fmt == "jsonl":
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if fmt == "json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data = data.get("data", data.get(split))
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of objects (or {{'data': [...]}})")
        return data
    if fmt == "csv":
        with path.open(encoding="utf-8", newline="") as f:
            return [dict(r) for r in csv.DictReader(f)]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if fmt == "datasets":
        from datasets import DatasetDict, load_from_disk

        ds = load_from_disk(str(path))
        if isinstance(ds, DatasetDict):
            if split not in ds:
                raise ValueError(f"{path}: no split {split!r}; splits: {list(ds)}")
            ds = ds[split]
        return [dict(r) for r in ds]
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
