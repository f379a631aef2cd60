"""``thinking_deadline_ms``: cut thinking at a wall-clock deadline, decided in the API process.

Why here and how. Under tensor parallelism the logits processor runs in every worker, and
workers that each read their own clock could cut at different tokens. So the one place
that decides is this process, where the engine stream of each choice passes anyway (the
hook on ``engine.generate``, :mod:`server.api.engine_hook`), and the cut is applied from
here without touching the engine's per-step code:

1. each choice's engine request streams deltas to :func:`_choice` (whatever output kind
   the serving class asked for; its kind is rebuilt here), which watches the time since
   the request's arrival (:data:`CLOCK`, injectable for tests) while the choice may still
   be thinking (the budget state machine, fed the choice's ids);
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
import copy
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from server.api import metrics
from server.api.budget_request import BudgetRequest
from server.api.cut_stream import Outputs, cancel, continue_cut, cut_after, per_choice
from server.api.errors import APIError, bad_request
from server.api.serving import Serving
from server.budget.cut import Cut, still_thinking
from server.budget.machine import BudgetSpec, BudgetState
from server.settings import Settings

# The clock deadlines are measured on (seconds); tests put a fake one here.
CLOCK: Callable[[], float] = time.monotonic


def now() -> float:
    return CLOCK()


def check(deadline_ms: int | None, settings: Settings) -> None:
    """A deadline beyond the server's limit is a 400 (its type and sign are checked with
    the other budget fields)."""
    most = settings.max_thinking_deadline_ms
    if deadline_ms is not None and deadline_ms > most:
        raise bad_request(f"thinking_deadline_ms={deadline_ms} is above this server's limit "
                          f"of {most} ms (--max-thinking-deadline-ms)", "thinking_deadline_ms")


def refusal(req: BudgetRequest, has_format: bool, prompt: Any) -> APIError | None:
    """Why this request's deadline cannot be honoured (None: it can, or there is none)."""
    if req.thinking_deadline_ms is None:
        return None
    if not has_format:
        return APIError(400, "this model has no thinking format, so thinking_deadline_ms "
                        "cannot cut its thinking; start the server with --thinking-format",
                        "thinking_deadline_ms")
    if not isinstance(prompt, dict) or prompt.get("type", "token") != "token" or (
            "prompt_token_ids" not in prompt):
        return APIError(400, "thinking_deadline_ms needs a prompt of token ids (text); this "
                        "prompt has other inputs", "thinking_deadline_ms")
    return None


def generate(original: Callable[..., AsyncIterator[Any]], serving: Serving,
             req: BudgetRequest, spec: BudgetSpec, prompt: dict, params: Any,
             request_id: str, first_choice: int, args: tuple, kwargs: dict
             ) -> AsyncIterator[Any]:
    """The engine stream of one prompt's ``n`` choices under the request's deadline."""
    at = req.arrival + req.thinking_deadline_ms / 1000

    def make(p: Any, rid: str, choice: int, index: int) -> AsyncIterator[Any]:
        return _choice(original, serving, req, spec, prompt, p, rid, choice, at, args,
                       kwargs, index=index)

    return per_choice(params, spec, request_id, first_choice, make)


async def _choice(original: Callable[..., AsyncIterator[Any]], serving: Serving,
                  req: BudgetRequest, spec: BudgetSpec, prompt: dict, params: Any,
                  request_id: str, choice: int, at: float, args: tuple, kwargs: dict,
                  index: int = 0) -> AsyncIterator[Any]:
    """One choice's outputs, in ``params.output_kind``, cut at the deadline ``at``."""
    from vllm.sampling_params import RequestOutputKind

    engine_params = copy.copy(params)
    engine_params.output_kind = RequestOutputKind.DELTA
    out = Outputs(params.output_kind, index)
    state = BudgetState(spec)
    stream = pending = cont = None
    cut: Cut | None = None
    late = now() >= at
    try:
        if late:
            cut = cut_after(spec, state, [], params)
        if cut is None:
            stream = original(prompt, engine_params, request_id, *args, **kwargs)
            while True:
                watching = still_thinking(state)
                if watching:  # wait on a task, so that the deadline's timer keeps it alive
                    pending = pending or asyncio.ensure_future(anext(stream))
                    timeout = None if late else max(0.0, at - now())
                    done, _ = await asyncio.wait({pending}, timeout=timeout)
                    if not done:
                        late = True
                        if (cut := cut_after(spec, state, out.ids, params)) is not None:
                            break
                        continue
                    task, pending = pending, None
                    try:
                        res = task.result()
                    except StopAsyncIteration:
                        break
                else:
                    try:
                        res = await anext(stream)
                    except StopAsyncIteration:
                        break
                state.observe_many(res.outputs[0].token_ids)
                for item in out.add(res):
                    yield item
                if res.finished:
                    return
                late = late or now() >= at
                if late and (cut := cut_after(spec, state, out.ids, params)):
                    break
            if cut is None:
                return
        # The cut: abort the engine request, continue from its ids plus the forced ones.
        if pending is not None:
            await cancel(pending)
            pending = None
        if stream is not None:
            await stream.aclose()
        req.cuts[choice] = cut
        metrics.DEADLINE_LATENESS.observe(max(0.0, now() - at))
        cont = continue_cut(original, serving, prompt, params, cut, out, request_id, args,
                            kwargs)
        async for item in cont:
            yield item
    finally:
        if pending is not None:  # the client left while we waited: abort the request
            await cancel(pending)
        for s in (stream, cont):
            if s is not None:
                await s.aclose()
