"""The API surface taken from vLLM's serving layer, with budgets: logprobs, structured
outputs (answer-only grammar), tokenization, Responses, Anthropic Messages, Qwen3's
enable_thinking=False. One real server (tiny s1 model) for the module; official SDKs.
"""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest
from httpx_sse import connect_sse

from tests.conftest import API_KEY, API_MODEL
from tests.stream_reader import DONE, stream_post

pytestmark = pytest.mark.engine
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MSG = [{"role": "user", "content": "How many r in raspberry?"}]


@pytest.fixture(scope="module")
def oai(api_server):
    return openai.OpenAI(base_url=api_server.base_url + "/v1", api_key=API_KEY, max_retries=0)


def post(server, path, body):
    return httpx.post(server.base_url + path, json=body, headers=AUTH, timeout=120)


def test_chat_logprobs_with_budget(oai):
    r = oai.chat.completions.create(model=API_MODEL, messages=MSG, temperature=0, max_tokens=30,
                                    logprobs=True, top_logprobs=2,
                                    extra_body={"thinking_max": 4, "thinking_min": 4})
    c = r.choices[0]
    assert c.logprobs is not None and len(c.logprobs.content) == r.usage.completion_tokens
    assert all(len(t.top_logprobs) == 2 for t in c.logprobs.content)
    assert r.usage.completion_tokens_details.reasoning_tokens == 4
    assert c.message.content.startswith("Final Answer:")


def test_completions_logprobs(api_server, oai):
    r = oai.completions.create(model=API_MODEL, prompt="abc", max_tokens=5, temperature=0,
                               logprobs=2, extra_body={"return_token_ids": True})
    c = r.choices[0]
    lp = c.logprobs
    assert len(lp.tokens) == len(c.model_extra["token_ids"]) == 5
    # Each token string is its id detokenized, and together they are the text.
    assert lp.tokens == [post(api_server, "/detokenize", {"model": API_MODEL, "tokens": [t]})
                         .json()["prompt"] for t in c.model_extra["token_ids"]]
    assert "".join(lp.tokens) == c.text
    # Greedy: each chosen token is the most likely one of its top 2.
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert len(top) == 2 and top[token] == logprob == max(top.values())


@pytest.mark.parametrize("stream", [False, True])
def test_json_object_answer_with_budget(api_server, oai, stream):
    kwargs = dict(model=API_MODEL, messages=MSG, temperature=0, max_tokens=60,
                  response_format={"type": "json_object"},
                  extra_body={"thinking_max": 6, "thinking_min": 6})
    if not stream:
        r = oai.chat.completions.create(**kwargs)
        content = r.choices[0].message.content
        assert r.usage.completion_tokens_details.reasoning_tokens == 6
    else:
        content = ""
        for ch in oai.chat.completions.create(stream=True, **kwargs):
            if ch.choices and ch.choices[0].delta.content:
                content += ch.choices[0].delta.content
    # The grammar owns the answer: no "Final Answer:" prefix. (A random model may pad
    # JSON with whitespace up to max_tokens, so only the start is checked here; a grammar
    # without whitespace freedom gives an exact answer in the test below.)
    assert content.lstrip().startswith("{"), content


def test_json_schema_answer_with_budget(oai):
    schema = {"type": "object", "properties": {"n": {"enum": [1, 2, 3]}}, "required": ["n"],
              "additionalProperties": False}
    r = oai.chat.completions.create(
        model=API_MODEL, messages=MSG, temperature=0, max_tokens=80,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
        extra_body={"thinking_max": 5, "thinking_min": 5})
    assert r.usage.completion_tokens_details.reasoning_tokens == 5
    assert r.choices[0].message.content.lstrip().startswith("{")
    # A grammar without whitespace freedom: the answer is complete and exact.
    r = oai.chat.completions.create(
        model=API_MODEL, messages=MSG, temperature=0, max_tokens=20,
        extra_body={"thinking_max": 5, "structured_outputs": {"choice": ["yes", "no"]}})
    assert r.choices[0].message.content in ("yes", "no")
    assert r.usage.completion_tokens_details.reasoning_tokens <= 5


