"""s1-eval's command line against a scripted server (tests/scripted_eval.py): an end-to-end
run that reports a failed question and reruns only what is missing, bad arguments, the
automatic thinking cap, and parallel scaling (majority voting over seeded samples)
against the sequential methods."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import evals.cli
from evals.autocap import compute_cap, parse_cap
from evals.benchmarks import load_benchmark
from tests.scripted_eval import (
    DATA,
    fake_for,
)


def test_cli_end_to_end_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    fake = fake_for(DATA / "aime24_sample.jsonl")
    fake.fail_prompts = {load_benchmark(DATA / "aime24_sample.jsonl").questions[3].prompt}
    monkeypatch.setattr(evals.cli, "AsyncClient", lambda *a, **k: fake.client())
    out = tmp_path / "run"
    argv = ["--data", str(DATA / "aime24_sample.jsonl"), "--thinking-max", "32,64,128",
            "--thinking-min", "100", "--waits", "1", "--out", str(out), "--no-progress"]
    assert evals.cli.main(argv) == 1  # one question's requests fail: reported, not cached
    assert "failed" in capsys.readouterr().err
    first = json.loads((out / "results.json").read_text())
    assert first["complete"] is False and first["settings"][0]["missing"] == 1
    fake.fail_prompts = set()
    sent = len(fake.bodies)
    assert evals.cli.main(argv) == 0  # the rerun only asks for what is missing
    assert len(fake.bodies) - sent == 6  # 3 maxima + 1 minimum + 2 waits rounds, one question
    report = json.loads((out / "results.json").read_text())
    assert report["complete"] and report["model"] == "fake" and report["requests_sent"] == 6
    rows = {r["setting"]: r for r in report["settings"]}
    assert rows["thinking_max=32"]["mean_thinking_tokens"] == 32.0
    assert rows["thinking_max=32"]["accuracy"] == 0.0
    assert rows["thinking_min=100"]["accuracy"] == 100.0
    assert rows["waits=1"]["mean_thinking_tokens"] == 70.0 and rows["waits=1"]["extended"] == 4
    methods = report["methods"]
    assert {m["control"] for m in methods.values()} == {100.0}
    assert methods["thinking_max"]["performance"] == 0.0
    assert methods["waits"]["scaling"] == pytest.approx(100 / 30 * 1000)
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "thinking_max=128" in capsys.readouterr().out


def test_cli_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert evals.cli.main(["--data", str(DATA / "qa_sample.jsonl"),
                           "--thinking-max", "a,b"]) == 2
    assert "not an integer" in capsys.readouterr().err


def test_auto_thinking_cap() -> None:
    # s1: max_tokens - longest prompt - delimiters - 100 for the answer
    assert compute_cap(32768, 500, 120) == 32148
    assert compute_cap(32768, 500, 120, max_tokens=8000) == 7880
    with pytest.raises(ValueError, match="nothing left"):
        compute_cap(600, 500, 120)
    assert parse_cap("auto") == "auto" and parse_cap("4096") == 4096 and parse_cap(None) is None
    with pytest.raises(ValueError, match="neither an integer nor 'auto'"):
        parse_cap("big")


def test_cli_auto_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_for(DATA / "aime24_sample.jsonl")
    monkeypatch.setattr(evals.cli, "AsyncClient", lambda *a, **k: fake.client())
    out = tmp_path / "run"
    prompts = [q.prompt for q in load_benchmark(DATA / "aime24_sample.jsonl").questions]
    longest = max(9 + len(p) // 10 for p in prompts)  # the fake's prompt_tokens
    assert evals.cli.main(["--data", str(DATA / "aime24_sample.jsonl"), "--waits", "1",
                           "--thinking-cap", "auto", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "results.json").read_text())
    assert report["config"]["thinking_cap"] == 4096 - longest - 120
    assert report["config"]["auto_thinking_cap"]["longest_prompt"] == longest
    probes = [b for b in fake.bodies if b.get("max_tokens") == 1]
    assert len(probes) == 4 and all(b["thinking_max"] == 0 for b in probes)
    assert {b.get("thinking_max") for b in fake.bodies if b.get("max_tokens") != 1} == {
        4096 - longest - 120}


def test_majority_vote_by_hand() -> None:
    from evals.parallel import ks_for, majority

    assert majority(["3", "07", "7", None]) == "07"  # integers vote as integers
    assert majority(["a", "b"]) == "a" and majority(["b", "a", "a"]) == "a"
    assert majority([None, " "]) is None
    assert ks_for(8) == [1, 2, 4, 8] and ks_for(6) == [1, 2, 4, 6] and ks_for(0) == []


def test_parallel_scaling_against_sequential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    """Samples 0..3 answer "5", gold, gold, "6" (the fake's seed rule), 40 thinking tokens
    each: majority@1 = "5" (wrong), @2 = tie "5"/gold -> the earlier, "5" (wrong), @4 = gold
    (two votes): 0%, 0%, 100% at 40, 80, 160 thinking tokens per question."""
    fake = fake_for(DATA / "aime24_sample.jsonl")
    monkeypatch.setattr(evals.cli, "AsyncClient", lambda *a, **k: fake.client())
    out = tmp_path / "run"
    assert evals.cli.main(["--data", str(DATA / "aime24_sample.jsonl"), "--thinking-max",
                           "32,64", "--samples", "4", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "results.json").read_text())
    sent = [b for b in fake.bodies if b.get("temperature")]
    assert sorted({b["seed"] for b in sent}) == [0, 1, 2, 3]
    assert {b["temperature"] for b in sent} == {0.7}
    curve = report["methods"]["majority"]
    assert [(r["k"], r["accuracy"], r["mean_thinking_tokens"]) for r in curve["rows"]] == [
        (1, 0.0, 40.0), (2, 0.0, 80.0), (4, 100.0, 160.0)]
    assert "thinking_max" in report["methods"] and "sample" not in report["methods"]
    assert (out / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    assert evals.cli.main(["--data", str(DATA / "aime24_sample.jsonl"), "--samples", "2",
                           "--sample-temperature", "0", "--out", str(out)]) == 2
