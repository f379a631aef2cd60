"""A scripted s1-serve for the offline s1-eval tests (test_eval_sweep, test_eval_cli_offline):
an ``httpx.MockTransport`` around a greedy "model" that tries to end its thinking at
FIRST_END thinking tokens and then every STEP tokens, and answers correctly only after
KNOWS_AFTER. The budgets are not re-implemented here: every request runs the server's own
budget state machine (:class:`server.budget.machine.BudgetState`, with the spec built by
:class:`server.budget.formats.FormatTokens` under the server's default s1 rules), so each
``thinking_min``/``thinking_max``/``thinking_waits`` is honoured exactly as s1-serve
honours it, and a change there shows in the tests. That makes the expected Waits,
Control, accuracy and resume behaviour computable by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from client import AsyncClient
from evals.benchmarks import load_benchmark
from evals.cache import Cache
from evals.runner import RunConfig, Runner
from evals.settings import Setting
from server.budget.formats import FormatTokens, S1Rules, get_format
from server.budget.interventions import Tracker
from server.budget.machine import BudgetState, Phase
from server.settings import Settings
from tests.budget_driver import drive

DATA = Path(__file__).parent / "data"
FIRST_END, STEP, KNOWS_AFTER = 40, 30, 70


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


def fake_for(path: Path) -> ScriptedServer:
    bench = load_benchmark(path)
    return ScriptedServer({q.prompt: q.gold for q in bench.questions})


async def run_sweep(fake: ScriptedServer, cache: Cache, settings: list[Setting],
                 config: RunConfig | None = None):
    bench = load_benchmark(DATA / "aime24_sample.jsonl")
    async with fake.client() as client:
        runner = Runner(client, config or RunConfig(model="fake"), cache, concurrency=3)
        return await runner.run(bench.questions, settings)
