"""``thinking_early_stop``: cut thinking once the answer has settled, decided in the API process.

What. ``{"every": k, "agree": m}``: every k thinking tokens the choice's answer is
*probed*: a separate engine request whose prompt is the prompt, the output ids so far
and the forced cut that ``thinking_max`` would make there (the newline rule, the end
delimiter, the answer prefix: :func:`server.budget.cut.plan`), generating at most
``--probe-max-tokens`` greedy tokens (the prefix cache holds the prompt and the thinking
already). Its text, whitespace-normalised, is the probe's answer. When m consecutive
probes gave the same non-empty answer, thinking is cut at the last of them exactly as
the deadline cuts it (:func:`server.api.cut_stream.continue_cut`: abort, continue from
the ids plus the forced cut, spliced into the same stream), with ``end: "settled"``.

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
import copy
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from server.api import deadline, metrics
from server.api.budget_request import BudgetRequest
from server.api.cut_stream import Outputs, cancel, continue_cut, cut_after, cut_kwargs, per_choice
from server.api.errors import APIError, bad_request
from server.api.serving import Serving
from server.budget.cut import Cut, still_thinking
from server.budget.machine import BudgetSpec, BudgetState, Phase
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
    if not has_format:
        return APIError(400, "this model has no thinking format, so thinking_early_stop "
                        "cannot cut its thinking; start the server with --thinking-format",
                        PARAM)
    if not isinstance(prompt, dict) or prompt.get("type", "token") != "token" or (
            "prompt_token_ids" not in prompt):
        return APIError(400, "thinking_early_stop needs a prompt of token ids (text); this "
                        "prompt has other inputs", PARAM)
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
    deadline, when the request has one too)."""
    at = (None if req.thinking_deadline_ms is None
          else req.arrival + req.thinking_deadline_ms / 1000)

    def make(p: Any, rid: str, choice: int, index: int) -> AsyncIterator[Any]:
        return _choice(original, serving, req, spec, prompt, p, rid, choice, at, args,
                       kwargs, index)

    return per_choice(params, spec, request_id, first_choice, make)


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


