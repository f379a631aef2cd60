"""Runs a sweep against a server: concurrent requests, cached answers, a progress bar.

Each (question, setting) is one chat request through :class:`client.AsyncClient`
(retries on 429/503 and dropped connections come from the client). At most
``concurrency`` requests are in flight. Answers already in the cache are not
requested again. A ``waits=K`` setting is one request with ``thinking_waits = K``
(see :mod:`evals.settings`). A failed request is reported and left out of the
cache, so rerunning the same command retries only what is missing.

Thinking tokens come from ``usage.completion_tokens_details.reasoning_tokens``
(exact on s1-serve). Other OpenAI-compatible servers may omit it or send 0
while returning thinking text; then the completion tokens (thinking and
answer together) are used instead, an upper bound, and the record says so
(``thinking_source``). Control then measures that upper bound.

Each record also carries what budget forcing realised (Waits inserted, forced cut; see
:mod:`evals.realised`), and ``sample`` settings are independent draws for majority voting
(their own temperature, seed ``seed + i``; see :mod:`evals.parallel`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from client import AsyncClient, ChatResult, S1Error
from evals.baselines import REJECTION_TEMPERATURE, fits, prompt_for
from evals.benchmarks import Question
from evals.cache import Cache, Record, digest
from evals.realised import Realised, forced_cut, from_budget, server_budget
from evals.settings import Setting


class Progress(Protocol):
    def update(self, n: int = 1) -> Any: ...


@dataclass(frozen=True)
class RunConfig:
    """Everything besides the budget that shapes an answer (part of the cache signature)."""

    model: str | None = None
    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    thinking_cap: int | None = None
    system: str | None = None
    continuation: str | None = None  # thinking_continuation sent; None = the server's default
    sample_temperature: float = 0.7  # ``sample`` settings (majority voting)
    rejection_tries: int = 64  # ``rejection`` settings: samples per question at most

    def signature(self) -> str:
        sig = {"model": self.model, "temperature": self.temperature,
               "top_p": self.top_p, "seed": self.seed, "max_tokens": self.max_tokens,
               "thinking_cap": self.thinking_cap, "system": self.system}
        if self.continuation is not None:  # older caches (without the field) stay valid
            sig["continuation"] = self.continuation
        if self.sample_temperature != 0.7:
            sig["sample_temperature"] = self.sample_temperature
        if self.rejection_tries != 64:
            sig["rejection_tries"] = self.rejection_tries
        return digest(sig)


@dataclass
class SweepResult:
    """The records of the sweep (cached and new) and the requests that failed."""

    records: dict[tuple[str, str], Record] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    requested: int = 0  # requests actually sent (cache misses)


def thinking_tokens(result: ChatResult) -> tuple[int, str]:
    """Thinking tokens of a reply and where the number came from (see module doc)."""
    usage = result.raw.get("usage") or {}
    details = usage.get("completion_tokens_details") or {}
    exact = details.get("reasoning_tokens")
    if isinstance(exact, int) and (exact > 0 or not (result.reasoning or "").strip()):
        return exact, "reasoning_tokens"
    return result.usage.completion_tokens, "completion_tokens"


class Runner:
    """One client, one config, one cache; :meth:`run` does a whole sweep."""

    def __init__(self, client: AsyncClient, config: RunConfig, cache: Cache, *,
                 concurrency: int = 8, progress: Progress | None = None) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.client = client
        self.config = config
        self.cache = cache
        self.progress = progress
        self._slots = asyncio.Semaphore(concurrency)
        self._out = SweepResult()

    async def run(self, questions: list[Question], settings: list[Setting]) -> SweepResult:
        self._out = SweepResult()
        await asyncio.gather(*(self._one(q, s) for q in questions for s in settings))
        return self._out

    # ------------------------------------------------------------------ jobs
    async def _one(self, q: Question, s: Setting) -> None:
        if s.method in ("token_conditional", "step_conditional", "class_conditional"):
            await self._get(replace(q, prompt=prompt_for(s.method, s.value, q.prompt)), s,
                            None, self.config.thinking_cap)
        elif s.method == "rejection":
            await self._rejection(q, s)
        elif s.method == "thinking_max":
            await self._get(q, s, None, s.value)
        elif s.method in ("sample", "deadline", "early_stop"):
            await self._get(q, s, None, self.config.thinking_cap)
        elif s.method == "waits":  # s1's thinking_n_ignore, in one request
            await self._get(q, s, None, self.config.thinking_cap, waits=s.value or None)
        else:  # thinking_min
            await self._get(q, s, s.value, self.config.thinking_cap)

    async def _rejection(self, q: Question, s: Setting) -> None:
        """Draw with new seeds until the thinking fits ``s.value`` (see evals.baselines)."""
        prompt_hash = digest(q.prompt)
        cached = self.cache.get(q.id, s.key, prompt_hash)
        if cached is not None:
            self._keep(q, s, cached)
            return
        record: Record | None = None
        for attempt in range(self.config.rejection_tries):
            async with self._slots:
                self._out.requested += 1
                try:
                    result = await self._chat(q, None, s.value + 1, s, attempt=attempt)
                except S1Error as exc:
                    self._out.failures.append(f"{q.id} {s.key}: {exc}")
                    self._tick()
                    return
            tokens, source = thinking_tokens(result)
            record = Record(signature=self.cache.signature, question_id=q.id,
                            prompt_hash=prompt_hash, setting=s.key, method=s.method,
                            value=s.value, thinking_min=None, thinking_max=s.value + 1,
                            thinking_tokens=tokens, thinking_source=source,
                            completion_tokens=result.usage.completion_tokens,
                            finish_reason=result.finish_reason, answer=result.answer,
                            reasoning=result.reasoning, tries=attempt + 1)
            if fits(tokens, s.value):
                break
        if record is not None:
            self.cache.put(record)
            self._keep(q, s, record)

    # --------------------------------------------------------------- request
    async def _get(self, q: Question, s: Setting, tmin: int | None, tmax: int | None,
                   waits: int | None = None) -> Record | None:
        prompt_hash = digest(q.prompt)
        cached = self.cache.get(q.id, s.key, prompt_hash)
        if (cached is not None and cached.thinking_min == tmin and cached.thinking_max == tmax
                and cached.thinking_waits == waits):  # a chained record (older) is asked again
            if cached.realised_source != "server":  # derived from text: derive again, so
                # records cached before the derivation existed get it too
                cached = replace(cached, **self._realised(cached, s, None))
            self._keep(q, s, cached)
            return cached
        async with self._slots:
            self._out.requested += 1
            try:
                result = await self._chat(q, tmin, tmax, s, waits=waits)
            except S1Error as exc:
                self._out.failures.append(f"{q.id} {s.key}: {exc}")
                self._tick()
                return None
        tokens, source = thinking_tokens(result)
        record = Record(signature=self.cache.signature, question_id=q.id,
                        prompt_hash=prompt_hash, setting=s.key, method=s.method, value=s.value,
                        thinking_min=tmin, thinking_max=tmax, thinking_tokens=tokens,
                        thinking_source=source, completion_tokens=result.usage.completion_tokens,
                        finish_reason=result.finish_reason, answer=result.answer,
                        reasoning=result.reasoning, thinking_waits=waits,
                        probe_tokens=(result.usage.probe_tokens if s.method == "early_stop"
                                      else None))
        record = replace(record, **self._realised(record, s, server_budget(result.raw)))
        self.cache.put(record)
        self._keep(q, s, record)
        return record

    def _realised(self, record: Record, s: Setting,
                  budget: dict[str, Any] | None) -> dict[str, Any]:
        """waits_realised / forced_cut / realised_source (evals.realised), and for a
        ``waits`` setting whether an end was suppressed at all (``extended``)."""
        got: Realised | None = from_budget(budget) if budget is not None else None
        if got is None:
            exact = record.thinking_source == "reasoning_tokens"
            cut = forced_cut(record.thinking_tokens, record.thinking_max, exact)
            # nothing asked to extend the thinking: nothing can have been inserted
            none_asked = record.thinking_min is None and not record.thinking_waits
            got = Realised(0 if none_asked else None, cut, "text")
        extended = (None if s.method != "waits" or not s.value or got.waits is None
                    else got.waits > 0)
        return {"waits_realised": got.waits, "forced_cut": got.forced_cut,
                "realised_source": got.source, "extended": extended}

    async def _chat(self, q: Question, tmin: int | None, tmax: int | None,
                    s: Setting | None = None, attempt: int = 0,
                    waits: int | None = None) -> ChatResult:
        c = self.config
        temperature, seed = c.temperature, c.seed
        if s is not None and s.method == "sample":  # independent draws: own temperature, seed
            temperature, seed = c.sample_temperature, (c.seed or 0) + s.value
        elif s is not None and s.method == "rejection":  # a new seed per try
            temperature, seed = REJECTION_TEMPERATURE, (c.seed or 0) + attempt
        return await self.client.chat(q.prompt, model=c.model, system=c.system, thinking_min=tmin,
                                      thinking_max=tmax, thinking_waits=waits,
                                      temperature=temperature, top_p=c.top_p, seed=seed,
                                      max_tokens=c.max_tokens,
                                      thinking_continuation=(c.continuation if tmin or waits
                                                             else None),
                                      thinking_deadline_ms=s.value if s is not None
                                      and s.method == "deadline" else None,
                                      thinking_early_stop=(
                                          {"every": s.value, "agree": s.agree}
                                          if s is not None and s.method == "early_stop"
                                          else None))

    def _keep(self, q: Question, s: Setting, record: Record) -> None:
        self._out.records[(q.id, s.key)] = record
        self._tick()

    def _tick(self) -> None:
        if self.progress is not None:
            self.progress.update(1)
