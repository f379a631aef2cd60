"""Read training rows in the s1K / s1K-1.1 layouts and pick the trace to train on.

Why: the recipe trains on (question, thinking, answer) triples, but the public data comes in
two layouts (s1K: `thinking_trajectories`, a list of strings, and `attempt`; s1K-1.1:
`gemini_*` and `deepseek_*` columns side by side) and several containers (jsonl, parquet, a
`datasets` save_to_disk directory, a hub id, and the files datasets_build/ writes). This
module turns any of them (read by `s1_common.rows.read_rows`) into a list of `Triple`s and
says which columns it used.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s1_common.rows import read_rows

# trace name -> (thinking column, answer column)
LAYOUTS: dict[str, tuple[str, str]] = {
    "s1k": ("thinking_trajectories", "attempt"),
    "gemini": ("gemini_thinking_trajectory", "gemini_attempt"),
    "deepseek": ("deepseek_thinking_trajectory", "deepseek_attempt"),
}


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
    rows = read_rows(source, split=split)
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
