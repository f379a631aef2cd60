"""``thinking_waits`` and the empty continuation through the real server (demo model, greedy).

The Waits are counted on the raw output token ids (``return_token_ids``) with the demo
tokenizer, not with the server's replay; the ``budget`` object must then agree, on every
surface, streamed and not. With no string (Table 4's ablation) nothing marks a Wait in
the ids: the ids are compared with the harness loop run by hand through the same server.
The 400s name the field and say what to change.
"""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import DEMO_HEADERS as HEADERS
from tests.helpers import DEMO_Q as Q
from tests.helpers import count_runs
from tests.helpers import demo_chat as chat

pytestmark = pytest.mark.engine

MSG = [{"role": "user", "content": Q}]
PROMPT = f"<|im_start|>user\n{Q}<|im_end|>\n<|im_start|>assistant\n<|im_start|>think\n"


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from server.settings import DEMO_MODEL

    return AutoTokenizer.from_pretrained(str(DEMO_MODEL))


def post(server, path: str, body: dict) -> httpx.Response:
    body = {"model": "s1-demo", **body}  # Anthropic's Messages requires one
    return httpx.post(server.base_url + path, json=body, headers=HEADERS, timeout=120)


def thinking_ids(tok, ids: list[int]) -> list[int]:
    """The ids before the end delimiter, found by its ids, not by the server's machine."""
    end = tok.encode("<|im_start|>answer", add_special_tokens=False)
    at = next(i for i in range(len(ids)) if ids[i:i + len(end)] == end)
    return ids[:at]


@pytest.mark.parametrize("k", [1, 2, 4])
def test_exactly_k_waits_then_the_end(demo_server, tok, k):
    r = chat(demo_server, thinking_waits=k, return_token_ids=True)
    c = r["choices"][0]
    think = thinking_ids(tok, c["token_ids"])
    assert count_runs(think, tok.encode("Wait", add_special_tokens=False)) == k
    b = c["budget"]
    assert b["continuation_count"] == k and b["thinking_waits"] == k
    assert b["thinking_continuation"] == "Wait" and b["thinking_min"] is None
    assert b["end"] == "natural" and b["thinking_tokens"] == len(think)
    assert [m["output_index"] for m in b["continuations"]] == [
        i for i in range(len(think)) if tok.decode(think[i:i + 4]) == "Wait"]
    assert chat(demo_server, stream=True, thinking_waits=k)["choices"][0]["budget"] == b


def test_the_cap_wins_over_the_waits(demo_server):
    free = chat(demo_server, thinking_waits=1)["choices"][0]["budget"]
    cap = free["thinking_tokens"] - 1  # below where one Wait's thinking ends
    b = chat(demo_server, thinking_waits=4, thinking_max=cap)["choices"][0]["budget"]
    assert b["hit_max"] and b["end"] == "cut" and b["thinking_tokens"] == cap
    assert b["continuation_count"] < 4


def test_waits_and_a_minimum_both_hold(demo_server):
    one = chat(demo_server, thinking_waits=1)["choices"][0]["budget"]
    b = chat(demo_server, thinking_waits=1,
             thinking_min=one["thinking_tokens"] + 8)["choices"][0]["budget"]
    assert b["thinking_tokens"] >= one["thinking_tokens"] + 8 and b["continuation_count"] >= 2


@pytest.mark.parametrize("surface", ["completions", "responses", "messages"])
def test_every_surface_takes_the_count(demo_server, surface):
    expected = chat(demo_server, thinking_waits=2)["choices"][0]["budget"]
    if surface == "completions":
        r = post(demo_server, "/v1/completions", {"prompt": PROMPT, "temperature": 0,
                                                  "max_tokens": 400, "thinking_waits": 2})
        assert r.status_code == 200, r.text
        got = r.json()["choices"][0]["budget"]
        assert got["continuation_count"] == 2 and got["thinking_waits"] == 2
        return
    path, body = (("/v1/responses", {"input": Q, "temperature": 0, "thinking_waits": 2})
                  if surface == "responses" else
                  ("/v1/messages", {"messages": MSG, "max_tokens": 400, "temperature": 0,
                                    "thinking_waits": 2}))
    r = post(demo_server, path, body)
    assert r.status_code == 200, r.text
    assert r.json()["budget"] == expected


