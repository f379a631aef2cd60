"""The sweep: which budget settings to run, one line (method) per kind of control.

Three methods, each a line in the plot and a set A of budgets in the metrics:

- ``thinking_max`` (budget forcing, maximum side): ``thinking_max = N``; the
  server forces the end of thinking at N tokens. Bounds for Control: [0, N].
- ``thinking_min`` (extrapolation by a token minimum): ``thinking_min = N``
  (and ``thinking_max = cap`` when ``--thinking-cap`` is given); an attempt to
  end thinking earlier is replaced by ``Wait``. Bounds: [N, cap].
- ``waits`` (the paper's "ignore end-of-thinking K times", the harness's
  ``thinking_n_ignore=K``): one request per question with ``thinking_waits = K``
  (and ``thinking_max = cap`` when ``--thinking-cap`` is given). The server replaces
  the first K attempts to end thinking with the continuation string (``Wait`` unless
  ``--continuation``) and lets the next one end it, in one generation; the cap wins
  over the Waits. ``waits=0`` sends no ``thinking_waits`` (the unforced run).
  Until s1-serve took a count itself, this was a chain of requests with a growing
  ``thinking_min``; the settings, their keys and the results' layout are unchanged.

  What each request really got (Waits inserted, forced cut) is read per answer from
  the server's ``budget`` object (:mod:`evals.realised`) and reported per setting: a
  cap reached before the K-th Wait gives fewer. ``extended`` marks an answer that got
  at least one Wait. A server without the ``budget`` object leaves the count unknown.

  ``--waits K`` runs K = 0..K, each a setting of its own.

- ``deadline`` (a time budget): ``thinking_deadline_ms = N`` (and ``thinking_max = cap``
  with ``--thinking-cap``): the server cuts thinking N ms after the request arrived, as at
  thinking_max. Wall-clock, so it depends on the server's load and is not reproducible the
  way token budgets are; its point on the curve is the thinking it bought.
- ``early_stop`` (stop once the answer settled): ``thinking_early_stop = {"every": K,
  "agree": M}`` (and ``thinking_max = cap`` with ``--thinking-cap``): the server probes the
  answer every K thinking tokens and cuts thinking once M probes in a row agree. A setting
  is ``early_stop=KxM``; its probes' tokens are kept per answer (``probe_tokens``) and
  averaged per setting (``mean_probe_tokens``), as they are not thinking tokens.
- ``sample`` (the paper's parallel-scaling baseline): ``--samples K`` draws K independent
  samples per question (``sample=0..K-1``, temperature ``--sample-temperature``, seed
  ``seed + i``, no budget but the cap). :mod:`evals.parallel` votes over the first k of them
  and sets majority@k against the sequential methods at matched thinking tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Method = Literal["thinking_max", "thinking_min", "waits", "sample", "token_conditional",
                 "step_conditional", "class_conditional", "rejection", "deadline",
                 "early_stop"]
METHODS: tuple[Method, ...] = ("thinking_max", "thinking_min", "waits", "sample",
                               "token_conditional", "step_conditional", "class_conditional",
                               "rejection", "deadline", "early_stop")
LABELS = {"thinking_max": "budget forcing (thinking_max)",
          "thinking_min": "extrapolation (thinking_min)",
          "waits": "extrapolation (ignore end K times, 'Wait')",
          "sample": "single samples (for majority voting)",
          "token_conditional": "token-conditional control (prompt)",
          "step_conditional": "step-conditional control (prompt)",
          "class_conditional": "class-conditional control (short / long prompt)",
          "rejection": "rejection sampling",
          "deadline": "time budget (thinking_deadline_ms)",
          "early_stop": "early stop when the answer settled (thinking_early_stop)"}
# Table 3's baselines (evals.baselines): value = N tokens, N steps, 0/1 = short/long, N tokens
BASELINES: tuple[Method, ...] = ("token_conditional", "step_conditional", "class_conditional",
                                 "rejection")


@dataclass(frozen=True, order=True)
class Setting:
    """One point of the sweep: a method and its value (N tokens, or K waits; for
    ``early_stop`` K, the probe interval, with ``agree`` M)."""

    method: Method
    value: int
    agree: int | None = None

    @property
    def key(self) -> str:
        return f"{self.method}={self.value}" + (f"x{self.agree}" if self.agree else "")


def parse_ints(text: str | None, what: str) -> list[int]:
    """``"512,1024, 2048"`` -> [512, 1024, 2048]; ValueError on anything else."""
    if text is None or not text.strip():
        return []
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = int(part)
        except ValueError:
            raise ValueError(f"{what}: {part!r} is not an integer") from None
        if value < 0:
            raise ValueError(f"{what}: {value} is negative")
        values.append(value)
    return sorted(set(values))


def build_sweep(thinking_max: list[int], thinking_min: list[int], waits: int | None,
                cap: int | None, samples: int = 0,
                baselines: dict[Method, list[int]] | None = None,
                deadline_ms: list[int] | None = None,
                early_stop: list[tuple[int, int]] | None = None) -> list[Setting]:
    """Every setting to run; with nothing asked for, one unforced run (``waits=0``).
    ``baselines``: Table 3's methods and their values (:mod:`evals.baselines`);
    ``deadline_ms``: thinking deadlines in milliseconds (``deadline`` settings);
    ``early_stop``: (every, agree) pairs (``early_stop`` settings)."""
    if cap is not None:
        too_big = [v for v in thinking_min if v > cap]
        if too_big:
            raise ValueError(f"--thinking-min {too_big} exceed --thinking-cap {cap}")
    settings = [Setting("thinking_max", v) for v in thinking_max]
    settings += [Setting("thinking_min", v) for v in thinking_min]
    settings += [Setting("deadline", v) for v in deadline_ms or ()]
    settings += [Setting("early_stop", k, m) for k, m in early_stop or ()]
    for method, values in (baselines or {}).items():
        if method not in BASELINES:
            raise ValueError(f"{method} is not one of Table 3's baselines {BASELINES}")
        settings += [Setting(method, v) for v in values]
    if samples < 0:
        raise ValueError("--samples must be >= 0")
    if waits is None and not settings and not samples:
        waits = 0
    if waits is not None:
        if waits < 0:
            raise ValueError("--waits must be >= 0")
        settings += [Setting("waits", k) for k in range(waits + 1)]
    settings += [Setting("sample", i) for i in range(samples)]
    return settings


def parse_pairs(text: str | None, what: str) -> list[tuple[int, int]]:
    """``"16x2, 32x3"`` -> [(16, 2), (32, 3)]; ValueError on anything else (the server
    checks the ranges)."""
    pairs = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        k, sep, m = part.partition("x")
        try:
            pairs.append((int(k), int(m)))
        except ValueError:
            raise ValueError(f"{what}: {part!r} is not KxM (two integers, e.g. 16x2)") \
                from None
        if not sep:  # pragma: no cover  (int("") fails first)
            raise ValueError(f"{what}: {part!r} is not KxM")
    return sorted(set(pairs))
