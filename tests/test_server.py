"""The real server over loopback, driven by httpx and the official openai SDK.

The model is a random tiny Qwen2 whose chat template opens an s1 thinking block,
so the text is gibberish but every budget is checkable token by token.
"""

from __future__ import annotations

import asyncio
import json
import re
from contextlib import ExitStack

import httpx
import openai
import pytest
from httpx_sse import EventSource, connect_sse

from tests.conftest import API_EFFORTS
from tests.conftest import API_KEY as KEY
from tests.conftest import API_MODEL as MODEL
from tests.helpers import AUTH, MSG, post
from tests.server_proc import frozen_engine, wait_until
from tests.stream_reader import DONE, sse_events, stream_post

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def server(api_server):
    return api_server


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def end_token_id(tiny_s1_open) -> int:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_s1_open).convert_tokens_to_ids("<|im_start|>")


# ------------------------------------------------------------------ budgets
def test_startup_health_was_503_then_200(tiny_s1_open):
    """The port opens before the engine has loaded (the load is held back until the test
    has asked): /health says loading, generation is refused with a retry hint."""
    from tests.server_proc import ServerProcess

    server = ServerProcess(tiny_s1_open, hold_load=True, name="loading")
    try:
        server.wait_port()
        health = httpx.get(server.base_url + "/health", timeout=30)
        chat = httpx.post(server.base_url + "/v1/chat/completions", timeout=30,
                          json={"messages": [{"role": "user", "content": "hi"}]})
        assert health.status_code == 503 and health.json()["status"] == "loading"
        assert chat.status_code == 503 and chat.headers["retry-after"] == "5", chat.text
        assert "loading" in chat.json()["error"]["message"]
        # The server counted those answers itself.
        assert server.metric("s1_requests_total", endpoint="/health", status="503") >= 1
        server.release_load()
        server.wait_ready()
        r = httpx.get(server.base_url + "/health")
        assert r.status_code == 200 and r.content == b""  # vLLM's own /health once loaded
    finally:
        server.stop()


@pytest.mark.parametrize("n_think", [0, 1, 7, 20])
def test_exact_budget_openai_sdk(oai, n_think):
    r = oai.chat.completions.create(
        model=MODEL, messages=MSG, temperature=0, max_tokens=n_think + 40,
        extra_body={"thinking_min": n_think, "thinking_max": n_think})
    choice = r.choices[0]
    assert r.usage.completion_tokens_details.reasoning_tokens == n_think
    # A forced end is followed by the answer prefix; the content starts there.
    assert choice.message.content.startswith("Final Answer:")
    extra = choice.message.model_extra
    assert "Final Answer" not in (extra["reasoning"] or "")  # None: only newlines (greedy)
    assert "reasoning_content" not in extra  # vLLM's field is reasoning, and only that


def test_max_only_caps_thinking(oai):
    for hi in (3, 12):
        r = oai.chat.completions.create(model=MODEL, messages=MSG, temperature=1, seed=3,
                                        extra_body={"max_thinking_tokens": hi})
        assert r.usage.completion_tokens_details.reasoning_tokens <= hi


def test_min_extends_thinking_with_continuation(server, oai, end_token_id):
    before = server.metric("s1_forced_continuations_total")
    r = oai.chat.completions.create(
        model=MODEL, messages=MSG, temperature=0, max_tokens=80,
        logit_bias={str(end_token_id): 20},  # the model now tries to stop at once
        extra_body={"thinking_min": 12, "thinking_max": 30})
    reasoning = r.choices[0].message.model_extra["reasoning"]
    thinking = r.usage.completion_tokens_details.reasoning_tokens
    assert 12 <= thinking <= 30
    assert "Wait" in reasoning
    after = server.metric("s1_forced_continuations_total")
    # Greedy with the end token favoured, every step is an end attempt. Under the s1
    # rules the steps alternate: held (the attempt is masked, the model's next choice is
    # written: the block's first token, and after each Wait) and guarded (the attempt
    # becomes Wait), until 12 thinking tokens: 6 forced Waits, counted once, in the API
    # process; the step after the last Wait is held too, so thinking ends at 13. The
    # model may write "Wait" itself at held steps: those are not forced.
    assert thinking == 13
    assert after - before == 6
    assert reasoning.count("Wait") >= 6


