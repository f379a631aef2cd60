"""Quantiles: the one definition the benchmarks, the soak and the curation report use."""

from __future__ import annotations

from collections.abc import Iterable


def quantile(values: Iterable[float], q: float) -> float:
    """The ``q``-quantile (0 <= q <= 1), interpolated linearly between the two nearest
    ranks (NumPy's default method); NaN values are left out; NaN when nothing is left."""
    data = sorted(v for v in values if v == v)
    if not data:
        return float("nan")
    pos = q * (len(data) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)
