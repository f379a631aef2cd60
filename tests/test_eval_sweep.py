"""s1-eval's runner against a scripted server (tests/scripted_eval.py, whose budgets are
the server's own state machine): Waits sent as one request and resumed from the cache,
Waits stopped by the thinking cap, the Waits and forced cuts actually realised (from the
budget object, or the text without one), the thinking-token count's fallback, deadline
and early-stop sweeps, and the cache kept by signature. The real server and engine are
exercised in test_eval_e2e.py; the command line, in test_eval_cli_offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from evals.benchmarks import load_benchmark
from evals.cache import Cache, Record
from evals.realised import forced_cut, from_budget
from evals.report import build_report
from evals.runner import RunConfig, thinking_tokens
from evals.settings import Setting, build_sweep
from tests.scripted_eval import (
    DATA,
    FIRST_END,
    STEP,
    fake_for,
    run_sweep,
)


def test_waits_in_one_request_and_resume(tmp_path: Path) -> None:
    import asyncio

    fake = fake_for(DATA / "aime24_sample.jsonl")
    settings = build_sweep([64], [], 2, None)
    cache = Cache(tmp_path / "cache.sqlite", RunConfig(model="fake").signature())
    result = asyncio.run(run_sweep(fake, cache, settings))
    assert not result.failures and result.requested == 4 * 4
    # waits=K is one request with thinking_waits=K (none for K=0), no minimum
    sent = sorted(str((b.get("thinking_waits"), b.get("thinking_min"))) for b in fake.bodies
                  if b.get("thinking_max") is None)
    assert sent == ["(1, None)"] * 4 + ["(2, None)"] * 4 + ["(None, None)"] * 4
    rec = result.records[("toy-2024-I-1", "waits=1")]
    # the end attempt at 40 became a Wait, the next one (30 later) ended thinking
    assert rec.thinking_waits == 1 and rec.thinking_min is None
    assert rec.thinking_tokens == FIRST_END + STEP and rec.extended is True
    rec2 = result.records[("toy-2024-I-1", "waits=2")]
    assert rec2.thinking_tokens == FIRST_END + 2 * STEP and rec2.extended is True
    assert (rec.waits_realised, rec2.waits_realised) == (1, 2)
    assert result.records[("toy-2024-I-1", "thinking_max=64")].thinking_tokens == 40
    # a second run with the same settings is served from the cache file alone
    reloaded = Cache(tmp_path / "cache.sqlite", RunConfig(model="fake").signature())
    assert len(reloaded) == 16
    again = asyncio.run(run_sweep(fake, reloaded, settings))
    assert again.requested == 0 and len(fake.bodies) == 16
    # another temperature is another signature: nothing reused
    other = Cache(tmp_path / "cache.sqlite", RunConfig(model="fake", temperature=1.0).signature())
    assert len(other) == 0


def test_waits_stop_at_the_cap(tmp_path: Path) -> None:
    import asyncio

    fake = fake_for(DATA / "aime24_sample.jsonl")
    config = RunConfig(model="fake", thinking_cap=60)
    cache = Cache(tmp_path / "cache.sqlite", config.signature())
    result = asyncio.run(run_sweep(fake, cache, build_sweep([], [], 2, 60), config))
    r1, r2 = (result.records[("toy-2024-I-2", f"waits={k}")] for k in (1, 2))
    assert r1.thinking_tokens == 60 and r1.thinking_max == 60 and r1.extended is True
    assert r2.thinking_tokens == 60 and r2.thinking_waits == 2
    assert result.requested == 4 * 3
    # what was realised: the cap (60, before the attempt at 70) wins over the second
    # Wait, so both got one
    assert (r1.waits_realised, r1.forced_cut) == (1, True)
    assert (r2.waits_realised, r2.forced_cut) == (1, True)
    report = build_report(load_benchmark(DATA / "aime24_sample.jsonl"),
                          build_sweep([], [], 2, 60), result, {})
    assert [m.split(":")[0] for m in report["budget_mismatches"]] == ["waits=2"]


def test_realised_waits_and_forced_cuts(tmp_path: Path) -> None:
    """Per question and setting: the Waits really inserted and whether the cut was forced;
    a question answered without the budget object is counted as unknown and the setting
    reported."""
    import asyncio

    path = DATA / "aime24_sample.jsonl"
    bench = load_benchmark(path)
    fake = fake_for(path)
    fake.no_budget_prompts = {bench.questions[1].prompt}
    settings = build_sweep([32, 64], [], 2, None)
    cache = Cache(tmp_path / "cache.sqlite", "sig")
    result = asyncio.run(run_sweep(fake, cache, settings))
    rec = result.records
    q0, q1 = bench.questions[0].id, bench.questions[1].id
    assert [rec[(q0, f"waits={k}")].waits_realised for k in (0, 1, 2)] == [0, 1, 2]
    assert rec[(q0, "waits=2")].realised_source == "server"
    assert rec[(q1, "waits=2")].realised_source == "text"
    assert rec[(q0, "thinking_max=32")].forced_cut is True  # natural end at 40 > 32
    assert rec[(q0, "thinking_max=64")].forced_cut is False
    assert rec[(q0, "thinking_max=32")].waits_realised == 0
    assert [rec[(q1, f"waits={k}")].waits_realised for k in (0, 1, 2)] == [0, None, None]
    report = build_report(bench, settings, result, {})
    rows = {r["setting"]: r for r in report["settings"]}
    assert rows["thinking_max=32"]["forced_cuts"] == 4 and rows["thinking_max=64"]["forced_cuts"] == 0
    assert rows["waits=1"]["waits_realised"] == {"1": 3, "?": 1}
    assert rows["waits=1"]["waits_mismatch"] == 1 and rows["waits=0"]["waits_mismatch"] == 0
    # every answer at 70 thinking tokens is right, so the matched three are all right
    assert rows["waits=1"]["accuracy_matched"] == 100.0
    assert [m.split(":")[0] for m in report["budget_mismatches"]] == ["waits=1", "waits=2"]
    assert "1 of 4 answers did not get 1 Wait(s)" in report["budget_mismatches"][0]


def test_realised_helpers_by_hand() -> None:
    assert forced_cut(512, 512, True) is True and forced_cut(511, 512, True) is False
    assert forced_cut(512, 512, False) is None and forced_cut(9, None, True) is False
    mark = {"token": 3, "char": 9, "output_index": 3}
    got = from_budget({"continuation_count": 2, "continuations": [mark, mark], "hit_max": False})
    assert got is not None and (got.waits, got.forced_cut, got.source) == (2, False, "server")
    got = from_budget({"continuations": [mark], "hit_max": True})  # the list alone
    assert got is not None and (got.waits, got.forced_cut) == (1, True)
    assert from_budget({"other": 1}) is None
    # null: the server cannot tell (no-string Waits after a cut), not the empty list's 0
    got = from_budget({"continuation_count": None, "continuations": [], "hit_max": True})
    assert got is not None and (got.waits, got.forced_cut) == (None, True)


def test_thinking_tokens_fallback(tmp_path: Path) -> None:
    import asyncio

    fake = fake_for(DATA / "aime24_sample.jsonl")
    fake.exact_usage = False  # an endpoint that does not report reasoning tokens
    cache = Cache(tmp_path / "cache.sqlite", "sig")
    result = asyncio.run(run_sweep(fake, cache, [Setting("thinking_max", 64)]))
    rec = result.records[("toy-2024-I-1", "thinking_max=64")]
    assert rec.thinking_source == "completion_tokens" and rec.thinking_tokens == 40 + 6


def test_thinking_tokens_zero_is_trusted_without_reasoning() -> None:
    from client import ChatResult

    raw = {"choices": [{"message": {"content": "Answer: 1"}, "finish_reason": "stop"}],
           "usage": {"completion_tokens": 5,
                     "completion_tokens_details": {"reasoning_tokens": 0}}}
    assert thinking_tokens(ChatResult.from_api(raw)) == (0, "reasoning_tokens")
    raw["choices"][0]["message"]["reasoning"] = "some thinking"
    assert thinking_tokens(ChatResult.from_api(raw)) == (5, "completion_tokens")


def test_cache_keeps_records_by_signature(tmp_path: Path) -> None:
    from s1_common.cache import ResponseCache

    path = tmp_path / "cache.sqlite"
    rec = Record(signature="sig", question_id="q", prompt_hash="h", setting="waits=0",
                 method="waits", value=0, thinking_min=None, thinking_max=None,
                 thinking_tokens=3, thinking_source="reasoning_tokens", completion_tokens=5,
                 finish_reason="stop", answer="Answer: 1", reasoning="x")
    with Cache(path, "sig") as cache:
        cache.put(rec)
    with ResponseCache(path) as store:  # a record some other version wrote
        store.put("foreign", "sig", {}, response={"question_id": "q2"})
    with Cache(path, "sig") as again:
        assert again.get("q", "waits=0", "h") == rec and len(again) == 1
    with Cache(path, "other") as other, Cache(path, "sig", fresh=True) as fresh:
        assert len(other) == 0 and len(fresh) == 0


def test_a_deadline_sweep_sends_thinking_deadline_ms(tmp_path: Path) -> None:
    import asyncio

    from evals.settings import LABELS, METHODS

    assert "deadline" in METHODS and "deadline" in LABELS
    fake = fake_for(DATA / "aime24_sample.jsonl")
    settings = build_sweep([], [], None, None, deadline_ms=[500, 1000])
    assert settings == [Setting("deadline", 500), Setting("deadline", 1000)]
    cache = Cache(tmp_path / "cache.sqlite", "sig")
    result = asyncio.run(run_sweep(fake, cache, settings))
    assert not result.failures and result.requested == 4 * 2
    assert sorted({b["thinking_deadline_ms"] for b in fake.bodies}) == [500, 1000]
    assert all("thinking_min" not in b for b in fake.bodies)


def test_an_early_stop_sweep_sends_thinking_early_stop(tmp_path: Path) -> None:
    import asyncio

    from evals.settings import LABELS, METHODS, parse_pairs

    assert "early_stop" in METHODS and "early_stop" in LABELS
    assert parse_pairs("16x2, 8x3,16x2", "--early-stop") == [(8, 3), (16, 2)]
    with pytest.raises(ValueError, match="KxM"):
        parse_pairs("16", "--early-stop")
    fake = fake_for(DATA / "aime24_sample.jsonl")
    settings = build_sweep([], [], None, None, early_stop=[(8, 3), (16, 2)])
    assert [s.key for s in settings] == ["early_stop=8x3", "early_stop=16x2"]
    cache = Cache(tmp_path / "cache.sqlite", "sig")
    result = asyncio.run(run_sweep(fake, cache, settings))
    assert not result.failures and result.requested == 4 * 2
    assert sorted(str(b["thinking_early_stop"]) for b in fake.bodies) == sorted(
        [str({"every": 8, "agree": 3})] * 4 + [str({"every": 16, "agree": 2})] * 4)
    rec = result.records[("toy-2024-I-1", "early_stop=8x3")]
    assert (rec.method, rec.value, rec.probe_tokens) == ("early_stop", 8, 6)
    assert Cache(tmp_path / "cache.sqlite", "sig").get(
        "toy-2024-I-1", "early_stop=16x2", rec.prompt_hash).probe_tokens == 4
