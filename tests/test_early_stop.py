"""thinking_early_stop without an engine: the probes and the cut of
server/api/early_stop.py against a scripted engine (tests/test_deadline.py's), whose
probe requests answer what each test scripts from their prompt ids.

Deterministic: the engine yields exactly what the test feeds it, and where a probe's
timing could matter (the main request running ahead of a probe) the test holds the
probe's answer back itself and checks that the cut does not move. The real server's side
is tests/test_early_stop_api.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from server.api.early_stop import Probe, normalise, verdict
from tests.budget_driver import ANSWER, IM_END, IM_START, NL
from tests.scripted_engine import (
    FORCED,
    PROMPT,
    Clock,
    Engine,
    collect,
    flat,
    past_after,
    rules,
    text,
    until,
)

THINK = [1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14]  # thinking tokens (none a newline)


class ProbingEngine(Engine):
    """The scripted engine, whose probes (request ids with ``-probe``) answer at once
    with ``answers(thinking ids)`` unless that is None (the test answers by hand)."""

    def __init__(self, answers: Callable[[list[int]], list[int] | None],
                 first: list[int] | None = None) -> None:
        super().__init__(first)
        self.answers = answers

    def generate(self, prompt: dict, params: Any, request_id: str, *args: Any, **kwargs: Any):
        stream = super().generate(prompt, params, request_id, *args, **kwargs)
        if "-probe" in request_id:
            thinking = list(prompt["prompt_token_ids"][len(PROMPT["prompt_token_ids"]):
                                                       -len(FORCED)])
            got = self.answers(thinking)
            if got is not None:
                self.feed(len(self.calls) - 1, got, "stop")
        return stream

    def of(self, kind: str) -> list[int]:
        """Indices of the calls of a kind: main, probe, cut (the continuation)."""
        def kind_of(rid: str) -> str:
            return "probe" if "-probe" in rid else "cut" if rid.endswith("-cut") else "main"
        return [i for i, c in enumerate(self.calls) if kind_of(c[2]) == kind]

    def probe_at(self, thinking: int) -> int:
        """The call index of the probe made after ``thinking`` thinking tokens."""
        n = len(PROMPT["prompt_token_ids"])
        return next(i for i in self.of("probe")
                    if len(self.calls[i][0]["prompt_token_ids"]) - n - len(FORCED) == thinking)


def by_count(table: dict[int, list[int]]) -> Callable[[list[int]], list[int] | None]:
    """Probe answers by the number of thinking tokens probed (absent: held by hand)."""
    return lambda thinking: table.get(len(thinking))


def setup(kind: str, every: int, agree: int, answers: Callable, cap: int = 64,
          first: list[int] | None = None, deadline_ms: int | None = None,
          n: int = 1, **budget: Any):
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    from server.api import early_stop
    from server.api.budget_request import BudgetRequest
    from server.engine.logits_processor import budget_extra_args

    engine = ProbingEngine(answers, first)
    req = BudgetRequest(budget.get("thinking_min"), budget.get("thinking_max"), None, 100,
                        thinking_deadline_ms=deadline_ms, early_stop=(every, agree))
    req.spec = rules(**budget)
    params = SamplingParams(max_tokens=100, n=n, seed=5,
                            output_kind=getattr(RequestOutputKind, kind))
    if req.spec.active:
        params.extra_args = budget_extra_args(req.spec, 1)
    tokenizer = SimpleNamespace(decode=lambda ids, skip_special_tokens=True: text(ids))
    serving = SimpleNamespace(model=SimpleNamespace(tokenizer=tokenizer, max_model_len=500),
                              settings=SimpleNamespace(max_probes_per_request=cap,
                                                       probe_max_tokens=4))
    stream = early_stop.generate(engine.generate, serving, req, req.spec, PROMPT, params, "r",
                                 0, (), {"reasoning_ended": None})
    return engine, req, stream


def run_to_end(engine_req_stream, script: Callable) -> tuple[ProbingEngine, Any, list]:
    """Collect the stream while ``script(engine)`` (a coroutine function) feeds it."""
    async def go():
        engine, req, stream = engine_req_stream()
        got: list = []
        task = asyncio.ensure_future(collect(stream, got))
        await until(lambda: engine.calls)
        await script(engine)
        await asyncio.wait_for(task, 30)
        return engine, req, got

    return asyncio.run(go())


async def feed_one_by_one(engine: ProbingEngine, tokens: list[int]) -> None:
    for t in tokens:
        engine.feed(0, [t])
        await asyncio.sleep(0.002)


async def finish_cut(engine: ProbingEngine) -> None:
    await until(lambda: engine.of("cut"))
    engine.feed(engine.of("cut")[0], [7], "stop")


# ----------------------------------------------------------------- the settle rule
def probes(*answers: str | None) -> list[Probe]:
    return [Probe(10 * (i + 1), None, {"answer": a}, done=a is not None)
            for i, a in enumerate(answers)]


def test_the_settle_rule() -> None:
    settled, hold = verdict(probes("1", "1"), 2)
    assert settled.at == 20 and hold is None
    settled, hold = verdict(probes("1", "2", "2", "2"), 3)
    assert settled.at == 40 and hold is None
    assert verdict(probes("1", "2", "1"), 2) == (None, None)  # never two in a row
    assert verdict(probes("", ""), 2) == (None, None)  # an empty answer never settles
    # A probe still out that could settle holds back what follows it ...
    assert verdict(probes("1", None), 2) == (None, 20)
    assert verdict(probes(None, None, "3"), 2) == (None, 20)
    # ... one that cannot does not, and the earliest probe that settles wins.
    assert verdict(probes("1", "2", None), 2) == (None, 30)
    assert verdict(probes("", None), 2) == (None, None)
    assert verdict(probes("", None, "5"), 2) == (None, 30)  # the second may still say 5
    settled, _ = verdict(probes("1", "1", None, "1"), 2)
    assert settled.at == 20
    assert normalise("  3 \n apples\t") == "3 apples" and normalise(" \n") == ""


# ------------------------------------------------------------------ the stream
@pytest.mark.parametrize("kind", ["DELTA", "FINAL_ONLY", "CUMULATIVE"])
def test_settles_after_agree_probes_and_cuts_there(kind: str) -> None:
    answers = by_count({2: [20], 4: [21], 6: [21], 8: [21]})

    async def script(engine: ProbingEngine) -> None:
        await feed_one_by_one(engine, THINK[:6])
        await finish_cut(engine)

    engine, req, got = run_to_end(lambda: setup(kind, 2, 2, answers), script)
    assert engine.aborted[0]
    main = THINK[:6]
    cont = engine.calls[engine.of("cut")[0]]
    assert cont[0]["prompt_token_ids"] == [50, 51, *main, *FORCED]
    cut = req.cuts[0]
    assert (cut.reason, cut.thinking) == ("settled", 6)
    whole = [*main, *FORCED, 7]
    if kind == "DELTA":
        assert flat(got) == whole
    else:
        assert list(got[-1].outputs[0].token_ids) == whole
    assert [(p["token"], p["output_index"], p["answer"]) for p in req.probes[0]] == [
        (2, 2, "u"), (4, 4, "v"), (6, 6, "v")]
    assert req.probe_tokens == 3
    # Each probe: greedy, short, from the ids so far plus the forced cut.
    for i, t in zip(engine.of("probe"), (2, 4, 6), strict=True):
        prompt, params, rid, _ = engine.calls[i]
        assert prompt["prompt_token_ids"] == [50, 51, *THINK[:t], *FORCED]
        assert params.temperature == 0 and params.max_tokens == 4 and params.n == 1
        assert not params.extra_args


def test_the_main_request_running_ahead_of_a_probe_does_not_move_the_cut() -> None:
    """The engine sends tokens past a probe's position (in one output straddling it, and
    after it) before the probe answers: those are held, the cut is still at the probe,
    and nothing past it reaches the client."""
    answers = by_count({2: [20]})  # the probe at 4 is answered by hand

    async def script(engine: ProbingEngine) -> None:
        await feed_one_by_one(engine, THINK[:3])
        engine.feed(0, THINK[3:5])  # 4 and 5: one output across the probe's position
        engine.feed(0, THINK[5:8])
        await until(lambda: engine.delivered[0] == 8)
        await asyncio.sleep(0.02)
        # Probes at 2, 4, 6 and 8 started, but nothing after 4 went out.
        assert len(engine.of("probe")) == 4
        engine.feed(engine.probe_at(4), [20], "stop")
        await finish_cut(engine)

    engine, req, got = run_to_end(lambda: setup("DELTA", 2, 2, answers), script)
    assert flat(got) == [*THINK[:4], *FORCED, 7]
    assert req.cuts[0].thinking == 4
    assert "".join(o.outputs[0].text for o in got) == text([*THINK[:4], *FORCED, 7])
    # The probes after the settling one were aborted (no answer).
    assert [p["answer"] for p in req.probes[0]][:2] == ["u", "u"]
    assert all(p["answer"] is None for p in req.probes[0][2:])
    assert all(engine.aborted[i] for i in engine.of("probe")[2:])


def test_outputs_flow_while_a_probe_that_cannot_settle_is_out() -> None:
    """An empty first answer: the second probe cannot settle, so what follows it is sent
    before it answers."""
    async def go() -> tuple[ProbingEngine, list]:
        engine, req, stream = setup("DELTA", 2, 2, by_count({2: []}))
        got: list = []
        task = asyncio.ensure_future(collect(stream, got))
        await until(lambda: engine.calls)
        await feed_one_by_one(engine, THINK[:5])
        await until(lambda: len(flat(got)) == 5)  # the probe at 4 has not answered
        assert engine.probe_at(4) and len(engine.of("probe")) == 2
        engine.feed(0, [IM_START, ANSWER, 7, IM_END], "stop")
        await asyncio.wait_for(task, 30)
        return engine, req, got

    engine, req, got = asyncio.run(go())
    assert flat(got) == [*THINK[:5], IM_START, ANSWER, 7, IM_END]
    assert not req.cuts and not engine.of("cut")
    assert [p["answer"] for p in req.probes[0]] == ["", None]
    assert all(engine.aborted[i] for i in engine.of("probe")[1:])  # aborted at the end


def test_disagreeing_probes_let_thinking_end_naturally() -> None:
    answers = lambda thinking: [20 + len(thinking)]  # noqa: E731  (a new answer each time)

    async def script(engine: ProbingEngine) -> None:
        await feed_one_by_one(engine, THINK[:7])
        await asyncio.sleep(0.02)
        engine.feed(0, [IM_START, ANSWER, 7, IM_END], "stop")

    engine, req, got = run_to_end(lambda: setup("DELTA", 2, 2, answers), script)
    assert flat(got) == [*THINK[:7], IM_START, ANSWER, 7, IM_END]
    assert [p["token"] for p in req.probes[0]] == [2, 4, 6] and not req.cuts
    assert req.probe_tokens == 3


def test_the_minimum_holds_the_maximum_wins_and_the_cap_caps() -> None:
    same = lambda thinking: [20]  # noqa: E731  (always the same answer)

    async def script(engine: ProbingEngine) -> None:
        await feed_one_by_one(engine, THINK[:9])
        await finish_cut(engine)

    # thinking_min 5: no probe before 5 thinking tokens; then every 2 (at 6, 8).
    engine, req, got = run_to_end(lambda: setup("DELTA", 2, 2, same, thinking_min=5), script)
    assert [p["token"] for p in req.probes[0]] == [5, 6] and req.cuts[0].thinking == 6
    assert flat(got) == [*THINK[:6], *FORCED, 7]

    async def at_max(engine: ProbingEngine) -> None:
        await feed_one_by_one(engine, [1, 2, 3, 4, NL, IM_START, ANSWER, 7])
        engine.feed(0, [IM_END], "stop")

    # thinking_max 4 with every 4: the maximum cuts, no probe is made at 4.
    engine, req, got = run_to_end(lambda: setup("DELTA", 4, 2, same, thinking_max=4), at_max)
    assert req.probes[0] == [] and not req.cuts and len(engine.calls) == 1

    async def capped(engine: ProbingEngine) -> None:
        await feed_one_by_one(engine, THINK[:9])
        engine.feed(0, [IM_START, ANSWER, 7, IM_END], "stop")

    # At most 2 probes per choice, with answers that never agree: 2 probes, no cut.
    differ = lambda thinking: [20 + len(thinking)]  # noqa: E731
    engine, req, got = run_to_end(lambda: setup("DELTA", 2, 2, differ, cap=2), capped)
    assert [p["token"] for p in req.probes[0]] == [2, 4] and not req.cuts


def test_a_deadline_still_cuts_under_early_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    from server.api import deadline

    clock = Clock()
    monkeypatch.setattr(deadline, "CLOCK", clock)
    differ = lambda thinking: [20 + len(thinking)]  # noqa: E731

    async def script(engine: ProbingEngine) -> None:
        clock.fn = past_after(engine, 3)
        await feed_one_by_one(engine, THINK[:3])
        await finish_cut(engine)

    engine, req, got = run_to_end(
        lambda: setup("DELTA", 2, 2, differ, deadline_ms=60_000), script)
    assert req.cuts[0].reason == "deadline" and req.cuts[0].thinking == 3
    assert flat(got) == [*THINK[:3], *FORCED, 7]


def test_a_deadline_does_not_cut_a_choice_that_ended_behind_a_probe(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine request ends (here inside thinking) while its last output is held behind
    a probe, and the deadline has passed: as with the deadline alone, an ended choice is
    not cut; it ends as the engine ended it once the probe does not settle."""
    from server.api import deadline

    clock = Clock()
    monkeypatch.setattr(deadline, "CLOCK", clock)

    async def script(engine: ProbingEngine) -> None:
        clock.fn = past_after(engine, 5)
        await feed_one_by_one(engine, THINK[:4])
        engine.feed(0, [THINK[4]], "stop")  # held: past the probe at 4, still out
        await until(lambda: engine.delivered[0] == 5)
        await asyncio.sleep(0.02)
        assert not engine.of("cut")
        engine.feed(engine.probe_at(4), [21], "stop")  # disagrees: nothing settles

    engine, req, got = run_to_end(
        lambda: setup("DELTA", 2, 2, by_count({2: [20]}), deadline_ms=60_000), script)
    assert not req.cuts and not engine.of("cut")
    assert flat(got) == THINK[:5] and got[-1].outputs[0].finish_reason == "stop"


