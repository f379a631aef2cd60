"""thinking_deadline_ms through the real server (the shared demo-model server).

The cut is made deterministic by the clock's side: with a deadline of 0 the choice is cut
before its first token; with a short one the engine core is frozen (SIGSTOP) until the
cut has been made, so no thinking token can come first however fast the machine. The raw
token ids (vLLM's ``return_token_ids``) must show the cut exactly as at ``thinking_max``:
no thinking token, then the end delimiter and the answer prefix. The cut at a later token
(a fake clock, the minimum, the maximum, the splice of every output kind) is tested
without an engine in tests/test_deadline.py.
"""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.demo_api import HEADERS, MESSAGES, SURFACES, ids_of, post, streamed
from tests.server_proc import engine_core, wait_until

pytestmark = pytest.mark.engine

def check_cut_at_zero(server, ids: list[int], budget: dict) -> None:
    forced = ids_of(server, "<|im_start|>answer") + ids_of(server, "\nFinal Answer:")
    # The prompt opens the block on a new line: no newline is forced before the delimiter.
    assert ids[:len(forced)] == forced, ids
    assert budget["thinking_tokens"] == 0 and budget["end"] == "deadline"
    assert budget["cut"]["token"] == 0 and budget["cut"]["output_index"] == 0
    assert not budget["hit_max"]


def test_a_deadline_of_zero_cuts_before_the_first_token(demo_server):
    body = {"messages": MESSAGES, "temperature": 1, "seed": 3, "n": 2, "logprobs": True,
            "return_token_ids": True, "thinking_deadline_ms": 0, "max_tokens": 60}
    before = demo_server.metric("s1_deadline_cuts_total")
    r = post(demo_server, body)
    assert r.status_code == 200, r.text
    out = r.json()
    for c in out["choices"]:
        check_cut_at_zero(demo_server, c["token_ids"], c["budget"])
        assert c["budget"]["deadline"] == 0
        assert c["message"]["content"].startswith("Final Answer:")
        assert not c["message"].get("reasoning")
        # Every token has its logprob, the forced ones included (as prompt logprobs).
        assert len(c["logprobs"]["content"]) == len(c["token_ids"])
    assert out["usage"]["completion_tokens"] == sum(len(c["token_ids"]) for c in out["choices"])
    assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    assert demo_server.metric("s1_deadline_cuts_total") == before + 2


def test_a_held_engine_cuts_at_the_deadline_streamed_as_not(demo_server):
    """The engine frozen while the deadline passes: the original request is aborted, the
    continuation waits for the engine; streamed and non-streamed answers agree."""
    body = {"messages": MESSAGES, "temperature": 1, "seed": 7, "return_token_ids": True,
            "thinking_deadline_ms": 50, "max_tokens": 60}
    results: dict[str, object] = {}

    def run(name: str, fn, *args) -> threading.Thread:
        t = threading.Thread(target=lambda: results.__setitem__(name, fn(*args)))
        t.start()
        return t

    core = engine_core(demo_server.proc)
    cuts = demo_server.metric("s1_deadline_lateness_seconds_count")
    core.suspend()
    try:
        threads = [run("plain", post, demo_server, body), run("streamed", streamed,
                                                              demo_server, body)]
        wait_until(lambda: demo_server.metric("s1_deadline_lateness_seconds_count")
                   == cuts + 2, 120, "both requests to be cut at their deadline")
    finally:
        core.resume()
    for t in threads:
        t.join(300)
    plain = results["plain"]
    assert plain.status_code == 200, plain.text
    choice = plain.json()["choices"][0]
    check_cut_at_zero(demo_server, choice["token_ids"], choice["budget"])
    s = results["streamed"]
    assert s["token_ids"] == choice["token_ids"] and s["budget"] == choice["budget"]
    assert s["content"] == choice["message"]["content"]
    assert s["usage"]["completion_tokens"] == len(s["token_ids"])


