"""The ``<think>`` formats through the real server and engine (tiny model, Qwen3 template).

The tiny ``<think>`` model is served with a Qwen3-style chat template: the generation prompt
does not open the block (the server must), and ``enable_thinking=False`` closes it in the
prompt. The format is auto-detected as ``qwen3``. Raw prompts on ``/v1/completions`` cover
a prompt that opens the block itself (the DeepSeek-R1 layout, same delimiters) and a block
the model opens itself.
"""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

pytestmark = pytest.mark.engine
MSG = [{"role": "user", "content": "How many r in raspberry?"}]
QWEN3_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)
ASSISTANT = "<|im_start|>user\nHow many r in raspberry?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tiny_qwen3(tiny_think, tmp_path_factory):
    """The tiny <think> checkpoint with a Qwen3-style template (enable_thinking)."""
    path = tmp_path_factory.mktemp("tiny") / "tiny-qwen3"
    shutil.copytree(tiny_think, path)
    (path / "chat_template.jinja").write_text(QWEN3_TEMPLATE)
    config = json.loads((path / "tokenizer_config.json").read_text())
    config["chat_template"] = QWEN3_TEMPLATE
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def tok(tiny_qwen3):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_qwen3)


@pytest.fixture(scope="module")
def server(tiny_qwen3):
    from tests.server_proc import ServerProcess

    proc = ServerProcess(tiny_qwen3, "--served-model-name", "qwen3-tiny")
    try:
        yield proc.wait_ready()
    finally:
        assert proc.stop() == 0


def post(server, path: str, body: dict) -> dict:
    r = httpx.post(server.base_url + path, json={"temperature": 0, **body}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def think_bias(tok, value: int) -> dict[str, int]:
    return {str(tok.convert_tokens_to_ids("<think>")): value}


def test_qwen3_is_detected(server):
    r = httpx.get(server.base_url + "/v1/models", timeout=30).json()
    assert r["data"][0]["thinking_format"] == "qwen3"


def test_chat_opens_the_block_the_template_leaves_closed(server, tok):
    rendered = tok.apply_chat_template(MSG, tokenize=False, add_generation_prompt=True)
    assert rendered == ASSISTANT
    body = post(server, "/v1/chat/completions", {"messages": MSG, "max_tokens": 30,
                                                  "thinking_min": 5, "thinking_max": 5})
    assert body["usage"]["prompt_tokens"] == len(
        tok.encode(rendered + "<think>", add_special_tokens=False))
    choice = body["choices"][0]
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 5
    assert choice["budget"]["end"] == "cut"
    assert "</think>" not in choice["message"]["reasoning"] + choice["message"]["content"]
    assert body["usage"]["completion_tokens"] == 30  # qwen3 has no answer prefix: the
    # model answers after the forced newline and </think> (tiny model: until max_tokens)


def test_enable_thinking_false_keeps_the_block_closed(server, tok):
    kwargs = {"enable_thinking": False}
    closed = tok.apply_chat_template(MSG, tokenize=False, add_generation_prompt=True, **kwargs)
    assert closed.endswith("<think>\n\n</think>\n\n")
    body = post(server, "/v1/chat/completions", {
        "messages": MSG, "max_tokens": 20, "thinking_max": 3, "chat_template_kwargs": kwargs,
        "logit_bias": think_bias(tok, -100)})  # the model cannot reopen it
    assert body["usage"]["prompt_tokens"] == len(tok.encode(closed, add_special_tokens=False))
    choice = body["choices"][0]
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    assert not choice["message"]["reasoning"]
    assert choice["budget"]["end"] == "no_thinking"
    assert choice["budget"]["answer_tokens"] == body["usage"]["completion_tokens"] == 20


def test_prompt_that_opens_the_block_r1_layout(server):
    body = post(server, "/v1/completions", {"prompt": ASSISTANT + "<think>\n", "max_tokens": 24,
                                            "thinking_min": 4, "thinking_max": 4})
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 4
    assert body["choices"][0]["budget"]["end"] == "cut"


def test_block_the_model_opens_itself(server, tok):
    """No <think> in the prompt; the model is made to write one at once (and keep writing
    it). The budget starts counting where the model opened the block."""
    common = {"prompt": ASSISTANT, "max_tokens": 12, "logit_bias": think_bias(tok, 100)}
    capped = post(server, "/v1/completions", {**common, "thinking_max": 3})
    assert capped["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3
    assert capped["choices"][0]["budget"]["end"] == "cut"
    free = post(server, "/v1/completions", {**common, "thinking_min": 0})
    # Without a maximum nothing ends the block: 11 thinking tokens after the model's <think>.
    assert free["usage"]["completion_tokens_details"]["reasoning_tokens"] == 11
    assert free["choices"][0]["budget"]["end"] == "unfinished"