async def _choice(original: Callable[..., AsyncIterator[Any]], serving: Serving,
                  req: BudgetRequest, spec: BudgetSpec, prompt: dict, params: Any,
                  request_id: str, choice: int, at: float | None, args: tuple, kwargs: dict,
                  index: int) -> AsyncIterator[Any]:
    """One choice's outputs, in ``params.output_kind``, cut where its answer settled."""
    from vllm.sampling_params import RequestOutputKind

    every, agree = req.early_stop
    cap = serving.settings.max_probes_per_request
    engine_params = copy.copy(params)
    engine_params.output_kind = RequestOutputKind.DELTA
    out = Outputs(params.output_kind, index)
    state = BudgetState(spec)
    ids: list[int] = []  # every output id the engine sent
    held: list[tuple[int, Any]] = []  # (end position, output) not sent yet
    probes: list[Probe] = []
    req.probes[choice] = records = []
    target = every  # thinking tokens at the next probe
    stream = pending = cont = None
    finished = late = False
    cut: Cut | None = None

    def launch() -> None:
        nonlocal target
        if (len(probes) >= cap or state.phase != Phase.THINKING or state.thinking < target
                or (c := cut_after(spec, state, ids, params, "settled")) is None):
            return
        record = {"token": c.thinking, "output_index": len(ids), "answer": None}
        probe = Probe(len(ids), c, record)
        probe.task = asyncio.ensure_future(_probe(original, serving, req, prompt, c, probe,
                                                  f"{request_id}-probe{len(probes)}",
                                                  args, kwargs))
        probes.append(probe)
        records.append(record)
        target = (state.thinking // every + 1) * every

    try:
        if at is not None and deadline.now() >= at:
            late = True
            cut = cut_after(spec, state, [], params)
        if cut is None:
            stream = original(prompt, engine_params, request_id, *args, **kwargs)
        while cut is None:
            settled, hold = verdict(probes, agree)
            if settled is not None:
                cut = settled.cut
                for item in _send_until(settled.at, held, out, params, serving):
                    yield item
                break
            while held and (hold is None or held[0][0] <= hold):
                _, res = held.pop(0)
                if res.finished:  # nothing can settle before it: the rest are not needed
                    await _stop(probes)
                for item in out.add(res):
                    yield item
            if finished and not held:
                return
            if late and still_thinking(state) and (
                    cut := cut_after(spec, state, ids, params)) is not None:
                for item in _send_until(len(ids), held, out, params, serving):
                    yield item
                break
            waiting = {p.task for p in probes if not p.done}
            if not finished:
                pending = pending or asyncio.ensure_future(anext(stream))
                waiting.add(pending)
            timeout = (max(0.0, at - deadline.now()) if at is not None and not late
                       and still_thinking(state) else None)
            done, _ = await asyncio.wait(waiting, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                late = True
                continue
            for p in probes:
                if p.task in done:
                    p.done = True
                    if not p.task.cancelled() and p.task.exception() is not None:
                        logger.warning("answer probe %s failed: %r", p.record,
                                       p.task.exception())
            if pending is None or pending not in done:
                continue
            task, pending = pending, None
            try:
                res = task.result()
            except StopAsyncIteration:
                finished = True
                continue
            for tok in res.outputs[0].token_ids:
                ids.append(tok)
                state.observe(tok)
                launch()
            held.append((len(ids), res))
            finished = res.finished
            late = late or (at is not None and deadline.now() >= at)
        # The cut: abort the engine request and the probes, continue from the cut.
        if pending is not None:
            await cancel(pending)
            pending = None
        if stream is not None:
            await stream.aclose()
        await _stop(probes)
        req.cuts[choice] = cut
        if cut.reason == "deadline" and at is not None:
            metrics.DEADLINE_LATENESS.observe(max(0.0, deadline.now() - at))
        cont = continue_cut(original, serving, prompt, params, cut, out, request_id, args,
                            kwargs)
        async for item in cont:
            yield item
    finally:
        if pending is not None:  # the client left while we waited: abort the request
            await cancel(pending)
        await _stop(probes)
        for s in (stream, cont):
            if s is not None:
                await s.aclose()


async def _stop(probes: list[Probe]) -> None:
    """Abort the probes still out (their answers stay unknown: ``answer: null``)."""
    for p in probes:
        if not p.done and p.task is not None:
            await cancel(p.task)
            p.done = True


def _send_until(end: int, held: list[tuple[int, Any]], out: Outputs, params: Any,
                serving: Serving) -> list[Any]:
    """Send the held outputs up to output position ``end`` (the cut's), the one that
    straddles it cut short; drop the rest (generated past the cut, never sent)."""
    items: list[Any] = []
    for stop, res in held:
        start = stop - len(res.outputs[0].token_ids)
        if start >= end:
            break
        if stop > end:
            res = _head(res, end - start, out, params, serving)
        res.finished = False
        res.outputs[0].finish_reason = None
        items += out.add(res)
    held.clear()
    return items


def _head(res: Any, n: int, out: Outputs, params: Any, serving: Serving) -> Any:
    """An output cut short to its first ``n`` token ids (text, logprobs with them)."""
    comp = copy.copy(res.outputs[0])
    head = list(comp.token_ids[:n])
    decode = serving.model.tokenizer.decode
    skip = params.skip_special_tokens
    whole = decode(out.ids + head, skip_special_tokens=skip)
    comp.text = (whole[len(out.text):] if whole.startswith(out.text)
                 else decode(head, skip_special_tokens=skip))
    comp.token_ids = head
    if comp.logprobs is not None:
        comp.logprobs = comp.logprobs[:n]
        comp.cumulative_logprob = (out.cumulative or 0.0) + sum(
            lp[tok].logprob for lp, tok in zip(comp.logprobs, head, strict=True))
    comp.finish_reason = comp.stop_reason = None
    res = copy.copy(res)
    res.outputs = [comp]
    return res


def probe_params(serving: Serving) -> Any:
    """A probe's sampling: greedy, short, detokenized, one output at the end."""
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    return SamplingParams(n=1, temperature=0.0, max_tokens=serving.settings.probe_max_tokens,
                          output_kind=RequestOutputKind.DELTA, skip_special_tokens=True)


async def _probe(original: Callable[..., AsyncIterator[Any]], serving: Serving,
                 req: BudgetRequest, prompt: dict, cut: Cut, probe: Probe, request_id: str,
                 args: tuple, kwargs: dict) -> None:
    """Run one probe: its answer into ``probe.record``, its tokens into the request's
    ``probe_tokens`` and the metric as they come (an aborted probe's too)."""
    from vllm.inputs.engine import tokens_input

    ids = list(prompt["prompt_token_ids"]) + list(cut.prefix)
    stream = original(tokens_input(ids, cache_salt=prompt.get("cache_salt")),
                      probe_params(serving), request_id, *args, **cut_kwargs(kwargs))
    text = ""
    metrics.PROBES.inc()
    try:
        async for res in stream:
            comp = res.outputs[0]
            text += comp.text
            req.probe_tokens += len(comp.token_ids)
            metrics.PROBE_TOKENS.inc(len(comp.token_ids))
        probe.record["answer"] = normalise(text)
    finally:
        await stream.aclose()
