"""The run report: the funnel of counts per stage, the domain histogram, the trace lengths.

Why: the paper summarises curation as 59K -> 54K -> 51K -> 24K -> 1K (pool, after API
errors, after formatting, after difficulty, selected). :func:`build_report` gives the same
line for any run, the full per-stage table with every drop reason, how many model calls
were made or served from the cache, and how domains and trace lengths in the selection
compare with the pool they were drawn from. ``report.json`` holds it all; ``report.md`` is
for people.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from datasets_build.schema import Row
from s1_common.stats import quantile

API_REASONS = ("api_error", "empty_trace", "empty_attempt", "truncated")


def quantiles(values: list[int]) -> dict[str, float]:
    """Count, min, p10, p25, median, p75, p90, max and mean (quantiles interpolated)."""
    if not values:
        return {"count": 0}
    cut = {name: round(quantile(values, p), 1)
           for name, p in (("p10", 0.1), ("p25", 0.25), ("median", 0.5), ("p75", 0.75),
                           ("p90", 0.9))}
    return {"count": len(values), "min": float(min(values)), **cut,
            "max": float(max(values)), "mean": round(sum(values) / len(values), 1)}


def histogram(values: list[int], bins: int = 10) -> list[dict[str, int]]:
    """Equal-width bins between min and max: [{"lo", "hi", "count"}]."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    width = max(1, -(-(hi - lo + 1) // bins))
    counts = Counter((x - lo) // width for x in values)
    return [{"lo": lo + i * width, "hi": lo + (i + 1) * width - 1, "count": counts.get(i, 0)}
            for i in range((hi - lo) // width + 1)]


def headline(funnel: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """The paper-style chain: pool, after API errors, after formatting, after difficulty, out."""
    by = {f["stage"]: f for f in funnel}
    chain: list[tuple[str, int]] = []
    if "collect" in by:
        chain.append(("pool", by["collect"]["out"]))
    if "quality" in by:
        q = by["quality"]
        api = sum(n for r, n in q["dropped"].items() if r in API_REASONS)
        chain += [("after API errors", q["in"] - api), ("after formatting", q["out"])]
    if "difficulty" in by:
        chain.append(("after difficulty", by["difficulty"]["out"]))
    if "select" in by:
        chain.append(("selected", by["select"]["out"]))
    return chain


def build_report(funnel: list[dict[str, Any]], rows: list[Row], layout: str) -> dict[str, Any]:
    by = {f["stage"]: f for f in funnel}
    pool_domains = by.get("domains", {}).get("notes", {}).get("domains", {})
    selected_domains = Counter(str(r.get("domain")) for r in rows)
    lengths = [int(r.get("trace_tokens") or 0) for r in rows]
    return {
        "layout": layout,
        "headline": [{"step": s, "count": n} for s, n in headline(funnel)],
        "funnel": funnel,
        "domains": {d: {"pool": pool_domains.get(d, 0), "selected": selected_domains.get(d, 0)}
                    for d in sorted(set(pool_domains) | set(selected_domains))},
        "trace_tokens": {"pool": by.get("select", {}).get("notes", {}).get("pool_trace_tokens",
                                                                            {}),
                         "selected": quantiles(lengths),
                         "selected_histogram": histogram(lengths)},
    }


def _bar(n: int, top: int, width: int = 30) -> str:
    return "#" * max(1 if n else 0, round(width * n / top)) if top else ""


def render_markdown(report: dict[str, Any], names: dict[str, str]) -> str:
    chain = " -> ".join(f"{h['count']:,} ({h['step']})" for h in report["headline"])
    out = ["# s1K-style selection report", "", f"Funnel: {chain}", "",
           "| stage | in | out | dropped | model calls (made / cached / failed) |",
           "|---|---:|---:|---|---|"]
    for f in report["funnel"]:
        drops = ", ".join(f"{r} {n}" for r, n in f["dropped"].items() if n) or "-"
        c = f.get("calls") or {}
        calls = f"{c.get('made', 0)} / {c.get('cached', 0)} / {c.get('failed', 0)}" if c else "-"
        out.append(f"| {f['stage']} | {f['in']} | {f['out']} | {drops} | {calls} |")
    quality = next((f for f in report["funnel"] if f["stage"] == "quality"), None)
    flagged = (quality or {}).get("notes", {}).get("flagged")
    if flagged:
        from datasets_build.config import QUALITY_CHECKS

        on = set(quality["notes"].get("checks", QUALITY_CHECKS))
        out += ["", "## Quality filters (each filter's own count; a row may hit several)", "",
                "| filter | rows |", "|---|---:|"]
        out += [f"| {name} | {n} |" for name, n in flagged.items()]
        out += [f"| {name} | off |" for name in QUALITY_CHECKS if name not in on]
    out += ["", "## Domains (MSC)", "", "| code | area | pool | selected | |",
            "|---|---|---:|---:|---|"]
    doms = report["domains"]
    top = max((d["selected"] for d in doms.values()), default=0)
    for code, d in sorted(doms.items(), key=lambda kv: (-kv[1]["selected"], kv[0])):
        out.append(f"| {code} | {names.get(code, code)} | {d['pool']} | {d['selected']} | "
                   f"{_bar(d['selected'], top)} |")
    t = report["trace_tokens"]
    out += ["", "## Trace length (tokens, primary teacher)", "",
            "| | count | min | p25 | median | p75 | max | mean |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in ("pool", "selected"):
        q = t.get(name) or {}
        if q.get("count"):
            out.append(f"| {name} | {q['count']} | {q['min']:g} | {q['p25']:g} | "
                       f"{q['median']:g} | {q['p75']:g} | {q['max']:g} | {q['mean']:g} |")
    hist = t.get("selected_histogram") or []
    top = max((b["count"] for b in hist), default=0)
    out += ["", "Selected, histogram:", "", "```"]
    out += [f"{b['lo']:>7}-{b['hi']:<7} {b['count']:>5} {_bar(b['count'], top)}" for b in hist]
    out += ["```", ""]
    return "\n".join(out)
