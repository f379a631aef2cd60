"""Cutting one choice's thinking from the API process: the driver.

Shared by the two cuts decided outside the engine, ``thinking_deadline_ms``
(:mod:`server.api.deadline`) and ``thinking_early_stop`` (:mod:`server.api.early_stop`):
they differ only in *when* they cut, each a :class:`Trigger` (the deadline's timer, the
early stop's probes); *how* is this module. :func:`drive` runs a choice's engine request,
asks its triggers after each output (and whenever what they wait on is done) whether to
cut, and holds back the outputs past a position a trigger may still cut at. At a cut
(:class:`server.budget.cut.Cut`, after the choice's first output ids) it aborts the
engine request and goes on with the continuation (:mod:`server.api.cut_continue`: the
prompt ids + the ids so far + the forced cut, spliced into the choice's stream as if one
engine request had made it).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

from server.api import fanout
from server.api.cut_continue import Call, Outputs, cancel, continue_cut, send_until
from server.api.errors import APIError
from server.budget.cut import Cut, plan
from server.budget.machine import BudgetState, Phase


# ------------------------------------------------------------ what decides the cut
@dataclasses.dataclass
class Choice:
    """One choice as its triggers see it: the output ids its engine request has sent,
    the budget machine fed them, and whether the request has ended."""

    call: Call
    params: Any
    request_id: str
    number: int  # its index in the response (the key of ``req.cuts`` and ``req.probes``)
    ids: list[int] = dataclasses.field(default_factory=list)
    state: BudgetState = dataclasses.field(init=False)
    finished: bool = False

    def __post_init__(self) -> None:
        self.state = BudgetState(self.call.spec)

    def cut(self, reason: str) -> Cut | None:
        """The cut after the ids so far, if thinking can be cut there and the answer gets
        room. The state rules out most positions without a replay."""
        spec, state, max_tokens = self.call.spec, self.state, self.params.max_tokens
        if state.phase != Phase.THINKING or state.thinking < (spec.thinking_min or 0) or (
                max_tokens is None):
            return None
        room = max_tokens - len(self.ids)
        if room < len(spec.end_ids) + len(spec.answer_prefix_ids) + 1:  # not even without
            return None  # a newline: skip the replay
        cut = plan(spec, self.ids, reason)
        return cut if cut is not None and room >= len(cut.forced) + 1 else None


class Trigger(Protocol):
    """What decides a choice's cut. :func:`drive` asks (a trigger never waits itself):
    ``cut`` and ``hold`` before the request starts and whenever anything waited on is
    done; the first trigger's cut wins."""

    def token(self, choice: Choice) -> None:
        """The engine sent one more output id (``choice.ids[-1]``; the state after it)."""

    def cut(self, choice: Choice) -> tuple[int, Cut] | None:
        """The cut decided now (after how many output ids, which cut), or None."""

    def hold(self) -> int | None:
        """The output position past which outputs wait (None: none wait)."""

    def waits(self, choice: Choice) -> set[asyncio.Future]:
        """What to wake on besides the engine's next output."""

    async def close(self, cut: Cut | None) -> None:
        """Not needed any more: the choice was cut (``cut``, whichever trigger decided
        it), or it ended or its client left (None). May come again."""


Triggers = Callable[[Choice], Sequence[Trigger]]


def per_choice(call: Call, params: Any, request_id: str, first_choice: int,
               triggers: Triggers) -> AsyncIterator[Any]:
    """One prompt's ``n`` choices, each its own engine request (so that each is cut
    alone, by the ``triggers`` made for it), seeded as vLLM seeds the children of an
    ``n > 1`` request, as one stream."""
    from vllm.sampling_params import RequestOutputKind

    if params.n == 1:
        return drive(call, params, request_id, first_choice, 0, triggers)
    children = [drive(call, fanout.child_params(params, i, call.spec),
                      fanout.child_id(request_id, i), first_choice + i, i, triggers)
                for i in range(params.n)]
    return fanout.as_one(children, params.output_kind == RequestOutputKind.FINAL_ONLY)


def refusal(param: str, has_format: bool, prompt: Any) -> APIError | None:
    """Why thinking cannot be cut from here for ``param`` on this prompt (None: it can)."""
    if not has_format:
        return APIError(400, f"this model has no thinking format, so {param} cannot cut its "
                        "thinking; start the server with --thinking-format", param)
    if not isinstance(prompt, dict) or prompt.get("type", "token") != "token" or (
            "prompt_token_ids" not in prompt):
        return APIError(400, f"{param} needs a prompt of token ids (text); this prompt has "
                        "other inputs", param)
    return None


# ------------------------------------------------------------------ the driver
async def drive(call: Call, params: Any, request_id: str, number: int, index: int,
                triggers: Triggers) -> AsyncIterator[Any]:
    """One choice's outputs, in ``params.output_kind``, cut where its triggers decide.
    ``number``: its index in the response; ``index``: within this prompt's choices."""
    from vllm.sampling_params import RequestOutputKind

    engine_params = copy.copy(params)
    engine_params.output_kind = RequestOutputKind.DELTA
    out = Outputs(params.output_kind, index)
    choice = Choice(call, params, request_id, number)
    watch = triggers(choice)
    held: list[tuple[int, Any]] = []  # (end position, output) not sent yet
    stream = pending = cont = None
    try:
        while (decided := _decide(watch, choice)) is None:
            if stream is None:
                stream = call.submit(call.prompt, engine_params, request_id)
            hold = min((h for t in watch if (h := t.hold()) is not None), default=None)
            while held and (hold is None or held[0][0] <= hold):
                _, res = held.pop(0)
                if res.finished:  # nothing can cut it now (probes stop before it is counted)
                    await _close(watch, None)
                for item in out.add(res):
                    yield item
            if choice.finished and not held:
                return
            waiting = set().union(*(t.waits(choice) for t in watch))
            if not choice.finished:
                pending = pending or asyncio.ensure_future(anext(stream))
                waiting.add(pending)
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if pending in done:
                task, pending = pending, None
                try:
                    res = task.result()
                except StopAsyncIteration:
                    choice.finished = True
                else:
                    for tok in res.outputs[0].token_ids:
                        choice.ids.append(tok)
                        choice.state.observe(tok)
                        for t in watch:
                            t.token(choice)
                    held.append((len(choice.ids), res))
                    choice.finished = res.finished
        at, cut = decided
        for item in send_until(at, held, out, params, call.serving):
            yield item
        # The cut: abort the engine request and what the triggers have out, continue.
        if pending is not None:
            await cancel(pending)
            pending = None
        if stream is not None:
            await stream.aclose()
        await _close(watch, cut)
        call.req.cuts[number] = cut
        cont = continue_cut(call, params, cut, out, request_id)
        async for item in cont:
            yield item
    finally:
        if pending is not None:  # the client left while we waited: abort the request
            await cancel(pending)
        await _close(watch, None)
        for s in (stream, cont):
            if s is not None:
                await s.aclose()


def _decide(watch: Sequence[Trigger], choice: Choice) -> tuple[int, Cut] | None:
    for t in watch:
        if (decided := t.cut(choice)) is not None:
            return decided
    return None


async def _close(watch: Sequence[Trigger], cut: Cut | None) -> None:
    for t in watch:
        await t.close(cut)
