"""The s1 preset of the curation pipeline (``datasets_build/configs/s1.yaml``) against the
choices of s1's ``data/filter.ipynb``: sources matched ignoring case, MATH traces strictly
longer than 5,600 tokens, Gemini's (the first teacher's) grade, every attempt judged, only
s1's string filters on, and each filter's own count in the funnel report."""

from __future__ import annotations

from pathlib import Path

from datasets_build.config import PreselectRule, Quality, Select, load_config
from datasets_build.quality import run_quality
from datasets_build.report import render_markdown
from datasets_build.selection import matches, select_rows
from datasets_build.tables import Table

S1_YAML = Path(__file__).parents[1] / "datasets_build" / "configs" / "s1.yaml"


def test_s1_preset_settings() -> None:
    cfg = load_config(S1_YAML)
    assert cfg.quality.checks == ("s1_markers",)
    assert cfg.difficulty is not None and cfg.difficulty.judge is not None
    assert cfg.difficulty.judge.grade_all is True
    assert cfg.select.preselect_correct_teacher == "first"
    assert [t.name for t in cfg.traces.teachers] == ["gemini"]  # type: ignore[union-attr]
    assert cfg.export.layout == "s1k"


def test_preselect_matches_s1_sources_ignoring_case() -> None:
    cfg = load_config(S1_YAML).select
    row = {"id": "1", "domain": "11", "trace_tokens": 10}
    assert matches({**row, "source_type": "qq8933/AIME_1983_2024"}, cfg.preselect[1])
    assert matches({**row, "source_type": "Idavidrein/gpqa"}, cfg.preselect[0])
    # the example's glob, lower case, finds s1's upper-case source
    assert matches({**row, "source_type": "qq8933/AIME_1983_2024"},
                   PreselectRule(source_type="*aime*"))
    assert not matches({**row, "source_type": "numina/olympiads"},
                       PreselectRule(source_type="*aime*"))


def test_math_traces_strictly_longer_than_5600() -> None:
    rule = load_config(S1_YAML).select.preselect[2]
    row = {"id": "1", "domain": "11", "source_type": "qfq/openaimath/Algebra"}
    assert not matches({**row, "trace_tokens": 5600}, rule)
    assert matches({**row, "trace_tokens": 5601}, rule)
    assert matches({**row, "trace_tokens": 5600}, PreselectRule(min_trace_tokens=5600))


def test_preselect_reads_the_first_teachers_grade() -> None:
    rows = [{"id": f"q{i}", "domain": "11", "trace_tokens": i, "source_type": "Idavidrein/gpqa"}
            for i in range(4)]
    rows[0].update(gemini_grade="Yes", deepseek_grade="No")
    rows[1].update(gemini_grade="No", deepseek_grade="Yes")
    rule = [PreselectRule(source_type="idavidrein/gpqa")]

    def pre(how: str) -> list[str]:
        cfg = Select(size=2, preselect=rule, preselect_correct_teacher=how)  # type: ignore[arg-type]
        chosen = select_rows(rows, cfg, ["gemini", "deepseek"])
        return sorted(r["id"] for r, by in chosen if by == "preselect")

    assert pre("any") == ["q0", "q1"]
    assert pre("first") == ["q0"]


def test_funnel_reports_each_filters_own_count() -> None:
    def row(i: int, question: str) -> dict:
        return {"id": str(i), "question": question, "answer": "1", "source_type": "x",
                "t_thinking": "hm", "t_attempt": "1"}

    rows = [row(0, "See the figure below. p3. Find **2a**."),  # missing_image + s1_markers
            row(1, "Find **2a**."),  # s1_markers only
            row(2, "Find x.")]
    table = Table(rows, {"teachers": ["t"]})
    _, all_on, _ = run_quality(table, Quality())
    assert all_on.notes["flagged"]["s1_markers"] == 2
    assert all_on.notes["flagged"]["missing_image"] == 1
    assert all_on.rows_out == 1 and sum(all_on.dropped.values()) == 2
    _, s1, _ = run_quality(table, load_config(S1_YAML).quality)
    assert "missing_image" not in s1.notes["flagged"] and s1.notes["flagged"]["s1_markers"] == 2
    report = {"headline": [], "funnel": [s1.as_dict()], "domains": {},
              "trace_tokens": {}}
    text = render_markdown(report, {})
    assert "| s1_markers | 2 |" in text and "| missing_image | off |" in text
