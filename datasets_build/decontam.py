"""Decontamination: drop pool questions that share an n-gram (8 words) with an evaluation set.

Why n-grams: the s1 paper decontaminates its 59K pool against AIME24, MATH500 and GPQA with
8-gram overlap. A shared run of eight words catches copies with changed numbers, extra
instructions or reformatting that exact matching misses. Words are lower-cased runs of
letters and digits, so punctuation, LaTeX markup and spacing do not hide a copy. A question
shorter than n words is compared whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> Iterable[tuple[str, ...]]:
    if len(tokens) < n:
        if tokens:
            yield tuple(tokens)
        return
    for i in range(len(tokens) - n + 1):
        yield tuple(tokens[i:i + n])


@dataclass
class Decontaminator:
    """An index of every evaluation n-gram, and where it came from."""

    n: int = 8
    index: dict[tuple[str, ...], tuple[str, int]] = field(default_factory=dict)
    short: dict[tuple[str, ...], tuple[str, int]] = field(default_factory=dict)

    def add(self, name: str, questions: Iterable[str]) -> None:
        for i, q in enumerate(questions):
            tokens = words(q)
            target = self.short if len(tokens) < self.n else self.index
            for g in ngrams(tokens, self.n):
                target.setdefault(g, (name, i))

    def match(self, question: str) -> tuple[str, int, str] | None:
        """(eval set, question index, shared text) for the first overlap, or None."""
        tokens = words(question)
        if tuple(tokens) in self.short:
            name, i = self.short[tuple(tokens)]
            return name, i, " ".join(tokens)
        for g in ngrams(tokens, self.n):
            hit = self.index.get(g)
            if hit is not None:
                return hit[0], hit[1], " ".join(g)
        return None
