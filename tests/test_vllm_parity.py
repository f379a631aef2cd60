"""Drop-in parity with vLLM's own OpenAI server (issue 14).

vLLM's server (``python -m vllm.entrypoints.openai.api_server``) and s1-serve serve the
same tiny checkpoint (``tiny_s1_open``) under the same name, API key, chat template and
tool flags (hermes), and vLLM's server gets the same reasoning parser (s1-serve's ``s1``,
loaded as a plugin), so that the reasoning split is comparable. Every request of
:data:`CASES` goes to both; the status codes must be equal and, for successes, the
response *shape*: the set of ``path:type`` leaves of the JSON (streams: of every event),
where a null value counts as an absent key. Where the same model must decode the same
tokens (greedy, or sampled with a seed), the texts, token counts and finish reasons must
be equal too. Budgets go to s1-serve only (test_budget_surfaces).

What s1-serve may add is listed in :data:`EXTRAS` (its documented fields). Differences
found and not fixed yet are strict xfails, each with its diagnosis.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from tests.api_answers import (
    ANTHROPIC,
    CHAT,
    COMPL,
    MSG,
    OPEN_PROMPT,
    Answer,
    Case,
    allowed,
    call,
    chat,
    cmpl,
    error_message,
    reasoning_tokens,
    shape,
    texts,
    values,
)
from tests.conftest import API_KEY, API_MODEL, TOOL_FLAGS

pytestmark = pytest.mark.engine
S1_FORMAT = {"start": "<|im_start|>think", "end": "<|im_start|>answer"}


@pytest.fixture(scope="module")
def vllm_server(tiny_s1_open):
    """vLLM's own server on the api_server fixture's model, name, key and tool flags
    (a 128 MiB KV cache, not VLLM_CPU_KVCACHE_SPACE's 1 GiB: the tiny model needs ~1 KiB
    a token, and the machine is shared)."""
    from tests.conftest import ROOT
    from tests.server_proc import VLLM_SERVER, ServerProcess

    proc = ServerProcess(tiny_s1_open, "--api-key", API_KEY, "--served-model-name", API_MODEL,
                         "--reasoning-parser-plugin", str(ROOT / "server" / "engine" / "reasoning_parser.py"),
                         "--reasoning-parser", "s1", "--kv-cache-memory-bytes", str(128 << 20),
                         *TOOL_FLAGS, module=VLLM_SERVER,
                         env={"S1_PARSER_FORMAT": json.dumps(S1_FORMAT)})
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


# ------------------------------------------------------------------ the cases
# strict: vLLM constrains the arguments to the schema only then (else: any JSON)
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}},
                   "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "strict": True, "parameters": {"type": "object", "properties": {
        "zone": {"type": "string", "enum": ["UTC", "CET"]}}, "required": ["zone"],
        "additionalProperties": False}}}
TOOLS = [WEATHER, TIME]
NAMED = {"type": "function", "function": {"name": "get_weather"}}
TOOL_TURN = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
]
NO_THINK = {"enable_thinking": False}
SCHEMA = {"type": "object", "properties": {"n": {"enum": [1, 2, 3]}}, "required": ["n"],
          "additionalProperties": False}


def both(name: str, path: str, body: dict, *, marks: Any = (), stream_marks: Any = None,
         **kw: Any) -> list:
    """The case unstreamed and streamed."""
    return [pytest.param(Case(path, body, **kw), id=name, marks=marks),
            pytest.param(Case(path, {**body, "stream": True}, stream=True, **kw),
                         id=name + "-stream", marks=marks if stream_marks is None
                         else stream_marks)]


def one(name: str, path: str, body: dict | None = None, *, marks: Any = (), **kw: Any) -> list:
    return [pytest.param(Case(path, body, **kw), id=name, marks=marks)]



def _continued_text_is_no_reasoning(theirs: Any, ours: Any) -> None:
    """The continued assistant message opens no thinking block: s1-serve's engine hook
    knows the prompt ids and counts 0 reasoning tokens; vLLM's server runs the s1 parser
    as a plugin whose instance never learns the prompt (Parser.set_prompt_token_ids is a
    no-op in 0.32) and counts the whole continuation as reasoning."""
    assert theirs.status == ours.status == 200
    assert reasoning_tokens(ours.body) == 0
    assert reasoning_tokens(theirs.body) == theirs.body["usage"]["completion_tokens"] > 0


def _best_of_above_n_is_refused(theirs: Any, ours: Any) -> None:
    """vLLM 0.32 accepts best_of above n and ignores it (its model has no such field);
    s1-serve refuses it with a 400 naming it (no silent ignores, server/api/field_policy.py)."""
    assert theirs.status == 200
    assert ours.status == 400 and ours.body["error"]["param"] == "best_of"


CASES = [
    # -- chat
    *both("chat", CHAT, chat()),
    *both("chat-usage", CHAT, chat(stream_options={"include_usage": True})),
    *both("chat-seeded", CHAT, chat(temperature=1.0, seed=7, max_tokens=10)),
    *both("chat-logprobs", CHAT, chat(logprobs=True, top_logprobs=2)),
    *one("chat-prompt-logprobs", CHAT, chat(prompt_logprobs=1, max_tokens=2)),
    *both("chat-n2", CHAT, chat(n=2, temperature=1.0, seed=3)),
    *both("chat-partial-utf8", CHAT, chat(n=2, temperature=1.0, seed=1)),
    *one("chat-min-tokens", CHAT, chat(min_tokens=6, max_tokens=6)),
    *one("chat-bad-words", CHAT, chat(bad_words=["\n"])),
    *both("chat-stop", CHAT, chat(temperature=1.0, seed=7, max_tokens=10, stop=["e"],
                                  include_stop_str_in_output=True)),
    *one("chat-skip-special-false", CHAT, chat(skip_special_tokens=False)),
    *one("chat-continue-final", CHAT, chat(
        messages=[*MSG, {"role": "assistant", "content": "Let me count"}],
        continue_final_message=True, add_generation_prompt=False),
        differs=_continued_text_is_no_reasoning),
    *both("chat-sampling", CHAT, chat(temperature=0.8, seed=11, top_p=0.9, top_k=20, min_p=0.05,
                                      presence_penalty=0.5, frequency_penalty=0.5,
                                      repetition_penalty=1.2, max_completion_tokens=8,
                                      max_tokens=None)),
    *one("chat-logit-bias", CHAT, chat(logit_bias={"40": 100})),
    *one("chat-ignore-eos", CHAT, chat(ignore_eos=True, user="u1")),
    *both("chat-stop-native", CHAT, chat(temperature=1.0, seed=7, max_tokens=10, stop=["e"])),
    *one("chat-system", CHAT, chat(messages=[{"role": "system", "content": "Be brief."}, *MSG])),
    *one("chat-developer", CHAT, chat(messages=[
        {"role": "system", "content": "Be brief."}, {"role": "developer", "content": "Count."},
        *MSG])),
    *one("chat-no-model", CHAT, chat(model=None)),
    *both("chat-n2-usage", CHAT, chat(n=2, temperature=1.0, seed=3,
                                      stream_options={"include_usage": True})),
    *one("chat-batch", "/v1/chat/completions/batch", chat(messages=[MSG, MSG])),
    *one("chat-template-kwargs", CHAT, chat(chat_template_kwargs=NO_THINK)),
    *one("chat-content-part", CHAT, chat(messages=[{"role": "user", "content": [
        {"type": "text", "text": "How many r in raspberry?"}]}])),
    *one("chat-content-parts", CHAT, chat(messages=[{"role": "user", "content": [
        {"type": "text", "text": "How many r"}, {"type": "text", "text": "in raspberry?"}]}])),
    *both("chat-json-object", CHAT, chat(response_format={"type": "json_object"})),
    *one("chat-json-schema", CHAT, chat(max_tokens=40, response_format={
        "type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}})),
    *one("chat-choice", CHAT, chat(structured_outputs={"choice": ["yes", "no"]})),
    *one("chat-regex", CHAT, chat(structured_outputs={"regex": "[0-9]{3}"})),
    *both("chat-tool-named", CHAT, chat(tools=TOOLS, tool_choice=NAMED, max_tokens=30)),
    *both("chat-tool-required", CHAT, chat(tools=TOOLS, tool_choice="required",
                                           max_tokens=40)),
    # the thinking closed by the template (enable_thinking): the grammar applies at once
    *both("chat-tool-named-nothink", CHAT, chat(tools=TOOLS, tool_choice=NAMED, max_tokens=40,
                                                chat_template_kwargs=NO_THINK), no_ws=True),
    *both("chat-tool-required-nothink", CHAT, chat(
        tools=TOOLS, tool_choice="required", max_tokens=40, chat_template_kwargs=NO_THINK),
          no_ws=True),
    *both("chat-tool-single-nothink", CHAT, chat(
        tools=TOOLS, tool_choice="required", parallel_tool_calls=False, max_tokens=40,
        chat_template_kwargs=NO_THINK), no_ws=True),
    *both("chat-tool-auto", CHAT, chat(tools=TOOLS, tool_choice="auto")),
    *one("chat-tool-none", CHAT, chat(tools=TOOLS, tool_choice="none")),
    *both("chat-tool-result", CHAT, chat(messages=TOOL_TURN, tools=TOOLS)),
    # -- completions
    *both("completions", COMPL, cmpl()),
    *both("completions-logprobs-echo", COMPL, cmpl(logprobs=2, echo=True)),
    *one("completions-prompt-logprobs", COMPL, cmpl(prompt_logprobs=1, max_tokens=2)),
    *both("completions-n2", COMPL, cmpl(n=2, temperature=1.0, seed=10)),
    # seed 5: the first choice ends inside a multi-byte character
    *both("completions-partial-utf8", COMPL, cmpl(n=2, temperature=1.0, seed=5)),
    *one("completions-best-of", COMPL, cmpl(n=2, best_of=2, temperature=1.0, seed=4)),
    *one("completions-best-of-above-n", COMPL, cmpl(n=1, best_of=2),
         differs=_best_of_above_n_is_refused),
    *both("completions-echo", COMPL, cmpl(echo=True)),
    *one("completions-batch", COMPL, cmpl(prompt=["Let me think", "Wait"])),
    *one("completions-default-max-tokens", COMPL, cmpl(prompt=[40] * 1000, max_tokens=None)),
    *one("completions-empty-prompt", COMPL, cmpl(prompt="")),
    *one("completions-stop-string", COMPL, cmpl(stop=" think", prompt="Let me think about it")),
    # a prompt that opens the thinking block: vLLM's completion class (ours too) has no
    # reasoning parser, so every token stays in text; the budget object says where it ended
    *one("completions-open-thinking", COMPL, cmpl(prompt=OPEN_PROMPT)),
    *one("completions-token-ids", COMPL, cmpl(prompt=[1, 2, 3, 4, 5])),
    *both("completions-stop", COMPL, cmpl(stop=[" think"], include_stop_str_in_output=True,
                                          prompt="Let me think about it")),
    # -- vLLM's routers
    *both("responses", "/v1/responses", {"model": API_MODEL, "input": "How many r?",
                                         "max_output_tokens": 8, "temperature": 0}),
    *both("messages", "/v1/messages", ANTHROPIC),
    *one("tokenize", "/tokenize", {"model": API_MODEL, "prompt": "hello there"}),
    *one("tokenize-chat", "/tokenize", {"model": API_MODEL, "messages": MSG}),
    *one("detokenize", "/detokenize", {"model": API_MODEL, "tokens": [40, 41, 42]}),
    *one("models", "/v1/models"),
    *one("version", "/version"),
    *one("health", "/health", text=False, shape=False),
    *one("load", "/load", text=False),
    # -- invalid requests: same status, an error message in both
    *one("err-temperature", CHAT, chat(temperature=-1)),
    *one("err-no-messages", CHAT, {"model": API_MODEL, "max_tokens": 4}),
    *one("err-model", CHAT, chat(model="nope")),
    *one("err-model-completions", COMPL, cmpl(model="nope")),
    *one("err-n0", CHAT, chat(n=0)),
    *one("err-auth", CHAT, chat(), auth=False),
    *one("err-empty-messages", CHAT, chat(messages=[])),
    *one("err-top-logprobs", CHAT, chat(logprobs=True, top_logprobs=50)),
    *one("err-max-tokens-0", CHAT, chat(max_tokens=0)),
    *one("err-top-p", COMPL, cmpl(top_p=0)),
    *one("err-no-prompt", COMPL, {"model": API_MODEL}),
    *one("err-token-id", COMPL, cmpl(prompt=[1, 10**6])),
    *one("err-image-part", CHAT, chat(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])),
    *one("err-prompt-too-long", COMPL, cmpl(prompt=[40] * 1100)),
    *one("err-responses-model", "/v1/responses", {"model": "nope", "input": "hi"}),
    *one("err-messages-model", "/v1/messages", {**ANTHROPIC, "model": "nope"}),
    *one("err-max-tokens", CHAT, chat(max_tokens=5000)),
    *one("err-max-tokens-completions", COMPL, cmpl(max_tokens=5000)),
    *one("err-tool-choice-unknown", CHAT, chat(tools=TOOLS, tool_choice={
        "type": "function", "function": {"name": "nope"}})),
    *one("err-messages-max-tokens", "/v1/messages", {**ANTHROPIC, "max_tokens": 5000}),
]

# What s1-serve adds (README: the budget object, the reasoning fields and count), as
# "path:type" patterns; only these may appear in s1-serve's answers and not in vLLM's.
EXTRAS = (
    "choices[].budget:dict", "choices[].budget.*",
    "budget:dict", "budget.*", "response.budget:dict", "response.budget.*",  # Responses, Messages
    "usage.completion_tokens_details:dict", "usage.completion_tokens_details.reasoning_tokens:*",
    "choices[].message.reasoning:str", "choices[].message.reasoning_content:str",
    "choices[].delta.reasoning:str", "choices[].delta.reasoning_content:str",
    "choices[].reasoning:str", "choices[].reasoning_content:str",  # completions
    "data[].thinking_format:str", "data[].reasoning_effort_budgets*",  # /v1/models
    "s1_serve:str", "engine:dict", "engine.*",  # /version
)


# -------------------------------------------------------------- the comparison
def compare(theirs: Answer, ours: Answer, case: Case) -> None:
    if case.differs is not None:
        case.differs(theirs, ours)
        return
    assert ours.status == theirs.status, (theirs.body, ours.body)
    if theirs.status >= 400:
        assert error_message(theirs) and error_message(ours), (theirs.body, ours.body)
        a, b = (x.body.get("error") for x in (theirs, ours))
        if isinstance(a, dict):  # vLLM's auth answers a bare string (no type to compare)
            assert b["type"] == a["type"], (theirs.body, ours.body)
            if a.get("param") is not None:
                assert b["param"] == a["param"], (theirs.body, ours.body)
        return
    if not case.shape:
        return
    a, b = shape(theirs), shape(ours)
    missing = sorted(a - b)
    extra = sorted(x for x in b - a if not allowed(x, EXTRAS))
    assert not missing and not extra, f"missing in s1-serve: {missing}; extra: {extra}"
    if case.text:
        assert texts(ours) == texts(theirs), "texts differ (s1-serve, vLLM)"
        a, b = values(theirs), values(ours)
        common = a.keys() & b.keys()  # a key in one only is a shape difference (above)
        assert {k: b[k] for k in common} == {k: a[k] for k in common}, \
            "token counts or finish reasons differ (s1-serve, vLLM)"


@pytest.mark.parametrize("case", CASES)
def test_parity(vllm_server, api_server, no_whitespace, case):
    if case.no_ws:
        case = dataclasses.replace(case, body={**case.body, "logit_bias": no_whitespace})
    compare(call(vllm_server, case), call(api_server, case), case)