def test_streaming_matches_non_streaming(server):
    body = {"model": MODEL, "messages": MSG, "temperature": 0, "max_tokens": 40,
            "thinking_max": 9, "thinking_min": 4}
    plain = post(server, "/v1/chat/completions", body).json()
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", headers=AUTH,
                      json={**body, "stream": True, "stream_options": {"include_usage": True}},
                      timeout=120) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = sse_events(resp)
    assert events[-1] == DONE
    usage = events[-2]["usage"]
    assert usage == {k: v for k, v in plain["usage"].items() if v is not None}
    reasoning = "".join(e["choices"][0]["delta"].get("reasoning", "")
                        for e in events if e.get("choices"))
    content = "".join(e["choices"][0]["delta"].get("content", "")
                      for e in events if e.get("choices"))
    msg = plain["choices"][0]["message"]
    # (vLLM's null for an empty text is "" streamed)
    assert reasoning == (msg["reasoning"] or "") and content == (msg["content"] or "")
    finishes = [e["choices"][0]["finish_reason"] for e in events
                if e.get("choices") and e["choices"][0].get("finish_reason")]
    assert finishes == [plain["choices"][0]["finish_reason"]]


def test_openai_sdk_streaming(oai):
    stream = oai.chat.completions.create(
        model=MODEL, messages=MSG, temperature=0, max_tokens=30, stream=True,
        stream_options={"include_usage": True}, extra_body={"thinking_max": 5, "thinking_min": 5})
    usage = None
    content = ""
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            content += c.delta.content or ""
    assert usage.completion_tokens_details.reasoning_tokens == 5
    assert content.startswith("Final Answer:")


def test_n2_each_choice_has_its_own_budget(server):
    r = post(server, "/v1/chat/completions", {
        "model": MODEL, "messages": MSG, "n": 2, "temperature": 1, "seed": 5,
        "max_tokens": 40, "thinking_min": 6, "thinking_max": 6}).json()
    assert len(r["choices"]) == 2
    assert r["usage"]["completion_tokens_details"]["reasoning_tokens"] == 12
    assert all(c["message"]["content"].startswith("Final Answer:") for c in r["choices"])


def test_completions_endpoint(server):
    r = post(server, "/v1/completions", {
        "model": MODEL, "prompt": "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        "<|im_start|>think\n", "max_tokens": 30, "temperature": 0,
        "thinking_max": 4, "thinking_min": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 4
    choice = body["choices"][0]
    assert choice["budget"]["thinking_tokens"] == 4 and choice["budget"]["hit_max"]
    # vLLM's completion class has no reasoning parser: the text keeps the thinking, the
    # delimiter (its special token skipped) and the forced answer prefix.
    assert choice["text"].split("answer\n", 1)[1].startswith("Final Answer:")


def test_models_and_unknown_fields(server):
    r = httpx.get(server.base_url + "/v1/models", headers=AUTH).json()
    assert r["data"][0]["id"] == MODEL and r["data"][0]["thinking_format"] == "s1"
    # An unknown field is a 400 naming it and the closest known one (OpenAI's behaviour);
    # --no-reject-unknown-fields restores vLLM's warn-and-ignore (tests/test_server_settings).
    r = post(server, "/v1/chat/completions", {"model": MODEL, "messages": MSG, "max_tokens": 5,
                                              "temprature": 0})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "temprature" and "did you mean 'temperature'" in err["message"]
    r = post(server, "/v1/chat/completions", {"model": MODEL, "messages": MSG, "max_tokens": 5,
                                              "user": "u-1", "metadata": {"k": "v"}})
    assert r.status_code == 200, r.text  # OpenAI bookkeeping that changes nothing


def test_default_max_tokens_leaves_room_for_answer(server):
    r = post(server, "/v1/chat/completions", {"model": MODEL, "messages": MSG, "temperature": 0,
                                              "thinking_max": 10, "thinking_min": 10}).json()
    # thinking_max + forced delimiter/prefix + answer allowance: the answer is not starved.
    assert r["usage"]["completion_tokens"] > 10 + 8


# ------------------------------------------------------------------- errors
@pytest.mark.parametrize("body,param,pattern", [
    ({"thinking_min": 5, "thinking_max": 3}, "thinking_min", "larger than thinking_max"),
    ({"thinking_max": -1}, "thinking_max", "greater than or equal to 0"),
    ({"thinking_max": 2.5}, "thinking_max", "integer"),
    ({"thinking_min": "5"}, "thinking_min", "integer"),
    ({"thinking_max": 50, "max_tokens": 40}, "max_tokens", "no room for an answer"),
    ({"max_thinking_tokens": 5, "thinking_max": 6}, "max_thinking_tokens", "conflicts"),
    ({"temperature": -1}, "temperature", "temperature"),
    # vLLM's own checks (its serving class answers; it names no parameter for these)
    ({"n": 0}, None, "n must be at least 1"),
    ({"messages": []}, None, "empty conversation"),
    ({"logit_bias": {"abc": 1}}, "logit_bias", "token ids"),
    ({"max_tokens": 100000}, "max_tokens", "max_model_len"),
])
def test_bad_parameters_are_400_with_param(server, body, param, pattern):
    r = post(server, "/v1/chat/completions", {"model": MODEL, "messages": MSG, **body})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "BadRequestError"
    assert re.search(pattern, err["message"]), err["message"]
    assert r.headers.get("x-request-id")


def test_sdk_raises_bad_request(oai):
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=MODEL, messages=MSG,
                                    extra_body={"thinking_min": 9, "thinking_max": 1})
    assert "thinking_min" in str(info.value)


def test_unknown_model_is_404(server, oai):
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="nope", messages=MSG)


