"""s1-eval end to end against the real server (tiny random model, shared ``api_server``).

The model is random, so accuracy is meaningless here; what is checked is what
the evaluation promises whatever the model: every request goes through the
real engine, the budgets are respected (Control is 100 % for every method),
results.json and the PNG plot are written, the requests it reports sending are the
ones the server counted, and a rerun is served from the cache without a single
request. Greedy, as in the paper. A ``waits=K`` setting is one request with
``thinking_waits=K``; Waits need a model that tries to end its thinking, which the tiny
model does more often when sampling, so a second run is seeded-sampled (seed 3).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.cli import CACHE_FILE, main
from s1_common.cache import ResponseCache
from tests.conftest import API_KEY

pytestmark = pytest.mark.engine

DATA = Path(__file__).parent / "data"


def _args(server, out: Path, *extra: str) -> list[str]:
    return ["--data", str(DATA / "aime24_sample.jsonl"), "--base-url", server.base_url,
            "--api-key", API_KEY, "--concurrency", "4", "--out", str(out), "--no-progress",
            *extra]


def cached_records(out: Path) -> list[dict]:
    with ResponseCache(out / CACHE_FILE) as cache:
        return [record for _, record in cache.responses()]


def chat_requests(server) -> float:
    return server.metric("s1_requests_total", endpoint="/v1/chat/completions")


def test_sweep_against_the_real_server(api_server, tmp_path: Path) -> None:
    cap = 48
    sweep = ("--thinking-max", "8,16,32", "--thinking-min", "24", "--waits", "1",
             "--thinking-cap", str(cap), "--max-tokens", "96")
    before = chat_requests(api_server)
    assert main(_args(api_server, tmp_path, *sweep)) == 0
    sent = chat_requests(api_server) - before
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["complete"] and report["model"] == "tiny"
    assert report["requests_sent"] == sent
    # 4 questions x 6 settings, each waits=K one request
    records = cached_records(tmp_path)
    round0 = {r["question_id"]: r for r in records if r["setting"] == "waits=0"}
    round1 = {r["question_id"]: r for r in records if r["setting"] == "waits=1"}
    assert len(round0) == len(round1) == 4 and sent == 4 * 6
    assert all(r["thinking_waits"] == 1 and r["thinking_min"] is None for r in round1.values())
    # greedy: where waits=0 ended its thinking by itself (answer tokens followed) before
    # the cap, waits=1 turned that same end into a Wait; elsewhere there was none to turn
    ended = {q for q, r in round0.items()
             if r["completion_tokens"] > r["thinking_tokens"] < cap}
    got = {q for q, r in round1.items() if r["waits_realised"] == 1}
    assert got == ended
    for q in ended:
        assert round1[q]["reasoning"].count("Wait") == round0[q]["reasoning"].count("Wait") + 1
    rows = {r["setting"]: r for r in report["settings"]}
    assert rows["waits=1"]["extended"] == len(ended)
    assert set(rows) == {"thinking_max=8", "thinking_max=16", "thinking_max=32",
                         "thinking_min=24", "waits=0", "waits=1"}
    assert all(r["n"] == 4 and r["control"] == 100.0 for r in rows.values())
    for m in report["methods"].values():
        assert m["control"] == 100.0 and m["control_settings"] == 100.0
    for q in report["questions"]:
        if q["thinking_max"] is not None:
            assert q["thinking_tokens"] <= q["thinking_max"]
        if q["thinking_min"] is not None:
            assert q["thinking_tokens"] >= q["thinking_min"]
        assert q["thinking_source"] == "reasoning_tokens"
    assert report["methods"]["thinking_max"]["points"][0][0] <= 8
    assert (tmp_path / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "scaling.png").stat().st_size > 5000
    # resume: the same command again sends nothing and reports the same numbers
    before = chat_requests(api_server)
    assert main(_args(api_server, tmp_path, *sweep)) == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["requests_sent"] == 0 and chat_requests(api_server) == before
    assert again["settings"] == report["settings"]


def test_waits_sampled_on_the_real_server(api_server, tmp_path: Path) -> None:
    sampled = ("--waits", "1", "--thinking-cap", "400", "--max-tokens", "600",
               "--temperature", "1", "--seed", "3", "--limit", "1", "--samples", "2")
    assert main(_args(api_server, tmp_path, *sampled)) == 0
    records = {r["setting"]: r for r in cached_records(tmp_path)}
    r0, r1 = records["waits=0"], records["waits=1"]
    assert r0["thinking_tokens"] < 400, "under seed 3 the tiny model ends its thinking itself"
    assert r1["thinking_waits"] == 1 and r1["thinking_min"] is None
    if r1["waits_realised"]:
        assert r1["extended"] is True and "Wait" in r1["reasoning"]
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["methods"]["waits"]["control"] == 100.0
    # realised Waits: s1-serve reports them per choice (the budget object), exactly; a
    # round that did not get exactly one is reported, not mixed in silently
    assert r0["realised_source"] == r1["realised_source"] == "server"
    if r1["waits_realised"] == 1:
        assert report["budget_mismatches"] == []
    else:
        assert report["budget_mismatches"][0].startswith("waits=1:")
    assert r0["waits_realised"] == 0 and r1["forced_cut"] is (r1["thinking_tokens"] >= 400)
    # parallel scaling: two seeded samples, majority@1 and @2 at their summed thinking
    samples = [records[f"sample={i}"] for i in (0, 1)]
    rows = report["methods"]["majority"]["rows"]
    assert [r["k"] for r in rows] == [1, 2] and all(r["n"] == 1 for r in rows)
    assert rows[1]["mean_thinking_tokens"] == sum(r["thinking_tokens"] for r in samples)
