"""Streaming details of the real server over loopback (the shared API server, tiny model).

Every streamed answer here is compared with the same request answered in one piece:
stop strings, ``n > 1``, streams without a usage chunk, characters whose bytes are split
across tokens, and clients that leave before the answer is complete.
"""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from tests.conftest import API_KEY as KEY
from tests.helpers import AUTH, MSG, post
from tests.server_proc import frozen_engine, wait_until
from tests.stream_reader import DONE, sse_events

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def server(api_server):
    return api_server


def stream(server, body: dict, path: str = "/v1/chat/completions") -> list[dict]:
    with httpx.stream("POST", server.base_url + path, headers=AUTH,
                      json={**body, "stream": True}, timeout=120) as resp:
        assert resp.status_code == 200, resp.read()
        events = sse_events(resp)
    assert events[-1] == DONE
    assert not any("error" in e for e in events), events
    return events[:-1]


def deltas(events: list[dict], index: int, field: str) -> list[str]:
    """The non-empty ``delta[field]`` pieces of choice ``index``, in order."""
    return [c["delta"][field] for e in events for c in e.get("choices", [])
            if c["index"] == index and c["delta"].get(field)]


def finishes(events: list[dict], index: int) -> list[str]:
    return [c["finish_reason"] for e in events for c in e.get("choices", [])
            if c["index"] == index and c.get("finish_reason")]


# ------------------------------------------------------------------- stop strings
# Seeded sampling, thinking cut at 4 tokens: the content is "Final Answer:" and then the model's
# own (random) tokens, one streamed delta per token.
STOP_BASE = {"messages": MSG, "temperature": 1, "seed": 3, "max_tokens": 48,
             "thinking_max": 4}


@pytest.fixture(scope="module")
def unstopped(server):
    """The answer without a stop string: its text and its per-token content deltas."""
    plain = post(server, "/v1/chat/completions", STOP_BASE).json()["choices"][0]
    events = stream(server, STOP_BASE)
    pieces = deltas(events, 0, "content")
    assert "".join(pieces) == plain["message"]["content"]
    assert "".join(deltas(events, 0, "reasoning")) == plain["message"]["reasoning"]
    return plain["message"], pieces


def _engine_text(message: dict, content_upto: str) -> str:
    """Everything the engine decoded before a point of the content (its stop-string check
    sees the thinking, the forced newline and delimiter text too)."""
    return message["reasoning"] + "\nanswer\n" + content_upto


def _pick_stop(message: dict, pieces: list[str], span: int) -> tuple[str, str]:
    """A stop string made of ``span`` consecutive content tokens after the answer prefix,
    whose first occurrence in the decoded text is there; and the content before it."""
    before = ""
    for i, piece in enumerate(pieces):
        if before.startswith("Final Answer:") and i + span <= len(pieces):
            stop = "".join(pieces[i:i + span])
            ok = (len(stop) >= 2 and stop.strip() == stop and stop.isprintable()
                  and all(p.strip() for p in pieces[i:i + span])
                  and stop not in _engine_text(message, before) + stop[:-1])
            if ok:
                return stop, before
        before += piece
    raise AssertionError(f"no {span}-token stop string candidate in {pieces}")


def _check_stop(server, stop: str, expected: str) -> None:
    body = {**STOP_BASE, "stop": [stop]}
    plain = post(server, "/v1/chat/completions", body).json()["choices"][0]
    assert plain["finish_reason"] == "stop"
    assert plain["message"]["content"] == expected
    events = stream(server, body)
    assert finishes(events, 0) == ["stop"]
    streamed = "".join(deltas(events, 0, "content"))
    assert "".join(deltas(events, 0, "reasoning")) == plain["message"]["reasoning"]
    assert streamed == expected, (streamed, expected)


def test_single_token_stop_string_streamed_and_not(server, unstopped):
    message, pieces = unstopped
    stop, before = _pick_stop(message, pieces, 1)
    _check_stop(server, stop, before)


def test_multi_token_stop_string_streamed_and_not(server, unstopped):
    message, pieces = unstopped
    stop, before = _pick_stop(message, pieces, 3)
    _check_stop(server, stop, before)


# --------------------------------------------------------------------- n > 1 streamed
def test_n2_streamed_matches_non_streamed(server):
    body = {"messages": MSG, "n": 2, "temperature": 1, "seed": 11, "max_tokens": 30,
            "thinking_min": 3, "thinking_max": 6}
    plain = post(server, "/v1/chat/completions", body).json()
    events = stream(server, {**body, "stream_options": {"include_usage": True}})
    assert events[-1]["choices"] == []
    assert events[-1]["usage"] == {k: v for k, v in plain["usage"].items() if v is not None}
    assert [c["index"] for c in plain["choices"]] == [0, 1]
    for choice in plain["choices"]:
        i = choice["index"]
        assert "".join(deltas(events, i, "reasoning")) == choice["message"]["reasoning"]
        assert "".join(deltas(events, i, "content")) == choice["message"]["content"]
        assert finishes(events, i) == [choice["finish_reason"]]
        roles = [c["delta"].get("role") for e in events for c in e.get("choices", [])
                 if c["index"] == i and c["delta"].get("role")]
        assert roles == ["assistant"]  # once per choice, on its first chunk
    # Two choices of one seeded request differ (vLLM seeds child i with seed + i).
    assert plain["choices"][0]["message"] != plain["choices"][1]["message"]


