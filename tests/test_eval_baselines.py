"""Table 3's baselines in s1-eval (evals/baselines.py) and the paper presets (evals/presets.py),
against a scripted chat endpoint: rejection sampling's tries and seeds, the prompt suffixes
of token-, step- and class-conditional control, Control held to the requested budgets, and
the Table-3-shaped report. No server, no model."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from client import AsyncClient
from evals.baselines import CLASS_SUFFIXES, table3
from evals.benchmarks import load_benchmark
from evals.cache import Cache
from evals.presets import DATA, MAX_GEN_TOKS, PRESETS, apply_preset
from evals.report import build_report
from evals.runner import RunConfig, Runner
from evals.settings import build_sweep

SAMPLE = DATA / "sample_aime.jsonl"


class Scripted:
    """Thinking length by request: sampled (temperature > 0) 300, 250, 200, 150, 100 for
    seeds 0..4 (mod 5); "Think for up to N tokens." 2N; short / long class prompts 80 / 300;
    otherwise 120. Correct exactly when the thinking is at least 150 tokens."""

    def __init__(self, golds: dict[str, str]) -> None:
        self.golds = golds
        self.bodies: list[dict[str, Any]] = []

    def tokens(self, body: dict[str, Any]) -> int:
        prompt = body["messages"][-1]["content"]
        if body.get("temperature"):
            return 300 - 50 * (body.get("seed", 0) % 5)
        if "Think for up to " in prompt and prompt.endswith(" tokens."):
            return 2 * int(prompt.rsplit(" ", 2)[-2])
        if prompt.endswith(CLASS_SUFFIXES[0]):
            return 80
        if prompt.endswith(CLASS_SUFFIXES[1]):
            return 300
        return 120

    def gold(self, prompt: str) -> str:
        return next(g for q, g in self.golds.items() if prompt.startswith(q))

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "fake"}]})
        body = json.loads(request.content)
        self.bodies.append(body)
        think = self.tokens(body)
        prompt = body["messages"][-1]["content"]
        answer = self.gold(prompt) if think >= 150 else "0"
        return httpx.Response(200, json={
            "id": "x", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "reasoning": "t" * think,
                                     "content": f"Answer: {answer}"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": think + 5,
                      "total_tokens": think + 15,
                      "completion_tokens_details": {"reasoning_tokens": think}}})


def _run(tmp_path: Path, baselines: dict, tries: int = 64):
    bench = load_benchmark(SAMPLE)
    fake = Scripted({q.prompt: q.gold for q in bench.questions})
    settings = build_sweep([], [], None, None, baselines=baselines)
    config = RunConfig(model="fake", rejection_tries=tries)

    async def go():
        http = httpx.AsyncClient(transport=httpx.MockTransport(fake.handler))
        async with AsyncClient("http://fake", "k", http_client=http, max_retries=0) as client:
            with Cache(tmp_path / "c.sqlite", config.signature()) as cache:
                return await Runner(client, config, cache, concurrency=2).run(
                    bench.questions, settings)

    sweep = asyncio.run(go())
    return bench, settings, sweep, fake


def test_rejection_sampling_draws_new_seeds_until_it_fits(tmp_path: Path) -> None:
    bench, settings, sweep, fake = _run(tmp_path, {"rejection": [200, 99]}, tries=4)
    fit = sweep.records[("sample-aime-1", "rejection=200")]
    assert (fit.tries, fit.thinking_tokens) == (3, 200)  # seeds 0, 1, 2: 300, 250, 200
    never = sweep.records[("sample-aime-1", "rejection=99")]
    assert (never.tries, never.thinking_tokens) == (4, 150)  # gave up after 4: the last one
    sent = [(b["seed"], b["thinking_max"], b["temperature"]) for b in fake.bodies
            if b["messages"][-1]["content"] == bench.questions[0].prompt]
    assert sorted(sent) == sorted([(0, 201, 1.0), (1, 201, 1.0), (2, 201, 1.0),
                                   (0, 100, 1.0), (1, 100, 1.0), (2, 100, 1.0), (3, 100, 1.0)])
    report = build_report(bench, settings, sweep, {})
    assert report["rejection_tries"] == {"rejection=200": {"mean": 3.0, "max": 3},
                                         "rejection=99": {"mean": 4.0, "max": 4}}
    rows = {r["setting"]: r for r in report["settings"]}
    assert rows["rejection=200"]["control"] == 100.0 and rows["rejection=99"]["control"] == 0.0


def test_prompt_conditioned_baselines_and_their_control(tmp_path: Path) -> None:
    bench, settings, sweep, fake = _run(tmp_path, {"token_conditional": [50, 100],
                                                   "step_conditional": [16],
                                                   "class_conditional": [0, 1]})
    q = bench.questions[0].prompt
    prompts = {b["messages"][-1]["content"] for b in fake.bodies}
    assert {q + "\n\nThink for up to 50 tokens.", q + "\n\nThink for up to 16 steps.",
            q + CLASS_SUFFIXES[0], q + CLASS_SUFFIXES[1]} <= prompts
    assert all("thinking_max" not in b and "thinking_min" not in b for b in fake.bodies)
    report = build_report(bench, settings, sweep, {})
    rows = {r["setting"]: r for r in report["settings"]}
    # asked for N tokens, the scripted model thinks 2N: outside [0, N] every time
    assert rows["token_conditional=50"]["control"] == 0.0
    assert rows["token_conditional=50"]["mean_thinking_tokens"] == 100.0
    # no token budget is requested by a step or class prompt: no Control
    assert rows["class_conditional=1"]["control"] is None
    assert rows["step_conditional=16"]["control"] is None
    m = report["methods"]["class_conditional"]
    assert m["points"] == [[80.0, 0.0], [300.0, 100.0]]
    # (100 - 0) accuracy points over 220 tokens, per 1,000 tokens
    assert abs(m["scaling"] - 100 / 0.22) < 1e-9
    table = table3(report)
    assert "| class-conditional control | - | 454.55 | 100.0 | 50 / 25 / 36.7 |" in table
    assert "| token-conditional control | 0.0 |" in table


def test_presets_mirror_the_s1_commands() -> None:
    from evals.cli import build_parser

    parser = build_parser()
    defaults = parser.parse_args([])
    args = apply_preset(parser.parse_args(["--preset", "gpqa_diamond"]), defaults)
    assert (args.format, args.max_tokens, args.thinking_cap, args.waits) == (
        "gpqa", 32768, "auto", 6)
    assert Path(args.data).is_file() and load_benchmark(args.data, args.format).questions
    mine = apply_preset(parser.parse_args(["--preset", "aime24", "--data", "x.jsonl",
                                           "--thinking-max", "512", "--max-tokens", "8000"]),
                        defaults)
    assert (mine.data, mine.max_tokens, mine.waits) == ("x.jsonl", 8000, None)
    assert set(PRESETS) == {"aime24", "aime25", "math500", "gpqa_diamond"}
    assert MAX_GEN_TOKS == 32768
    for preset in PRESETS.values():
        assert load_benchmark(DATA / preset.sample, preset.format).questions


def test_figure1_has_one_panel_per_benchmark(tmp_path: Path) -> None:
    from PIL import Image

    from evals.figure1 import curve, main

    def report(name: str, shift: float) -> dict:
        return {"benchmark": {"name": name}, "model": "demo", "methods": {
            "thinking_max": {"points": [[512.0, 20.0 + shift], [128.0, 5.0 + shift]]},
            "waits": {"points": [[900.0, 30.0 + shift]]},
            "sample": {"points": [[5000.0, 99.0]]}}}  # not part of the curve

    assert curve(report("a", 0)) == [(128.0, 5.0), (512.0, 20.0), (900.0, 30.0)]
    paths = []
    for i, name in enumerate(("aime24", "math500", "gpqa")):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(report(name, 10.0 * i)))
    out = tmp_path / "figure1.png"
    assert main([*map(str, paths), "--out", str(out)]) == 0
    assert Image.open(out).size == (1440, 432)  # three 4.0 x 3.6 inch panels at 120 dpi
    assert main([*map(str, paths), "--titles", "a,b", "--out", str(out)]) == 2
