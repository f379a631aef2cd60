"""Parallel scaling: majority vote over k independent samples, at its thinking-token cost.

Why: the s1 paper's other axis. Sequential scaling (budget forcing: one trace, made longer or
shorter) is compared with parallel scaling (k traces, majority vote) at matched thinking
compute; the paper finds that budget forcing scales better per token. Here each question has
K samples (``sample=0..K-1`` settings, see :mod:`evals.settings`); majority@k votes over the
first k, for k = 1, 2, 4, ... up to K (and K itself). The cost of a majority@k answer is the
*sum* of its k samples' thinking tokens, so the x axis is the same quantity as for the
sequential methods: thinking tokens spent per question.

Voting: the extracted answers (``s1_common.grading.extract_answer``) are the votes; integers are
compared as integers (``"07"`` = ``"7"``), anything else by its whitespace-stripped text;
unextractable answers do not vote. Ties go to the answer whose first vote came first (the
lower sample index), so the result is deterministic. No vote at all counts as wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evals import metrics
from evals.cache import Record
from s1_common.grading import extract_answer, grade

LABEL = "parallel: majority vote over k samples"


def vote_key(answer: str) -> str:
    text = answer.strip()
    try:
        return str(int(text))
    except ValueError:
        return text


def majority(answers: Sequence[str | None]) -> str | None:
    """The most common answer (ties: the earliest); None when no answer voted."""
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for a in answers:
        if a is None or not a.strip():
            continue
        key = vote_key(a)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, a)
    if not counts:
        return None
    best = max(counts.values())
    winner = next(k for k in first if counts[k] == best)  # dict order = first-vote order
    return first[winner]


def ks_for(samples: int) -> list[int]:
    """1, 2, 4, ... below ``samples``, then ``samples`` itself."""
    ks, k = [], 1
    while k < samples:
        ks.append(k)
        k *= 2
    return [*ks, samples] if samples else []


def majority_curve(samples: dict[str, list[Record]], golds: dict[str, tuple[str, str]],
                   ks: Sequence[int]) -> dict[str, Any]:
    """Majority@k accuracy and mean total thinking tokens per question, for each k.

    ``samples``: question id -> its sample records in sample order; ``golds``: question id
    -> (gold, grading kind). A question counts at k only if it has k samples.
    """
    rows = []
    for k in ks:
        correct = n = 0
        tokens = 0.0
        for qid, recs in samples.items():
            if len(recs) < k:
                continue
            gold, kind = golds[qid]
            voted = majority([extract_answer(r.answer) for r in recs[:k]])
            correct += grade(voted, gold, kind) is True  # type: ignore[arg-type]
            tokens += sum(r.thinking_tokens for r in recs[:k])
            n += 1
        rows.append({"k": k, "n": n, "accuracy": metrics.accuracy(correct, n),
                     "mean_thinking_tokens": tokens / n if n else None})
    points = [(r["mean_thinking_tokens"], r["accuracy"]) for r in rows
              if r["accuracy"] is not None and r["mean_thinking_tokens"] is not None]
    return {"label": LABEL, "settings": [f"majority@{r['k']}" for r in rows], "rows": rows,
            "points": [[x, y] for x, y in points], "control": None, "control_settings": None,
            "scaling": metrics.scaling(points), "performance": metrics.performance(points)}
