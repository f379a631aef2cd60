"""Deterministic answer extraction and grading, with no paid LLM judge.

The s1 evaluation takes a model's answer from the last ``\\boxed{}`` or the last
``Answer:`` line and then asks a judge model whether it matches. This module
keeps the first half and replaces the judge with rules that are exact where
they can be:

- ``integer`` (AIME): both sides read as integers (``023`` == ``23``,
  ``1,000`` == ``1000``, ``x = 5`` == ``5``); a non-plain prediction such as
  ``\\frac{46}{2}`` is evaluated with math-verify;
- ``math`` (MATH500): a normalised string comparison first, then math-verify's
  symbolic equivalence (fractions, ``\\frac``/``\\dfrac``, radicals, units and
  degrees dropped, intervals, equations ``x = 3``);
- ``choice`` (GPQA): a single letter, with its usual wrappers removed
  (``(C)``, ``**C**``, ``\\text{(C)}``, ``C) 42``);
- ``auto``: ``choice`` when the gold answer is one letter, ``integer`` when it
  is an integer, ``math`` otherwise.

:func:`grade` returns ``None`` when the prediction cannot be graded (nothing
was extracted, or it does not read as the expected kind), so callers can count
ungradable answers instead of silently marking them wrong.

    from s1_common.grading import extract_answer, grade
    grade(extract_answer("... so the answer is \\\\boxed{\\\\frac{1}{2}}"), "0.5", "math")  # True
"""

from __future__ import annotations

import re
import threading
from typing import Literal

__all__ = ["GradeKind", "extract_answer", "grade", "infer_kind", "normalize_choice"]

GradeKind = Literal["integer", "math", "choice", "auto"]

_BOXED = re.compile(r"\\(?:boxed|fbox)\b\s*")
_MARKER = re.compile(r"(?:final\s+answer|answer)\s*(?:\*\*|__)?\s*[:：]", re.IGNORECASE)
_LEAD = re.compile(r"^(?:the\s+final\s+answer\s+is|the\s+answer\s+is)\s*:?\s*", re.IGNORECASE)
_HOPE = re.compile(r"\s*I hope it is correct\.?\s*$", re.IGNORECASE)
_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**"),
             ("__", "__"), ("`", "`"))
_INT = re.compile(r"[+-]?\d+(?:\.0*)?")
_LETTERS = "ABCDEFGHIJ"
_CHOICE_FULL = re.compile(r"^\(?([A-Ja-j])\)?\.?$")
_CHOICE_LEAD = re.compile(r"^\(?([A-J])[).:]\s")


# ------------------------------------------------------------------ extraction
def _braced(text: str, start: int) -> tuple[str, int] | None:
    """The content of the ``{...}`` group opening at ``start`` and the index after it."""
    depth, i = 0, start
    while i < len(text):
        ch = text[i]
        if ch == "\\":  # an escaped character (\{, \}, \\) never opens or closes a group
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
        i += 1
    return None


def _boxed_spans(text: str) -> list[tuple[int, str]]:
    """Top-level ``\\boxed`` contents with their start offsets (nested ones skipped)."""
    spans: list[tuple[int, str]] = []
    pos = 0
    while (m := _BOXED.search(text, pos)) is not None:
        after = m.end()
        if after < len(text) and text[after] == "{":
            group = _braced(text, after)
            if group is None:  # unbalanced: nothing usable from here on
                break
            content, pos = group
        else:  # "\boxed 5": up to the next space or math delimiter
            word = re.match(r"[^\s$]+", text[after:])
            if word is None:
                pos = after
                continue
            content, pos = word.group(0), after + word.end()
        spans.append((m.start(), content))
    return spans


def _unwrap(text: str) -> str:
    """Strip math delimiters, bold, a trailing full stop, and inner ``\\boxed{}``."""
    prev = None
    while prev != text:
        prev = text
        text = text.strip().rstrip(".").strip()
        for left, right in _WRAPPERS:
            if len(text) > len(left) + len(right) and text.startswith(left) \
                    and text.endswith(right):
                text = text[len(left):len(text) - len(right)]
        inner = _boxed_spans(text)
        if len(inner) == 1 and text.startswith(("\\boxed", "\\fbox")):
            text = inner[0][1]
    return text.strip()


