"""Read training rows in the s1K / s1K-1.1 layouts and pick the trace to train on.

Why: the recipe trains on (question, thinking, answer) triples, but the public data comes in
two layouts (s1K: `thinking_trajectories`, a list of strings, and `attempt`; s1K-1.1:
`gemini_*` and `deepseek_*` columns side by side) and several containers (jsonl, parquet, a
`datasets` save_to_disk directory, a hub id, and the files datasets_build/ writes). This
module turns any of them into a list of `Triple`s and says which columns it used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# trace name -> (thinking column, answer column)
LAYOUTS: dict[str, tuple[str, str]] = {
    "s1k": ("thinking_trajectories", "attempt"),
    "gemini": ("gemini_thinking_trajectory", "gemini_attempt"),
    "deepseek": ("deepseek_thinking_trajectory", "deepseek_attempt"),
}
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class Triple:
    """One training example before formatting."""

    question: str
    thinking: str
    attempt: str


@dataclass(frozen=True)
class Loaded:
    """Triples plus what was read: the columns used and rows skipped for missing fields."""

    triples: list[Triple]
    thinking_column: str
    attempt_column: str
    rows: int
    skipped: int


def read_rows(source: str | Path, split: str = "train") -> list[dict[str, Any]]:
    """All rows of a file, a directory, or a hub dataset, as dicts."""
    path = Path(source)
    if path.is_file():
        return _read_file(path)
    if path.is_dir():
        return _read_dir(path, split)
    if str(source).startswith((".", "/")) or path.suffix in FILE_SUFFIXES:
        raise FileNotFoundError(f"training data not found: {source}")
    from datasets import load_dataset  # a hub id (or the local hub cache when offline)

    return [dict(r) for r in load_dataset(str(source), split=split)]


def _read_file(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        with path.open() as f:
            return [json.loads(line) for line in f if line.strip()]
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        return data if isinstance(data, list) else data["data"]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise ValueError(f"unsupported data file {path.name}: use {', '.join(FILE_SUFFIXES)}")


def _read_dir(path: Path, split: str) -> list[dict[str, Any]]:
    """A save_to_disk Dataset / DatasetDict, or a folder with `<split>.parquet`/`.jsonl`
    (or `<split>-*` shards; a folder holding a single data file is read whatever its name)."""
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        from datasets import DatasetDict, load_from_disk

        ds = load_from_disk(str(path))
        if isinstance(ds, DatasetDict):
            ds = ds[split]
        return [dict(r) for r in ds]
    if (path / split).is_dir():
        return _read_dir(path / split, split)
    files = sorted(p for p in path.iterdir() if p.suffix in FILE_SUFFIXES)
    named = [p for p in files if p.stem == split or p.stem.startswith(split + "-")]
    if not named and len(files) == 1:
        named = files
    if not named:
        raise FileNotFoundError(f"no {split}.jsonl/.parquet (or {split}-*) data file in {path}; "
                                f"found {[p.name for p in files]}")
    return [row for p in named for row in _read_file(p)]


def teacher_columns(teacher: str) -> tuple[str, str]:
    """Columns of a teacher in the s1K-1.1 layout (datasets_build names them this way)."""
    return LAYOUTS.get(teacher) or (f"{teacher}_thinking_trajectory", f"{teacher}_attempt")


def choose_columns(columns: Iterable[str], trace: str = "auto",
                   thinking_column: str | None = None,
                   attempt_column: str | None = None) -> tuple[str, str]:
    """(thinking column, attempt column) for the requested trace; explicit names win.

    trace: "s1k", a teacher name ("gemini", "deepseek", or any `<t>_thinking_trajectory`
    teacher of a datasets_build export), or "auto": deepseek, then s1k, then gemini, then
    the only teacher present.
    """
    cols = set(columns)
    if thinking_column and attempt_column:
        pair = (thinking_column, attempt_column)
    elif trace == "auto":
        found = [LAYOUTS[n] for n in ("deepseek", "s1k", "gemini") if set(LAYOUTS[n]) <= cols]
        suffix = "_thinking_trajectory"
        others = sorted(teacher_columns(c[: -len(suffix)]) for c in cols if c.endswith(suffix))
        found += [p for p in others if p[1] in cols and p not in found]
        if not found or (len(found) > 1 and found[0] not in LAYOUTS.values()):
            raise ValueError(f"cannot pick a trace from columns {sorted(cols)}: pass --trace "
                             "(s1k or a teacher name) or --thinking-column/--attempt-column")
        pair = found[0]
    else:
        pair = teacher_columns(trace)
    missing = [c for c in pair if c not in cols]
    if missing:
        raise ValueError(f"data has no column {missing}; columns: {sorted(cols)}")
    return pair


def _text(value: Any) -> str:
    """A trace may be a string or (s1K) a list of strings; s1 joins with newlines and strips."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return "\n".join(str(v) for v in value).strip()
    return str(value).strip()


def load_triples(source: str | Path, *, split: str = "train", trace: str = "auto",
                 thinking_column: str | None = None, attempt_column: str | None = None,
                 question_column: str = "question",
                 max_examples: int | None = None) -> Loaded:
    """Read `source` and return its (question, thinking, attempt) triples.

    Rows whose question, thinking or answer is empty are skipped and counted.
    """
    rows = read_rows(source, split)
    if max_examples is not None:
        rows = rows[:max_examples]
    if not rows:
        raise ValueError(f"no rows in {source}")
    columns = set().union(*(r.keys() for r in rows[:50]))
    if question_column not in columns:
        raise ValueError(f"data has no {question_column!r} column; columns: {sorted(columns)}")
    t_col, a_col = choose_columns(columns, trace, thinking_column, attempt_column)
    triples = []
    for row in rows:
        q, t, a = _text(row.get(question_column)), _text(row.get(t_col)), _text(row.get(a_col))
        if q and t and a:
            triples.append(Triple(q, t, a))
    return Loaded(triples, t_col, a_col, len(rows), len(rows) - len(triples))
