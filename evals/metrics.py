"""The s1 paper's metrics for a test-time-scaling method (section 3.2), as plain functions.

A method is run at a set of budgets A; for each, a is the mean number of
thinking tokens actually used and f(a) the accuracy there.

- Control = (1/|A|) * sum over a in A of 1[a_min <= a <= a_max], in %: the share
  of runs that stayed inside the requested bounds. :func:`control` takes any
  list of (used, lower, upper) triples. The report applies it twice: to every
  generation (``control``: each question at each budget is a run) and to the
  budgets (``control_settings``: a budget counts when all its generations
  stayed inside), which is the paper's |A| reading.
- Scaling = (1 / C(|A|, 2)) * sum over pairs a < b of (f(b) - f(a)) / (b - a):
  the mean slope of f over all pairs of budgets. f is in accuracy points (%)
  and tokens are counted in thousands, so the unit is *accuracy points per
  1,000 thinking tokens* (the paper states no unit; its table values cannot be
  recomputed from the published curves, so none is claimed to match). Pairs
  whose mean token counts are equal have no slope and are left out; None when
  no pair is left.
- Performance = max over a in A of f(a), in %.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import combinations

TOKENS_PER_UNIT = 1000.0  # Scaling's x unit: thousands of thinking tokens


def within(used: float, lower: float | None, upper: float | None) -> bool:
    """Whether ``used`` lies in [lower, upper] (a missing bound is no bound)."""
    return (lower is None or used >= lower) and (upper is None or used <= upper)


def control(runs: Iterable[tuple[float, float | None, float | None]]) -> float | None:
    """Share (%) of (used, lower, upper) runs inside their bounds; None for no runs."""
    flags = [within(used, lo, hi) for used, lo, hi in runs]
    return 100.0 * sum(flags) / len(flags) if flags else None


def control_by_setting(
        settings: Iterable[Sequence[tuple[float, float | None, float | None]]]) -> float | None:
    """Share (%) of settings (budgets) whose runs all stayed inside their bounds."""
    flags = [all(within(*run) for run in runs) for runs in settings if runs]
    return 100.0 * sum(flags) / len(flags) if flags else None


def scaling(points: Sequence[tuple[float, float]],
            per: float = TOKENS_PER_UNIT) -> float | None:
    """Mean pairwise slope of (tokens, accuracy %) points, in accuracy points per ``per`` tokens."""
    slopes = []
    for (xa, ya), (xb, yb) in combinations(sorted(points), 2):
        if xb != xa:
            slopes.append((yb - ya) / ((xb - xa) / per))
    return sum(slopes) / len(slopes) if slopes else None


def performance(points: Sequence[tuple[float, float]]) -> float | None:
    """Best accuracy (%) over the points; None for no points."""
    return max((y for _, y in points), default=None)


def accuracy(correct: int, total: int) -> float | None:
    """``correct / total`` in %; None when there is nothing to divide."""
    return 100.0 * correct / total if total else None
