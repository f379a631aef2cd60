"""Qwen3's real tokenizer and chat template (tests/published.py) through the server:
``enable_thinking`` on and off, with budgets, on the native path and on vLLM's."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.conftest import CACHE

pytestmark = pytest.mark.engine
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


# ------------------------------------ where the block opens: the server, the prompt, the model
@pytest.fixture(scope="module")
def qwen3_tok():
    from transformers import AutoTokenizer

    from tests.published import qwen3_checkpoint

    return AutoTokenizer.from_pretrained(qwen3_checkpoint(CACHE))


def generation_prompt(tok, **kwargs) -> str:
    return tok.apply_chat_template(MSG, tokenize=False, add_generation_prompt=True, **kwargs)


def test_qwen3_is_auto_detected(qwen3_tok):
    from server.budget.formats import detect_format

    assert detect_format(qwen3_tok).name == "qwen3"


def test_server_opens_the_block_the_template_leaves_closed(qwen3_server, qwen3_tok):
    prompt = generation_prompt(qwen3_tok)
    assert prompt.endswith("<|im_start|>assistant\n")  # Qwen3 lets the model open <think>
    r = chat(qwen3_server, thinking_min=5, thinking_max=5)
    assert r.status_code == 200, r.text
    out = r.json()
    # The engine saw the prompt with <think> appended, so the budget held from token one.
    assert out["usage"]["prompt_tokens"] == len(
        qwen3_tok.encode(prompt + "<think>", add_special_tokens=False))
    assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == 5


def completion(server, **body) -> dict:
    r = httpx.post(server.base_url + "/v1/completions", timeout=120,
                   json={"temperature": 0, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_prompt_that_opens_the_block_r1_layout(qwen3_server, qwen3_tok):
    """The DeepSeek-R1 layout (same delimiters): the prompt itself ends inside <think>."""
    out = completion(qwen3_server, prompt=generation_prompt(qwen3_tok) + "<think>\n",
                     max_tokens=24, thinking_min=4, thinking_max=4)
    assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == 4
    assert out["choices"][0]["budget"]["end"] == "cut"


def test_block_the_model_opens_itself(qwen3_server, qwen3_tok):
    """No <think> in the prompt; the model is made to write one at once (and to keep writing
    it). The budget counts from where the model opened the block."""
    think = qwen3_tok.convert_tokens_to_ids("<think>")
    common = {"prompt": generation_prompt(qwen3_tok), "max_tokens": 12,
              "logit_bias": {str(think): 100}}
    capped = completion(qwen3_server, **common, thinking_max=3)
    assert capped["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3
    assert capped["choices"][0]["budget"]["end"] == "cut"
    free = completion(qwen3_server, **common, thinking_min=0)
    # Nothing ends the block without a maximum: 11 thinking tokens after the model's <think>.
    assert free["usage"]["completion_tokens_details"]["reasoning_tokens"] == 11
    assert free["choices"][0]["budget"]["end"] == "unfinished"
