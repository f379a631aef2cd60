"""Budgets on every surface of s1-serve (the session's API server): thinking_min ==
thinking_max gives exactly that many thinking tokens and then the forced answer prefix on
chat, completions, Responses and Anthropic messages, greedy or sampled, through our path
and vLLM's (logprobs), streamed or not; and a streamed budgeted request answers what the
unstreamed one does. vLLM's own server has no budgets: these are the s1-only companions
of test_vllm_parity, on the same request builders."""

from __future__ import annotations

import pytest

from tests.api_answers import (
    ANTHROPIC,
    CHAT,
    COMPL,
    OPEN_PROMPT,
    Case,
    call,
    chat,
    cmpl,
    reasoning_tokens,
    texts,
)
from tests.conftest import API_MODEL

pytestmark = pytest.mark.engine

BUDGET = {"thinking_min": 4, "thinking_max": 4}

RESPONSES = {"model": API_MODEL, "input": "How many r?", "max_output_tokens": 20,
             "temperature": 0, **BUDGET}
SAMPLED = {"temperature": 1.0, "seed": 1}
BUDGET_CASES = [
    pytest.param(CHAT, chat(max_tokens=20, **BUDGET), id="chat"),
    pytest.param(CHAT, chat(max_tokens=20, **BUDGET, **SAMPLED), id="chat-sampled"),
    pytest.param(CHAT, chat(max_tokens=20, logprobs=True, **BUDGET), id="chat-vllm"),
    pytest.param(CHAT, chat(max_tokens=20, logprobs=True, **BUDGET, **SAMPLED),
                 id="chat-vllm-sampled"),
    pytest.param(COMPL, cmpl(max_tokens=20, prompt=OPEN_PROMPT, **BUDGET), id="completions"),
    pytest.param(COMPL, cmpl(max_tokens=20, prompt=OPEN_PROMPT, **BUDGET, **SAMPLED),
                 id="completions-sampled"),
    # vLLM's completions class: its text keeps the thinking (logprobs line up with it)
    pytest.param(COMPL, cmpl(max_tokens=20, prompt=OPEN_PROMPT, logprobs=1, **BUDGET),
                 id="completions-vllm"),
    pytest.param("/v1/responses", RESPONSES, id="responses"),
    pytest.param("/v1/responses", {**RESPONSES, **SAMPLED}, id="responses-sampled"),
]


@pytest.mark.parametrize("path,body", BUDGET_CASES)
@pytest.mark.parametrize("stream", [False, True], ids=["", "stream"])
def test_budget_only_ours(api_server, path, body, stream):
    """thinking_min == thinking_max: exactly that many thinking tokens, then the answer
    (the forced 'Final Answer:' prefix), on every surface, streamed or not."""
    if stream and path != "/v1/responses":
        body = {**body, "stream_options": {"include_usage": True}}
    a = call(api_server, Case(path, {**body, "stream": True} if stream else body,
                              stream=stream))
    assert a.status == 200, a.body
    if not stream:
        final = a.body
    else:
        done = [d for _, d in a.events if isinstance(d, dict) and d.get("usage")]
        done += [d["response"] for k, d in a.events if k == "response.completed"]
        final = done[-1]
    answer = texts(a)
    text = "".join(v for k, v in answer.items() if not k.startswith("reasoning"))
    if path == COMPL:  # vLLM's completion class: the thinking stays in text
        text = text[text.index("answer\nFinal Answer:") + len("answer"):]
    assert text.lstrip("\n").startswith("Final Answer:"), answer
    assert reasoning_tokens(final) == 4


ANTHROPIC_BUDGET = {**ANTHROPIC, "max_tokens": 20, **BUDGET}


@pytest.mark.parametrize("path,body", [
    *(pytest.param(*p.values, id=p.id) for p in BUDGET_CASES),
    pytest.param("/v1/messages", ANTHROPIC_BUDGET, id="messages"),
])
def test_budget_streamed_as_unstreamed(api_server, path, body):
    """The same greedy budgeted request streamed and not: the same answer text."""
    plain = call(api_server, Case(path, body))
    streamed = call(api_server, Case(path, {**body, "stream": True}, stream=True))
    answer = {k: v for k, v in texts(plain).items() if not k.startswith("reasoning")}
    streamed_answer = {k: v for k, v in texts(streamed).items()
                       if not k.startswith("reasoning")}
    assert answer and streamed_answer == answer


@pytest.mark.parametrize("stream", [False, True])
def test_budget_anthropic_only_ours(api_server, stream):
    """/v1/messages with thinking_max (Anthropic's budget_tokens must be >= 1024, more than
    this model's context): the answer block starts with the forced prefix."""
    a = call(api_server, Case("/v1/messages", {**ANTHROPIC_BUDGET, "stream": True}
                              if stream else ANTHROPIC_BUDGET, stream=stream))
    assert a.status == 200, a.body
    assert texts(a)["block:text"].lstrip("\n").startswith("Final Answer:")
