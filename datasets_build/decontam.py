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


@dataclass
class CrossSourceIndex:
    """Near-duplicate detection across sources: n-grams of kept questions, per source.

    Why: the same competition problem often reaches the pool through several sources with
    different wording around it (NuminaMATH re-hosting AIME or OlympiadBench problems, with
    a changed preamble or LaTeX), which exact matching misses. A question that shares an
    n-gram with a kept question of *another* source is a near duplicate; within one source,
    variants sharing a stem (the same problem with other numbers) are distinct and stay.
    """

    n: int = 8
    index: dict[tuple[str, ...], dict[str, str]] = field(default_factory=dict)

    def match(self, source: str, question: str) -> tuple[str, str, str] | None:
        """(other source, its row id, shared text) for the first overlap, or None."""
        for g in ngrams(words(question), self.n):
            for other, row_id in self.index.get(g, {}).items():
                if other != source:
                    return other, row_id, " ".join(g)
        return None

    def add(self, source: str, row_id: str, question: str) -> None:
        for g in ngrams(words(question), self.n):
            self.index.setdefault(g, {}).setdefault(source, row_id)
