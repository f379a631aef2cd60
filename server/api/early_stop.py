"""``thinking_early_stop``: cut thinking once the answer has settled, decided in the API process.

What. ``{"every": k, "agree": m}``: every k thinking tokens the choice's answer is
*probed*: a separate engine request whose prompt is the prompt, the output ids so far
and the forced cut that ``thinking_max`` would make there (the newline rule, the end
delimiter, the answer prefix: :func:`server.budget.cut.plan`), generating at most
``--probe-max-tokens`` greedy tokens (the prefix cache holds the prompt and the thinking
already). Its text, whitespace-normalised, is the probe's answer. When m consecutive
probes gave the same non-empty answer, thinking is cut at the last of them exactly as
the deadline cuts it (the same driver, :func:`server.api.cut_stream.drive`: abort,
continue from the ids plus the forced cut, spliced into the same stream), with
``end: "settled"``. The probes are this module's trigger (:class:`Probes`).

Why here: as for the deadline (:mod:`server.api.deadline`), the engine's tensor-parallel
ranks must decide alike and the cut reuses vLLM's abort and add-request paths; a probe is
just another request.

Deterministic by construction. A probe's position is a token count (the first output
position with k, 2k, ... thinking tokens at which thinking can be cut: at or above
``thinking_min``, not inside a forced string; the maximum wins), never a time, and the
probe is greedy. While a probe that could still settle the answer (the probes before it
agree, or are still out) has not returned, the choice's outputs past its position are
held back; so the cut lands at the first settling probe's position however fast the
probes return, and the client sees no token that the cut takes back. The main request
keeps generating meanwhile: a probe that does not settle costs no latency but the hold.

Accounting. Probe tokens are not completion tokens: they are reported as
``usage.probe_tokens`` and ``s1_probe_tokens_total``, and each probe (its thinking token
count, output index and answer) in the choice's ``budget`` object. At most
``--max-probes-per-request`` probes per choice; probes left out when the choice ends, is
cut, or its client leaves are aborted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from server.api import cut_stream, deadline, metrics
from server.api.budget_request import BudgetRequest
from server.api.cut_continue import Call, cancel, cut_prompt
from server.api.cut_stream import Choice, Trigger
from server.api.errors import APIError, bad_request
from server.api.serving import Serving
from server.budget.cut import Cut
from server.budget.machine import BudgetSpec, Phase
from server.settings import Settings

PARAM = "thinking_early_stop"
logger = logging.getLogger(__name__)


def check(early_stop: tuple[int, int] | None, settings: Settings) -> None:
    """400s the server's settings decide (types and ranges are checked with the other
    budget fields): early stop switched off, or an ``agree`` no choice can reach."""
    if early_stop is None:
        return
    cap = settings.max_probes_per_request
    if cap == 0:
        raise bad_request("this server makes no answer probes (--max-probes-per-request 0), "
                          "so thinking_early_stop cannot be honoured", PARAM)
    if early_stop[1] > cap:
        raise bad_request(f"thinking_early_stop.agree={early_stop[1]} needs more probes than "
                          f"this server makes per choice ({cap}, --max-probes-per-request); "
                          "it could never settle", PARAM)


def refusal(req: BudgetRequest, has_format: bool, prompt: Any,
            max_model_len: int) -> APIError | None:
    """Why this request's early stop cannot be honoured (None: it can, or there is none)."""
    if req.early_stop is None:
        return None
    if (refused := cut_stream.refusal(PARAM, has_format, prompt)) is not None:
        return refused
    if req.early_stop[0] >= max_model_len:
        return APIError(400, f"thinking_early_stop.every={req.early_stop[0]} is not below "
                        f"the model's context ({max_model_len} tokens): no probe would run",
                        PARAM)
    return None


def normalise(text: str) -> str:
    """A probe's answer as compared: its text with whitespace runs made one space."""
    return " ".join(text.split())


def generate(original: Callable[..., AsyncIterator[Any]], serving: Serving,
             req: BudgetRequest, spec: BudgetSpec, prompt: dict, params: Any,
             request_id: str, first_choice: int, args: tuple, kwargs: dict
             ) -> AsyncIterator[Any]:
    """The engine stream of one prompt's ``n`` choices under early stop (and the
    deadline, when the request has one too: whichever cuts first)."""
    call = Call(original, serving, req, spec, prompt, args, kwargs)
    cap = serving.settings.max_probes_per_request

    def triggers(choice: Choice) -> list[Trigger]:
        watch: list[Trigger] = [Probes(choice, *req.early_stop, cap)]
        if req.thinking_deadline_ms is not None:
            watch.append(deadline.Deadline(req))
        return watch

    return cut_stream.per_choice(call, params, request_id, first_choice, triggers)