def test_budget_errors_on_delegated_path(api_server):
    r = post(api_server, "/v1/chat/completions", {
        "model": API_MODEL, "messages": MSG, "logprobs": True, "thinking_min": 5,
        "thinking_max": 3})
    assert r.status_code == 400 and r.json()["error"]["param"] == "thinking_min"


def test_tokenize_detokenize(api_server):
    r = post(api_server, "/tokenize", {"model": API_MODEL, "prompt": "hello"})
    assert r.status_code == 200, r.text
    toks = r.json()["tokens"]
    r = post(api_server, "/detokenize", {"model": API_MODEL, "tokens": toks})
    assert r.status_code == 200 and r.json()["prompt"] == "hello"


def test_responses_with_budget(api_server, oai):
    # Seeded sampling: greedy, the random model's thinking is bare newlines, which the
    # reasoning parser strips, and an empty reasoning gives no reasoning item.
    r = oai.responses.create(model=API_MODEL, input="How many r in raspberry?",
                             max_output_tokens=40, temperature=1,
                             extra_body={"thinking_max": 4, "seed": 3})
    assert [item.type for item in r.output] == ["reasoning", "message"], r.output
    assert r.output[1].content[0].text.startswith("Final Answer:")
    assert r.usage.output_tokens <= 40
    assert r.usage.output_tokens_details.reasoning_tokens == 4
    events = [e.type for e in oai.responses.create(model=API_MODEL, input="hi", stream=True,
                                                    max_output_tokens=20, temperature=0)]
    assert events[0] == "response.created" and events[-1] == "response.completed"


def test_anthropic_messages_with_thinking(api_server):
    client = anthropic.Anthropic(base_url=api_server.base_url, api_key=API_KEY, max_retries=0)
    # A seed (our extension on this surface): the random model's greedy thinking is bare
    # newlines, which the reasoning parser strips, so it samples; both calls alike.
    kw = dict(model=API_MODEL, max_tokens=40, messages=MSG,
              extra_body={"thinking_max": 4, "thinking_min": 4, "seed": 3, "temperature": 1})
    m = client.messages.create(**kw)
    kinds = [b.type for b in m.content]
    assert kinds == ["thinking", "text"], kinds
    assert m.content[1].text.startswith("Final Answer:")
    with client.messages.stream(**kw) as s:
        final = s.get_final_message()
    assert [b.type for b in final.content] == kinds
    assert [b.thinking for b in final.content[:1]] == [m.content[0].thinking]
    assert final.content[1].text == m.content[1].text


# ------------------------------------------------- what s1-serve adds, on vLLM's path
def tokens(server, text):
    return post(server, "/tokenize", {"model": API_MODEL, "prompt": text,
                                      "add_special_tokens": False}).json()["tokens"]


