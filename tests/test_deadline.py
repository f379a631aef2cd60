"""thinking_deadline_ms without an engine: the pure cut (server/budget/cut.py) and the
stream that applies it (server/api/deadline.py) against a scripted engine and a fake clock.

Everything here is deterministic: the engine yields exactly the tokens the test feeds it,
and the deadline's clock is :data:`server.api.deadline.CLOCK`, set by the test. The real
server's side (vLLM's serving classes over the spliced stream, a held engine) is in
tests/test_deadline_api.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest

from server.budget.cut import as_deadline, plan
from server.budget.interventions import from_ids
from server.budget.machine import BudgetState
from tests.budget_driver import ANSWER, IM_END, IM_START, NL, WAIT, drive
from tests.scripted_engine import (
    FAR_MS,
    FORCED,
    PAST,
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


# ------------------------------------------------------------------- the pure cut
@pytest.mark.parametrize("output", [[1, 2, 3], [1, 9], [], [1] * 7])
def test_the_cut_is_what_the_machine_forces_at_thinking_max(output: list[int]) -> None:
    cut = plan(rules(), output)
    assert cut is not None and cut.thinking == len(output)
    # What the engine would have emitted with thinking_max at the same point:
    at_max = BudgetState(rules(thinking_max=len(output)))
    script = output + [5] * 20
    emitted = drive(at_max, lambda i: script[i], len(output) + len(cut.forced))
    assert list(cut.prefix) == emitted
    ends_nl = output[-1:] == [9]
    assert cut.forced == (FORCED[1:] if ends_nl else FORCED)


def test_the_cut_waits_for_the_minimum_and_yields_to_the_maximum() -> None:
    assert plan(rules(thinking_min=4), [1, 2, 3]) is None  # the minimum holds
    assert plan(rules(thinking_min=4), [1, 2, 3, 4]).thinking == 4
    # At the maximum the engine's own cut is under way: it wins.
    assert plan(rules(thinking_max=2), [1, 2]) is None
    assert plan(rules(thinking_max=2), [1, 2, NL, IM_START]) is None
    # Thinking over (naturally, or at the end of the turn): nothing to cut.
    assert plan(rules(), [1, IM_START, ANSWER, 7]) is None
    # Inside a forced multi-token continuation string: not there, but right after.
    two = rules(thinking_min=2, continuation_ids=(WAIT, 8))
    assert plan(two, [1, WAIT]) is None
    assert plan(two, [1, WAIT, 8]).thinking == 3
    # The block is not open yet (the prompt does not open it): not until it opens.
    closed = rules(prompt_opens=False)
    assert plan(closed, [4, IM_START]) is None
    assert plan(closed, [4, IM_START, 101]).thinking == 0


def test_the_budget_object_of_a_deadline_cut() -> None:
    request_spec = rules(thinking_max=50)
    cut = plan(request_spec, [1, 2, 3])
    ids = list(cut.prefix) + [7, 7, IM_END]
    tok = SimpleNamespace(decode=lambda ids, skip_special_tokens=True: "".join(
        chr(97 + t % 26) for t in ids))
    state, details = from_ids(cut.spec, ids, tok)
    b = as_deadline(details, request_spec)
    assert (b["end"], b["hit_max"], b["natural_end"]) == ("deadline", False, False)
    assert b["thinking_tokens"] == 3 and b["thinking_max"] == 50
    assert b["cut"]["token"] == 3 and b["cut"]["output_index"] == 3  # the forced newline
    assert b["answer_tokens"] == 2 + 2  # the answer prefix, then 7 7
    assert state.thinking == 3


def test_the_parser_finds_the_cut_spec_by_the_output_ids() -> None:
    from server.api.budget_request import BudgetRequest

    req = BudgetRequest(None, None, None, None)
    req.spec = rules()
    cut = plan(req.spec, [1, 2])
    req.cuts[3] = cut
    assert req.spec_for([1, 2, *FORCED, 7]) is cut.spec
    assert req.spec_for([1, 2, NL]) is req.spec  # not (yet) past the cut
    assert req.spec_for([1, 3, *FORCED]) is req.spec


# ------------------------------------------------------------- the stream, scripted
@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    from server.api import deadline

    c = Clock()
    monkeypatch.setattr(deadline, "CLOCK", c)
    return c


def setup(kind: str, deadline_ms: int = FAR_MS, n: int = 1, seed: int | None = 5,
          first: list[int] | None = None, **budget: Any):
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    from server.api import deadline
    from server.api.budget_request import BudgetRequest
    from server.engine.logits_processor import budget_extra_args

    engine = Engine(first)
    req = BudgetRequest(budget.get("thinking_min"), budget.get("thinking_max"), None, 100,
                        thinking_deadline_ms=deadline_ms)
    req.spec = rules(**budget)
    params = SamplingParams(max_tokens=100, n=n, seed=seed,
                            output_kind=getattr(RequestOutputKind, kind))
    if req.spec.active:
        params.extra_args = budget_extra_args(req.spec, 1)
    tokenizer = SimpleNamespace(decode=lambda ids, skip_special_tokens=True: text(ids))
    serving = SimpleNamespace(model=SimpleNamespace(tokenizer=tokenizer, max_model_len=500))
    stream = deadline.generate(engine.generate, serving, req, req.spec, PROMPT, params, "r",
                               0, (), {"reasoning_ended": None})
    return engine, req, stream


@pytest.mark.parametrize("kind", ["DELTA", "FINAL_ONLY", "CUMULATIVE"])
def test_a_choice_is_cut_at_the_deadline_and_continued(clock: Clock, kind: str) -> None:
    async def run() -> tuple[Engine, Any, list]:
        engine, req, stream = setup(kind)
        clock.fn = past_after(engine, 4)  # the deadline passes with the fourth token
        got: list = []
        task = asyncio.ensure_future(collect(stream, got))
        await until(lambda: engine.calls)
        engine.feed(0, [1, 2])
        engine.feed(0, [3])
        engine.feed(0, [4])
        await until(lambda: len(engine.calls) == 2)
        engine.feed(1, [7, 7])
        engine.feed(1, [IM_END], "stop")
        await task
        return engine, req, got

    engine, req, got = asyncio.run(run())
    assert engine.aborted == [True, False]
    prompt, params, rid, kwargs = engine.calls[1]
    assert prompt["prompt_token_ids"] == [50, 51, 1, 2, 3, 4, *FORCED]
    assert params.max_tokens == 100 - 4 - len(FORCED) and params.seed == 5
    assert not params.extra_args and kwargs["reasoning_ended"] is True
    assert req.cuts[0].thinking == 4
    whole = [1, 2, 3, 4, *FORCED, 7, 7, IM_END]
    if kind == "DELTA":
        assert flat(got) == whole
        # The forced ids went out at the cut, before the continuation had produced anything.
        assert [list(o.outputs[0].token_ids) for o in got][3] == list(FORCED)
        assert "".join(o.outputs[0].text for o in got) == text(whole)
    else:
        last = got[-1].outputs[0]
        assert list(last.token_ids) == whole and last.text == text(whole)
        assert len(got) == (1 if kind == "FINAL_ONLY" else 6)  # the forced ids: one more
    assert got[-1].finished and got[-1].outputs[0].finish_reason == "stop"
    assert all(o.prompt_token_ids == [50, 51] and o.request_id == "r" for o in got)


def test_the_timer_cuts_while_the_engine_is_silent(clock: Clock) -> None:
    """No output arrives after the deadline: the timer fires and cuts at the ids so far."""
    async def run() -> tuple[Engine, list]:
        engine, req, stream = setup("DELTA", deadline_ms=20, first=[1, 9])
        got: list = []
        task = asyncio.ensure_future(collect(stream, got))
        await until(lambda: len(engine.calls) == 2)  # 20 ms after arrival
        engine.feed(1, [7], "stop")
        await task
        return engine, got

    engine, got = asyncio.run(run())
    assert engine.aborted[0]
    assert flat(got) == [1, 9, *FORCED[1:], 7]  # thinking ended with a newline: none forced


def test_the_minimum_holds(clock: Clock) -> None:
    async def run() -> list:
        clock.fn = lambda: PAST  # past the deadline on arrival
        engine, req, stream = setup("DELTA", thinking_min=3)
        got: list = []
        task = asyncio.ensure_future(collect(stream, got))
        await until(lambda: engine.calls)
        for tokens in ([1], [2], [3]):
            engine.feed(0, tokens)
        await until(lambda: len(engine.calls) == 2)  # not cut at 0, 1 or 2 thinking tokens
        engine.feed(1, [7], "stop")
        await task
        return got

    assert flat(asyncio.run(run())) == [1, 2, 3, *FORCED, 7]


def test_the_maximum_wins(clock: Clock) -> None:
    async def run() -> tuple[Engine, list]:
        engine, req, stream = setup("DELTA", thinking_max=2)
        clock.fn = past_after(engine, 2)  # the deadline passes as thinking_max is reached
        got: list = []
        task = asyncio.ensure_future(collect(stream, got))
        await until(lambda: engine.calls)
        for tokens in ([1, 2], [NL, IM_START], [ANSWER], [7]):
            engine.feed(0, tokens)
        engine.feed(0, [IM_END], "stop")
        await task
        return engine, got

    engine, got = asyncio.run(run())
    assert len(engine.calls) == 1 and flat(got) == [1, 2, NL, IM_START, ANSWER, 7, IM_END]


def test_a_deadline_already_past_submits_only_the_continuation(clock: Clock) -> None:
    async def run() -> tuple[Engine, list]:
        engine, req, stream = setup("FINAL_ONLY", deadline_ms=0)
        got: list = []
        task = asyncio.ensure_future(collect(stream, got))
        await until(lambda: engine.calls)
        engine.feed(0, [7], "stop")
        await task
        return engine, got

    engine, got = asyncio.run(run())
    assert len(engine.calls) == 1
    assert engine.calls[0][0]["prompt_token_ids"] == [50, 51, *FORCED]
    assert list(got[0].outputs[0].token_ids) == [*FORCED, 7]
    assert got[0].prompt_token_ids == [50, 51]


def test_n_choices_are_cut_each_on_its_own(clock: Clock) -> None:
    async def run() -> tuple[Engine, Any, list]:
        engine, req, stream = setup("FINAL_ONLY", n=2)
        clock.fn = past_after(engine, 3, request=1)
        got: list = []
        task = asyncio.ensure_future(collect(stream, got))
        await until(lambda: len(engine.calls) == 2)
        engine.feed(0, [1, IM_START, ANSWER, 7], "stop")  # ends thinking before the deadline
        engine.feed(1, [1, 2])
        engine.feed(1, [3])
        await until(lambda: len(engine.calls) == 3)
        engine.feed(2, [8], "stop")
        await task
        return engine, req, got

    engine, req, got = asyncio.run(run())
    assert [c[1].seed for c in engine.calls] == [5, 6, 6]  # as vLLM seeds n children
    assert [c[2] for c in engine.calls[:2]] == ["r-0", "r-1"]
    assert list(req.cuts) == [1]
    (final,) = got
    assert [list(c.token_ids) for c in final.outputs] == [
        [1, IM_START, ANSWER, 7], [1, 2, 3, *FORCED, 8]]


@pytest.mark.parametrize("after_cut", [False, True])
def test_a_client_that_leaves_aborts_the_request_and_the_continuation(
        clock: Clock, after_cut: bool) -> None:
    async def run() -> Engine:
        engine, req, stream = setup("DELTA")
        clock.fn = past_after(engine, 2)
        nxt = asyncio.ensure_future(anext(stream))
        await until(lambda: engine.calls)
        engine.feed(0, [1])
        await nxt
        if after_cut:
            engine.feed(0, [2])
            await anext(stream)
        nxt = asyncio.ensure_future(anext(stream))  # waits: on the engine, or the continuation
        await until(lambda: len(engine.calls) == 1 + after_cut)
        await asyncio.sleep(0.01)
        nxt.cancel()  # the client leaves
        await asyncio.gather(nxt, return_exceptions=True)
        await stream.aclose()
        return engine

    assert asyncio.run(run()).aborted == [True] * (1 + after_cut)


def test_the_cut_spec_differs_from_the_request_spec_only_in_thinking_max() -> None:
    request_spec = rules(thinking_min=2, thinking_max=30)
    cut = plan(request_spec, [1, 2, 3, 4, 5])
    assert cut.spec == dataclasses.replace(request_spec, thinking_max=5)


def test_bad_deadlines_are_refused() -> None:
    from server.api import deadline
    from server.api.budget_request import BudgetRequest
    from server.api.errors import APIError

    settings = SimpleNamespace(max_thinking_deadline_ms=600_000)
    deadline.check(600_000, settings)
    with pytest.raises(APIError) as err:
        deadline.check(600_001, settings)
    assert err.value.status == 400 and err.value.param == "thinking_deadline_ms"
    req = BudgetRequest(None, None, None, None, thinking_deadline_ms=100)
    no_format = deadline.refusal(req, False, PROMPT)
    assert no_format.status == 400 and "no thinking format" in no_format.message
    embeds = deadline.refusal(req, True, {"type": "embeds"})
    assert embeds.param == "thinking_deadline_ms"
    assert deadline.refusal(req, True, PROMPT) is None
    assert deadline.refusal(BudgetRequest(None, None, None, None), False, PROMPT) is None
