"""s1-eval without an engine: benchmark files, the sweep, the cache and the CLI.

The server is an ``httpx.MockTransport`` around a scripted greedy "model" that tries to
end its thinking at 40 thinking tokens and then every 30 tokens, and answers correctly
only after 70. The budgets are not re-implemented here: every request runs the server's
own budget state machine (:class:`server.budget.machine.BudgetState`, with the spec built by
:class:`server.budget.formats.FormatTokens` under the server's default s1 rules), so each
``thinking_min``/``thinking_max``/``thinking_waits`` is honoured exactly as s1-serve
honours it, and a change there shows here. That makes the expected Waits, Control,
accuracy and resume behaviour computable by hand. The real server and engine are exercised in
test_eval_e2e.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import evals.cli
from client import AsyncClient
from evals.autocap import compute_cap, parse_cap
from evals.benchmarks import detect_format, load_benchmark
from evals.cache import Cache, Record
from evals.realised import forced_cut, from_budget
from evals.report import build_report
from evals.runner import RunConfig, Runner, thinking_tokens
from evals.settings import Setting, build_sweep, parse_ints
from s1_common.rows import read_rows
from server.budget.formats import FormatTokens, S1Rules, get_format
from server.budget.interventions import Tracker
from server.budget.machine import BudgetState, Phase
from server.settings import Settings
from tests.budget_driver import drive

DATA = Path(__file__).parent / "data"
FIRST_END, STEP, KNOWS_AFTER = 40, 30, 70


# ---------------------------------------------------------------- benchmarks
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


# ------------------------------------------------------------------ settings
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


# ------------------------------------------------------------ scripted server
class WordTokenizer:
    """A few whole-word tokens: enough for :class:`FormatTokens` to encode a format."""

    PIECES = ("<|end|>", "</think>", "<think>", "\n", "Wait", " think", " more", " other")

    def __init__(self) -> None:
        self.ids = {p: i for i, p in enumerate(self.PIECES)}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        out = []
        while text:
            piece = next(p for p in self.PIECES if text.startswith(p))
            out.append(self.ids[piece])
            text = text[len(piece):]
        return out

    def decode(self, ids: list[int]) -> str:
        return "".join(self.PIECES[i] for i in ids)

    def batch_decode(self, batch: list[list[int]]) -> list[str]:
        return [self.decode(ids) for ids in batch]

    def __len__(self) -> int:
        return len(self.PIECES)


TOK = WordTokenizer()
EOS, END, THINK, MORE, OTHER = (TOK.ids[p] for p in ("<|end|>", "</think>", " think", " more",
                                                     " other"))
_rules = Settings()
FORMAT = FormatTokens.build(get_format("deepseek-r1"), TOK, {EOS}, S1Rules(
    _rules.newline_before_forced_end, _rules.end_of_turn_ends_thinking,
    _rules.hold_after_continuation))


class ScriptedServer:
    """A chat endpoint whose "model" is scripted and whose budgets are the server's (see
    the module doc). It sends s1-serve's per-choice ``budget`` object (the two fields
    s1-eval reads, from the server's replay) unless ``budget_objects=False``, and the
    usage (``exact_usage=False``: not even the reasoning tokens)."""

    def __init__(self, golds: dict[str, str], exact_usage: bool = True,
                 budget_objects: bool = True) -> None:
        self.golds = golds
        self.exact_usage = exact_usage
        self.budget_objects = budget_objects
        self.bodies: list[dict[str, Any]] = []
        self.fail_prompts: set[str] = set()
        # prompts answered without the budget object (as by a proxy that drops it)
        self.no_budget_prompts: set[str] = set()

    def think(self, tmin: int | None, tmax: int | None,
              waits: int | None = None) -> tuple[str, int, dict[str, Any]]:
        """The thinking text, its token count and the budget object's realised fields, as
        the budget state machine lets the scripted model write it."""
        spec = FORMAT.spec(thinking_min=tmin, thinking_max=tmax, thinking_waits=waits,
                           continuation_ids=TOK.encode("Wait"), prompt_opens=True,
                           prompt_text="<think>\n")
        state = BudgetState(spec)

        def model(position: int) -> int:
            if state.phase != Phase.THINKING:
                return EOS
            n = state.thinking
            if n >= FIRST_END and (n - FIRST_END) % STEP == 0:
                return END  # an attempt to end thinking
            return THINK if n < FIRST_END else MORE

        out = drive(state, model, steps=10_000)
        assert out[-1] == EOS and state.phase == Phase.ANSWER
        replayed, tracker = BudgetState(spec), Tracker()
        for tok in out:
            tracker.step(replayed, tok)
        budget = {"continuation_count": len(tracker.continuations), "hit_max": replayed.hit_max}
        return TOK.decode(out[:out.index(END)]).rstrip("\n"), state.thinking, budget

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [
                {"id": "fake", "max_model_len": 4096}]})
        body = json.loads(request.content)
        self.bodies.append(body)
        prompt = body["messages"][-1]["content"]
        if prompt in self.fail_prompts:
            return httpx.Response(500, json={"error": {"message": "boom", "type": "server"}})
        tmin, waits = body.get("thinking_min"), body.get("thinking_waits")
        text, think, budget = self.think(tmin, body.get("thinking_max"), waits)
        answer = self.golds[prompt] if think >= KNOWS_AFTER else "0"
        if body.get("temperature"):  # a sample for majority voting: the seed decides
            answer = {0: "5", 3: "6"}.get(body.get("seed", 0) % 4, self.golds[prompt])
        # completion: the thinking, the end delimiter and five answer tokens
        usage: dict[str, Any] = {"prompt_tokens": 9 + len(prompt) // 10,
                                 "completion_tokens": think + 6,
                                 "total_tokens": think + 15}
        if self.exact_usage:
            usage["completion_tokens_details"] = {"reasoning_tokens": think}
        if isinstance(body.get("thinking_early_stop"), dict):  # its probes: 2 tokens each
            usage["probe_tokens"] = 2 * body["thinking_early_stop"]["agree"]
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "reasoning": text,
                                              "content": f"Answer: {answer}"}}
        if self.budget_objects and prompt not in self.no_budget_prompts:
            choice["budget"] = budget
        return httpx.Response(200, json={
            "id": "x", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [choice], "usage": usage})

    def client(self) -> AsyncClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.handler))
        return AsyncClient("http://fake", "k", http_client=http, max_retries=0)


def _fake_for(path: Path) -> ScriptedServer:
    bench = load_benchmark(path)
    return ScriptedServer({q.prompt: q.gold for q in bench.questions})


async def _sweep(fake: ScriptedServer, cache: Cache, settings: list[Setting],
                 config: RunConfig | None = None):
    bench = load_benchmark(DATA / "aime24_sample.jsonl")
    async with fake.client() as client:
        runner = Runner(client, config or RunConfig(model="fake"), cache, concurrency=3)
        return await runner.run(bench.questions, settings)


def test_waits_in_one_request_and_resume(tmp_path: Path) -> None:
    import asyncio

    fake = _fake_for(DATA / "aime24_sample.jsonl")
    settings = build_sweep([64], [], 2, None)
    cache = Cache(tmp_path / "cache.sqlite", RunConfig(model="fake").signature())
    result = asyncio.run(_sweep(fake, cache, settings))
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
    again = asyncio.run(_sweep(fake, reloaded, settings))
    assert again.requested == 0 and len(fake.bodies) == 16
    # another temperature is another signature: nothing reused
    other = Cache(tmp_path / "cache.sqlite", RunConfig(model="fake", temperature=1.0).signature())
    assert len(other) == 0


def test_waits_stop_at_the_cap(tmp_path: Path) -> None:
    import asyncio

    fake = _fake_for(DATA / "aime24_sample.jsonl")
    config = RunConfig(model="fake", thinking_cap=60)
    cache = Cache(tmp_path / "cache.sqlite", config.signature())
    result = asyncio.run(_sweep(fake, cache, build_sweep([], [], 2, 60), config))
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
    fake = _fake_for(path)
    fake.no_budget_prompts = {bench.questions[1].prompt}
    settings = build_sweep([32, 64], [], 2, None)
    cache = Cache(tmp_path / "cache.sqlite", "sig")
    result = asyncio.run(_sweep(fake, cache, settings))
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
    fake = _fake_for(DATA / "aime24_sample.jsonl")
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
    fake = _fake_for(DATA / "aime24_sample.jsonl")
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


def test_thinking_tokens_fallback(tmp_path: Path) -> None:
    import asyncio

    fake = _fake_for(DATA / "aime24_sample.jsonl")
    fake.exact_usage = False  # an endpoint that does not report reasoning tokens
    cache = Cache(tmp_path / "cache.sqlite", "sig")
    result = asyncio.run(_sweep(fake, cache, [Setting("thinking_max", 64)]))
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


# ----------------------------------------------------------------------- CLI
def test_cli_end_to_end_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    fake = _fake_for(DATA / "aime24_sample.jsonl")
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


def test_a_deadline_sweep_sends_thinking_deadline_ms(tmp_path: Path) -> None:
    import asyncio

    from evals.settings import LABELS, METHODS

    assert "deadline" in METHODS and "deadline" in LABELS
    fake = _fake_for(DATA / "aime24_sample.jsonl")
    settings = build_sweep([], [], None, None, deadline_ms=[500, 1000])
    assert settings == [Setting("deadline", 500), Setting("deadline", 1000)]
    cache = Cache(tmp_path / "cache.sqlite", "sig")
    result = asyncio.run(_sweep(fake, cache, settings))
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
    fake = _fake_for(DATA / "aime24_sample.jsonl")
    settings = build_sweep([], [], None, None, early_stop=[(8, 3), (16, 2)])
    assert [s.key for s in settings] == ["early_stop=8x3", "early_stop=16x2"]
    cache = Cache(tmp_path / "cache.sqlite", "sig")
    result = asyncio.run(_sweep(fake, cache, settings))
    assert not result.failures and result.requested == 4 * 2
    assert sorted(str(b["thinking_early_stop"]) for b in fake.bodies) == sorted(
        [str({"every": 8, "agree": 3})] * 4 + [str({"every": 16, "agree": 2})] * 4)
    rec = result.records[("toy-2024-I-1", "early_stop=8x3")]
    assert (rec.method, rec.value, rec.probe_tokens) == ("early_stop", 8, 6)
    assert Cache(tmp_path / "cache.sqlite", "sig").get(
        "toy-2024-I-1", "early_stop=16x2", rec.prompt_hash).probe_tokens == 4
