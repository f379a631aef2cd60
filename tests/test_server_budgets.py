"""Thinking budgets on the real server over loopback (the session's API server), driven
by httpx and the official openai SDK: exact, maximum-only and minimum budgets (forced
continuations), streamed as not streamed, n choices each with its own budget, the
completions and Anthropic dialects, effort presets clipped to the context, stop strings
inside the thinking, and the budget counters in /metrics.

The model is a random tiny Qwen2 whose chat template opens an s1 thinking block, so the
text is gibberish but every budget is checkable token by token.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import API_EFFORTS
from tests.conftest import API_KEY as KEY
from tests.conftest import API_MODEL as MODEL
from tests.helpers import AUTH, MSG, post
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


def test_default_max_tokens_leaves_room_for_answer(server):
    r = post(server, "/v1/chat/completions", {"model": MODEL, "messages": MSG, "temperature": 0,
                                              "thinking_max": 10, "thinking_min": 10}).json()
    # thinking_max + forced delimiter/prefix + answer allowance: the answer is not starved.
    assert r["usage"]["completion_tokens"] > 10 + 8


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