def test_auth(server):
    """vLLM's own key check: the /v1/... paths, vLLM's answer."""
    r = httpx.post(server.base_url + "/v1/chat/completions", json={"messages": MSG})
    assert r.status_code == 401 and r.json() == {"error": "Unauthorized"}
    r = httpx.post(server.base_url + "/v1/chat/completions", json={"messages": MSG},
                   headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert httpx.get(server.base_url + "/health").status_code == 200  # exempt
    assert httpx.get(server.base_url + "/metrics").status_code == 200
    # Not under /v1, so open, as on `vllm serve`.
    assert httpx.post(server.base_url + "/tokenize", json={"prompt": "hi"}).status_code == 200


def test_prompt_longer_than_context_is_400(server):
    body = {"messages": [{"role": "user", "content": "raspberry " * 3000}]}
    assert len(json.dumps(body)) < 65536  # under the body limit: the context refuses it
    r = post(server, "/v1/chat/completions", body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "input_text"  # vLLM's name for the rendered prompt


def test_prompt_over_context_within_body_limit_is_400(server):
    r = post(server, "/v1/completions", {"prompt": "raspberry strawberry " * 800})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input_text"  # as vLLM


def test_oversized_body_is_413(server):
    r = post(server, "/v1/chat/completions",
             {"messages": [{"role": "user", "content": "x" * 70000}]})
    assert r.status_code == 413 and "error" in r.json()


def test_malformed_json_is_400(server):
    r = httpx.post(server.base_url + "/v1/chat/completions", content=b"{not json",
                   headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()


# --------------------------------------------------------------- concurrency
def test_disconnect_aborts_engine_request(server):
    """A streaming client that leaves mid-stream: the engine request is aborted, not run
    to its 16 x 900 tokens, and the in-flight slot is released. The engine core is frozen
    from the third event until the server has let the request go, so it cannot finish
    the request meanwhile, however fast the machine."""
    tokens_before = server.metric("vllm:generation_tokens_total")
    with ExitStack() as frozen, httpx.Client(base_url=server.base_url, headers=AUTH,
                                             timeout=60) as client:
        with connect_sse(client, "POST", "/v1/chat/completions", json={
                "messages": MSG, "stream": True, "max_tokens": 900, "ignore_eos": True,
                "n": 16, "thinking_min": 800, "thinking_max": 850}) as source:
            for seen, _ in enumerate(source.iter_sse(), 1):
                if seen == 3:
                    frozen.enter_context(frozen_engine(server))
                    break  # leave mid-stream
        # The API process notices, aborts and frees the slot with the engine still frozen.
        wait_until(lambda: server.metric("s1_requests_in_flight") == 0, 60,
                   "the request to be released")
    wait_until(lambda: server.metric("vllm:num_requests_running") == 0, 60,
               "the engine to drop the request")
    assert server.metric("vllm:num_requests_waiting") == 0
    # Ended without running to completion: it was aborted.
    assert server.metric("vllm:generation_tokens_total") - tokens_before < 16 * 900


def test_64_concurrent_streams_with_mixed_budgets(server):
    settings = [(None, None), (None, 5), (3, 9), (0, 0), (8, 8), (4, None), (2, 30), (None, 15)]

    async def one(i: int, client: httpx.AsyncClient) -> tuple[tuple, int, str, str]:
        lo, hi = settings[i % len(settings)]
        body = {"messages": MSG, "stream": True, "max_tokens": 60, "temperature": i % 2,
                "seed": i, "stream_options": {"include_usage": True}}
        if lo is not None:
            body["thinking_min"] = lo
        if hi is not None:
            body["thinking_max"] = hi
        usage, content, ids = None, "", set()
        async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
            assert resp.status_code == 200
            async for sse in EventSource(resp).aiter_sse():
                if sse.data == "[DONE]":
                    continue
                event = json.loads(sse.data)
                assert "error" not in event, event
                ids.add(event["id"])
                if event.get("usage"):
                    usage = event["usage"]
                for c in event.get("choices", []):
                    content += c["delta"].get("content") or ""
        (response_id,) = ids  # every chunk of one response carries its id
        return (lo, hi), usage["completion_tokens_details"]["reasoning_tokens"], content, \
            response_id

    async def main() -> list:
        async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH,
                                     timeout=300) as client:
            return await asyncio.gather(*(one(i, client) for i in range(64)))

    results = asyncio.run(main())
    assert len({r[3] for r in results}) == 64  # 64 responses, none answered twice
    for (lo, hi), thinking, content, _ in results:
        if hi is not None:
            assert thinking <= hi
            if thinking == hi:
                assert content.startswith("Final Answer:")
        if lo is not None:
            assert thinking >= lo
    assert server.metric("vllm:num_requests_running") == 0


def test_metrics_exported(server):
    text = httpx.get(server.base_url + "/metrics").text
    for name in ("s1_requests_total", "s1_time_to_first_token_seconds_bucket",
                 "s1_request_duration_seconds_count", "s1_thinking_tokens_bucket",
                 "s1_answer_tokens_sum", "s1_forced_ends_total", "s1_forced_continuations_total",
                 "s1_requests_in_flight", "vllm:num_requests_running"):
        assert name in text, name
    ends_before = server.metric("s1_forced_ends_total")
    post(server, "/v1/chat/completions", {"messages": MSG, "n": 3, "temperature": 1, "seed": 1,
                                          "max_tokens": 30, "thinking_min": 2,
                                          "thinking_max": 2})
    assert server.metric("s1_forced_ends_total") - ends_before == 3


def test_budget_counters_match_unseeded_n_choices(server):
    """No client seed and n > 1: the choices run as separate engine requests, each with its
    own decision seed; the response and the counters look as for one request."""
    names = ("s1_forced_ends_total", "s1_forced_continuations_total",
             "s1_budgeted_requests_total")
    before = {name: server.metric(name) for name in names}
    n, think = 3, 6
    r = post(server, "/v1/chat/completions", {"messages": MSG, "n": n, "temperature": 1,
                                              "max_tokens": 40, "thinking_min": think,
                                              "thinking_max": think})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["index"] for c in body["choices"]] == list(range(n))
    usage = body["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == n * think
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert all(c["message"]["content"].startswith("Final Answer:") for c in body["choices"])
    delta = {name: server.metric(name) - before[name] for name in names}
    # thinking_min == thinking_max: every block is cut at the maximum, once per choice.
    assert delta["s1_forced_ends_total"] == n
    assert delta["s1_budgeted_requests_total"] == n
    # The counter counts each choice's forced continuations once: what the budget objects
    # report (the objects themselves are checked against the token ids in
    # tests/test_api_surface.py and tests/test_interventions.py).
    assert delta["s1_forced_continuations_total"] == sum(
        c["budget"]["continuation_count"] for c in body["choices"])


@pytest.mark.parametrize("body,param", [
    ({"n": 17}, "n"),
    ({"n": 2, "temperature": 0}, None),  # vLLM refuses n > 1 with greedy: a 400, not a 500
    ({"stop": [f"s{i}" for i in range(17)]}, "stop"),
    ({"stop": "x" * 300}, "stop"),
    ({"logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias"),
    ({"messages": MSG * 513}, "messages"),
])
def test_input_limits_name_the_field(server, body, param):
    r = post(server, "/v1/chat/completions", {"messages": MSG, **body})
    assert r.status_code == 400, r.text
    if param is not None:
        assert r.json()["error"]["param"] == param


def test_request_id_round_trip(server):
    r = post(server, "/v1/chat/completions", {"messages": MSG, "thinking_max": -3},
             headers={"x-request-id": "my-id-123"})
    assert r.headers["x-request-id"] == "my-id-123"
    assert r.json()["error"]["request_id"] == "my-id-123"


# ------------------------------------------------- the front door: body, id, CORS
def test_chunked_body_over_the_limit_is_413(server):
    """A chunked upload has no Content-Length: the limit is counted on the bytes read."""
    def chunks(parts: int, size: int):
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(parts):
            yield b"x" * size
        yield b'"}], "max_tokens": 2}'

    big = httpx.post(server.base_url + "/v1/chat/completions", content=chunks(70, 1000),
                     headers={**AUTH, "content-type": "application/json"}, timeout=60)
    assert big.request.headers.get("transfer-encoding") == "chunked"
    assert big.status_code == 413 and "65536 bytes" in big.json()["error"]["message"]
    small = httpx.post(server.base_url + "/v1/chat/completions", content=chunks(3, 100),
                       headers={**AUTH, "content-type": "application/json"}, timeout=60)
    assert small.status_code == 200, small.text  # replayed whole to the route


@pytest.mark.parametrize(("sent", "kept"), [
    ("abc\tdef<script>;\"x", "abcdefscriptx"),  # only letters, digits and -_. pass
    ("a" * 200, "a" * 128),  # at most 128 characters
])
def test_request_id_is_sanitised(server, sent, kept):
    r = httpx.get(server.base_url + "/v1/models", headers={**AUTH, "x-request-id": sent})
    assert r.status_code == 200 and r.headers["x-request-id"] == kept


def test_request_id_of_nothing_usable_is_replaced(server):
    r = post(server, "/v1/chat/completions", {"messages": MSG, "thinking_max": -3},
             headers={"x-request-id": "<>;;"})
    rid = r.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid) and r.json()["error"]["request_id"] == rid


def test_cors_allows_the_configured_origin_only(server):
    from tests.conftest import CORS_ORIGIN

    preflight = {"access-control-request-method": "POST",
                 "access-control-request-headers": "authorization,content-type"}
    ok = httpx.options(server.base_url + "/v1/chat/completions",
                       headers={"origin": CORS_ORIGIN, **preflight})
    assert ok.status_code == 200, ok.text  # a preflight carries no key
    assert ok.headers["access-control-allow-origin"] == CORS_ORIGIN
    assert "POST" in ok.headers["access-control-allow-methods"]
    other = httpx.options(server.base_url + "/v1/chat/completions",
                          headers={"origin": "http://other.test", **preflight})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    r = post(server, "/v1/chat/completions", {"messages": MSG, "max_tokens": 2},
             headers={"origin": CORS_ORIGIN})
    assert r.headers["access-control-allow-origin"] == CORS_ORIGIN


def test_detokenize_ids_out_of_range_are_400(server):
    for tokens in ([10**12], [-1], [1, "x"]):
        r = post(server, "/detokenize", {"model": MODEL, "tokens": tokens})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "tokens" and "token ids in [0, " in err["message"]


# ------------------------------------------------------------ budgets, other dialects
def test_anthropic_thinking_disabled_means_no_thinking(server):
    """``thinking: {"type": "disabled"}``: the prompt is rendered with the block closed, so
    the model answers at once (no budget is needed to hold it to zero)."""
    r = post(server, "/v1/messages", {
        "model": MODEL, "max_tokens": 20, "messages": MSG, "temperature": 0,
        "thinking": {"type": "disabled"}})
    assert r.status_code == 200, r.text
    b = r.json()["budget"]
    assert (b["thinking_max"], b["thinking_tokens"], b["end"]) == (None, 0, "no_thinking")
    assert [c["type"] for c in r.json()["content"]] == ["text"]


THINK_OPEN = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<|im_start|>think\n"


def test_effort_is_clipped_to_half_the_room_left_in_the_context(server):
    """A prompt that leaves ~20 tokens of the 1024-token context: "high" (12 here) is cut
    to half the room left, so the answer keeps the other half."""
    head = len(post(server, "/tokenize", {"model": MODEL, "prompt": THINK_OPEN}).json()["tokens"])
    prompt = THINK_OPEN.replace("hi", "hi" + "a" * (1024 - 20 - head), 1)
    n = len(post(server, "/tokenize", {"model": MODEL, "prompt": prompt}).json()["tokens"])
    room = 1024 - n
    assert 0 < room // 2 < API_EFFORTS["high"], n  # the clip is what decides
    r = post(server, "/v1/completions", {"model": MODEL, "prompt": prompt, "temperature": 0,
                                        "reasoning_effort": "high"})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["budget"]["thinking_max"] == room // 2


def test_budgets_with_several_completions_prompts(server):
    """Two prompts x n=2: choice i is prompt i // 2's, each with its own budget object."""
    prompts = [THINK_OPEN, THINK_OPEN.replace("hi", "hello", 1)]
    ends = post(server, "/tokenize", {"model": MODEL, "prompt": "<|im_start|><|im_end|>",
                                      "add_special_tokens": False}).json()["tokens"]
    r = post(server, "/v1/completions", {"model": MODEL, "prompt": prompts, "n": 2,
                                        "echo": True, "max_tokens": 12, "temperature": 1,
                                        "seed": 4, "thinking_max": 3,
                                        # the model cannot end its thinking: every choice is cut
                                        "logit_bias": {str(t): -100 for t in ends}})
    assert r.status_code == 200, r.text
    choices = sorted(r.json()["choices"], key=lambda c: c["index"])
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    for c in choices:
        assert c["text"].startswith(prompts[c["index"] // 2]), c["index"]
        b = c["budget"]
        assert (b["thinking_tokens"], b["hit_max"], b["end"]) == (3, True, "cut"), b
    usage = r.json()["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 4 * 3


def test_the_prompt_opens_thinking_alike_on_every_path(server):
    """A completions prompt that opened the block and already thought a little: with
    and without logprobs (which once took another path) the same budget object."""
    body = {"model": MODEL, "prompt": THINK_OPEN + "r1a1", "max_tokens": 16,
            "temperature": 0, "thinking_max": 4}
    plain = post(server, "/v1/completions", body).json()["choices"][0]
    with_lp = post(server, "/v1/completions", {**body, "logprobs": 1}).json()["choices"][0]
    assert plain["budget"] == with_lp["budget"]
    assert plain["budget"]["thinking_tokens"] == 4 and plain["budget"]["hit_max"]


def test_a_stop_string_inside_the_thinking(server):
    """The stop string lands in the thinking: the reasoning ends before it, streamed and
    not, the choice stops with no answer, and thinking is reported unfinished."""
    body = {"messages": MSG, "temperature": 1, "seed": 9, "max_tokens": 40,
            "thinking_max": 30}
    full = post(server, "/v1/chat/completions", body).json()["choices"][0]["message"]
    reasoning = full["reasoning"]
    at = next(i for i in range(4, len(reasoning) - 3)
              if reasoning[i:i + 3].isalnum() and reasoning.index(reasoning[i:i + 3]) == i)
    stop = reasoning[at:at + 3]
    cut = post(server, "/v1/chat/completions", {**body, "stop": [stop]}).json()["choices"][0]
    assert cut["finish_reason"] == "stop"
    assert cut["message"]["reasoning"] == reasoning[:at] and not cut["message"]["content"]
    assert cut["budget"]["end"] == "unfinished" and not cut["budget"]["hit_max"]
    events = stream_post(server.base_url, "/v1/chat/completions", {**body, "stop": [stop]},
                         AUTH)
    streamed = "".join(c["delta"].get("reasoning") or "" for e in events if e != DONE
                       for c in e["choices"])
    assert streamed == reasoning[:at]