# ------------------------------------------------------------- streams without usage
def test_stream_without_include_usage_has_no_usage_chunk(server):
    body = {"messages": MSG, "temperature": 0, "max_tokens": 20, "thinking_max": 5}
    for options in (None, {"include_usage": False}):
        events = stream(server, body if options is None else {**body, "stream_options": options})
        assert all(e.get("usage") is None for e in events), events
        assert all(e["choices"] for e in events)  # no empty usage-only chunk either
        assert finishes(events, 0) == ["length"] or finishes(events, 0) == ["stop"]
        assert events[-1]["choices"][0]["finish_reason"] is not None  # the last chunk ends it
    with_usage = stream(server, {**body, "stream_options": {"include_usage": True}})
    assert with_usage[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 5


# ------------------------------------------------- characters split across tokens
def test_multibyte_characters_split_across_tokens_stream_whole(server, tiny_s1_open):
    """The continuation is forced token by token, and the tiny tokenizer has no merges for
    these characters: each is several byte tokens, so streamed deltas end mid-character
    unless the server holds incomplete bytes back."""
    from transformers import AutoTokenizer

    cont = "数😀"
    tok = AutoTokenizer.from_pretrained(tiny_s1_open)
    ids = tok.encode(cont, add_special_tokens=False)
    assert len(ids) > len(cont)  # split: more tokens than characters
    assert all("\ufffd" in tok.decode([i]) for i in ids)  # no token is a whole character
    end_id = tok.convert_tokens_to_ids("<|im_start|>")
    body = {"messages": MSG, "temperature": 0, "max_tokens": 120, "thinking_min": 12,
            "thinking_max": 60, "thinking_continuation": cont,
            "logit_bias": {str(end_id): 20}}  # every free step tries to end thinking
    plain = post(server, "/v1/chat/completions", body).json()["choices"][0]
    reasoning = plain["message"]["reasoning"]
    # Greedy, every free step tries to end: the block's first step is held (the model's next
    # choice is written), then guarded steps (the attempt becomes the len(ids)-token
    # continuation) and held ones alternate, until the 12-token minimum is passed.
    waits = -(-(12 - 1) // (len(ids) + 1))
    assert plain["budget"]["continuation_count"] == waits
    assert plain["budget"]["thinking_tokens"] == 1 + waits * (len(ids) + 1)
    assert reasoning.count(cont) >= waits
    events = stream(server, body)
    pieces = deltas(events, 0, "reasoning")
    # Equal texts: a delta cut inside a character would have put a U+FFFD replacement
    # character into the stream that the whole text does not have.
    assert "".join(pieces) == reasoning
    assert any(p.startswith(cont[0]) for p in pieces), pieces
    assert "".join(deltas(events, 0, "content")) == (plain["message"]["content"] or "")


# ------------------------------------------------ a client that leaves, not streamed
def _send_and_leave(server, body: dict) -> None:
    """POST ``body`` over a raw socket and close it without waiting for the answer."""
    data = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\n"
                     b"Authorization: Bearer " + KEY.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nContent-Length: "
                     + str(len(data)).encode() + b"\r\n\r\n" + data)


def chat_statuses(server) -> dict[str, float]:
    """s1_requests_total of the chat endpoint, by status."""
    text = httpx.get(server.base_url + "/metrics", timeout=30).text
    prefix = 's1_requests_total{endpoint="/v1/chat/completions",status="'
    return {line[len(prefix):].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith(prefix)}


def leave_and_wait(server, extra: dict | None = None
                   ) -> tuple[float, dict[str, float], dict[str, float]]:
    """A client sends a long non-streamed request (16 x 900 tokens) and leaves at once;
    wait until the server has ended and counted it. The engine core is frozen meanwhile, so
    it cannot finish the request first, however fast the machine. Returns the tokens the
    engine generated meanwhile, the statuses before and after."""
    tokens, before = server.metric("vllm:generation_tokens_total"), chat_statuses(server)
    with frozen_engine(server):
        _send_and_leave(server, {"messages": MSG, "max_tokens": 900, "ignore_eos": True,
                                 "n": 16, **(extra or {})})
        # The middleware counts a request once it has ended, whatever its status.
        wait_until(lambda: sum(chat_statuses(server).values()) == sum(before.values()) + 1,
                   120, "the request to end")
    wait_until(lambda: server.metric("vllm:num_requests_running") == 0
               and server.metric("s1_requests_in_flight") == 0, 60, "the engine to let go")
    return server.metric("vllm:generation_tokens_total") - tokens, before, chat_statuses(server)


# A plain request and one with logprobs (which once took another path).
PATHS = pytest.mark.parametrize("extra", [{}, {"logprobs": True}], ids=["plain", "logprobs"])


@PATHS
def test_non_streamed_client_disconnect_aborts_the_engine_request(server, extra):
    generated, _, _ = leave_and_wait(server, extra)
    assert server.metric("vllm:num_requests_waiting") == 0
    assert generated < 16 * 900  # it ended without all its tokens: aborted, not finished


@PATHS
def test_non_streamed_client_disconnect_is_not_a_server_error(server, extra):
    """Counted as 499 (nginx's "client closed request"), so disconnects stay out of the
    5xx alert of deploy/prometheus/alerts.yml; no exception in the log."""
    log_before = len(server.log_path.read_text())
    _, before, after = leave_and_wait(server, extra)
    grown = {code for code in after if after[code] != before.get(code, 0.0)}
    assert grown == {"499"}, grown
    assert "Exception in ASGI application" not in server.log_path.read_text()[log_before:]
