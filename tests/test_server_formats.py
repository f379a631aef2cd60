"""A custom thinking format and the three s1 rules switched off, end to end.

One server on the tiny s1 model (its template does not open a block) with
``--thinking-format custom`` (start, end and answer prefix of our own) and
``--no-newline-before-forced-end --no-end-of-turn-ends-thinking
--no-hold-after-continuation``: the flags must reach the engine's processor, which is
checked on the raw token ids the engine wrote (``return_token_ids``). The rules
themselves are unit-tested in tests/test_budget.py.
"""

from __future__ import annotations

import httpx
import pytest

from tests.server_proc import ServerProcess

pytestmark = pytest.mark.engine

MSG = [{"role": "user", "content": "How many r in raspberry?"}]
START, END, PREFIX = "<reasoning>", "</reasoning>", "\nSo:"


@pytest.fixture(scope="module")
def server(tiny_s1):
    proc = ServerProcess(tiny_s1, "--served-model-name", "tiny", "--thinking-format", "custom",
                         "--thinking-start", START, "--thinking-end", END,
                         "--answer-prefix", PREFIX, "--no-newline-before-forced-end",
                         "--no-end-of-turn-ends-thinking", "--no-hold-after-continuation")
    try:
        yield proc.wait_ready()
    finally:
        assert proc.stop() == 0


def ids_of(server, text: str) -> list[int]:
    r = httpx.post(server.base_url + "/tokenize", timeout=60, json={
        "model": "tiny", "prompt": text, "add_special_tokens": False})
    return r.json()["tokens"]


def chat(server, **body) -> dict:
    """The first choice, with the response's prompt_token_ids."""
    r = httpx.post(server.base_url + "/v1/chat/completions", timeout=120, json={
        "model": "tiny", "messages": MSG, "temperature": 0, "return_token_ids": True, **body})
    assert r.status_code == 200, r.text
    return {**r.json()["choices"][0], "prompt_token_ids": r.json()["prompt_token_ids"]}


def test_the_format_is_listed(server):
    card = httpx.get(server.base_url + "/v1/models", timeout=30).json()["data"][0]
    assert card["thinking_format"] == "custom"


def test_cut_writes_the_custom_end_and_prefix_without_a_newline(server):
    """The server opened the block with START (the prompt shows it); at thinking_max the
    engine wrote END and PREFIX right after the fifth token: no newline before a forced end,
    though the thinking does not end with one (newlines are banned here)."""
    nl = ids_of(server, "\n")
    c = chat(server, thinking_max=5, max_tokens=40, logit_bias={str(nl[0]): -100})
    ids, end, prefix = c["token_ids"], ids_of(server, END), ids_of(server, PREFIX)
    assert ids[5:5 + len(end)] == end, ids
    assert ids[5 + len(end):5 + len(end) + len(prefix)] == prefix, ids
    assert nl[0] not in ids[:5]
    assert c["prompt_token_ids"][-len(ids_of(server, START)):] == ids_of(server, START)
    b = c["budget"]
    assert (b["thinking_tokens"], b["end"], b["cut"]["output_index"]) == (5, "cut", 5)


def test_no_hold_after_continuation_guards_every_step(server):
    """The model tries to end at every step. Without the hold, every step below the
    minimum is guarded, so the thinking is Waits only (with it, held steps would write the
    model's own tokens between them)."""
    end = ids_of(server, END)
    wait = ids_of(server, "Wait")
    c = chat(server, thinking_min=6, thinking_max=30, max_tokens=70,
             logit_bias={str(end[0]): 20})
    ids = c["token_ids"]
    k = ids.index(end[0])
    waits = -(-6 // len(wait))  # continuations until the minimum is reached
    assert ids[:k] == wait * waits, ids
    assert ids[k:k + len(end)] == end
    b = c["budget"]
    assert (b["continuation_count"], b["thinking_tokens"], b["end"]) == (
        waits, waits * len(wait), "natural")


def test_end_of_turn_inside_thinking_ends_the_turn(server):
    """Without --end-of-turn-ends-thinking, an end of turn inside the block (above any
    minimum) ends the turn there: no end delimiter, no answer."""
    im_end = ids_of(server, "<|im_end|>")
    c = chat(server, thinking_max=20, max_tokens=60, logit_bias={str(im_end[0]): 20})
    ids = c["token_ids"]
    assert ids_of(server, END)[0] not in ids and ids[-1] == im_end[0], ids
    assert c["finish_reason"] == "stop"
    assert c["budget"]["end"] == "end_of_turn" and not c["message"]["content"]
