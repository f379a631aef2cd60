"""Schemathesis against the server's own /openapi.json (bounded run).

Targets: no 5xx for any generated input, and every response matching the
schema the server publishes (status codes, content types, bodies).

The request bodies are fuzzed from a tightened copy of that schema (:func:`tighten`).
vLLM's request models publish fewer constraints than their validators enforce: chat
``messages`` and ``tools`` may be empty arrays, a completions ``prompt`` may be absent or
empty, an Anthropic ``model`` any string, and the server's own limits (stop strings,
reasoning efforts, unknown fields) are in no schema. Schemathesis builds its positive
cases from the smallest values a schema allows, so with the published schema every one
of the ~1,000 positive coverage cases on chat, completions and messages carried an
empty ``messages``, ``tools`` or ``prompt`` (or ``model: ""``) and was refused before
generation ("schema validation mismatch"). The tightened copy states what the server
accepts, so those cases reach the engine, and caps the tokens to generate so that they
stay quick; the responses are still checked against the published schemas.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_EFFORTS, API_KEY, API_MODEL

pytestmark = pytest.mark.engine

CHECKS = ("not_a_server_error,response_schema_conformance,status_code_conformance,"
          "content_type_conformance")
# vLLM's Responses schema is large: its coverage phase alone generates ~13,000 cases
# (~5 min here), so /v1/responses gets the example and fuzzing phases in a second run.
# (That coverage phase found vLLM 0.32's message parser asserting on a file part inside
# a function_call_output: now a 400, see server/api/request_layer.py _check_tool_outputs.)
RESPONSES = r"^/v1/responses"
# The app is vLLM's own, so its /openapi.json lists every route `vllm serve` mounts. One of
# them is not ours to fuzz: vLLM 0.32's structured decision API (/v1/systemone) answers 501
# "not supported" for any model without that head, on `vllm serve` as here; s1 adds nothing
# to it.
NOT_OURS = r"|^/v1/systemone$"


# Tokens a fuzzed request may ask to generate: enough to reach and leave the engine.
MAX_TOKENS = 8
TOKENS = {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS}
STOP = {"type": "string", "minLength": 1, "maxLength": 256}  # server/api/limits.py


def tighten(spec: dict, vocab_size: int) -> dict:
    """``spec`` (the server's /openapi.json) with request bodies the server accepts: the
    constraints vLLM's validators and s1-serve's limits enforce but the published schema
    omits, and generation capped at MAX_TOKENS tokens and n <= 2."""
    spec = copy.deepcopy(spec)
    schemas = spec["components"]["schemas"]
    token_ids = {"type": "array", "minItems": 1,
                 "items": {"type": "integer", "minimum": 0, "maximum": vocab_size - 1}}
    for name in ("ChatCompletionRequest", "BatchChatCompletionRequest", "CompletionRequest"):
        model = schemas[name]
        # Unknown fields are a 400 (server/api/field_policy.py), and so is best_of.
        model["additionalProperties"] = False
        model["properties"].pop("best_of", None)
        model["required"] = sorted({*model.get("required", []), "max_tokens"})
        _replace(model["properties"], {
            "max_tokens": TOKENS,
            "max_completion_tokens": TOKENS,  # chat: it overrides max_tokens
            "n": {"type": "integer", "minimum": 1, "maximum": 2},
            "min_tokens": {"type": "integer", "minimum": 0, "maximum": 1},
            "stop": {"anyOf": [STOP, {"type": "array", "items": STOP, "maxItems": 4}]},
            "allowed_token_ids": token_ids,
            "reasoning_effort": {"enum": sorted(API_EFFORTS)},  # --reasoning-effort-budgets
        })
    chat = schemas["ChatCompletionRequest"]["properties"]
    chat["messages"]["minItems"] = 1  # "Cannot apply chat template to an empty conversation"
    chat["tools"] = {"type": "array", "minItems": 1,  # "`tools` must not be an empty array"
                     "items": chat["tools"]["anyOf"][0]["items"]}
    completion = schemas["CompletionRequest"]
    # "Either prompt or prompt_embeds must be provided and non-empty"; prompt_embeds needs
    # --enable-prompt-embeds.
    completion["properties"].pop("prompt_embeds")
    completion["properties"]["prompt"] = {"anyOf": [
        token_ids, {"type": "array", "minItems": 1, "items": token_ids},
        {"type": "string", "minLength": 1},
        {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}]}
    completion["required"] = sorted({*completion.get("required", []), "prompt"})
    for name in ("AnthropicMessagesRequest", "AnthropicCountTokensRequest"):
        props = schemas[name]["properties"]
        props["messages"]["minItems"] = 1
        _replace(props, {
            "model": {"enum": [API_MODEL]},  # "Model is required" for "", else a 404
            "max_tokens": TOKENS,
            "stop_sequences": {"type": "array", "items": STOP, "maxItems": 4},
        })
    return spec


def _replace(properties: dict, schemas: dict) -> None:
    """Replace the schemas of the properties a model has (and add none)."""
    properties.update((k, v) for k, v in schemas.items() if k in properties)


def _st(api_server, tmp_path: Path, *args: str, schema: Path | None = None) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is part of the dev extra"
    location = [str(schema), "--url", api_server.base_url] if schema else [
        api_server.base_url + "/openapi.json"]
    cmd = [st, "run", *location, "--checks", CHECKS,
           "--max-examples", "25", "--request-timeout", "120", "--workers", "1",
           "--seed", "1", "-H", f"Authorization: Bearer {API_KEY}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def test_schemathesis_finds_nothing(api_server, tiny_s1_open, tmp_path: Path):
    config = json.loads((tiny_s1_open / "config.json").read_text())
    spec = httpx.get(api_server.base_url + "/openapi.json", timeout=60).json()
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(tighten(spec, config["vocab_size"])))
    _st(api_server, tmp_path, "--exclude-path-regex", RESPONSES + NOT_OURS, schema=schema)


def test_schemathesis_finds_nothing_in_responses(api_server, tmp_path: Path):
    _st(api_server, tmp_path, "--include-path-regex", RESPONSES,
        "--phases", "examples,fuzzing,stateful")


@pytest.mark.parametrize("part", [
    {"type": "input_file", "file_data": None, "file_id": None, "file_url": None,
     "filename": None, "detail": None},
    {"type": "input_text", "text": "42"},
])
def test_a_tool_output_as_content_parts_is_a_400(api_server, part):
    r = httpx.post(api_server.base_url + "/v1/responses", timeout=60,
                   headers={"Authorization": f"Bearer {API_KEY}"},
                   json={"input": [{"type": "function_call_output", "call_id": "c1",
                                    "output": [part]}]})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "input" and "as a string" in error["message"]


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/completions", {"prompt": "hi"}),
])
def test_structured_outputs_that_is_no_object_is_a_400(api_server, path, body):
    """Found by the tightened coverage phase: vLLM 0.32's validators call .get() on
    structured_outputs before its type is checked (a 500)."""
    r = httpx.post(api_server.base_url + path, timeout=60,
                   headers={"Authorization": f"Bearer {API_KEY}"},
                   json={**body, "max_tokens": 2, "structured_outputs": [None, None]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "structured_outputs"
