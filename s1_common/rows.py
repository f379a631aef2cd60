"""Read the records of a question or training file as dicts: one reader for every caller.

Formats: ``jsonl`` (or ``.ndjson``), ``json`` (a list of objects, or ``{"data": [...]}`` /
``{"<split>": [...]}``), ``csv`` (every value a string, as written), ``parquet``, and
``datasets``: a ``save_to_disk`` Dataset or DatasetDict directory. A directory without a
``datasets`` layout is read as ``<split>.jsonl`` / ``<split>.parquet`` (or ``<split>-*``
shards, or its one data file); a name that is neither a file nor a directory is a Hugging
Face Hub dataset id (``datasets.load_dataset``, offline from the local cache when
``HF_HUB_OFFLINE`` is set). pyarrow and datasets are imported only for the formats that
need them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

FORMATS = ("jsonl", "json", "csv", "parquet", "datasets")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv",
             ".parquet": "parquet"}


def detect_format(path: Path) -> str:
    """The format of ``path`` from its name (a directory: ``datasets``)."""
    if path.is_dir():
        return "datasets"
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: cannot tell the format from the name; set format: one of "
                         f"{', '.join(FORMATS)}")
    return fmt


def read_rows(source: str | Path, fmt: str | None = None,
              split: str = "train") -> list[dict[str, Any]]:
    """All records of ``source`` (see the module doc) as dicts."""
    path = Path(source)
    if not path.exists():
        if fmt is None and not str(source).startswith((".", "/", "~")) \
                and path.suffix.lower() not in _SUFFIXES:
            from datasets import load_dataset  # a hub id

            return [dict(r) for r in load_dataset(str(source), split=split)]
        raise FileNotFoundError(f"not found: {source}")
    fmt = fmt or detect_format(path)
    if fmt == "datasets":
        return _read_dir(path, split)
    if fmt == "jsonl":
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if fmt == "json":
        return _read_json(path, split)
    if fmt == "csv":
        with path.open(encoding="utf-8", newline="") as f:
            return [dict(r) for r in csv.DictReader(f)]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _read_json(path: Path, split: str) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:  # JSON lines under a .json name
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(data, dict):
        data = data.get("data", data.get(split))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of objects (or {{'data': [...]}})")
    return data


def _read_dir(path: Path, split: str) -> list[dict[str, Any]]:
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        from datasets import DatasetDict, load_from_disk

        ds = load_from_disk(str(path))
        if isinstance(ds, DatasetDict):
            if split not in ds:
                raise ValueError(f"{path}: no split {split!r}; splits: {list(ds)}")
            ds = ds[split]
        return [dict(r) for r in ds]
    if (path / split).is_dir():
        return _read_dir(path / split, split)
    files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".json", ".parquet"))
    named = [p for p in files if p.stem == split or p.stem.startswith(split + "-")]
    if not named and len(files) == 1:
        named = files
    if not named:
        raise FileNotFoundError(f"no {split}.jsonl/.parquet (or {split}-*) data file in {path}; "
                                f"found {[p.name for p in files]}")
    return [row for p in named for row in read_rows(p, split=split)]