def test_n_choices_settle_each_on_its_own() -> None:
    same = lambda thinking: [20]  # noqa: E731

    async def go() -> tuple[ProbingEngine, Any, list]:
        engine, req, stream = setup("FINAL_ONLY", 2, 2, same, n=2)
        got: list = []
        task = asyncio.ensure_future(collect(stream, got))
        await until(lambda: len(engine.calls) == 2)
        engine.feed(0, [1, IM_START, ANSWER, 7], "stop")  # ends thinking before a probe
        for t in THINK[:4]:
            engine.feed(1, [t])
            await asyncio.sleep(0.002)
        await until(lambda: engine.of("cut"))
        engine.feed(engine.of("cut")[0], [8], "stop")
        await asyncio.wait_for(task, 30)
        return engine, req, got

    engine, req, got = asyncio.run(go())
    assert list(req.cuts) == [1] and req.probes[0] == []
    assert [c[2] for c in engine.calls if "-probe" in c[2]] == ["r-1-probe0", "r-1-probe1"]
    (final,) = got
    assert [list(c.token_ids) for c in final.outputs] == [
        [1, IM_START, ANSWER, 7], [*THINK[:4], *FORCED, 8]]


def test_a_client_that_leaves_mid_probe_aborts_the_probes() -> None:
    async def go() -> ProbingEngine:
        engine, req, stream = setup("DELTA", 2, 2, lambda thinking: None)  # probes never answer
        nxt = asyncio.ensure_future(anext(stream))
        await until(lambda: engine.calls)
        engine.feed(0, [1])
        await nxt
        engine.feed(0, [2])
        await anext(stream)  # the probe at 2 is out
        nxt = asyncio.ensure_future(anext(stream))  # waits on the engine and the probe
        await until(lambda: engine.of("probe"))
        await asyncio.sleep(0.01)
        nxt.cancel()  # the client leaves
        await asyncio.gather(nxt, return_exceptions=True)
        await stream.aclose()
        return engine

    engine = asyncio.run(go())
    assert engine.of("probe") and all(engine.aborted[i] for i in engine.of("probe"))
    assert engine.aborted[0]


