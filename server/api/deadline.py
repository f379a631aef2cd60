"""``thinking_deadline_ms``: cut thinking at a wall-clock deadline, decided in the API process.

Why here and how. Under tensor parallelism the logits processor runs in every worker, and
workers that each read their own clock could cut at different tokens. So the one place
that decides is this process, where the engine stream of each choice passes anyway (the
hook on ``engine.generate``, :mod:`server.api.engine_hook`), and the cut is applied from
here without touching the engine's per-step code:

1. each choice's engine request streams deltas to the driver shared with early stop
   (:func:`server.api.cut_stream.drive`; whatever output kind the serving class asked
   for, its kind is rebuilt there), whose trigger here, :class:`Deadline`, watches the
   time since the request's arrival (:data:`CLOCK`, injectable for tests) while the
   choice may still be thinking (the budget state machine, fed the choice's ids);
2. at the deadline (a timer while waiting for the engine, or the check after each
   output), if thinking can be cut there (:func:`server.budget.cut.plan`: in the block,
   at or above ``thinking_min``, not inside a forced string; else the next output is
   tried again), the engine request is aborted and a *continuation* is submitted: the
   prompt ids + the ids generated so far + the forced cut (the newline rule, the end
   delimiter, the answer prefix, exactly as the machine forces them at
   ``thinking_max``), with no budget left to enforce, ``max_tokens``/``min_tokens``
   reduced by what is already generated, the same seed and sampling. With prefix
   caching the shared prefix is not computed again;
3. its outputs are spliced into the choice's stream as if one engine request had made
   them: the forced ids go out at once, as an output of their own (with logprobs asked
   for, they lead the continuation's first output instead, with its prompt logprobs of
   those ids as theirs); the prompt, prompt ids and request id stay the original's, so
   vLLM's serving classes (usage counts the forced ids as completion tokens, the
   reasoning parser, finish reasons) see one generation.

So the answer prefix (the first answer tokens of the s1 format) reaches the client at the
cut, and the model's own answer one engine step (the continuation's prefill) later. The
choice's ``budget`` object and the reasoning parser's count replay its ids with the cut's
spec (``BudgetRequest.cuts``), so the cut is accounted exactly as one at ``thinking_max``
(``end: "deadline"``). ``n > 1`` always runs as ``n`` engine requests
(:mod:`server.api.fanout`), so that each choice is cut alone.

Why not in the engine core: the core could read one clock for all ranks too, but the
cut would then need a per-step hook in vLLM's scheduler and a new engine-side channel for
the deadline; here it reuses vLLM's abort and add-request paths, and the continuation is
an ordinary request that the prefix cache makes cheap. A deadline before
``thinking_min`` waits for it (the minimum is a promise about the thinking; the deadline
is a wish about time), and ``thinking_max`` cuts first when it comes first.

Limits, documented in docs/api.md: a stop string is not matched across the forced cut;
a choice whose ``max_tokens`` leaves no room for the cut and one answer token is not cut.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from server.api import cut_stream, metrics
from server.api.budget_request import BudgetRequest
from server.api.cut_continue import Call
from server.api.cut_stream import Choice
from server.api.errors import APIError, bad_request
from server.api.serving import Serving
from server.budget.cut import Cut, still_thinking
from server.budget.machine import BudgetSpec
from server.settings import Settings

PARAM = "thinking_deadline_ms"
# The clock deadlines are measured on (seconds); tests put a fake one here.
CLOCK: Callable[[], float] = time.monotonic


# Where the front (server.api.front) leaves a request's arrival time in the ASGI scope's
# state; on stock `vllm serve` with the plugin there is no front and the budget
# dependency's own time stands.
ARRIVAL = "s1_arrival"


def now() -> float:
    return CLOCK()


def check(deadline_ms: int | None, settings: Settings) -> None:
    """A deadline beyond the server's limit is a 400 (its type and sign are checked with
    the other budget fields)."""
    most = settings.max_thinking_deadline_ms
    if deadline_ms is not None and deadline_ms > most:
        raise bad_request(f"thinking_deadline_ms={deadline_ms} is above this server's limit "
                          f"of {most} ms (--max-thinking-deadline-ms)", PARAM)


def refusal(req: BudgetRequest, has_format: bool, prompt: Any) -> APIError | None:
    """Why this request's deadline cannot be honoured (None: it can, or there is none)."""
    if req.thinking_deadline_ms is None:
        return None
    return cut_stream.refusal(PARAM, has_format, prompt)


def generate(original: Callable[..., AsyncIterator[Any]], serving: Serving,
             req: BudgetRequest, spec: BudgetSpec, prompt: dict, params: Any,
             request_id: str, first_choice: int, args: tuple, kwargs: dict
             ) -> AsyncIterator[Any]:
    """The engine stream of one prompt's ``n`` choices under the request's deadline."""
    call = Call(original, serving, req, spec, prompt, args, kwargs)
    return cut_stream.per_choice(call, params, request_id, first_choice,
                                 lambda choice: [Deadline(req)])


class Deadline:
    """The deadline's :class:`server.api.cut_stream.Trigger`: once the request's deadline
    has passed (the clock, read after each output, or a timer while the engine is
    silent), the cut after the ids so far, as soon as thinking can be cut there; none
    after the engine request has ended."""

    def __init__(self, req: BudgetRequest) -> None:
        self.at = req.arrival + req.thinking_deadline_ms / 1000
        self.late = now() >= self.at
        self.timer: asyncio.Future | None = None

    def token(self, choice: Choice) -> None:
        pass

    def cut(self, choice: Choice) -> tuple[int, Cut] | None:
        self.late = self.late or (self.timer is not None and self.timer.done()) or (
            now() >= self.at)
        if not self.late or choice.finished or (cut := choice.cut("deadline")) is None:
            return None
        return len(choice.ids), cut

    def hold(self) -> int | None:
        return None

    def waits(self, choice: Choice) -> set[asyncio.Future]:
        if self.late or not still_thinking(choice.state):
            return set()
        if self.timer is None:  # the one timer; the clock is read after each output too
            self.timer = asyncio.ensure_future(asyncio.sleep(max(0.0, self.at - now())))
        return {self.timer}

    async def close(self, cut: Cut | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if cut is not None and cut.reason == "deadline":  # its continuation is submitted next
            metrics.DEADLINE_LATENESS.observe(max(0.0, now() - self.at))
