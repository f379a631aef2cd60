"""Formatting checks on question text: ASCII-art figures, missing images, broken numbering.

Why rules and not a model: the s1 paper drops these with simple filters (51,581 of 54,116
questions stay), and rules are free, instant and give the same answer every time. Each check
returns a short reason detail, or None when the question passes.

- ``ascii_art``: three or more lines drawn mostly with ``| - + / \\ _ * # = o .`` characters
  (boxes, grids, stick figures); tables in LaTeX or Markdown with words in them pass.
- ``missing_image``: the text points at a picture it does not contain (``<image>``,
  Markdown or HTML images, ``\\includegraphics``, "shown in the figure", "the diagram
  below", an image file name or URL), unless the figure is given as ``[asy]`` code.
- ``broken_numbering``: enumerated parts that skip or do not start at the first label
  (``1. 2. 4.`` on lines, ``(1) ...; (3) ...`` or ``(a) ... (c)`` where parts start, options
  ``(A) (B) (D)``); a label used again later (a reference back) is not a new part.
- ``s1_markers``: s1's own string filters: an ``![Image]`` placeholder, a scraped problem
  number ``p1.`` ... ``p999.``, or bold markup holding a digit (``**2a**``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

_DRAWING = set("|-+/\\_*#=o.:<>^v'`~")
_IMAGE = re.compile(
    r"<image\d*>|<img\b|!\[[^\]]*\]\([^)]*\)|\\includegraphics|\[(?:figure|image|img)[^\]]*\]"
    r"|\b\S+\.(?:png|jpe?g|gif|svg|bmp)\b"
    r"|\b(?:shown|depicted|illustrated|given|drawn|pictured)\s+(?:in|on)\s+the\s+"
    r"(?:figure|diagram|picture|image|graph)"
    r"|\b(?:see|refer to)\s+(?:the\s+)?(?:figure|diagram|picture|image)"
    r"|\bthe\s+(?:figure|diagram|picture|image)\s+(?:below|above|shown)"
    r"|\bin\s+the\s+(?:figure|diagram|picture|image)\b",
    re.IGNORECASE)
_ASY = re.compile(r"\[asy\]|\\begin\{tikzpicture\}", re.IGNORECASE)
_LINE_NUM = re.compile(r"^\s*(\d{1,2})[.)]\s", re.MULTILINE)
# Option letters (A) (B) ... anywhere after a space; numbers, small letters and roman numerals
# only where a part starts (line start, or after . ; : ? !), not equation references "by (2)".
_OPTION = re.compile(r"(?:^|(?<=\s))\(([A-H])\)(?=\s|$)", re.MULTILINE)
_PART = re.compile(r"(?:^|(?<=[.;:?!]))\s*\((\d{1,2}|[a-h]|i{1,3}|iv|vi{0,3})\)(?=\s|$)",
                   re.MULTILINE)
_ROMAN = ["i", "ii", "iii", "iv", "v", "vi", "vii", "viii"]


def ascii_art(question: str) -> str | None:
    drawn = 0
    for line in question.splitlines():
        chars = [c for c in line if not c.isspace()]
        if len(chars) >= 3 and sum(c in _DRAWING for c in chars) >= 0.6 * len(chars):
            drawn += 1
            if drawn >= 3:
                return "three or more lines of drawing characters"
        elif chars:
            drawn = 0
    return None


def missing_image(question: str) -> str | None:
    if _ASY.search(question):
        return None
    m = _IMAGE.search(question)
    return f"refers to an image that is not there: {m.group(0)!r}" if m else None


def _order(label: str, roman: bool) -> tuple[str, int]:
    """(label family, 1-based position) of ``1``, ``b``, ``C`` or (when ``roman``) ``iii``."""
    if label.isdigit():
        return "number", int(label)
    if roman and label in _ROMAN:
        return "roman", _ROMAN.index(label) + 1
    if label.islower():
        return "lower", ord(label) - ord("a") + 1
    return "upper", ord(label) - ord("A") + 1


def _broken(labels: list[str], kind: str) -> str | None:
    """A detail when some family of labels, in order of first use, is not 1, 2, 3, ..."""
    roman = any(label in _ROMAN and len(label) > 1 for label in labels)
    families: dict[str, list[int]] = {}
    for label in labels:
        family, pos = _order(label, roman)
        seq = families.setdefault(family, [])
        if pos not in seq:
            seq.append(pos)
    for family, seq in families.items():
        if len(seq) >= 2 and seq != list(range(1, len(seq) + 1)):
            return f"{kind} {family} labels go {seq}"
    return None


def broken_numbering(question: str) -> str | None:
    return (_broken(_LINE_NUM.findall(question), "line")
            or _broken(_OPTION.findall(question), "option")
            or _broken(_PART.findall(question), "part"))


# s1's own string filters (its data/filter.ipynb), kept as one check so that its exact
# behaviour is there next to the more general rules above
_S1_IMAGE = "![Image]"
_S1_PNUM = re.compile(r"p[1-9]\d{0,2}\.")  # "p1." ... "p999.": scraped problem numbers
_S1_BOLD_DIGIT = re.compile(r"\*\*(?=.*\d)[^\s\]]*\*\*")  # "**3b)**"-like markup


def s1_markers(question: str) -> str | None:
    if _S1_IMAGE in question:
        return "an ![Image] placeholder"
    if (m := _S1_PNUM.search(question)) is not None:
        return f"a scraped problem number {m.group(0)!r}"
    if (m := _S1_BOLD_DIGIT.search(question)) is not None:
        return f"bold markup around a label {m.group(0)!r}"
    return None


CHECKS: dict[str, Callable[[str], str | None]] = {
    "ascii_art": ascii_art,
    "missing_image": missing_image,
    "broken_numbering": broken_numbering,
    "s1_markers": s1_markers,
}
