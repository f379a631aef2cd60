"""The real server's answers to requests it refuses or must clean up (the session's API
server, over loopback): the 503 with a retry hint while the engine loads, 400s naming
the parameter (ours and vLLM's checks), 401/404/413, input limits, unknown fields,
request ids kept, sanitised or replaced, CORS for the configured origin only, and a
chunked body counted against the limit.
"""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest

from tests.conftest import API_KEY as KEY
from tests.conftest import API_MODEL as MODEL
from tests.helpers import AUTH, MSG, post

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def server(api_server):
    return api_server


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=KEY, max_retries=0)


def test_startup_health_was_503_then_200(tiny_s1_open):
    """The port opens before the engine has loaded (the load is held back until the test
    has asked): /health says loading, generation is refused with a retry hint."""
    from tests.server_proc import ServerProcess

    server = ServerProcess(tiny_s1_open, hold_load=True, name="loading")
    try:
        server.wait_port()
        health = httpx.get(server.base_url + "/health", timeout=30)
        chat = httpx.post(server.base_url + "/v1/chat/completions", timeout=30,
                          json={"messages": [{"role": "user", "content": "hi"}]})
        assert health.status_code == 503 and health.json()["status"] == "loading"
        assert chat.status_code == 503 and chat.headers["retry-after"] == "5", chat.text
        assert "loading" in chat.json()["error"]["message"]
        # The server counted those answers itself.
        assert server.metric("s1_requests_total", endpoint="/health", status="503") >= 1
        server.release_load()
        server.wait_ready()
        r = httpx.get(server.base_url + "/health")
        assert r.status_code == 200 and r.content == b""  # vLLM's own /health once loaded
    finally:
        server.stop()

def test_models_and_unknown_fields(server):
    r = httpx.get(server.base_url + "/v1/models", headers=AUTH).json()
    assert r["data"][0]["id"] == MODEL and r["data"][0]["thinking_format"] == "s1"
    # An unknown field is a 400 naming it and the closest known one (OpenAI's behaviour);
    # --no-reject-unknown-fields restores vLLM's warn-and-ignore (tests/test_server_settings).
    r = post(server, "/v1/chat/completions", {"model": MODEL, "messages": MSG, "max_tokens": 5,
                                              "temprature": 0})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "temprature" and "did you mean 'temperature'" in err["message"]
    r = post(server, "/v1/chat/completions", {"model": MODEL, "messages": MSG, "max_tokens": 5,
                                              "user": "u-1", "metadata": {"k": "v"}})
    assert r.status_code == 200, r.text  # OpenAI bookkeeping that changes nothing


# ------------------------------------------------------------------- errors
@pytest.mark.parametrize("body,param,pattern", [
    ({"thinking_min": 5, "thinking_max": 3}, "thinking_min", "larger than thinking_max"),
    ({"thinking_max": -1}, "thinking_max", "greater than or equal to 0"),
    ({"thinking_max": 2.5}, "thinking_max", "integer"),
    ({"thinking_min": "5"}, "thinking_min", "integer"),
    ({"thinking_max": 50, "max_tokens": 40}, "max_tokens", "no room for an answer"),
    ({"max_thinking_tokens": 5, "thinking_max": 6}, "max_thinking_tokens", "conflicts"),
    ({"temperature": -1}, "temperature", "temperature"),
    # vLLM's own checks (its serving class answers; it names no parameter for these)
    ({"n": 0}, None, "n must be at least 1"),
    ({"messages": []}, None, "empty conversation"),
    ({"logit_bias": {"abc": 1}}, "logit_bias", "token ids"),
    ({"max_tokens": 100000}, "max_tokens", "max_model_len"),
])
def test_bad_parameters_are_400_with_param(server, body, param, pattern):
    r = post(server, "/v1/chat/completions", {"model": MODEL, "messages": MSG, **body})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "BadRequestError"
    assert re.search(pattern, err["message"]), err["message"]
    assert r.headers.get("x-request-id")


def test_sdk_raises_bad_request(oai):
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=MODEL, messages=MSG,
                                    extra_body={"thinking_min": 9, "thinking_max": 1})
    assert "thinking_min" in str(info.value)


def test_unknown_model_is_404(server, oai):
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="nope", messages=MSG)


