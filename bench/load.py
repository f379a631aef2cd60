"""Load generation over HTTP: request bodies, one streamed request, a closed-loop workload,
the correctness checks run once per server start, and the server-side TTFT histogram.

Streams are read with httpx-sse; only the events up to the first text and the usage
event are decoded as JSON, to keep the load generator's share of the cores small.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from bench.results import MAX_TOKENS, THINKING_MAX, RunResult, Sample, Workload
from bench.server_model import MODEL_NAME, ModelFacts
from bench.servers import OURS, RunningServer, ServerKind

REQUEST_TIMEOUT_S = 600.0


def new_session() -> httpx.AsyncClient:
    """A client with no connection limit (every simulated user has its own connection)."""
    return httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S,
                             limits=httpx.Limits(max_connections=None,
                                                 max_keepalive_connections=None))


def request_body(kind: ServerKind, messages: list[dict[str, str]], *, budget: bool,
                 stream: bool = True, max_tokens: int = MAX_TOKENS,
                 **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL_NAME, "messages": messages, "temperature": 0,
                            "max_tokens": max_tokens, "ignore_eos": True, **extra}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    if budget:
        body[kind.budget_field] = THINKING_MAX
    return body


def _has_text(payload: dict[str, Any]) -> bool:
    for choice in payload.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("reasoning") or delta.get("reasoning_content"):
            return True
    return False


async def stream_one(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> Sample:
    """One streamed request: time to the first event, to the first text, to the end."""
    started = time.perf_counter()
    ttft = ttfb = float("nan")
    usage: dict[str, Any] | None = None
    async with aconnect_sse(http, "POST", url, json=body) as source:
        resp = source.response
        if resp.status_code != 200:
            raise RuntimeError(f"HTTP {resp.status_code}: {(await resp.aread())[:300]!r}")
        async for event in source.aiter_sse():
            data = event.data
            if not data.startswith("{"):  # [DONE]
                continue
            if ttfb != ttfb:
                ttfb = time.perf_counter() - started
            if ttft != ttft and _has_text(json.loads(data)):  # still NaN: no token yet
                ttft = time.perf_counter() - started
            if '"completion_tokens"' in data:
                usage = json.loads(data).get("usage")
    latency = time.perf_counter() - started
    if not usage:
        raise RuntimeError("stream ended without a usage chunk")
    details = usage.get("completion_tokens_details") or {}
    return Sample(ttfb, ttft, latency, int(usage["completion_tokens"]),
                  int(details.get("reasoning_tokens") or 0))


async def scrape_ttft_histogram(http: httpx.AsyncClient,
                                server: RunningServer) -> dict[float, float]:
    """{upper bound: cumulative count} of vllm:time_to_first_token_seconds, all labels."""
    from prometheus_client.parser import text_string_to_metric_families

    text = (await http.get(server.base_url + "/metrics")).text
    out: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vllm:time_to_first_token_seconds_bucket":
                bound = float(sample.labels["le"])  # "+Inf" reads as inf
                out[bound] = out.get(bound, 0.0) + sample.value
    return out


async def run_workload(http: httpx.AsyncClient, server: RunningServer, work: Workload,
                       chats: list[list[dict[str, str]]]) -> RunResult:
    url = server.base_url + "/v1/chat/completions"
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(work.requests):
        queue.put_nowait(i)
    samples: list[Sample] = []
    errors: list[str] = []

    async def client() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = request_body(server.kind, chats[i % len(chats)], budget=work.budget)
            try:
                samples.append(await stream_one(http, url, body))
            except Exception as exc:  # recorded and reported, the run goes on
                errors.append(f"{type(exc).__name__}: {exc}")

    cpu_before = server.cpu_seconds()
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(work.concurrency)))
    wall = time.perf_counter() - started
    cpu_after = server.cpu_seconds()
    return RunResult(work, wall, samples, errors, cpu_after[0] - cpu_before[0],
                     cpu_after[1] - cpu_before[1])


async def post_json(http: httpx.AsyncClient, server: RunningServer,
                    body: dict[str, Any]) -> dict[str, Any]:
    resp = await http.post(server.base_url + "/v1/chat/completions", json=body)
    data = resp.json()
    if resp.status_code != 200:
        raise RuntimeError(f"{server.kind.label}: HTTP {resp.status_code}: {data}")
    return data


async def thinking_tokens(http: httpx.AsyncClient, server: RunningServer, facts: ModelFacts,
                          messages: list[dict[str, str]], budget: bool) -> int:
    """Thinking tokens generated by one greedy 256-token request.

    Ours reports the exact count in ``usage.completion_tokens_details.reasoning_tokens``;
    vLLM's server reports 0 there, so its count is the position of the first
    ``</think>`` id in the returned ``token_ids`` (all 256 when there is none).
    """
    extra = {"return_token_ids": True} if server.kind is not OURS else {}
    data = await post_json(http, server, request_body(server.kind, messages, budget=budget,
                                                      stream=False, **extra))
    if server.kind is OURS:
        return int(data["usage"]["completion_tokens_details"]["reasoning_tokens"])
    ids = data["choices"][0]["token_ids"]
    return ids.index(facts.think_end_id) if facts.think_end_id in ids else len(ids)


async def run_checks(http: httpx.AsyncClient, server: RunningServer, facts: ModelFacts,
                     chats: list[list[dict[str, str]]]) -> dict[str, Any]:
    """ignore_eos: with the end-of-turn token pushed to the top by logit_bias, a request
    must stop at once without ignore_eos and run to max_tokens with it. Budgets: the
    thinking length with and without the cap, on a few prompts."""
    bias = {"logit_bias": {str(facts.eos_id): 100}}
    honoured = []
    for ignore in (False, True):
        body = request_body(server.kind, chats[0], budget=False, stream=False, **bias)
        body["ignore_eos"] = ignore
        honoured.append(int((await post_json(http, server, body))["usage"]["completion_tokens"]))
    capped = [await thinking_tokens(http, server, facts, chats[i], True) for i in range(3)]
    free = [await thinking_tokens(http, server, facts, chats[i], False) for i in range(3)]
    return {"eos_tokens_without_ignore": honoured[0], "eos_tokens_with_ignore": honoured[1],
            "thinking_capped": capped, "thinking_free": free}
