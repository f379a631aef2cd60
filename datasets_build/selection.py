"""Stage 6, select: the s1 diversity-and-length sampling, seeded and reproducible.

The paper's algorithm: until the target size is reached, pick a domain uniformly at random,
rank its remaining questions by trace length (longest first, rank 0), take one with
probability proportional to 2^-rank, remove it, and drop the domain once it is empty.
Questions matching a pre-selection rule (e.g. benchmark-like sources, or long traces from
one source) are taken first, longest first if there are more than the target; as in s1, only
those whose teacher answer was graded correct (``preselect_requires_correct``, default on;
``preselect_correct_teacher: first`` reads only the first teacher's grade, as s1 reads
Gemini's). Sources match case-insensitively, so ``*aime*`` finds ``qq8933/AIME_1983_2024``.
Domain draws (``domain_draw``):

- ``benchmark`` (s1's notebook, the default): uniform until ``uniform_share`` of ``size`` is
  chosen (s1: 700 of 1,000, pre-selected ones included), then each domain in proportion to
  how often it occurs among the benchmark-like sources' questions in the table
  (``benchmark_sources``: AIME with 2/3 of the weight, GPQA 1/3, as s1 scaled GPQA's counts
  to half of AIME's). Domains absent from those sources are not drawn in that phase; when
  no weighted domain is left, or no question matches the sources, draws stay uniform.
- ``uniform`` (the paper's text): every remaining domain equally likely.
- ``weighted``: ``domain_weights`` (MSC code -> weight, unlisted 1).

Everything random comes from one ``random.Random(seed)`` and every ordering has a
deterministic tie-break (trace length, then id), so the same table and seed give the same
selection on any machine, and another seed gives another one. The rank is drawn exactly
(not by a weight list), so a domain with tens of thousands of questions costs O(1) per draw.
"""

from __future__ import annotations

import random
from fnmatch import fnmatchcase

from datasets_build.config import PreselectRule, Select
from datasets_build.report import quantiles
from datasets_build.schema import UNKNOWN_DOMAIN, Row
from datasets_build.tables import StageStats, Table


def draw_rank(rng: random.Random, n: int) -> int:
    """A rank in [0, n) with probability proportional to 2^-rank."""
    total = 2.0 - 2.0 ** (1 - n)
    u = rng.random() * total
    acc = 0.0
    for rank in range(n):
        acc += 2.0 ** -rank
        if u < acc:
            return rank
    return n - 1  # rounding at the very end of the range


def _length(row: Row) -> int:
    return int(row.get("trace_tokens") or 0)


def _order_key(row: Row) -> tuple[int, str]:
    return -_length(row), str(row["id"])


def matches(row: Row, rule: PreselectRule) -> bool:
    """All the rule's given conditions hold (source_type: a glob, matched ignoring case)."""
    if rule.source_type is not None and not fnmatchcase(str(row["source_type"]).lower(),
                                                        rule.source_type.lower()):
        return False
    if rule.domain is not None and row.get("domain") != rule.domain:
        return False
    if rule.trace_tokens_over is not None and not _length(row) > rule.trace_tokens_over:
        return False
    return rule.min_trace_tokens is None or _length(row) >= rule.min_trace_tokens


def teacher_correct(row: Row, teacher: str | None = None) -> bool:
    """Whether ``teacher``'s answer (any teacher's when None) was graded correct
    (``<teacher>_grade == "Yes"``)."""
    if teacher is not None:
        return row.get(f"{teacher}_grade") == "Yes"
    return any(v == "Yes" for k, v in row.items() if k.endswith("_grade"))


def draw_domain(rng: random.Random, domains: list[str],
                weights: dict[str, float] | None = None, default: float = 1.0) -> str:
    """One domain: uniformly (``weights`` None), else in proportion to its weight (domains
    not in ``weights`` weigh ``default``; when nothing weighs anything, uniformly)."""
    if weights is not None:
        ws = [weights.get(d, default) for d in domains]
        total = sum(ws)
        if total > 0:
            u = rng.random() * total
            for d, w in zip(domains, ws, strict=True):
                u -= w
                if u < 0 and w > 0:
                    return d
            return next(d for d, w in zip(reversed(domains), reversed(ws), strict=True)
                        if w > 0)
    return domains[rng.randrange(len(domains))]


