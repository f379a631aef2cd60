"""The n>1 fan-out (server/api/fanout.py) through the real engine-call hook: an unseeded
request of n budgeted choices, sent to the engine as n requests, reads back as one
request of n choices (streaming: completions tagged 0..n-1; non-streaming: one final
output in index order), each choice cut at its own budget; closing the stream aborts
every choice before ``aclose()`` returns and counts none unfinished; the merge raises
the first error and cancels the rest. Runs on the scripted engine of
tests/hooked_engine.py (see test_engine_hook for why without an engine)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from server.api import fanout
from tests.hooked_engine import (
    COUNTERS,
    DELTA,
    FINAL_ONLY,
    FakeEngine,
    choice_tokens,
    counters_now,
    counters_since,
    cut_choice,
    drain,
    engine_call,
    hooked_engine,
)


# ------------------------------------------------------------ fan-out shape
@pytest.mark.parametrize("kind", [DELTA, FINAL_ONLY])
def test_fanned_out_response_has_the_usual_shape(model, vocab, settings, kind):
    engine = hooked_engine(model, vocab, settings, think=50)  # thinks past thinking_max
    req, stream = engine_call(engine, vocab, {"thinking_max": 6, "n": 3, "max_tokens": 40}, kind)
    outputs = drain(stream)
    assert [rid for rid, _ in engine.calls] == ["req-1-0", "req-1-1", "req-1-2"]
    if kind == FINAL_ONLY:  # non-streaming: one output with the n choices in order
        assert len(outputs) == 1 and outputs[0].finished
        assert [c.index for c in outputs[0].outputs] == [0, 1, 2]
    choices = choice_tokens(outputs, delta=kind == DELTA)
    assert choices == {i: cut_choice(vocab, 6) for i in range(3)}
    assert "Final Answer:" in model.tokenizer.decode(choices[0])
    assert sorted(req.budgets) == [0, 1, 2]
    for b in req.budgets.values():
        assert (b["thinking_tokens"], b["hit_max"], b["end"]) == (6, True, "cut")
    assert sorted(engine.closed) == ["req-1-0", "req-1-1", "req-1-2"]


def _close_after_first(engine: FakeEngine, stream: Any) -> list[str]:
    """Read one output, close the stream as a serving class does when its client leaves,
    and return the engine requests closed by the time ``aclose()`` returned."""
    async def main() -> list[str]:
        first = await anext(stream)
        assert first.outputs[0].finish_reason is None
        await stream.aclose()
        return sorted(engine.closed)

    return asyncio.run(main())


def test_a_closed_stream_counts_no_unfinished_choice(model, vocab, settings):
    engine = hooked_engine(model, vocab, settings)
    _, stream = engine_call(engine, vocab, {"thinking_max": 6, "n": 3, "max_tokens": 40})
    before = counters_now()
    _close_after_first(engine, stream)
    assert all(len(engine.emitted[(f"req-1-{i}", 0)]) < len(cut_choice(vocab, 6)) for i in range(3))
    assert counters_since(before) == dict.fromkeys(COUNTERS, 0.0)


def test_closing_a_fanned_out_stream_aborts_every_choice_at_once(model, vocab, settings):
    """track's finally awaits ``stream.aclose()`` to abort the engine requests: for a
    fanned-out request that must reach every child before it returns."""
    engine = hooked_engine(model, vocab, settings)
    _, stream = engine_call(engine, vocab, {"thinking_max": 6, "n": 3, "max_tokens": 40})
    assert _close_after_first(engine, stream) == ["req-1-0", "req-1-1", "req-1-2"]


def test_merge_raises_the_first_error_and_cancels_the_rest():
    cancelled = []

    async def ok():
        try:
            while True:
                yield "tick"
                await asyncio.sleep(0)  # a yield point, not a wait
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def bad():
        yield "one"
        raise ValueError("engine said no")

    async def main() -> list:
        seen = []
        with pytest.raises(ValueError, match="engine said no"):
            async for item in fanout.merge([ok(), bad()]):
                seen.append(item)
        return seen

    seen = asyncio.run(main())
    assert (1, "one") in seen
    assert cancelled == [True]


def _outputs(index_tokens: list[list[int]]):
    async def stream():
        for toks in index_tokens:
            yield SimpleNamespace(outputs=[SimpleNamespace(index=0, token_ids=toks)],
                                  finished=False)
            await asyncio.sleep(0)  # a yield point, not a wait
    return stream()


@pytest.mark.parametrize("final_only", [False, True])
def test_as_one_looks_like_one_request_of_n_choices(final_only):
    """vLLM's serving classes read n > 1 as completions tagged 0..n-1 (streaming), or one
    final output holding all n in index order (non-streaming)."""
    async def main() -> list:
        streams = [_outputs([[1], [2]]), _outputs([[3]]), _outputs([[4], [5], [6]])]
        return [out async for out in fanout.as_one(streams, final_only)]

    got = asyncio.run(main())
    if final_only:
        assert len(got) == 1 and got[0].finished
        assert [(c.index, c.token_ids) for c in got[0].outputs] == [(0, [2]), (1, [3]),
                                                                     (2, [6])]
    else:
        seen = {}
        for out in got:
            for c in out.outputs:
                seen.setdefault(c.index, []).extend(c.token_ids)
        assert seen == {0: [1, 2], 1: [3], 2: [4, 5, 6]}

