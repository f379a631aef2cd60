"""Qwen3's real tokenizer and chat template (tests/published.py) through the server:
``enable_thinking`` on and off, with budgets, on the native path and on vLLM's."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import CACHE

pytestmark = pytest.mark.timeout(900)
MSG = [{"role": "user", "content": "How many r in strawberry?"}]


@pytest.fixture(scope="module")
def qwen3_server():
    from tests.published import qwen3_checkpoint
    from tests.server_proc import ServerProcess

    proc = ServerProcess(qwen3_checkpoint(CACHE), "--thinking-format", "qwen3",
                         "--max-model-len", "2048")
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


def chat(server, **body):
    return httpx.post(server.base_url + "/v1/chat/completions", timeout=120,
                      json={"messages": MSG, "max_tokens": 24, "temperature": 0, **body})


def test_the_template_is_qwen3s(qwen3_server):
    r = httpx.post(qwen3_server.base_url + "/tokenize", json={
        "messages": MSG, "add_generation_prompt": True,
        "chat_template_kwargs": {"enable_thinking": False}}, timeout=60)
    assert r.status_code == 200, r.text
    ids = r.json()["tokens"]
    text = httpx.post(qwen3_server.base_url + "/detokenize", json={"tokens": ids},
                      timeout=60).json()["prompt"]
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n"), text


@pytest.mark.parametrize("delegated", [False, True])
def test_enable_thinking_false_means_no_thinking(qwen3_server, delegated):
    extra = {"logprobs": True} if delegated else {}
    off = {"chat_template_kwargs": {"enable_thinking": False}}
    r = chat(qwen3_server, **off, **extra)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    assert not out["choices"][0]["message"].get("reasoning")
    budget = out["choices"][0]["budget"]
    assert budget["thinking_tokens"] == 0 and budget["thinking_max"] is None

    r = chat(qwen3_server, **off, **extra, thinking_max=8)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "thinking_max" and "enable_thinking" in err["message"]


@pytest.mark.parametrize("delegated", [False, True])
def test_budgets_with_thinking_on(qwen3_server, delegated):
    extra = {"logprobs": True} if delegated else {}
    r = chat(qwen3_server, thinking_min=6, thinking_max=6, **extra)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == 6
    assert out["choices"][0]["budget"]["hit_max"]


def test_anthropic_budget_tokens_is_thinking_max(qwen3_server):
    """Anthropic's smallest budget (1024) needs a longer context than the API suite's."""
    anthropic = pytest.importorskip("anthropic")
    client = anthropic.Anthropic(base_url=qwen3_server.base_url, api_key="-", max_retries=0)
    m = client.messages.create(model="tiny-qwen3", max_tokens=1040, messages=MSG,
                               thinking={"type": "enabled", "budget_tokens": 1024},
                               extra_body={"seed": 5, "temperature": 1})
    assert [b.type for b in m.content][0] == "thinking"
    # The same request as chat with thinking_max=1024 (same prompt, seed, sampling):
    r = chat(qwen3_server, max_tokens=1040, seed=5, temperature=1, thinking_max=1024)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == 1024
    assert out["choices"][0]["message"]["reasoning"] == m.content[0].thinking
