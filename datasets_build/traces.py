"""Stage 2, traces: a reasoning trace and an answer per question from each teacher model.

Why several teachers: s1K's traces came from Gemini 2.0 Flash Thinking, s1K-1.1's from
DeepSeek-R1 on the same questions; configuring both gives the s1K-1.1 layout at export. The
first teacher is the primary one: its trace length ranks questions in ``select``.

Per teacher ``t`` the columns are ``t_thinking``, ``t_attempt``, ``t_error`` (None when the
call worked), ``t_finish_reason`` and ``t_completion_tokens``. Nothing is dropped here; the
quality stage drops failed calls and counts them.
"""

from __future__ import annotations

from datasets_build.calls import ModelCaller, fill, messages_for, seed_for
from datasets_build.config import Teacher, Traces
from datasets_build.schema import Row, col
from datasets_build.tables import StageStats, Table
from datasets_build.thinking import split_thinking


async def _trace(caller: ModelCaller, teacher: Teacher, row: Row) -> Row:
    gen = teacher.gen
    prompt = fill(gen.prompt, question=row["question"])
    reply = await caller.chat(gen, messages_for(gen, prompt), seed_for(gen, row["id"]))
    thinking, attempt = split_thinking(reply.answer, reply.reasoning, teacher.delimiters)
    return {col(teacher.name, "thinking"): thinking if reply.ok else "",
            col(teacher.name, "attempt"): attempt if reply.ok else "",
            col(teacher.name, "error"): reply.error,
            col(teacher.name, "finish_reason"): reply.finish_reason,
            col(teacher.name, "completion_tokens"): reply.completion_tokens}


async def run_traces(table: Table, cfg: Traces, caller: ModelCaller) -> tuple[Table, StageStats]:
    """Ask every teacher about every question; one new set of columns per teacher."""
    rows = [dict(r) for r in table.rows]
    stats = StageStats("traces", rows_in=len(rows), rows_out=len(rows))
    jobs = [(t, i) for t in cfg.teachers for i in range(len(rows))]
    results = await caller.map(jobs, lambda job: _trace(caller, job[0], rows[job[1]]),
                               "traces " + "+".join(t.name for t in cfg.teachers))
    for (teacher, i), extra in zip(jobs, results, strict=True):
        rows[i].update(extra)
        if extra[col(teacher.name, "error")] is not None:
            stats.notes[f"{teacher.name}_failed"] = stats.notes.get(f"{teacher.name}_failed", 0) + 1
    stats.calls = caller.stats()
    meta = {**table.meta, "teachers": [t.name for t in cfg.teachers]}
    return Table(rows, meta), stats
