"""Grade an attempt against the reference answer: deterministic first, an LLM judge for the rest.

Why this order: the paper graded with an LLM judge, which is slow, paid and not repeatable.
Most math answers are machine-checkable (:mod:`s1_common.grading`: integers, letters,
math-verify's symbolic equivalence), so those never reach a judge. A reference answer is
*free text* when, LaTeX commands aside, it has two or more words of three letters or more
("no such function exists"), or has a word and no digits or math symbols ("Tuesday",
"no"). Free-text answers are first compared after normalisation (case, spaces,
punctuation); only when that fails is the optional judge asked, with the full reference
solution as s1 did (it reasons, then ends with Yes / No; validated, retried, then unknown). Without a judge a free-text mismatch is unknown (``correct``
None), which never counts as solved. A machine "wrong" that only means no clean final
answer was found (``no final answer found``, ``ungradable answer``) goes to the judge too,
when there is one: an unboxed right answer is not a wrong one. ``judge.grade_all: true``
skips the machine checks and has the judge grade every attempt, exactly as s1 did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from datasets_build import prompts
from datasets_build.calls import ModelCaller, fill
from datasets_build.config import Judge
from datasets_build.validated import ask_validated
from s1_common.grading import extract_answer, grade, infer_kind

_COMMAND = re.compile(r"\\[A-Za-z]+")
_LONG_WORD = re.compile(r"[A-Za-z]{3,}")
_WORD = re.compile(r"[A-Za-z]{2,}")
_TEXT = re.compile(r"\\text\{[^{}]*\}")
_LONG_RUN = re.compile(r"[A-Za-z]{4,}")
_SIDE_BY_SIDE = re.compile(r"\d\s+\d")
_MATHY = re.compile(r"[\d=^_+*/{}]")
_VERDICT = re.compile(
    r"^(?:(?:final\s+)?(?:verdict|answer)\s*[:：]?\s*)?(yes|no|correct|incorrect)$", re.IGNORECASE)


@dataclass(frozen=True)
class Verdict:
    """``correct``: True, False or None (not known); why; and the answer that was graded."""

    correct: bool | None
    reason: str
    extracted: str = ""
    # False when a machine "wrong" only means "no clean final answer found": a judge, when
    # there is one, decides those (an unboxed but right answer is not a wrong one)
    decisive: bool = True


def free_text(gold: str) -> bool:
    """Whether a reference answer needs more than a machine check (see the module doc)."""
    if infer_kind(gold) in ("integer", "choice"):
        return False
    text = _COMMAND.sub(" ", gold)
    if len(_LONG_WORD.findall(text)) >= 2:
        return True
    return bool(_WORD.search(text)) and not _MATHY.search(text)


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.casefold()).split())


def final_text(text: str) -> str:
    """The answer a text gives: its last ``\\boxed{}``/``Answer:``, else its last line."""
    found = extract_answer(text)
    if found:
        return found
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def machine_grade(text: str, gold: str) -> Verdict | None:
    """The deterministic verdict, or None when only a judge can tell."""
    gold = gold.strip()
    if not gold:
        return Verdict(None, "no reference answer")
    if not text.strip():
        return Verdict(False, "empty attempt")
    if free_text(gold):
        pred = final_text(text)
        if normalize(pred) == normalize(gold) or normalize(text) == normalize(gold):
            return Verdict(True, "same text as the reference", pred)
        return None
    pred = extract_answer(text)
    if pred is None:
        return Verdict(False, "no final answer found", decisive=False)
    ok = grade(pred, gold, "auto") if clean_math(pred) else None
    if ok is None:
        return Verdict(False, f"ungradable answer {pred[:80]!r} (reference {gold[:80]!r})", pred,
                       decisive=False)
    kind = infer_kind(gold)
    word = "matches" if ok else "does not match"
    return Verdict(ok, f"{kind}: {pred[:80]!r} {word} {gold[:80]!r}", pred)


def clean_math(pred: str) -> bool:
    """Whether an extracted answer reads as math and nothing else: printable ASCII (LaTeX
    commands and ``\\text{}`` aside), no word of four letters or more, and no two numbers
    side by side with only a space between them. math-verify finds a number in almost any
    text, so without this a stray number in rambling output would count as the answer."""
    t = _COMMAND.sub(" ", _TEXT.sub(" ", pred))
    if not all(c.isascii() and (c.isprintable() or c in " \t") for c in t):
        return False
    return not _LONG_RUN.search(t) and not _SIDE_BY_SIDE.search(t)


def parse_verdict(reply: str) -> bool | None:
    """The verdict on the reply's last non-empty line (the judge reasons first), or None."""
    lines = [ln for ln in reply.strip().splitlines() if ln.strip()]
    text = (lines[-1] if lines else "").strip().strip("*_`'\" .!#").strip()
    m = _VERDICT.match(text)
    if m is None:
        return None
    return m.group(1).lower() in ("yes", "correct")


async def judge_grade(caller: ModelCaller, judge: Judge, row_id: str, question: str,
                      reference: str, text: str) -> Verdict:
    """Ask the judge (``reference``: the full solution); unknown (None) without a verdict."""
    attempt = final_text(text)
    prompt = fill(judge.gen.prompt, question=question, reference=reference,
                  attempt=text[-4000:])
    result = await ask_validated(caller, judge.gen, prompt, f"judge:{row_id}",
                                 parse_verdict, judge.retries, prompts.JUDGE_REMINDER)
    if result.value is None:
        why = result.error or f"invalid replies, last {result.last_reply[:60]!r}"
        return Verdict(None, f"judge gave no verdict in {result.tries} tries ({why})", attempt)
    word = "equivalent" if result.value else "not equivalent"
    return Verdict(result.value, f"judge: {word}", attempt)


async def grade_text(caller: ModelCaller | None, judge: Judge | None, row_id: str,
                     question: str, gold: str, text: str, solution: str = "") -> Verdict:
    """Machine grade, then the judge when one is configured and needed.

    The judge sees the full reference ``solution`` (s1 graded against the whole solution, so
    proofs and derivations can be judged), or ``gold`` when there is none. A question with
    no short answer (proofs) goes to the judge too, when it has a solution.
    """
    verdict = machine_grade(text, gold)
    has_judge = judge is not None and caller is not None
    if judge is not None and judge.grade_all and caller is not None and text.strip():
        verdict = None  # s1: the judge grades every attempt
    if verdict is not None and not (verdict.correct is None and solution.strip()) and (
            verdict.decisive or not has_judge):
        return verdict
    if judge is None or caller is None:
        why = ("no reference answer" if not gold.strip()
               else "free-text answer differs from the reference")
        return Verdict(None, f"{why}; no judge configured", final_text(text))
    return await judge_grade(caller, judge, row_id, question, solution.strip() or gold, text)
