"""Benchmarks from local files: AIME 2024, MATH500, GPQA Diamond and plain question/answer.

Nothing is downloaded: point ``--data`` at a jsonl, json, csv or parquet file in
one of the published column layouts (read by :func:`s1_common.rows.read_rows`). The layout is detected from the column
names (case and spacing ignored), or forced with ``format=``:

- ``gpqa``: ``Question, Correct Answer, Incorrect Answer 1..3`` (id: ``Record ID``);
- ``math500``: ``problem, answer`` plus ``unique_id`` or ``subject``/``level``;
- ``aime``: ``problem, answer`` (``ID, Problem, Solution, Answer`` or lowercase);
- ``generic``: ``question, answer`` (id: ``id`` when present).

Prompts follow the s1 evaluation: the question text as-is for math, and for
GPQA the question followed by ``A) ... D)`` with the four answers shuffled.
The shuffle uses one ``random.Random(choice_seed)`` stream over the file in
order (as the s1 harness shuffles with a seeded global RNG), so a file and a
seed always give the same letters; the permutations are not claimed to equal
the harness's. Grading kinds: ``integer`` for AIME, ``math`` for MATH500,
``choice`` for GPQA, ``auto`` (decided per gold answer) for generic.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from s1_common.rows import read_rows

FORMATS = ("aime", "math500", "gpqa", "generic")
Format = Literal["aime", "math500", "gpqa", "generic"]
GPQA_TEMPLATE = "{question}\n\nA) {a}\nB) {b}\nC) {c}\nD) {d}"
_KINDS = {"aime": "integer", "math500": "math", "gpqa": "choice", "generic": "auto"}


@dataclass(frozen=True)
class Question:
    """One benchmark item, rendered: the user message and how to grade the reply."""

    id: str
    prompt: str
    gold: str
    kind: str  # integer | math | choice | auto (see s1_common.grading.grade)


@dataclass(frozen=True)
class Benchmark:
    """The questions of one file, with where they came from."""

    name: str
    path: str
    format: Format
    questions: list[Question]


def _key(name: str) -> str:
    return re.sub(r"[\s_]+", " ", name.strip().lower())


def detect_format(columns: Iterable[str]) -> Format:
    """The layout a set of column names belongs to; ValueError when none fits."""
    cols = {_key(c) for c in columns}
    if {"question", "correct answer", "incorrect answer 1", "incorrect answer 2",
            "incorrect answer 3"} <= cols:
        return "gpqa"
    if {"problem", "answer"} <= cols:
        return "math500" if "unique id" in cols or {"subject", "level"} <= cols else "aime"
    if {"question", "answer"} <= cols:
        return "generic"
    raise ValueError(f"cannot tell the benchmark layout from columns {sorted(cols)}; expected "
                     "AIME (problem, answer), MATH500 (problem, answer, unique_id), GPQA "
                     "(Question, Correct Answer, Incorrect Answer 1-3) or question, answer")


def _field(row: dict[str, Any], *names: str) -> Any:
    by_key = {_key(k): v for k, v in row.items()}
    for name in names:
        value = by_key.get(name)
        if value is not None and str(value).strip() != "":
            return value
    return None


def _clean(value: Any) -> str:
    return str(value).strip()


def _question(row: dict[str, Any], index: int, fmt: Format, rng: random.Random,
              template: str) -> Question:
    if fmt == "gpqa":
        correct = _clean(_field(row, "correct answer"))
        choices = [_clean(_field(row, f"incorrect answer {i}")) for i in (1, 2, 3)] + [correct]
        rng.shuffle(choices)
        text = GPQA_TEMPLATE.format(question=_clean(_field(row, "question")), a=choices[0],
                                    b=choices[1], c=choices[2], d=choices[3])
        gold = "ABCD"[choices.index(correct)]
        ident = _field(row, "record id", "id")
    else:
        text = _clean(_field(row, "problem", "question"))
        gold = _clean(_field(row, "answer"))
        ident = _field(row, "unique id", "id") if fmt == "math500" else _field(row, "id")
    return Question(id=str(ident) if ident is not None else str(index),
                    prompt=template.format(question=text), gold=gold, kind=_KINDS[fmt])


def load_benchmark(path: str | Path, fmt: str = "auto", *, choice_seed: int = 0,
                   limit: int | None = None, template: str = "{question}") -> Benchmark:
    """Read ``path`` and render its questions (the first ``limit`` when given).

    ``template`` wraps each rendered question (``{question}``: the s1 prompt is the
    question alone). Ids must be unique: the cache is keyed by them.
    """
    p = Path(path)
    rows = read_rows(p)
    if not rows:
        raise ValueError(f"{p} has no records")
    if fmt == "auto":
        resolved: Format = detect_format(rows[0].keys())
    elif fmt in FORMATS:
        resolved = fmt  # type: ignore[assignment]
    else:
        raise ValueError(f"unknown format {fmt!r}; expected auto or one of {FORMATS}")
    rng = random.Random(choice_seed)
    questions = [_question(row, i, resolved, rng, template) for i, row in enumerate(rows)]
    for q in questions:
        if not q.gold:
            raise ValueError(f"{p}: question {q.id} has no answer")
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{p}: question ids are not unique")
    if limit is not None:
        questions = questions[:limit]
    return Benchmark(name=p.stem, path=str(p), format=resolved, questions=questions)