def _after_marker(text: str, end: int) -> str:
    """The answer written after an ``Answer:`` marker: the rest of its line, or the next line."""
    rest = text[end:].lstrip(" \t*_")
    lines = rest.splitlines()
    line = next((ln for ln in lines if ln.strip()), "") if lines else ""
    line = _HOPE.sub("", line.strip())
    return _LEAD.sub("", line)


def extract_answer(text: str | None) -> str | None:
    """The final answer in ``text``: the last ``\\boxed{}``, or the last ``Answer:`` /
    ``Final Answer:`` line, whichever comes later; None when there is neither."""
    if not text:
        return None
    boxed = _boxed_spans(text)
    markers = list(_MARKER.finditer(text))
    marker = markers[-1] if markers else None
    if boxed and (marker is None or boxed[-1][0] > marker.start()):
        answer = _unwrap(boxed[-1][1])
    elif marker is not None:
        answer = _unwrap(_after_marker(text, marker.end()))
    else:
        return None
    return answer or None


# --------------------------------------------------------------------- grading
def infer_kind(gold: str) -> Literal["integer", "math", "choice"]:
    """``choice`` for a single letter A-J, ``integer`` for an integer, else ``math``."""
    g = gold.strip()
    if len(g) == 1 and g.upper() in _LETTERS:
        return "choice"
    if _as_int(g) is not None:
        return "integer"
    return "math"


def normalize_choice(text: str) -> str | None:
    """The letter a multiple-choice answer names (``(c)`` -> ``C``), or None."""
    t = _unwrap(text)
    t = re.sub(r"^\\text(?:bf)?\{(.*)\}$", r"\1", t).strip()
    t = t.strip("*_ ").strip()
    if m := _CHOICE_FULL.match(t):
        return m.group(1).upper()
    if m := _CHOICE_LEAD.match(t):
        return m.group(1)
    return None


def _as_int(text: str) -> int | None:
    t = _unwrap(text).replace(",", "").replace("\\!", "").replace(" ", "")
    t = re.sub(r"^[a-zA-Z]\s*=", "", t)
    if _INT.fullmatch(t):
        return int(float(t)) if "." in t else int(t)
    return None


def _normalize_math(text: str) -> str:
    t = _unwrap(text)
    for old, new in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""),
                     ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("^\\circ", ""),
                     ("^{\\circ}", ""), ("\\%", ""), ("\\$", "")):
        t = t.replace(old, new)
    t = re.sub(r"\\text\{\s*([^{}]*?)\s*\}", r"\1", t)
    return re.sub(r"\s+", "", t)


def _parse(text: str) -> list:
    from math_verify import parse

    # signal-based timeouts only work in the main thread; elsewhere run without them
    return parse(f"${_unwrap(text)}$", parsing_timeout=_timeout())


def _timeout() -> int | None:
    return 5 if threading.current_thread() is threading.main_thread() else None


def _numeric_value(text: str) -> object | None:
    """The number an expression evaluates to (via math-verify), or None."""
    for item in _parse(text):
        if getattr(item, "is_number", False):
            return item
    return None


def _math_verify(gold: str, predicted: str) -> bool | None:
    """math-verify equivalence; None when the prediction parses to nothing."""
    from math_verify import verify

    parsed_pred = _parse(predicted)
    if not parsed_pred:
        return None
    parsed_gold = _parse(gold)
    if not parsed_gold:
        return False
    return bool(verify(parsed_gold, parsed_pred, timeout_seconds=_timeout()))


def grade(predicted: str | None, gold: str, kind: GradeKind = "auto") -> bool | None:
    """Whether ``predicted`` matches ``gold``; None when it cannot be graded."""
    if predicted is None or not predicted.strip():
        return None
    gold = str(gold)
    if kind == "auto":
        kind = infer_kind(gold)
    if kind == "choice":
        letter = normalize_choice(predicted)
        return None if letter is None else letter == (normalize_choice(gold) or gold.strip())
    if kind == "integer":
        want = _as_int(gold)
        got = _as_int(predicted)
        if want is not None and got is not None:
            return got == want
        if want is None:
            return _math_verify(gold, predicted)
        # an expression such as \\frac{46}{2} is evaluated; prose such as "abc" is ungradable
        return None if _numeric_value(predicted) is None else _math_verify(gold, predicted)
    if kind == "math":
        if _normalize_math(predicted) == _normalize_math(gold):
            return True
        return _math_verify(gold, predicted)
    raise ValueError(f"unknown kind {kind!r}; expected integer, math, choice or auto")
