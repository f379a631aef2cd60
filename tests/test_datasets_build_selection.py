"""datasets_build's selection algorithm (s1's): the geometric rank draw favouring long
traces, seeded uniform-over-domains draws with preselected questions (only those with a
correct teacher answer), weighted domain draws, and the benchmark-like domain draws of s1.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from datasets_build.config import PreselectRule, Select
from datasets_build.selection import draw_rank, select_rows


def test_draw_rank_is_geometric() -> None:
    rng = random.Random(1)
    counts = Counter(draw_rank(rng, 6) for _ in range(30000))
    total = 2 - 2 ** -5
    for rank in range(6):
        assert abs(counts[rank] / 30000 - 2 ** -rank / total) < 0.01
    assert draw_rank(rng, 1) == 0
    assert 0 <= draw_rank(rng, 5000) < 5000


def _rows(n: int) -> list[dict]:
    return [{"id": f"q{i:03d}", "domain": "ab"[i % 2] if i < n - 3 else "c",
             "trace_tokens": (i * 37) % 101, "source_type": "aime" if i == 5 else "x"}
            for i in range(n)]


def test_select_rows_seeded_uniform_domains_and_preselect() -> None:
    rows = _rows(60)
    cfg = Select(size=20, seed=3, preselect=[PreselectRule(source_type="ai*")],
                 preselect_requires_correct=False, domain_draw="uniform")
    first = [r["id"] for r, _ in select_rows(rows, cfg)]
    assert first == [r["id"] for r, _ in select_rows(list(reversed(rows)), cfg)]
    assert first != [r["id"] for r, _ in select_rows(rows, Select(
        size=20, seed=4, preselect=cfg.preselect, preselect_requires_correct=False,
        domain_draw="uniform"))]
    chosen = select_rows(rows, cfg)
    assert chosen[0] == (rows[5], "preselect") and len(set(first)) == 20
    assert {r["domain"] for r, _ in chosen} == {"a", "b", "c"}  # the small domain is reached
    assert len(select_rows(rows, Select(size=500))) == 60  # everything, once


def test_preselect_needs_a_correct_teacher_answer() -> None:
    rows = _rows(60)
    rows[5]["gemini_grade"] = "No"
    rows[8].update(source_type="aime-2", deepseek_grade="Yes", gemini_grade="No")
    chosen = select_rows(rows, Select(size=5, preselect=[PreselectRule(source_type="ai*")]))
    assert [r["id"] for r, how in chosen if how == "preselect"] == ["q008"]


def test_weighted_domain_draws() -> None:
    """Domains a and b have 28 questions each; a weighs 3, so about 3/4 of 20 draws from a
    pool that never runs dry come from a (uniform: about 1/2)."""
    rows = [r for r in _rows(60) if r["domain"] != "c"]
    share = {}
    for draw, weights in (("uniform", {}), ("weighted", {"a": 3.0})):
        picks = Counter()
        for seed in range(200):
            cfg = Select(size=4, seed=seed, domain_draw=draw, domain_weights=weights)
            picks.update(r["domain"] for r, _ in select_rows(rows, cfg))
        share[draw] = picks["a"] / sum(picks.values())
    assert abs(share["uniform"] - 0.5) < 0.05 and abs(share["weighted"] - 0.75) < 0.05


def test_benchmark_domain_draws_as_s1() -> None:
    """Domains a, b, c with 30 questions each. AIME-like questions: 3, all in c; GPQA-like: 2,
    both in b. s1's weights: c = 2/3 (AIME's share), b = 1/3, a = 0. The first half of the
    draws (uniform_share 0.5) is uniform; after that a is never drawn and c twice as often
    as b."""
    from datasets_build.selection import benchmark_weights

    rows = [{"id": f"{d}{i:02d}", "domain": d, "trace_tokens": i, "source_type": "x"}
            for d in "abc" for i in range(30)]
    for i in range(3):
        rows[60 + i]["source_type"] = "qq8933/AIME_1983_2024"
    for i in range(2):
        rows[30 + i]["source_type"] = "Idavidrein/gpqa"
    cfg = Select(size=10, uniform_share=0.5)
    assert benchmark_weights(rows, cfg) == pytest.approx({"c": 2 / 3, "b": 1 / 3})
    early, late = Counter(), Counter()
    for seed in range(300):
        chosen = select_rows(rows, Select(size=10, seed=seed, uniform_share=0.5))
        early.update(r["domain"] for r, _ in chosen[:5])
        late.update(r["domain"] for r, _ in chosen[5:])
    assert late["a"] == 0 and abs(late["c"] / (late["b"] + late["c"]) - 2 / 3) < 0.04
    assert all(abs(early[d] / 1500 - 1 / 3) < 0.04 for d in "abc")
    # no benchmark-like source in the table: uniform throughout, the same draws as uniform
    plain = [{**r, "source_type": "x"} for r in rows]
    assert select_rows(plain, Select(size=10, seed=1)) == select_rows(
        plain, Select(size=10, seed=1, domain_draw="uniform"))