def test_empty_continuation_suppresses_only(demo_server, tok):
    natural = chat(demo_server)["choices"][0]["budget"]["thinking_tokens"]
    r = chat(demo_server, thinking_min=natural + 6, thinking_continuation="",
             return_token_ids=True)
    c = r["choices"][0]
    b = c["budget"]
    # the end came later, found on the raw ids; nothing was inserted (a "Wait" in the
    # thinking is the demo model's own: it learned to write one after a glance)
    assert len(thinking_ids(tok, c["token_ids"])) == b["thinking_tokens"] >= natural + 6
    assert b["end"] == "natural" and b["continuation_count"] == 0
    assert b["thinking_continuation"] == "" and b["continuations"] == []


def by_hand(server, prompt: list[int], k: int, stops: list[int], room: int) -> list[int]:
    """s1's harness loop for ``thinking_n_ignore=k`` with no string, run by hand through
    the same server without any budget: k + 1 greedy rounds that stop on the stop ids,
    each with ``min_tokens=1``; a round's stop id is dropped and nothing is appended.
    Returns the thinking ids (the last round's stop dropped too)."""
    thinking: list[int] = []
    for _ in range(k + 1):
        body = {"prompt": prompt + thinking, "max_tokens": room - len(thinking),
                "temperature": 0, "min_tokens": 1, "stop_token_ids": stops,
                "skip_special_tokens": False, "return_token_ids": True}
        resp = post(server, "/v1/completions", body)
        assert resp.status_code == 200, resp.text
        c = resp.json()["choices"][0]
        assert c["finish_reason"] == "stop", "the scenario did not occur: a round ran out"
        ids = c["token_ids"]
        thinking += ids[:-1] if ids and ids[-1] in stops else ids
    return thinking


@pytest.mark.parametrize("k", [1, 2, 4])
def test_no_string_ignores_the_end_k_times(demo_server, tok, k):
    """Table 4's "no string": the end is ignored k times and nothing is inserted; the ids
    are those of the harness loop run by hand, the Waits counted only where the ids back
    the number (thinking ended by the model itself: all k were suppressed)."""
    from tests.s1_reference import HarnessTokens

    stops = [ids[0] for ids in HarnessTokens.from_tokenizer(tok, ignore_str="").until_thinking_ids]
    prompt = tok.encode(PROMPT, add_special_tokens=False)
    expected = by_hand(demo_server, prompt, k, stops, 400)
    r = post(demo_server, "/v1/completions", {
        "prompt": prompt, "temperature": 0, "max_tokens": 400, "thinking_waits": k,
        "thinking_continuation": "", "return_token_ids": True})
    assert r.status_code == 200, r.text
    c = r.json()["choices"][0]
    think = thinking_ids(tok, c["token_ids"])
    assert think == expected
    b = c["budget"]
    assert b["continuation_count"] == k and b["continuations"] == []
    assert b["thinking_continuation"] == "" and b["thinking_waits"] == k
    assert b["end"] == "natural" and b["thinking_tokens"] == len(think)
    # Without the Waits the model ends earlier: the k suppressions are real.
    plain = by_hand(demo_server, prompt, 0, stops, 400)
    assert len(plain) < len(think)


def test_no_string_cut_by_the_cap_reports_no_count(demo_server, tok):
    """Cut at thinking_max before the Waits were all used: how many were suppressed is
    not in the ids, so the count is null (never a number the ids cannot back)."""
    free = chat(demo_server, thinking_waits=1, thinking_continuation="")["choices"][0]["budget"]
    b = chat(demo_server, thinking_waits=6, thinking_continuation="",
             thinking_max=free["thinking_tokens"] - 1)["choices"][0]["budget"]
    assert b["end"] == "cut" and b["hit_max"] and b["continuation_count"] is None
    assert b["continuations"] == []


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/responses",
                                  "/v1/messages"])
@pytest.mark.parametrize(("extra", "says"), [
    ({"thinking_waits": -1}, "greater than or equal to 0"),
    ({"thinking_waits": 1.5}, "integer"),
    ({"thinking_waits": 65}, "above this server's limit of 64"),
])
def test_bad_counts_are_400s_naming_the_field(demo_server, path, extra, says):
    body = {"prompt": PROMPT} if path == "/v1/completions" else (
        {"input": Q} if path == "/v1/responses" else {"messages": MSG})
    body.update(max_tokens=64, **extra)
    if path == "/v1/responses":
        body["max_output_tokens"] = body.pop("max_tokens")
    r = post(demo_server, path, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert says in err["message"] and err["param"] == "thinking_waits", err
