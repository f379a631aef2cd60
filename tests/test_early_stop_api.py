"""thinking_early_stop through the real server (the shared demo-model server), greedy.

Each check is made from the raw token ids (vLLM's ``return_token_ids``): every probe the
budget object reports is asked again by hand, as a completion of the prompt ids + the
choice's ids up to the probe + the forced cut, greedy, and must give the same answer; the
cut must follow the first two agreeing probes, exactly as ``thinking_max`` cuts; the
answer after it is the settled one. The probe timing against the main request (held
outputs, aborted probes) is tested without an engine in tests/test_early_stop.py.
"""

from __future__ import annotations

import httpx
import pytest

from server.api.early_stop import normalise
from tests.conftest import DEMO_KEY
from tests.demo_api import MESSAGES, SURFACES, ids_of, post, streamed
from tests.server_proc import frozen_engine, wait_until

pytestmark = pytest.mark.engine

HEADERS = {"Authorization": f"Bearer {DEMO_KEY}"}
RASPBERRY = [{"role": "user", "content": "How many r in raspberry?"}]
EARLY = {"every": 4, "agree": 2}
PROBE_TOKENS = 16  # the server's default --probe-max-tokens


def ask_probe(server, prompt_ids: list[int], output: list[int], at: int) -> str:
    """A probe made by hand: the prompt, the output up to ``at`` and the forced cut
    (the newline unless the thinking ends with one, the end delimiter, the answer prefix),
    then greedy tokens; its normalised text."""
    nl = ids_of(server, "\n")
    forced = ([] if output[at - 1:at] == nl else nl) + ids_of(
        server, "<|im_start|>answer") + ids_of(server, "\nFinal Answer:")
    r = post(server, {"prompt": prompt_ids + output[:at] + forced, "temperature": 0,
                      "max_tokens": PROBE_TOKENS}, "/v1/completions")
    assert r.status_code == 200, r.text
    return normalise(r.json()["choices"][0]["text"])


def settle_at(probes: list[dict], agree: int) -> int:
    """The index of the probe that settled: the last of the first ``agree`` answered
    probes in a row with the same non-empty answer."""
    return next(i for i in range(agree - 1, len(probes))
                if all(q["answer"] is not None for q in probes[i - agree + 1:i + 1])
                and len({q["answer"] for q in probes[i - agree + 1:i + 1]}) == 1
                and probes[i]["answer"])


def check_settled(server, out: dict, agree: int) -> dict:
    """The chat answer ``out`` was cut where ``agree`` probes in a row agreed, and each
    reported probe is what the model answers there."""
    choice = out["choices"][0]
    b, ids = choice["budget"], choice["token_ids"]
    assert b["end"] == "settled" and not b["hit_max"], b
    probes = b["probes"]
    answered = [p for p in probes if p["answer"] is not None]
    for p in answered:
        assert ask_probe(server, out["prompt_token_ids"], ids, p["output_index"]) == \
            p["answer"], p
    settle = settle_at(probes, agree)
    at = probes[settle]
    assert len(answered) >= agree and b["cut"]["output_index"] == at["output_index"], b
    assert b["thinking_tokens"] == at["token"] and at["token"] % EARLY["every"] == 0
    assert all(p["answer"] is None for p in probes[settle + 1:])  # aborted at the cut
    # After the cut: exactly the forced tokens, then the settled answer (greedy).
    k = at["output_index"]
    end, prefix, nl = (ids_of(server, "<|im_start|>answer"),
                       ids_of(server, "\nFinal Answer:"), ids_of(server, "\n"))
    start = k + 1 if ids[k:k + 1] == nl and ids[k + 1:k + 1 + len(end)] == end else k
    assert ids[start:start + len(end) + len(prefix)] == end + prefix, ids
    assert end[0] not in ids[:k]
    assert normalise(choice["message"]["content"]) == "Final Answer: " + at["answer"]
    return b


