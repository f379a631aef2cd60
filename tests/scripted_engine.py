"""A scripted engine and a fake clock for the cut streams (server/api/deadline.py,
server/api/early_stop.py): the engine yields exactly the tokens a test feeds it, as vLLM's
DELTA outputs, and counts what it has delivered, which the fake clocks read. Shared by
tests/test_deadline.py and tests/test_early_stop.py."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.budget_driver import ANSWER, FINAL, IM_START, NL, S1_RULES, spec

RULES = dict(S1_RULES, newline_ids=frozenset({NL, 9}))  # 9: a token that ends with a newline
FORCED = (NL, IM_START, ANSWER, NL, FINAL)  # the newline rule, end delimiter, answer prefix


def rules(**kw: Any):
    return spec(**{**RULES, **kw})


class Engine:
    """engine.generate, scripted: each request yields what the test feeds its queue
    (``feed(request, tokens, finish)``), as DELTA outputs with one-letter texts, and counts
    the tokens it has yielded (``delivered``), which the fake clocks read."""

    def __init__(self, first: list[int] | None = None) -> None:
        self.first = first  # what the first request has ready at once
        self.calls: list[tuple[dict, Any, str, dict]] = []
        self.queues: list[asyncio.Queue] = []
        self.aborted: list[bool] = []
        self.delivered: list[int] = []

    def generate(self, prompt: dict, params: Any, request_id: str, *args: Any,
                 **kwargs: Any):
        self.calls.append((prompt, params, request_id, kwargs))
        self.queues.append(asyncio.Queue())
        self.aborted.append(False)
        self.delivered.append(0)
        if self.first is not None and len(self.calls) == 1:
            self.feed(0, self.first)
        return self._stream(len(self.calls) - 1)

    def feed(self, request: int, tokens: list[int], finish: str | None = None) -> None:
        self.queues[request].put_nowait((tokens, finish))

    async def _stream(self, i: int):
        from vllm.outputs import CompletionOutput, RequestOutput

        prompt, params, rid, _ = self.calls[i]
        try:
            while True:
                tokens, finish = await self.queues[i].get()
                comp = CompletionOutput(index=0, text=text(tokens), token_ids=list(tokens),
                                        cumulative_logprob=None, logprobs=None,
                                        finish_reason=finish)
                self.delivered[i] += len(tokens)
                yield RequestOutput(rid, None, list(prompt["prompt_token_ids"]), None, [comp],
                                    finish is not None)
                if finish is not None:
                    return
        except (asyncio.CancelledError, GeneratorExit):
            self.aborted[i] = True  # what vLLM's generate does: abort the request
            raise


def text(tokens: list[int]) -> str:
    return "".join(chr(97 + t % 26) for t in tokens)


class Clock:
    """The deadline's clock: ``fn()`` (0 unless a test says otherwise). A clock that
    reads the engine's delivered tokens puts the deadline after an exact output: the
    stream checks the time after each output, before it asks for the next one."""

    def __init__(self) -> None:
        self.fn = lambda: 0.0

    def __call__(self) -> float:
        return self.fn()


PROMPT = {"type": "token", "prompt_token_ids": [50, 51]}
# Far enough that the real timer never fires first: the fake clocks jump past it.
FAR_MS = 60_000
PAST = 100.0


def past_after(engine: Engine, tokens: int, request: int = 0):
    return lambda: PAST if len(engine.delivered) > request and \
        engine.delivered[request] >= tokens else 0.0


async def collect(stream, sink: list) -> None:
    async for out in stream:
        sink.append(out)


async def until(predicate, seconds: float = 30) -> None:
    """Let the event loop run until ``predicate()`` (the bound only catches a hang)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not predicate():
        assert loop.time() < end, "the stream did not get there"
        await asyncio.sleep(0.001)


def flat(outputs: list, index: int = 0) -> list[int]:
    return [t for o in outputs for c in o.outputs if c.index == index for t in c.token_ids]
