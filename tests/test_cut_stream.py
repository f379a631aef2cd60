"""The cut driver (server/api/cut_stream.py ``drive``) on its own, with triggers that the
test scripts by hand, against the scripted engine (tests/scripted_engine.py).

What the deadline and early stop share is tested here once: outputs past a trigger's hold
wait, the cut sends them up to its position (the one that straddles it cut short) and
drops the rest, the engine request is aborted, the triggers are told the cut, the
continuation goes on from the ids plus the forced cut; the first trigger's cut wins; a
choice that ends closes its triggers before its last output goes out; a client that
leaves aborts the request. Deterministic: the engine yields only what the test feeds it,
and a trigger decides only when the test says so (no clock is read).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from server.budget.cut import Cut, plan
from tests.budget_driver import IM_END
from tests.scripted_engine import FORCED, PROMPT, Engine, rules, text, until


class Scripted:
    """A trigger decided by the test: it holds outputs past ``holding``, cuts after
    ``cut_at`` output ids once told to, wakes the driver through ``wake`` (a future the
    test completes), and records what the driver told it."""

    def __init__(self, reason: str = "scripted") -> None:
        self.reason = reason
        self.holding: int | None = None
        self.cut_at: int | None = None
        self.wake: asyncio.Future | None = None
        self.tokens: list[int] = []  # the output position after each token
        self.closed: list[Cut | None] = []

    def token(self, choice: Any) -> None:
        self.tokens.append(len(choice.ids))

    def cut(self, choice: Any) -> tuple[int, Cut] | None:
        if self.cut_at is None or self.cut_at > len(choice.ids):
            return None
        return self.cut_at, plan(choice.call.spec, choice.ids[:self.cut_at], self.reason)

    def hold(self) -> int | None:
        return self.holding

    def waits(self, choice: Any) -> set[asyncio.Future]:
        if self.wake is None:
            self.wake = asyncio.get_running_loop().create_future()
        return set() if self.wake.done() else {self.wake}

    async def close(self, cut: Cut | None) -> None:
        self.closed.append(cut)


def setup(*triggers: Scripted, kind: str = "DELTA", n: int = 1, make: Any = None):
    """The scripted engine, the request, and the driven stream of its ``n`` choices, each
    watched by ``triggers`` (or by what ``make(choice)`` returns)."""
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    from server.api import cut_continue, cut_stream
    from server.api.budget_request import BudgetRequest

    engine = Engine()
    req = BudgetRequest(None, None, None, 100)
    req.spec = rules()
    params = SamplingParams(max_tokens=100, n=n, seed=5,
                            output_kind=getattr(RequestOutputKind, kind))
    tokenizer = SimpleNamespace(decode=lambda ids, skip_special_tokens=True: text(ids))
    serving = SimpleNamespace(model=SimpleNamespace(tokenizer=tokenizer))
    call = cut_continue.Call(engine.generate, serving, req, req.spec, PROMPT, (),
                           {"reasoning_ended": None})
    stream = cut_stream.per_choice(call, params, "r", 0, make or (lambda choice: list(triggers)))
    return engine, req, stream


def ids(res: Any) -> list[int]:
    return list(res.outputs[0].token_ids)


async def collect(stream: Any) -> list:
    return [out async for out in stream]


def test_held_outputs_are_cut_at_the_trigger_position_and_continued() -> None:
    async def run() -> tuple[Engine, Any, Scripted, list]:
        trigger = Scripted()
        trigger.holding = 2
        engine, req, stream = setup(trigger)
        nxt = asyncio.ensure_future(anext(stream))
        await until(lambda: engine.calls)
        engine.feed(0, [1, 2])
        got = [await nxt]  # up to the hold: sent
        nxt = asyncio.ensure_future(anext(stream))
        engine.feed(0, [3, 4, 5])  # straddles the cut (after 4) to come
        engine.feed(0, [6])
        await until(lambda: len(trigger.tokens) == 6)
        assert not nxt.done()  # all held: past position 2
        trigger.cut_at = 4
        trigger.wake.set_result(None)
        got.append(await nxt)  # 3 4, cut short; 5 and 6 dropped
        got.append(await anext(stream))  # the forced cut, at once
        assert engine.aborted[0] and trigger.closed[0].thinking == 4
        engine.feed(1, [7, IM_END], "stop")
        got += [out async for out in stream]
        return engine, req, trigger, got

    engine, req, trigger, got = asyncio.run(run())
    assert [ids(o) for o in got] == [[1, 2], [3, 4], list(FORCED), [7, IM_END]]
    assert got[1].outputs[0].text == text([3, 4]) and not got[1].finished
    assert trigger.tokens == [1, 2, 3, 4, 5, 6]
    prompt, params, rid, kwargs = engine.calls[1]
    assert prompt["prompt_token_ids"] == [50, 51, 1, 2, 3, 4, *FORCED] and rid == "r-cut"
    assert kwargs["reasoning_ended"] is True and params.max_tokens == 100 - 4 - len(FORCED)
    assert req.cuts[0] is trigger.closed[0] and req.cuts[0].reason == "scripted"
    assert got[-1].finished and all(o.request_id == "r" for o in got)


def test_a_cut_before_any_output_submits_only_the_continuation() -> None:
    async def run() -> tuple[Engine, list]:
        trigger = Scripted()
        trigger.cut_at = 0
        engine, req, stream = setup(trigger, kind="FINAL_ONLY")
        task = asyncio.ensure_future(collect(stream))
        await until(lambda: engine.calls)
        engine.feed(0, [7], "stop")
        return engine, await task

    engine, got = asyncio.run(run())
    assert len(engine.calls) == 1 and engine.calls[0][2] == "r-cut"
    assert engine.calls[0][0]["prompt_token_ids"] == [50, 51, *FORCED]
    assert [ids(o) for o in got] == [[*FORCED, 7]]


def test_the_first_trigger_cuts_and_every_trigger_hears_of_it() -> None:
    async def run() -> tuple[Any, Scripted, Scripted, list]:
        first, second = Scripted("first"), Scripted("second")
        first.cut_at = second.cut_at = 2
        engine, req, stream = setup(first, second, kind="CUMULATIVE")
        task = asyncio.ensure_future(collect(stream))
        await until(lambda: engine.calls)
        engine.feed(0, [1, 2, 3])
        await until(lambda: len(engine.calls) == 2)
        engine.feed(1, [7], "stop")
        return req, first, second, await task

    req, first, second, got = asyncio.run(run())
    assert req.cuts[0].reason == "first" and req.cuts[0].thinking == 2
    assert first.closed[0] is second.closed[0] is req.cuts[0]
    assert ids(got[-1]) == [1, 2, *FORCED, 7]  # cumulative: 3 was never sent


def test_a_choice_that_ends_closes_its_triggers_before_its_last_output() -> None:
    """(So early stop aborts its probes before the usage is counted.)"""
    async def run() -> tuple[Scripted, Any, list]:
        trigger = Scripted()
        engine, req, stream = setup(trigger)
        nxt = asyncio.ensure_future(anext(stream))
        await until(lambda: engine.calls)
        engine.feed(0, [1])
        assert ids(await nxt) == [1] and trigger.closed == []
        engine.feed(0, [2], "length")
        last = await anext(stream)
        closed_at_last = list(trigger.closed)
        assert await collect(stream) == []
        return trigger, last, closed_at_last

    trigger, last, closed_at_last = asyncio.run(run())
    assert last.finished and ids(last) == [2] and closed_at_last == [None]
    assert not any(trigger.closed)  # never told of a cut


def test_a_client_that_leaves_aborts_the_request_and_closes_the_triggers() -> None:
    async def run() -> tuple[Engine, Scripted]:
        trigger = Scripted()
        trigger.holding = 0  # everything held: the client waits
        engine, req, stream = setup(trigger)
        nxt = asyncio.ensure_future(anext(stream))
        await until(lambda: engine.calls)
        engine.feed(0, [1])
        await until(lambda: trigger.tokens)
        nxt.cancel()  # the client leaves
        await asyncio.gather(nxt, return_exceptions=True)
        await stream.aclose()
        return engine, trigger

    engine, trigger = asyncio.run(run())
    assert engine.aborted == [True] and trigger.closed == [None]


def test_n_choices_each_get_their_own_triggers() -> None:
    made: list[tuple[int, str]] = []

    def make(choice: Any) -> list[Scripted]:
        made.append((choice.number, choice.request_id))
        trigger = Scripted()
        trigger.cut_at = 1 if choice.number == 1 else None
        return [trigger]

    async def run() -> tuple[Engine, Any, list]:
        engine, req, stream = setup(kind="FINAL_ONLY", n=2, make=make)
        task = asyncio.ensure_future(collect(stream))
        await until(lambda: len(engine.calls) == 2)
        engine.feed(0, [1, 2], "stop")
        engine.feed(1, [1, 2])
        await until(lambda: len(engine.calls) == 3)
        engine.feed(2, [8], "stop")
        return engine, req, await task

    engine, req, got = asyncio.run(run())
    assert sorted(made) == [(0, "r-0"), (1, "r-1")]
    assert list(req.cuts) == [1] and engine.calls[2][2] == "r-1-cut"
    assert [c[1].seed for c in engine.calls] == [5, 6, 6]  # as vLLM seeds n children
    (final,) = got
    assert [list(c.token_ids) for c in final.outputs] == [[1, 2], [1, *FORCED, 8]]