def test_the_minimum_holds_and_the_maximum_wins(demo_server):
    r = post(demo_server, {"messages": MESSAGES, "temperature": 0, "thinking_min": 16,
                           "thinking_deadline_ms": 0, "return_token_ids": True})
    b, ids = r.json()["choices"][0]["budget"], r.json()["choices"][0]["token_ids"]
    assert b["end"] == "deadline" and b["thinking_tokens"] >= 16, b
    # From the raw ids: k thinking tokens, maybe the forced newline, the delimiter, the prefix.
    k, end = b["thinking_tokens"], ids_of(demo_server, "<|im_start|>answer")
    prefix, nl = ids_of(demo_server, "\nFinal Answer:"), ids_of(demo_server, "\n")
    at = k + 1 if ids[k:k + 1] == nl and ids[k + 1:k + 1 + len(end)] == end else k
    assert ids[at:at + len(end) + len(prefix)] == end + prefix, ids
    assert end[0] not in ids[:k] and b["cut"]["output_index"] == k
    assert b["thinking_tokens"] == r.json()["usage"]["completion_tokens_details"][
        "reasoning_tokens"]
    r = post(demo_server, {"messages": MESSAGES, "temperature": 0, "thinking_max": 6,
                           "thinking_deadline_ms": 600_000})
    b = r.json()["choices"][0]["budget"]
    assert (b["end"], b["thinking_tokens"], b["deadline"]) == ("cut", 6, 600_000)


@pytest.mark.parametrize(("value", "what"), [(-1, "greater than or equal"),
                                             (600_001, "above this server's limit"),
                                             (1.5, "integer")])
def test_bad_deadlines_are_400s(demo_server, value, what):
    r = post(demo_server, {"messages": MESSAGES, "thinking_deadline_ms": value})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "thinking_deadline_ms" and what in err["message"], err


def test_a_client_that_leaves_aborts_everything(demo_server):
    """Cut while the engine is frozen, then the client leaves, still while it is frozen:
    both the aborted request and its continuation are aborted before the engine runs a
    step, so it generates nothing (without the aborts: 900 tokens, ignore_eos)."""
    core = engine_core(demo_server.proc)
    cuts = demo_server.metric("s1_deadline_lateness_seconds_count")
    generated = demo_server.metric("vllm:generation_tokens_total")
    body = {"messages": MESSAGES, "thinking_deadline_ms": 20, "max_tokens": 900,
            "ignore_eos": True, "stream": True}
    core.suspend()
    try:
        with httpx.stream("POST", demo_server.base_url + "/v1/chat/completions",
                          headers=HEADERS, json=body, timeout=300) as r:
            assert r.status_code == 200, r.read()
            wait_until(lambda: demo_server.metric("s1_deadline_lateness_seconds_count")
                       == cuts + 1, 120, "the cut")
        wait_until(lambda: demo_server.metric("s1_requests_in_flight") == 0, 120,
                   "the server to see the client leave")
    finally:
        core.resume()
    wait_until(lambda: demo_server.metric("vllm:num_requests_running")
               + demo_server.metric("vllm:num_requests_waiting") == 0, 120,
               "the engine to drop both requests")
    assert demo_server.metric("vllm:generation_tokens_total") == generated


@pytest.mark.parametrize("path", list(SURFACES))
def test_every_surface_is_cut(demo_server, path):
    """Streamed and not, on the other surfaces: the budget object says the deadline cut."""
    body = {**SURFACES[path], "thinking_deadline_ms": 0, "temperature": 0}
    r = post(demo_server, body, path)
    assert r.status_code == 200, r.text
    out = r.json()
    b = out["choices"][0]["budget"] if path == "/v1/completions" else out["budget"]
    assert (b["end"], b["thinking_tokens"], b["deadline"]) == ("deadline", 0, 0), b
    if path == "/v1/completions":
        assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
        assert "Final Answer:" in out["choices"][0]["text"]
    with httpx.stream("POST", demo_server.base_url + path, headers=HEADERS,
                      json={**body, "stream": True}, timeout=300) as s:
        assert s.status_code == 200
        text = "".join(s.iter_text())
    assert '"end":"deadline"' in text, text[-2000:]
