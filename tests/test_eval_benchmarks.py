"""s1-eval's inputs without a server: benchmark files in their published layouts (AIME,
MATH500, GPQA with seeded shuffled choices; JSONL, CSV, Parquet, JSON), refused files,
and the sweep of settings built from the command-line lists."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evals.benchmarks import detect_format, load_benchmark
from evals.settings import Setting, build_sweep, parse_ints
from s1_common.rows import read_rows
from tests.scripted_eval import (
    DATA,
)


def test_detect_published_layouts() -> None:
    assert load_benchmark(DATA / "aime24_sample.jsonl").format == "aime"
    assert load_benchmark(DATA / "aime24_lowercase.csv").format == "aime"
    assert load_benchmark(DATA / "math500_sample.jsonl").format == "math500"
    assert load_benchmark(DATA / "gpqa_diamond_sample.csv").format == "gpqa"
    assert load_benchmark(DATA / "qa_sample.jsonl").format == "generic"
    assert detect_format(["Problem", "Answer", "Subject", "Level"]) == "math500"
    with pytest.raises(ValueError, match="cannot tell"):
        detect_format(["text", "label"])


def test_aime_and_math500_questions() -> None:
    aime = load_benchmark(DATA / "aime24_sample.jsonl")
    assert [q.id for q in aime.questions][:2] == ["toy-2024-I-1", "toy-2024-I-2"]
    assert aime.questions[2].gold == "024" and aime.questions[2].kind == "integer"
    assert aime.questions[0].prompt == "What is the sum of the first ten positive integers?"
    lower = load_benchmark(DATA / "aime24_lowercase.csv")
    assert [q.gold for q in lower.questions] == ["56", "9", "23"]
    math500 = load_benchmark(DATA / "math500_sample.jsonl", limit=2)
    assert [q.id for q in math500.questions] == ["test/prealgebra/toy-1.json",
                                                 "test/algebra/toy-2.json"]
    assert math500.questions[0].kind == "math"
    forced = load_benchmark(DATA / "math500_sample.jsonl", "generic")
    assert forced.format == "generic" and forced.questions[0].kind == "auto"


def test_gpqa_rendering_is_shuffled_and_seeded() -> None:
    bench = load_benchmark(DATA / "gpqa_diamond_sample.csv")
    q = bench.questions[0]
    assert q.id == "toy-rec-1" and q.kind == "choice"
    head, options = q.prompt.split("\n\n")
    assert head == "What is the chemical symbol of sodium?"
    lines = options.split("\n")
    assert [line[:3] for line in lines] == ["A) ", "B) ", "C) ", "D) "]
    assert sorted(line[3:] for line in lines) == ["N", "Na", "Sd", "So"]
    assert lines["ABCD".index(q.gold)] == f"{q.gold}) Na"
    again = load_benchmark(DATA / "gpqa_diamond_sample.csv")
    assert [x.prompt for x in again.questions] == [x.prompt for x in bench.questions]
    golds = {s: tuple(x.gold for x in load_benchmark(DATA / "gpqa_diamond_sample.csv",
                                                     choice_seed=s).questions)
             for s in range(8)}
    assert len(set(golds.values())) > 1  # the seed changes the letters
    assert any(g != "D" for g in golds[0])  # the correct answer does not stay last


def test_parquet_and_json(tmp_path: Path) -> None:
    rows = read_rows(DATA / "math500_sample.jsonl")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "math500.parquet")
    bench = load_benchmark(tmp_path / "math500.parquet")
    assert bench.format == "math500" and bench.questions[1].gold == "5\\sqrt{2}"
    (tmp_path / "qa.json").write_text(json.dumps([{"question": "1+1?", "answer": "2"}]))
    assert load_benchmark(tmp_path / "qa.json").questions[0].id == "0"


def test_bad_files(tmp_path: Path) -> None:
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": 1, "question": "a", "answer": "1"}\n'
                   '{"id": 1, "question": "b", "answer": "2"}\n')
    with pytest.raises(ValueError, match="not unique"):
        load_benchmark(dup)
    with pytest.raises(ValueError, match="unknown format"):
        load_benchmark(DATA / "qa_sample.jsonl", "mmlu")


def test_sweep_settings() -> None:
    assert parse_ints("2048, 512,1024,512", "x") == [512, 1024, 2048]
    with pytest.raises(ValueError, match="not an integer"):
        parse_ints("512,lots", "--thinking-max")
    sweep = build_sweep([512, 1024], [256], 2, None)
    assert [s.key for s in sweep] == ["thinking_max=512", "thinking_max=1024",
                                      "thinking_min=256", "waits=0", "waits=1", "waits=2"]
    assert build_sweep([], [], None, None) == [Setting("waits", 0)]
    with pytest.raises(ValueError, match="exceed"):
        build_sweep([], [600], None, 512)
