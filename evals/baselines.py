"""Table 3's baselines and the Table-3-shaped report (the s1 paper, section 3.2 and Table 3).

What: the other ways to control thinking the paper compares budget forcing with, as
s1-eval methods, and the table that puts them side by side.

- ``token_conditional`` (value N): the question followed by s1's task suffix
  "Think for up to N tokens." (``PROMPTTOKEN`` in s1's task utils); bounds [0, N].
- ``step_conditional`` (value N): "Think for up to N steps." (``PROMPTSTEP``). The paper
  counts steps; thinking tokens are not steps, so no Control is claimed here.
- ``class_conditional`` (value 0 = short, 1 = long): s1's ``PROMPTSHORT`` / ``PROMPTLONG``
  suffixes. No requested budget, so no Control.
- ``rejection`` (value N): sample (``--sample-temperature``, s1 used 1) with seeds
  ``seed, seed + 1, ...`` until the thinking fits N tokens, at most ``--rejection-tries``;
  each request carries ``thinking_max = N + 1`` as s1's harness does (a sample over N is
  cut at N + 1 and rejected). The tries are reported per setting; a question that never
  fits keeps its last sample (over N: it counts against Control).

Why: the paper's claim is comparative (Control 100%, positive Scaling, best Performance
for budget forcing); a reproduction needs the same rows. s1's own harness runs these with
separately fine-tuned models for token/step conditioning (``simplescaling/token-conditional-
control`` and ``step-conditional-control``); here the prompt is what varies, the model is
whatever the server serves.

The Scaling unit: the paper defines Scaling as the mean pairwise slope of accuracy over
thinking tokens and states no unit. s1-eval reports accuracy points per 1,000 thinking
tokens (:mod:`evals.metrics`); ``PUBLISHED_TABLE3`` keeps the paper's AIME24 rows for the
report to print beside ours.
"""

from __future__ import annotations

from typing import Any

TOKEN_SUFFIX = "\n\nThink for up to {n} tokens."
STEP_SUFFIX = "\n\nThink for up to {n} steps."
CLASS_SUFFIXES = {
    0: "\n\nAnswer after a short amount of thinking. Do not spend excessive time "
       "double-checking your work.",
    1: "\n\nAnswer after a long amount of thinking. If you feel like you are finished early, "
       "spend the extra time trying to double-check your work until you are absolutely sure "
       "that you have the correct answer.",
}
REJECTION_TEMPERATURE = 1.0  # eval/commands.sh: rejection_sample=true,temperature=1

# Table 3 of the paper (AIME24, s1-32B): method -> (Control %, Scaling, Performance %)
PUBLISHED_TABLE3: dict[str, tuple[float, float, float]] = {
    "budget forcing": (100.0, 15.0, 56.7),
    "token-conditional control": (40.0, -24.0, 40.0),
    "token-conditional control + budget forcing": (100.0, 13.0, 40.0),
    "step-conditional control": (60.0, 3.0, 36.7),
    "class-conditional control": (50.0, 25.0, 36.7),
    "rejection sampling": (100.0, -35.0, 40.0),
}
TABLE3_ROWS = {"thinking_max": "budget forcing", "waits": "budget forcing (Waits)",
               "token_conditional": "token-conditional control",
               "step_conditional": "step-conditional control",
               "class_conditional": "class-conditional control",
               "rejection": "rejection sampling"}


def prompt_for(method: str, value: int, prompt: str) -> str:
    """The user message of a prompt-conditioned baseline (others: unchanged)."""
    if method == "token_conditional":
        return prompt + TOKEN_SUFFIX.format(n=value)
    if method == "step_conditional":
        return prompt + STEP_SUFFIX.format(n=value)
    if method == "class_conditional":
        if value not in CLASS_SUFFIXES:
            raise ValueError("class_conditional takes 0 (short) or 1 (long)")
        return prompt + CLASS_SUFFIXES[value]
    return prompt


def bounds(method: str, value: int, thinking_min: int | None,
           thinking_max: int | None) -> tuple[int | None, int | None] | None:
    """The requested [a_min, a_max] a run is held to for Control; None when the method
    asks for no token budget (Control is then not defined)."""
    if method in ("token_conditional", "rejection"):
        return None, value
    if method in ("step_conditional", "class_conditional"):
        return None
    return thinking_min, thinking_max


def fits(thinking_tokens: int, budget: int) -> bool:
    """Rejection sampling's test: the sample's thinking is within the budget."""
    return thinking_tokens <= budget


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table3(report: dict[str, Any]) -> str:
    """Control, Scaling and Performance per method, in the paper's Table 3 layout (Markdown),
    with the paper's AIME24 row beside ours where it has one."""
    lines = ["| method | Control % | Scaling (acc. points / 1k tokens) | Performance % "
             "| paper (AIME24): Control / Scaling / Performance |", "|---|---:|---:|---:|---|"]
    for name, m in report["methods"].items():
        if name not in TABLE3_ROWS:
            continue
        row = TABLE3_ROWS[name]
        paper = PUBLISHED_TABLE3.get(row)
        ref = " / ".join(f"{v:g}" for v in paper) if paper else "-"
        lines.append(f"| {row} | {_fmt(m.get('control_settings'))} | "
                     f"{_fmt(m.get('scaling'), 2)} | {_fmt(m.get('performance'))} | {ref} |")
    tries = report.get("rejection_tries")
    if tries:
        lines.append("")
        lines.append("Rejection sampling, tries per setting (mean / max): " + ", ".join(
            f"{k} {v['mean']:.1f} / {v['max']}" for k, v in tries.items()))
    return "\n".join(lines)
