"""Server settings seen from the outside, on a server shaped like an s1 deployment.

The tiny model's template is Qwen's plain one (it does not open a thinking block), served
with ``--thinking-format s1``, API keys from ``--api-key-file``, ``--no-auth-exempt-health``,
``--default-thinking-min/max``, ``--no-reject-unknown-fields`` (vLLM's warn-and-ignore), and
tight admission limits (2 requests in flight, 2 engine
slots, no sequence waiting) that the 429 tests fill with held streams (see
tests/server_proc.py HOLD: deterministic, not a race with the engine).
"""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.server_proc import KeyedServerProcess, held_streams

pytestmark = pytest.mark.engine
MSG = [{"role": "user", "content": "How many r in raspberry?"}]
S1_KEYS = ("file-key-1", "file-key-2")
S1_AUTH = {"Authorization": f"Bearer {S1_KEYS[0]}"}
S1_DEFAULT_MIN, S1_DEFAULT_MAX = 4, 10


@pytest.fixture(scope="module")
def server(tiny_s1, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "api-keys"
    keys.write_text(f"\n  {S1_KEYS[0]}  \n\n{S1_KEYS[1]}\n")
    proc = KeyedServerProcess(
        tiny_s1, "--thinking-format", "s1", "--api-key-file", str(keys),
        "--no-auth-exempt-health", "--default-thinking-min", str(S1_DEFAULT_MIN),
        "--default-thinking-max", str(S1_DEFAULT_MAX), "--max-in-flight", "2",
        "--max-num-seqs", "2", "--max-waiting", "0", "--max-model-len", "4096",
        "--no-reject-unknown-fields", key=S1_KEYS[0])
    try:
        yield proc.wait_ready()
    finally:
        assert proc.stop() == 0, "SIGTERM must exit 0"


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
    # Greedy, every step tries to end: held (the model's next choice is written) and
    # guarded (the attempt becomes Wait, one token) alternate from the block's first token
    # until the minimum of 4 is passed: 2 Waits, and the held step after the last one.
    assert (budget["continuation_count"], budget["thinking_tokens"]) == (2, S1_DEFAULT_MIN + 1)
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
        assert r.status_code == 401 and r.json() == {"error": "Unauthorized"}  # vLLM's


@pytest.mark.parametrize("path", ["/health", "/metrics", "/version"])
def test_operational_endpoints_need_the_key_when_not_exempt(server, path):
    r = httpx.get(server.base_url + path, timeout=30)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    r = httpx.get(server.base_url + path, headers=S1_AUTH, timeout=30)
    assert r.status_code == 200, r.text


# --------------------------------------------------------------------- admission
def post(server, body: dict) -> httpx.Response:
    return httpx.post(server.base_url + "/v1/chat/completions", headers=S1_AUTH, json=body,
                      timeout=120)


def test_overload_answers_429_with_retry_after(server):
    with held_streams(server, MSG, 2):
        r = post(server, {"messages": MSG, "max_tokens": 30})
        assert r.status_code == 429, r.text
        assert r.headers["retry-after"] == "1"
        err = r.json()["error"]
        assert err["type"] == "rate_limit_error" and "2 requests in flight" in err["message"]
        # Operational endpoints are not generation requests: they answer at the limit.
        assert httpx.get(server.base_url + "/health", headers=S1_AUTH).status_code == 200
    r = post(server, {"messages": MSG, "max_tokens": 30})
    assert r.status_code == 200, r.text


def test_waiting_sequences_over_the_limit_answer_429(server):
    """2 engine slots, none waiting: with one sequence running, a request of 2 choices would
    leave one waiting (refused) while a request of 1 fits (served)."""
    with held_streams(server, MSG, 1):
        r = post(server, {"messages": MSG, "max_tokens": 30, "n": 2, "temperature": 1})
        assert r.status_code == 429, r.text
        assert r.headers["retry-after"] == "1"
        err = r.json()["error"]
        assert err["type"] == "rate_limit_error" and "waiting" in err["message"]
        r = post(server, {"messages": MSG, "max_tokens": 30})
        assert r.status_code == 200, r.text
    r = post(server, {"messages": MSG, "max_tokens": 30, "n": 2, "temperature": 1})
    assert r.status_code == 200, r.text


def test_unknown_fields_are_ignored_when_the_setting_says_so(server):
    """--no-reject-unknown-fields: a typo is ignored (as vLLM does), not a 400; a field that
    would change the output on another surface is still refused."""
    body = chat(server, {"max_tokens": 40, "temprature": 2.0})
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    r = httpx.post(server.base_url + "/v1/chat/completions", headers=S1_AUTH, timeout=120,
                   json={"messages": MSG, "max_tokens": 40, "max_output_tokens": 5})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_output_tokens"
