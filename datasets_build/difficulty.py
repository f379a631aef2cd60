"""Stage 4, difficulty: drop questions a base model solves; measure trace length in tokens.

The paper's two difficulty signals. First, each base model (Qwen2.5-7B- and 32B-Instruct in
the paper) attempts every question through its endpoint, or its attempts are read from a
table (``attempts:``, columns ``question`` and ``attempt``; for reusing an earlier run);
attempts are graded by :mod:`datasets_build.judging`. A question any base model answers
correctly is dropped (reason ``solved:<model>``, the first solver). A question whose attempt
could not be graded (``correct`` None: a free-text or proof answer with no judge verdict) is
not known to be hard, so by default it is dropped too (``ungraded:<model>``; ``ungraded:
keep`` keeps it): it must not survive only because no machine check could grade it. Base
models attempt at s1's settings unless the config says otherwise: the question alone as the
prompt, temperature 0.05, max_tokens 32768. Second, the primary teacher's thinking
is measured in tokens of the given tokenizer (``trace_tokens``); ``select`` ranks by it.

Also graded, for the s1K-1.1 columns: each teacher's own attempt (``t_grade``,
``t_grade_reason``), unless ``grade_teachers`` is off.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from datasets_build.calls import ModelCaller, fill, messages_for, seed_for
from datasets_build.config import BaseModelSpec, Difficulty
from datasets_build.judging import Verdict, grade_text
from datasets_build.schema import Row, col, question_id
from datasets_build.tables import StageStats, Table
from datasets_build.tokens import TokenCounter
from datasets_build.validated import reply_text
from s1_common.rows import read_rows


def load_attempts(path: Path) -> dict[str, str]:
    """question id -> attempt text, from a table with ``question`` and ``attempt`` columns."""
    rows = read_rows(path)
    if rows and not {"question", "attempt"} <= set(rows[0]):
        raise ValueError(f"{path}: attempts need 'question' and 'attempt' columns; "
                         f"found {sorted(rows[0])}")
    return {question_id(str(r["question"])): str(r["attempt"] or "") for r in rows}


async def _attempt(caller: ModelCaller, model: BaseModelSpec, row: Row) -> tuple[str | None, str]:
    """(attempt text, or None when the call failed; the failure)."""
    assert model.gen is not None
    prompt = fill(model.gen.prompt, question=row["question"])
    reply = await caller.chat(model.gen, messages_for(model.gen, prompt),
                              seed_for(model.gen, row["id"]))
    if not reply.ok:
        return None, reply.error or "failed"
    return reply_text(reply.answer, reply.reasoning), ""


async def _grade_model(caller: ModelCaller, cfg: Difficulty, model: BaseModelSpec,
                       rows: list[Row]) -> list[Verdict]:
    if model.attempts is not None:
        known = load_attempts(model.attempts)
        texts: list[tuple[str | None, str]] = [
            (known.get(r["id"]), "no attempt in " + model.attempts.name) for r in rows]
    else:
        texts = await caller.map(rows, lambda r: _attempt(caller, model, r),
                                 f"difficulty [{model.name}]")

    async def grade_one(i: int) -> Verdict:
        text, failure = texts[i]
        if text is None:
            return Verdict(None, f"no attempt: {failure}")
        r = rows[i]
        return await grade_text(caller, cfg.judge, r["id"], r["question"], r["answer"], text,
                                str(r.get("solution") or ""))

    return await caller.map(range(len(rows)), grade_one, f"grading [{model.name}]")


async def _grade_teacher(caller: ModelCaller, cfg: Difficulty, teacher: str,
                         rows: list[Row]) -> list[Verdict]:
    async def grade_one(r: Row) -> Verdict:
        return await grade_text(caller, cfg.judge, r["id"], r["question"], r["answer"],
                                str(r.get(col(teacher, "attempt")) or ""),
                                str(r.get("solution") or ""))

    return await caller.map(rows, grade_one, f"grading [{teacher}]")


async def run_difficulty(table: Table, cfg: Difficulty, caller: ModelCaller
                         ) -> tuple[Table, StageStats, list[Row]]:
    teachers = table.teachers
    if not teachers:
        raise ValueError("the input table names no teachers: run the traces stage first")
    counter = TokenCounter(cfg.tokenizer)
    rows = [dict(r) for r in table.rows]
    stats = StageStats("difficulty", rows_in=len(rows))
    for t in teachers:
        counts = counter.count([str(r.get(col(t, "thinking")) or "") for r in rows])
        for r, n in zip(rows, counts, strict=True):
            r[col(t, "thinking_tokens")] = n
        if cfg.grade_teachers:
            for r, v in zip(rows, await _grade_teacher(caller, cfg, t, rows), strict=True):
                r[col(t, "grade")] = None if v.correct is None else ("Yes" if v.correct else "No")
                r[col(t, "grade_reason")] = v.reason
    for r in rows:
        r["trace_tokens"] = r[col(teachers[0], "thinking_tokens")]
        r["solved_by"] = []
        r["ungraded_by"] = []
    for model in cfg.base_models:
        outcome: Counter[str] = Counter()
        for r, v in zip(rows, await _grade_model(caller, cfg, model, rows), strict=True):
            r[col(model.name, "answer")] = v.extracted
            r[col(model.name, "correct")] = v.correct
            r[col(model.name, "grade_reason")] = v.reason
            outcome[{True: "correct", False: "wrong", None: "unknown"}[v.correct]] += 1
            if v.correct:
                r["solved_by"].append(model.name)
            elif v.correct is None:
                r["ungraded_by"].append(model.name)
        stats.notes[model.name] = dict(outcome)
    kept, removed = [], []
    for r in rows:
        if r["solved_by"]:
            who, reason = r["solved_by"][0], f"solved:{r['solved_by'][0]}"
        elif r["ungraded_by"] and cfg.ungraded == "drop":
            who, reason = r["ungraded_by"][0], f"ungraded:{r['ungraded_by'][0]}"
        else:
            kept.append(r)
            continue
        stats.dropped[reason] += 1
        removed.append({"id": r["id"], "source_type": r["source_type"], "reason": reason,
                        "detail": r[col(who, "grade_reason")], "solved_by": r["solved_by"],
                        "question": r["question"][:300]})
    stats.rows_out = len(kept)
    stats.calls = caller.stats()
    meta = {**table.meta, "base_models": [m.name for m in cfg.base_models],
            "tokenizer": cfg.tokenizer}
    return Table(kept, meta), stats, removed
