"""The common row schema every stage reads and extends, and the helpers that name its columns.

Why one place: each stage adds columns to the same table, and the later stages (and the
export) must find them by name. Rows are plain dicts so any stage can be run on a table
another tool wrote, as long as these columns are there.

Columns written by ``collect``::

    id            stable id: sha1 of the normalised question (duplicates share it)
    question      the question text
    solution      the reference solution (the answer when the source has no solution)
    answer        the short final answer used for grading ("" when unknown)
    cot_type      "math", "science", ... (s1K's column)
    source_type   where the question came from (s1K's column)
    metadata      JSON object as a string: the source's other fields, then the pipeline's

Per teacher ``t`` (``traces``): ``t_thinking``, ``t_attempt``, ``t_error``,
``t_finish_reason``, ``t_completion_tokens``. Per base model ``m`` (``difficulty``):
``m_answer``, ``m_correct``, ``m_grade_reason``; plus ``trace_tokens``, ``solved_by`` and,
per teacher, ``t_thinking_tokens``, ``t_grade``, ``t_grade_reason``. ``domains`` adds
``domain``, ``domain_name``, ``domain_source``; ``select`` adds ``selection_order`` and
``selected_by``.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

Row = dict[str, Any]

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
UNKNOWN_DOMAIN = "unknown"


def normalize_question(text: str) -> str:
    """The form exact deduplication compares: whitespace collapsed, case folded."""
    return " ".join(text.split()).casefold()


def question_id(text: str) -> str:
    """A stable 16-hex-digit id for a question (equal for duplicates)."""
    return hashlib.sha1(normalize_question(text).encode()).hexdigest()[:16]


def stable_int(*parts: object) -> int:
    """A deterministic 31-bit integer from ``parts`` (per-question seeds, tie-breaks)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def col(prefix: str, field: str) -> str:
    """Column ``field`` of a teacher or base model named ``prefix``."""
    return f"{prefix}_{field}"


def metadata(row: Row) -> dict[str, Any]:
    """The row's metadata as a dict (it is stored as a JSON string)."""
    raw = row.get("metadata")
    if not raw:
        return {}
    if isinstance(raw, dict):
        return dict(raw)
    try:
        value = json.loads(raw)
    except ValueError:
        return {"raw": raw}
    return value if isinstance(value, dict) else {"raw": value}


def dump_metadata(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, sort_keys=True, default=str)