# ------------------------------------------------------------------- refusals
def test_bad_early_stops_are_refused() -> None:
    from server.api import early_stop
    from server.api.budget_request import BudgetRequest, budget_from_body
    from server.api.errors import APIError

    for bad, what in (({"every": 0, "agree": 2}, "greater than or equal to 1"),
                      ({"every": 4, "agree": 1}, "at least 2"),
                      ({"every": -3, "agree": 2}, "greater than or equal"),
                      ({"every": 4.5, "agree": 2}, "integer"),
                      ({"every": 10**7, "agree": 2}, "less than or equal"),
                      ({"every": 4}, "required"),
                      ({"every": 4, "agree": 2, "votes": 3}, "not permitted"),
                      ([4, 2], "dictionary"), (True, "dictionary")):
        with pytest.raises(APIError) as err:
            budget_from_body({"thinking_early_stop": bad}, {})
        assert err.value.status == 400 and err.value.param == "thinking_early_stop"
        assert what in err.value.message, (bad, err.value.message)
    req = budget_from_body({"thinking_early_stop": {"every": 8, "agree": 3}}, {})
    assert req.early_stop == (8, 3) and req.asked
    early_stop.check((8, 3), SimpleNamespace(max_probes_per_request=3))
    for cap in (0, 2):
        with pytest.raises(APIError) as err:
            early_stop.check((8, 3), SimpleNamespace(max_probes_per_request=cap))
        assert err.value.param == "thinking_early_stop"
    r = BudgetRequest(None, None, None, None, early_stop=(8, 2))
    assert "no thinking format" in early_stop.refusal(r, False, PROMPT, 500).message
    assert early_stop.refusal(r, True, {"type": "embeds"}, 500).status == 400
    assert "context" in early_stop.refusal(
        BudgetRequest(None, None, None, None, early_stop=(500, 2)), True, PROMPT, 500).message
    assert early_stop.refusal(r, True, PROMPT, 500) is None
    assert early_stop.refusal(BudgetRequest(None, None, None, None), False, PROMPT, 1) is None