def test_budget_objects_on_the_delegated_path_match_the_token_ids(api_server):
    """logprobs sends the request through vLLM's serving class; the budget object, usage
    and the raw token ids (vLLM's return_token_ids) must tell the same story."""
    end = tokens(api_server, "<|im_start|>answer")
    nl = tokens(api_server, "\n")
    body = {"model": API_MODEL, "messages": MSG, "max_tokens": 24, "temperature": 1,
            "seed": 11, "n": 2, "logprobs": True, "return_token_ids": True,
            "thinking_min": 5, "thinking_max": 5}
    r = post(api_server, "/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    out = r.json()
    total = 0
    for c in out["choices"]:
        b, ids = c["budget"], c["token_ids"]
        assert b["thinking_tokens"] == 5 and b["hit_max"] and b["end"] == "cut"
        # From the raw ids: five thinking tokens, maybe the forced newline, the delimiter.
        at = 6 if ids[5:6] == nl and ids[6:6 + len(end)] == end else 5
        assert ids[at:at + len(end)] == end, ids
        assert end[0] not in ids[:5]
        assert b["cut"]["output_index"] == 5
        total += b["thinking_tokens"]
    assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == total

    finals = {c["index"]: c.get("budget")
              for e in stream_post(api_server.base_url, "/v1/chat/completions", body, AUTH)
              if e != DONE for c in e.get("choices", []) if c.get("finish_reason")}
    assert sorted(finals) == [0, 1]
    assert all(b["thinking_tokens"] == 5 and b["hit_max"] for b in finals.values())


def sse_data(server, path, body, event):
    """The data of each streamed ``event`` (Responses and Messages name their events)."""
    with httpx.Client(base_url=server.base_url, headers=AUTH, timeout=120) as client, \
            connect_sse(client, "POST", path, json={**body, "stream": True}) as source:
        assert source.response.status_code == 200, source.response.read()
        return [json.loads(sse.data) for sse in source.iter_sse() if sse.event == event]


@pytest.mark.parametrize("surface", ["responses", "messages"])
def test_responses_and_messages_carry_the_budget_object(api_server, surface):
    """The same seeded request on chat (whose budget object is checked against the raw
    ids above) and on Responses / Anthropic Messages: the same tokens, so the same
    budget object, at the top level, streamed in the final event."""
    budget = {"thinking_min": 8, "thinking_max": 12, "seed": 5, "temperature": 1}
    chat = post(api_server, "/v1/chat/completions",
                {"model": API_MODEL, "messages": MSG, "max_tokens": 40, **budget})
    assert chat.status_code == 200, chat.text
    expected = chat.json()["choices"][0]["budget"]
    assert expected["thinking_tokens"] >= 8 and expected["end"] in ("natural", "cut")
    if surface == "responses":
        path, body = "/v1/responses", {"model": API_MODEL, "input": MSG[0]["content"],
                                       "max_output_tokens": 40, **budget}
        final, where = "response.completed", "response"
    else:
        path, body = "/v1/messages", {"model": API_MODEL, "messages": MSG, "max_tokens": 40,
                                      **budget}
        final, where = "message_delta", None
    r = post(api_server, path, body)
    assert r.status_code == 200, r.text
    assert r.json()["budget"] == expected
    streamed = sse_data(api_server, path, body, final)
    assert len(streamed) == 1, streamed
    assert (streamed[0][where] if where else streamed[0])["budget"] == expected


def test_budget_metrics_count_delegated_choices_once(api_server):
    before = api_server.metric("s1_forced_ends_total")
    r = post(api_server, "/v1/completions", {
        "model": API_MODEL, "prompt": "<|im_start|>think\n", "max_tokens": 12, "n": 3,
        "temperature": 1, "logprobs": 1, "thinking_max": 0})  # every choice is cut at once
    assert r.status_code == 200, r.text
    assert all(c["budget"]["hit_max"] for c in r.json()["choices"])
    assert api_server.metric("s1_forced_ends_total") - before == 3


@pytest.mark.parametrize(("path", "extra", "param"), [
    ("/v1/chat/completions", {"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ("/v1/chat/completions", {"modalities": ["text", "audio"]}, "modalities"),
    ("/v1/chat/completions", {"functions": [{"name": "f"}]}, "functions"),
    ("/v1/completions", {"best_of": 3}, "best_of"),
    ("/v1/messages", {"n": 2}, "n"),
    ("/v1/messages", {"frequency_penalty": 0.5}, "frequency_penalty"),
    ("/v1/responses", {"logprobs": True}, "logprobs"),
])
def test_fields_that_would_change_the_output_are_refused(api_server, path, extra, param):
    body = {"model": API_MODEL, "max_tokens": 4}
    if path == "/v1/completions":
        body["prompt"] = "abc"
    elif path == "/v1/responses":
        body = {"model": API_MODEL, "input": "abc", "max_output_tokens": 4}
    else:
        body["messages"] = MSG
    r = post(api_server, path, {**body, **extra})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and param in err["message"]


def test_fields_that_change_nothing_are_accepted(api_server):
    """OpenAI's bookkeeping fields and unsupported features sent at their default pass;
    a field no API declares does not (tests/test_server_errors.py, unknown fields)."""
    r = post(api_server, "/v1/chat/completions", {
        "model": API_MODEL, "messages": MSG, "max_tokens": 3, "user": "u1", "store": False,
        "metadata": {"k": "v"}, "modalities": ["text"]})
    assert r.status_code == 200, r.text
    r = post(api_server, "/v1/completions", {"model": API_MODEL, "prompt": "a", "n": 2,
                                            "best_of": 2, "max_tokens": 3, "temperature": 1})
    assert r.status_code == 200, r.text


def _stream_text(server, path, body, key):
    return "".join(key(c) or "" for e in stream_post(server.base_url, path, body, AUTH)
                   if e != DONE for c in e.get("choices", []))


@pytest.mark.parametrize("seed", [7, 8])
def test_a_multi_token_stop_string_is_never_streamed_in_part(api_server, seed):
    """The stop string is three tokens of what the model writes: the streamed text must
    equal the non-streamed text, which vLLM cut before the stop."""
    body = {"model": API_MODEL, "prompt": "The letters", "max_tokens": 30, "temperature": 1,
            "seed": seed}
    full = post(api_server, "/v1/completions", body).json()["choices"][0]["text"]
    ids = tokens(api_server, full)
    pieces = [post(api_server, "/detokenize", {"model": API_MODEL, "tokens": [t]}).json()
              ["prompt"] for t in ids]
    i = next(i for i in range(1, len(pieces) - 3)
             if all(p.isascii() and p.strip() for p in pieces[i:i + 3]))
    stop = "".join(pieces[i:i + 3])[1:]
    body["stop"] = [stop]
    cut = post(api_server, "/v1/completions", body).json()["choices"][0]["text"]
    assert stop not in cut and full.startswith(cut) and len(cut) < len(full)
    assert _stream_text(api_server, "/v1/completions", body, lambda c: c.get("text")) == cut


# ------------------------------------------------------------------ reasoning effort
def test_effort_budgets_are_listed_and_applied(api_server, oai):
    from tests.conftest import API_EFFORTS

    card = httpx.get(api_server.base_url + "/v1/models", headers=AUTH).json()["data"][0]
    assert card["reasoning_effort_budgets"] == API_EFFORTS
    for effort, cap in API_EFFORTS.items():
        r = oai.chat.completions.create(model=API_MODEL, messages=MSG, max_tokens=40,
                                        temperature=1.0, seed=2, reasoning_effort=effort)
        # "none": the template closes the block itself (no budget needed, none applied)
        assert r.choices[0].model_extra["budget"]["thinking_max"] == (cap or None)
        assert r.usage.completion_tokens_details.reasoning_tokens <= cap
    r = oai.responses.create(model=API_MODEL, input="How many r in raspberry?",
                             max_output_tokens=40, temperature=1.0,
                             reasoning={"effort": "medium"})
    assert r.usage.output_tokens_details.reasoning_tokens <= API_EFFORTS["medium"]
    r = post(api_server, "/v1/chat/completions", {"model": API_MODEL, "messages": MSG,
                                                  "reasoning_effort": "xhigh"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "reasoning_effort"
    assert "low" in r.json()["error"]["message"]


def test_effort_budgets_setting_is_validated():
    from server.api.cli import load_settings

    s = load_settings(["--reasoning-effort-budgets", "low=10, high=20"])
    assert s.reasoning_effort_budgets == {"low": 10, "high": 20}
    for bad in ("low", "low=-1", "low=x", ","):
        with pytest.raises(SystemExit, match="reasoning-effort-budgets"):
            load_settings(["--reasoning-effort-budgets", bad])


def test_delegated_sse_events_are_one_line_each(api_server):
    """vLLM's JSON leaves U+2028/U+2029 raw; split by str.splitlines (as many clients do)
    every event must still parse."""
    body = {"model": API_MODEL, "prompt": "a\u2028b\u2029c", "echo": True, "logprobs": 1,
            "max_tokens": 2, "stream": True}
    with httpx.stream("POST", api_server.base_url + "/v1/completions", headers=AUTH,
                      json=body, timeout=120) as s:
        raw = s.read().decode()
    events = [line for line in raw.splitlines() if line.strip()]
    assert events[-1] == "data: [DONE]"
    texts = [json.loads(e[6:])["choices"][0]["text"] for e in events[:-1]
             if json.loads(e[6:]).get("choices")]
    assert "".join(texts).startswith("a\u2028b\u2029c")
