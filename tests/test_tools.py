"""Tool calling through s1-serve (vLLM's hermes parser, the shared api_server), with the
official openai SDK: named and required tool choice give tool calls, unstreamed and in
streamed deltas, whose arguments are JSON of the tool's schema; the thinking budget is
spent before the call; parallel_tool_calls=false gives one call; a follow-up turn with
the tool's result works; auto returns a valid shape.

The tiny model is random: its favourite token is a newline, which a JSON grammar's
whitespace freedom would take until max_tokens, so whitespace is banned with logit_bias
(conftest.no_whitespace). Then thinking has no newline of its own either, so a cut
thinking gets the forced newline before the end delimiter (--newline-before-forced-end).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx
import openai
import pytest

from tests.conftest import API_KEY, API_MODEL

pytestmark = pytest.mark.engine

CITIES = ["Paris", "Rome"]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "strict": True,  # vLLM constrains the arguments to the schema only when strict
    "parameters": {"type": "object", "properties": {"city": {"enum": CITIES}},
                   "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "strict": True, "parameters": {
        "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}},
        "required": ["zone"], "additionalProperties": False}}}
TOOLS = [WEATHER, TIME]
NAMED = {"type": "function", "function": {"name": "get_weather"}}
MSG = [{"role": "user", "content": "What is the weather in Paris?"}]
BUDGET = {"thinking_min": 4, "thinking_max": 4}
TOOL_TURN = [
    *MSG,
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
]


@pytest.fixture(scope="module")
def oai(api_server):
    return openai.OpenAI(base_url=api_server.base_url + "/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def create(oai, no_whitespace):
    def create(messages=MSG, budget=BUDGET, **kw):
        kw = {"model": API_MODEL, "messages": messages, "temperature": 0, "max_tokens": 80,
              "tools": TOOLS, "logit_bias": no_whitespace, **kw}
        return oai.chat.completions.create(**kw, extra_body=dict(budget or {}))
    return create


def check_call(name: str, arguments: str) -> None:
    schema = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    assert name in schema
    args = json.loads(arguments)
    (key, value), = args.items()
    assert key in schema[name]["properties"]
    assert value in schema[name]["properties"][key]["enum"]


@dataclass
class Streamed:
    """What a stream carried: tool calls gathered from the deltas (by index), content,
    reasoning, the finish reason, and the usage chunk (when asked for)."""

    calls: dict[int, dict]
    content: str
    reasoning: str
    finish_reason: str | None
    usage: object


def streamed(stream) -> Streamed:
    calls: dict[int, dict] = {}
    content = reasoning = ""
    finish, usage = None, None
    for chunk in stream:
        usage = chunk.usage or usage
        if not chunk.choices:
            continue
        finish = chunk.choices[0].finish_reason or finish
        d = chunk.choices[0].delta
        content += d.content or ""
        reasoning += (d.model_extra or {}).get("reasoning") or ""
        for tc in d.tool_calls or ():
            call = calls.setdefault(tc.index, {"name": "", "arguments": "", "id": None})
            call["id"] = call["id"] or tc.id
            if tc.function and tc.function.name:
                call["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                call["arguments"] += tc.function.arguments
    return Streamed(calls, content, reasoning, finish, usage)


@pytest.mark.parametrize("choice", [NAMED, "required"], ids=["named", "required"])
def test_forced_tool_call(create, choice):
    r = create(tool_choice=choice, logprobs=True)
    c = r.choices[0]
    assert c.message.tool_calls, c.message
    for call in c.message.tool_calls:
        assert call.type == "function" and call.id
        check_call(call.function.name, call.function.arguments)
    if choice == NAMED:
        assert {call.function.name for call in c.message.tool_calls} == {"get_weather"}
    # The budget comes first: 4 thinking tokens, the forced newline, the end delimiter
    # (<|im_start|>answer), then the call; the reasoning is those 4 tokens (vLLM's serving
    # class keeps the forced newline in it; s1-serve's own path does not).
    tokens = [t.token for t in c.logprobs.content]
    assert tokens[4:6] == ["\n", "<|im_start|>"], tokens[:10]
    assert c.message.model_extra["reasoning"].rstrip("\n") == "".join(tokens[:4])
    assert c.finish_reason in ("tool_calls", "stop")  # OpenAI: "stop" for a named choice


@pytest.mark.parametrize("choice", [NAMED, "required"], ids=["named", "required"])
def test_forced_tool_call_streamed(create, choice):
    s = streamed(create(tool_choice=choice, stream=True))
    assert s.calls, s
    for call in s.calls.values():
        assert call["id"]
        check_call(call["name"], call["arguments"])
    assert s.reasoning.strip()


def test_reasoning_tokens_is_thinking_max_before_call(create):
    r = create(tool_choice="required")
    assert r.choices[0].message.tool_calls
    assert r.usage.completion_tokens_details.reasoning_tokens == BUDGET["thinking_max"]


def test_no_parallel_calls(create):
    r = create(tool_choice="required", parallel_tool_calls=False, max_tokens=120)
    calls = r.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 1
    check_call(calls[0].function.name, calls[0].function.arguments)
    s = streamed(create(tool_choice="required", parallel_tool_calls=False, max_tokens=120,
                        stream=True))
    assert len(s.calls) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_tool_result_turn(create, api_server, stream):
    r = create(messages=TOOL_TURN, max_tokens=20, stream=stream,
               **({"stream_options": {"include_usage": True}} if stream else {}))
    if stream:
        s = streamed(r)
        finish, usage, calls = s.finish_reason, s.usage, list(s.calls.values())
        arguments = [call["arguments"] for call in calls]
        assert s.content or calls, s  # the answer after the thinking arrived
    else:
        c = r.choices[0]
        assert c.message.role == "assistant"
        finish, usage, calls = c.finish_reason, r.usage, c.message.tool_calls or []
        arguments = [call.function.arguments for call in calls]
    assert (finish == "tool_calls") == bool(calls) and finish in ("stop", "length", "tool_calls")
    for args in arguments:
        json.loads(args)
    assert usage.completion_tokens <= 20
    assert usage.completion_tokens_details.reasoning_tokens == BUDGET["thinking_max"]
    # The template rendered the call and its result into the prompt.
    auth = {"Authorization": f"Bearer {API_KEY}"}
    toks = httpx.post(api_server.base_url + "/tokenize", headers=auth, timeout=60, json={
        "model": API_MODEL, "messages": TOOL_TURN, "tools": TOOLS}).json()["tokens"]
    text = httpx.post(api_server.base_url + "/detokenize", headers=auth, timeout=60, json={
        "model": API_MODEL, "tokens": toks}).json()["prompt"]
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in text
    assert "<tool_response>\nsunny, 21 C\n</tool_response>" in text
    assert '"name": "get_time"' in text  # the tools' definitions


@pytest.mark.parametrize("stream", [False, True])
def test_auto_valid_shape(create, stream):
    """A random model may or may not call a tool; either way the answer is well formed."""
    if stream:
        s = streamed(create(tool_choice="auto", max_tokens=30, stream=True,
                            stream_options={"include_usage": True}))
        finish, usage = s.finish_reason, s.usage
        arguments = [call["arguments"] for call in s.calls.values()]
    else:
        r = create(tool_choice="auto", max_tokens=30)
        c = r.choices[0]
        finish, usage = c.finish_reason, r.usage
        arguments = [call.function.arguments for call in c.message.tool_calls or ()]
    # "tool_calls" exactly when the answer is calls; otherwise "stop" or "length".
    assert (finish == "tool_calls") == bool(arguments), (finish, arguments)
    assert finish in ("stop", "length", "tool_calls")
    for args in arguments:
        json.loads(args)
    assert usage.completion_tokens_details.reasoning_tokens == BUDGET["thinking_max"]


def test_tool_choice_none_calls_nothing(create):
    r = create(tool_choice="none", max_tokens=20)
    assert not r.choices[0].message.tool_calls