def test_auth(server):
    """vLLM's own key check: the /v1/... paths, vLLM's answer."""
    r = httpx.post(server.base_url + "/v1/chat/completions", json={"messages": MSG})
    assert r.status_code == 401 and r.json() == {"error": "Unauthorized"}
    r = httpx.post(server.base_url + "/v1/chat/completions", json={"messages": MSG},
                   headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert httpx.get(server.base_url + "/health").status_code == 200  # exempt
    assert httpx.get(server.base_url + "/metrics").status_code == 200
    # Not under /v1, so open, as on `vllm serve`.
    assert httpx.post(server.base_url + "/tokenize", json={"prompt": "hi"}).status_code == 200


def test_prompt_longer_than_context_is_400(server):
    body = {"messages": [{"role": "user", "content": "raspberry " * 3000}]}
    assert len(json.dumps(body)) < 65536  # under the body limit: the context refuses it
    r = post(server, "/v1/chat/completions", body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "input_text"  # vLLM's name for the rendered prompt


def test_prompt_over_context_within_body_limit_is_400(server):
    r = post(server, "/v1/completions", {"prompt": "raspberry strawberry " * 800})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input_text"  # as vLLM


def test_oversized_body_is_413(server):
    r = post(server, "/v1/chat/completions",
             {"messages": [{"role": "user", "content": "x" * 70000}]})
    assert r.status_code == 413 and "error" in r.json()


def test_malformed_json_is_400(server):
    r = httpx.post(server.base_url + "/v1/chat/completions", content=b"{not json",
                   headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()


@pytest.mark.parametrize("body,param", [
    ({"n": 17}, "n"),
    ({"n": 2, "temperature": 0}, None),  # vLLM refuses n > 1 with greedy: a 400, not a 500
    ({"stop": [f"s{i}" for i in range(17)]}, "stop"),
    ({"stop": "x" * 300}, "stop"),
    ({"logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias"),
    ({"messages": MSG * 513}, "messages"),
])
def test_input_limits_name_the_field(server, body, param):
    r = post(server, "/v1/chat/completions", {"messages": MSG, **body})
    assert r.status_code == 400, r.text
    if param is not None:
        assert r.json()["error"]["param"] == param


def test_request_id_round_trip(server):
    r = post(server, "/v1/chat/completions", {"messages": MSG, "thinking_max": -3},
             headers={"x-request-id": "my-id-123"})
    assert r.headers["x-request-id"] == "my-id-123"
    assert r.json()["error"]["request_id"] == "my-id-123"


# ------------------------------------------------- the front door: body, id, CORS
def test_chunked_body_over_the_limit_is_413(server):
    """A chunked upload has no Content-Length: the limit is counted on the bytes read."""
    def chunks(parts: int, size: int):
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(parts):
            yield b"x" * size
        yield b'"}], "max_tokens": 2}'

    big = httpx.post(server.base_url + "/v1/chat/completions", content=chunks(70, 1000),
                     headers={**AUTH, "content-type": "application/json"}, timeout=60)
    assert big.request.headers.get("transfer-encoding") == "chunked"
    assert big.status_code == 413 and "65536 bytes" in big.json()["error"]["message"]
    small = httpx.post(server.base_url + "/v1/chat/completions", content=chunks(3, 100),
                       headers={**AUTH, "content-type": "application/json"}, timeout=60)
    assert small.status_code == 200, small.text  # replayed whole to the route


@pytest.mark.parametrize(("sent", "kept"), [
    ("abc\tdef<script>;\"x", "abcdefscriptx"),  # only letters, digits and -_. pass
    ("a" * 200, "a" * 128),  # at most 128 characters
])
def test_request_id_is_sanitised(server, sent, kept):
    r = httpx.get(server.base_url + "/v1/models", headers={**AUTH, "x-request-id": sent})
    assert r.status_code == 200 and r.headers["x-request-id"] == kept


def test_request_id_of_nothing_usable_is_replaced(server):
    r = post(server, "/v1/chat/completions", {"messages": MSG, "thinking_max": -3},
             headers={"x-request-id": "<>;;"})
    rid = r.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid) and r.json()["error"]["request_id"] == rid


def test_cors_allows_the_configured_origin_only(server):
    from tests.conftest import CORS_ORIGIN

    preflight = {"access-control-request-method": "POST",
                 "access-control-request-headers": "authorization,content-type"}
    ok = httpx.options(server.base_url + "/v1/chat/completions",
                       headers={"origin": CORS_ORIGIN, **preflight})
    assert ok.status_code == 200, ok.text  # a preflight carries no key
    assert ok.headers["access-control-allow-origin"] == CORS_ORIGIN
    assert "POST" in ok.headers["access-control-allow-methods"]
    other = httpx.options(server.base_url + "/v1/chat/completions",
                          headers={"origin": "http://other.test", **preflight})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    r = post(server, "/v1/chat/completions", {"messages": MSG, "max_tokens": 2},
             headers={"origin": CORS_ORIGIN})
    assert r.headers["access-control-allow-origin"] == CORS_ORIGIN


def test_detokenize_ids_out_of_range_are_400(server):
    for tokens in ([10**12], [-1], [1, "x"]):
        r = post(server, "/detokenize", {"model": MODEL, "tokens": tokens})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "tokens" and "token ids in [0, " in err["message"]

