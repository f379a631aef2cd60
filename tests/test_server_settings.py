"""Server settings seen from the outside, on a server shaped like an s1 deployment.

The tiny model's template is Qwen's plain one (it does not open a thinking block), served
with ``--thinking-format s1``, API keys from ``--api-key-file``, ``--no-auth-exempt-health``
and ``--default-thinking-min/max`` (the shared ``s1_server`` of conftest.py; its admission
limits are tested in test_hardening.py).
"""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.conftest import S1_AUTH, S1_DEFAULT_MAX, S1_DEFAULT_MIN, S1_KEYS

pytestmark = pytest.mark.engine
MSG = [{"role": "user", "content": "How many r in raspberry?"}]


@pytest.fixture(scope="module")
def server(s1_server):
    return s1_server


@pytest.fixture(scope="module")
def tok(tiny_s1):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_s1)


def chat(server, body: dict) -> dict:
    r = httpx.post(server.base_url + "/v1/chat/completions", headers=S1_AUTH, timeout=120,
                   json={"messages": MSG, "temperature": 0, **body})
    assert r.status_code == 200, r.text
    return r.json()


def never_ends(tok) -> dict[str, int]:
    """A logit_bias under which the model can neither end thinking nor its turn."""
    return {str(tok.convert_tokens_to_ids(t)): -100
            for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>")}


# ------------------------------------------------------------ the start delimiter
def test_server_opens_the_thinking_block_the_template_does_not(server, tok):
    rendered = tok.apply_chat_template(MSG, tokenize=False, add_generation_prompt=True)
    assert not rendered.rstrip().endswith("<|im_start|>think")  # the template does not
    opened = tok.encode(rendered + "<|im_start|>think", add_special_tokens=False)
    body = chat(server, {"thinking_min": 6, "thinking_max": 6, "max_tokens": 30})
    # The engine saw the prompt with the start delimiter appended...
    assert body["usage"]["prompt_tokens"] == len(opened)
    # ...so the block was open from the first token and the budget applied to it.
    choice = body["choices"][0]
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 6
    assert choice["budget"]["end"] == "cut"
    assert choice["message"]["content"].startswith("Final Answer:")


# ---------------------------------------------------------------- default budgets
def test_default_budgets_apply_to_requests_that_set_none(server, tok):
    body = chat(server, {"max_tokens": 40, "logit_bias": never_ends(tok)})
    choice = body["choices"][0]
    assert (choice["budget"]["thinking_min"], choice["budget"]["thinking_max"]) == (
        S1_DEFAULT_MIN, S1_DEFAULT_MAX)
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == S1_DEFAULT_MAX
    assert choice["budget"]["end"] == "cut"
    assert choice["message"]["content"].startswith("Final Answer:")


def test_default_minimum_extends_a_model_that_stops_at_once(server, tok):
    end = str(tok.convert_tokens_to_ids("<|im_start|>"))
    body = chat(server, {"max_tokens": 40, "logit_bias": {end: 20}})
    budget = body["choices"][0]["budget"]
    assert budget["continuation_count"] >= 1
    assert S1_DEFAULT_MIN <= budget["thinking_tokens"] <= S1_DEFAULT_MAX
    assert budget["end"] == "natural"


@pytest.mark.parametrize("given,applied", [
    ({"thinking_max": 2}, (2, 2)),  # the default minimum is lowered to a smaller maximum
    ({"thinking_min": 13}, (13, 13)),  # the default maximum is raised to a larger minimum
    ({"thinking_min": 0, "thinking_max": 7}, (0, 7)),
])
def test_request_budgets_override_the_defaults(server, tok, given, applied):
    body = chat(server, {"max_tokens": 40, "logit_bias": never_ends(tok), **given})
    budget = body["choices"][0]["budget"]
    assert (budget["thinking_min"], budget["thinking_max"]) == applied
    assert budget["thinking_tokens"] == applied[1]  # the model never stops: cut at the max


# ------------------------------------------------------------------------ the keys
def test_every_key_of_the_key_file_is_accepted(server):
    for key in S1_KEYS:  # surrounding blanks and empty lines in the file are ignored
        r = httpx.get(server.base_url + "/v1/models",
                      headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert r.status_code == 200, r.text
    wrong_scheme = {"Authorization": "Basic " + base64.b64encode(S1_KEYS[0].encode()).decode()}
    for headers in ({}, {"Authorization": "Bearer file-key-3"}, wrong_scheme):
        r = httpx.get(server.base_url + "/v1/models", headers=headers, timeout=30)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("path", ["/health", "/metrics", "/version"])
def test_operational_endpoints_need_the_key_when_not_exempt(server, path):
    r = httpx.get(server.base_url + path, timeout=30)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    r = httpx.get(server.base_url + path, headers=S1_AUTH, timeout=30)
    assert r.status_code == 200, r.text