def test_the_answer_settles_and_thinking_is_cut_there(demo_server):
    body = {"messages": RASPBERRY, "temperature": 0, "return_token_ids": True,
            "thinking_early_stop": EARLY}
    settled = demo_server.metric("s1_settled_cuts_total")
    spent = demo_server.metric("s1_probe_tokens_total")
    r = post(demo_server, body)
    assert r.status_code == 200, r.text
    out = r.json()
    b = check_settled(demo_server, out, EARLY["agree"])
    assert b["early_stop"] == EARLY
    usage = out["usage"]
    # Probes are not completion tokens; they are reported apart.
    ids = out["choices"][0]["token_ids"]
    assert usage["completion_tokens"] == len(ids)
    assert usage["completion_tokens_details"]["reasoning_tokens"] == b["thinking_tokens"]
    answered = sum(p["answer"] is not None for p in b["probes"])
    assert answered <= usage["probe_tokens"] <= len(b["probes"]) * PROBE_TOKENS
    assert demo_server.metric("s1_settled_cuts_total") == settled + 1
    assert demo_server.metric("s1_probe_tokens_total") == spent + usage["probe_tokens"]
    # The same request without early stop thinks longer (natural end, greedy).
    plain = post(demo_server, {"messages": RASPBERRY, "temperature": 0}).json()
    natural = plain["choices"][0]["budget"]
    assert natural["end"] == "natural" and natural["thinking_tokens"] > b["thinking_tokens"]
    assert "probe_tokens" not in plain["usage"] and natural["probes"] is None
    # Streamed: the same ids, budget object and answer; probe_tokens in the usage chunk.
    s = streamed(demo_server, body)
    choice = out["choices"][0]
    assert s["token_ids"] == ids and s["budget"] == b
    assert s["content"] == choice["message"]["content"]
    assert s["usage"]["probe_tokens"] >= answered
    assert s["usage"]["completion_tokens"] == len(ids)


def test_more_agreement_thinks_longer_and_still_settles_exactly(demo_server):
    body = {"messages": RASPBERRY, "temperature": 0, "return_token_ids": True,
            "thinking_early_stop": {"every": 4, "agree": 3}}
    r = post(demo_server, body)
    assert r.status_code == 200, r.text
    three = check_settled(demo_server, r.json(), 3)
    two = post(demo_server, {**body, "thinking_early_stop": EARLY}).json()
    assert three["thinking_tokens"] >= two["choices"][0]["budget"]["thinking_tokens"]


def test_the_minimum_holds_and_the_maximum_wins(demo_server):
    r = post(demo_server, {"messages": RASPBERRY, "temperature": 0, "thinking_min": 10,
                           "return_token_ids": True, "thinking_early_stop": EARLY})
    b = r.json()["choices"][0]["budget"]
    assert b["probes"][0]["token"] == 10, b  # the first probe at the minimum, then 12, 16
    assert [p["token"] for p in b["probes"][1:3]] == [12, 16][:len(b["probes"]) - 1]
    assert b["thinking_tokens"] >= 10
    r = post(demo_server, {"messages": RASPBERRY, "temperature": 0, "thinking_max": 6,
                           "thinking_early_stop": {"every": 8, "agree": 2}})
    b = r.json()["choices"][0]["budget"]
    assert (b["end"], b["thinking_tokens"], b["probes"]) == ("cut", 6, [])
    assert r.json()["usage"]["probe_tokens"] == 0


def test_sampled_choices_are_probed_each_on_its_own_with_logprobs(demo_server):
    """n = 3 sampled choices (seeded): each is probed and cut on its own, from its own ids;
    every token, the forced ones too, has its logprob; usage counts the choices' tokens,
    not the probes'."""
    body = {"messages": MESSAGES, "temperature": 1, "seed": 3, "n": 3, "logprobs": True,
            "return_token_ids": True, "thinking_early_stop": EARLY, "max_tokens": 80}
    r = post(demo_server, body)
    assert r.status_code == 200, r.text
    out = r.json()
    end, prefix, nl = (ids_of(demo_server, "<|im_start|>answer"),
                       ids_of(demo_server, "\nFinal Answer:"), ids_of(demo_server, "\n"))
    for c in out["choices"]:
        b, ids = c["budget"], c["token_ids"]
        assert len(c["logprobs"]["content"]) == len(ids)
        assert b["probes"] and b["probes"][0]["token"] == EARLY["every"], b
        if b["end"] == "settled":
            k = b["cut"]["output_index"]
            assert k == b["probes"][settle_at(b["probes"], EARLY["agree"])]["output_index"]
            start = k + 1 if ids[k:k + 1] == nl and ids[k + 1:k + 1 + len(end)] == end else k
            assert ids[start:start + len(end) + len(prefix)] == end + prefix, ids
    assert out["usage"]["completion_tokens"] == sum(len(c["token_ids"])
                                                    for c in out["choices"])
    assert out["usage"]["probe_tokens"] >= sum(
        p["answer"] is not None for c in out["choices"] for p in c["budget"]["probes"])