def benchmark_weights(rows: list[Row], cfg: Select) -> dict[str, float]:
    """domain -> weight: for each benchmark-like source (glob, share), its share spread over
    the domains of its questions in proportion to their counts (s1: AIME counts, plus GPQA
    counts scaled to half of AIME's total)."""
    weights: dict[str, float] = {}
    for source in cfg.benchmark_sources:
        glob = source.source_type.lower()
        matched = [str(r["domain"]) for r in rows
                   if fnmatchcase(str(r["source_type"]).lower(), glob)]
        for domain in matched:
            weights[domain] = weights.get(domain, 0.0) + source.share / len(matched)
    return weights


def select_rows(rows: list[Row], cfg: Select,
                teachers: list[str] | None = None) -> list[tuple[Row, str]]:
    """(row, "preselect" or "sampled") in the order chosen. ``teachers``: the table's, in
    order (``preselect_correct_teacher: first`` reads the first one's grade)."""
    rng = random.Random(cfg.seed)
    grader: str | None = None
    if cfg.preselect_correct_teacher == "first":
        if not teachers:
            raise ValueError("preselect_correct_teacher: first needs the table's teachers")
        grader = teachers[0]
    pre = sorted((r for r in rows if any(matches(r, rule) for rule in cfg.preselect)
                  and (not cfg.preselect_requires_correct or teacher_correct(r, grader))),
                 key=_order_key)
    chosen: list[tuple[Row, str]] = [(r, "preselect") for r in pre[: cfg.size]]
    taken = {r["id"] for r, _ in chosen}
    groups: dict[str, list[Row]] = {}
    for r in rows:
        if r["id"] not in taken:
            groups.setdefault(str(r["domain"]), []).append(r)
    for items in groups.values():
        items.sort(key=_order_key)
    domains = sorted(groups)
    bench = benchmark_weights(rows, cfg) if cfg.domain_draw == "benchmark" else {}
    uniform_until = round(cfg.uniform_share * cfg.size)
    while len(chosen) < cfg.size and domains:
        if cfg.domain_draw == "weighted":
            domain = draw_domain(rng, domains, cfg.domain_weights)
        elif cfg.domain_draw == "benchmark" and bench and len(chosen) >= uniform_until:
            domain = draw_domain(rng, domains, bench, default=0.0)
        else:
            domain = draw_domain(rng, domains)
        items = groups[domain]
        chosen.append((items.pop(draw_rank(rng, len(items))), "sampled"))
        if not items:
            domains.remove(domain)
    return chosen


def run_select(table: Table, cfg: Select) -> tuple[Table, StageStats]:
    if table.rows and "domain" not in table.rows[0]:
        raise ValueError("the input table has no 'domain' column: run the domains stage first")
    stats = StageStats("select", rows_in=len(table.rows))
    rows = table.rows
    if cfg.unknown == "drop":
        rows = [r for r in rows if r["domain"] != UNKNOWN_DOMAIN]
        stats.dropped["unknown_domain"] = len(table.rows) - len(rows)
    chosen = select_rows(rows, cfg, table.teachers)
    out = [{**r, "selection_order": i, "selected_by": how} for i, (r, how) in enumerate(chosen)]
    stats.rows_out = len(out)
    stats.dropped["not_selected"] = len(rows) - len(out)
    stats.notes.update(seed=cfg.seed, size=cfg.size,
                       preselected=sum(1 for _, how in chosen if how == "preselect"),
                       pool_trace_tokens=quantiles([_length(r) for r in rows]),
                       domain_draw=cfg.domain_draw)
    if cfg.domain_draw == "benchmark":
        stats.notes["benchmark_weights"] = {d: round(w, 4) for d, w in
                                            sorted(benchmark_weights(rows, cfg).items())}
    return Table(out, table.meta), stats