@dataclasses.dataclass
class Probe:
    """One probe of a choice's answer, after its first ``at`` output ids."""

    at: int
    cut: Cut
    record: dict[str, Any]  # in the budget object: token, output_index, answer
    task: asyncio.Task | None = None
    done: bool = False

    @property
    def answer(self) -> str | None:
        return self.record["answer"]

    def ended(self, task: asyncio.Task) -> None:
        """Its request ended: answered, failed (logged; no answer) or aborted."""
        self.done = True
        if not task.cancelled() and task.exception() is not None:
            logger.warning("answer probe %s failed: %r", self.record, task.exception())


def verdict(probes: list[Probe], agree: int) -> tuple[Probe | None, int | None]:
    """(the probe at which the answer settled, or None; the output position past which
    outputs must be held back, None: none). The earliest probe that settles wins, so a
    probe that could still settle holds back everything after it."""
    for j in range(agree - 1, len(probes)):
        window = probes[j - agree + 1:j + 1]
        answers = {p.answer for p in window if p.done}
        if "" in answers or None in answers or len(answers) > 1:
            continue  # cannot settle here
        if all(p.done for p in window):
            return probes[j], None
        return None, probes[j].at
    return None, None


class Probes:
    """Early stop's :class:`server.api.cut_stream.Trigger`: a probe at the first output
    position with k, 2k, ... thinking tokens where thinking can be cut (at most ``cap``);
    the cut at the first probe where ``agree`` answers in a row settled; the outputs past
    a probe that could still settle it held meanwhile."""

    def __init__(self, choice: Choice, every: int, agree: int, cap: int) -> None:
        self.every, self.agree, self.cap = every, agree, cap
        self.target = every  # thinking tokens at the next probe
        self.probes: list[Probe] = []
        self.records: list[dict[str, Any]] = []
        choice.call.req.probes[choice.number] = self.records

    def token(self, choice: Choice) -> None:
        state = choice.state
        if (len(self.probes) >= self.cap or state.phase != Phase.THINKING
                or state.thinking < self.target or (cut := choice.cut("settled")) is None):
            return
        at = len(choice.ids)
        probe = Probe(at, cut, {"token": cut.thinking, "output_index": at, "answer": None})
        probe.task = asyncio.ensure_future(
            _probe(choice.call, probe, f"{choice.request_id}-probe{len(self.probes)}"))
        probe.task.add_done_callback(probe.ended)
        self.probes.append(probe)
        self.records.append(probe.record)
        self.target = (state.thinking // self.every + 1) * self.every

    def cut(self, choice: Choice) -> tuple[int, Cut] | None:
        settled, _ = verdict(self.probes, self.agree)
        return None if settled is None else (settled.at, settled.cut)

    def hold(self) -> int | None:
        return verdict(self.probes, self.agree)[1]

    def waits(self, choice: Choice) -> set[asyncio.Future]:
        return {p.task for p in self.probes if not p.done and p.task is not None}

    async def close(self, cut: Cut | None) -> None:
        """Abort the probes still out (their answers stay unknown: ``answer: null``)."""
        for p in self.probes:
            if not p.done and p.task is not None:
                await cancel(p.task)
                p.done = True


def probe_params(serving: Serving) -> Any:
    """A probe's sampling: greedy, short, detokenized, one output at the end."""
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    return SamplingParams(n=1, temperature=0.0, max_tokens=serving.settings.probe_max_tokens,
                          output_kind=RequestOutputKind.DELTA, skip_special_tokens=True)


async def _probe(call: Call, probe: Probe, request_id: str) -> None:
    """Run one probe: its answer into ``probe.record``, its tokens into the request's
    ``probe_tokens`` and the metric as they come (an aborted probe's too)."""
    stream = call.submit(cut_prompt(call.prompt, probe.cut), probe_params(call.serving),
                         request_id, after_cut=True)
    text = ""
    metrics.PROBES.inc()
    try:
        async for res in stream:
            comp = res.outputs[0]
            text += comp.text
            call.req.probe_tokens += len(comp.token_ids)
            metrics.PROBE_TOKENS.inc(len(comp.token_ids))
        probe.record["answer"] = normalise(text)
    finally:
        await stream.aclose()