@pytest.mark.parametrize("path", list(SURFACES))
def test_every_surface_settles(demo_server, path):
    body = {**SURFACES[path], "temperature": 0, "thinking_early_stop": EARLY}
    body["max_output_tokens" if path == "/v1/responses" else "max_tokens"] = 80
    r = post(demo_server, body, path)
    assert r.status_code == 200, r.text
    out = r.json()
    b = out["choices"][0]["budget"] if path == "/v1/completions" else out["budget"]
    assert b["end"] == "settled" and b["early_stop"] == EARLY, b
    assert b["probes"] and out["usage"]["probe_tokens"] >= 2
    streamed = {**body, "stream": True}
    if path == "/v1/completions":  # usage comes only when asked for
        streamed["stream_options"] = {"include_usage": True}
    with httpx.stream("POST", demo_server.base_url + path, headers=HEADERS,
                      json=streamed, timeout=300) as s:
        assert s.status_code == 200
        text = "".join(s.iter_text())
    assert '"end":"settled"' in text and '"probe_tokens":' in text, text[-2000:]


@pytest.mark.parametrize(("value", "what"), [
    ({"every": 0, "agree": 2}, "greater than or equal to 1"),
    ({"every": 4, "agree": 1}, "at least 2"),
    ({"every": -1, "agree": 2}, "greater than or equal"),
    ({"every": 4, "agree": 2.5}, "integer"),
    ({"every": 4, "agree": 65}, "--max-probes-per-request"),
    ({"every": 10**6, "agree": 2}, "context"),
    ({"every": 4}, "required"),
    ("4,2", "dictionary")])
def test_bad_early_stops_are_400s(demo_server, value, what):
    r = post(demo_server, {"messages": MESSAGES, "thinking_early_stop": value})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "thinking_early_stop" and what in err["message"], err


def test_early_stop_with_beam_search_is_a_400(demo_server):
    r = post(demo_server, {"messages": MESSAGES, "use_beam_search": True, "n": 2,
                           "thinking_early_stop": EARLY})
    assert r.status_code == 400 and r.json()["error"]["param"] == "use_beam_search", r.text


def test_a_client_that_leaves_aborts_the_request_and_its_probes(demo_server):
    """A client that leaves while its request waits for the engine: the server drops it,
    and once the engine runs again nothing of its 900 tokens is generated past a step.
    The engine is frozen while the client leaves, so this holds at any machine speed (a
    client reading along could be outrun by the engine, which streams into the socket
    buffers ahead of it). Leaving in the middle of a probe is tests/test_early_stop.py's
    scripted case."""
    generated = demo_server.metric("vllm:generation_tokens_total")
    body = {"messages": MESSAGES, "max_tokens": 900, "ignore_eos": True, "stream": True,
            "temperature": 0, "thinking_early_stop": {"every": 2, "agree": 50}}
    with frozen_engine(demo_server):
        with httpx.stream("POST", demo_server.base_url + "/v1/chat/completions",
                          headers=HEADERS, json=body, timeout=300) as r:
            assert r.status_code == 200
            wait_until(lambda: demo_server.metric("s1_requests_in_flight") == 1, 120,
                       "the request to be admitted")
        wait_until(lambda: demo_server.metric("s1_requests_in_flight") == 0, 120,
                   "the server to see the client leave")
    wait_until(lambda: demo_server.metric("vllm:num_requests_running")
               + demo_server.metric("vllm:num_requests_waiting") == 0, 120,
               "the engine to drop the request and its probes")
    assert demo_server.metric("vllm:generation_tokens_total") - generated < 900
