"""Requests to the shared demo server (tests/conftest.py ``demo_server``) that the
deadline and early-stop API tests share: its key, a question, a post, the tokenizer over
HTTP, a streamed chat answer gathered, and one body per non-chat surface."""

from __future__ import annotations

import json

import httpx

from tests.conftest import DEMO_KEY

HEADERS = {"Authorization": f"Bearer {DEMO_KEY}"}
MESSAGES = [{"role": "user", "content": "How many s in horseradish?"}]


def post(server, body: dict, path: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.post(server.base_url + path, json=body, headers=HEADERS, timeout=300)


def ids_of(server, text: str) -> list[int]:
    r = post(server, {"prompt": text, "add_special_tokens": False}, "/tokenize")
    assert r.status_code == 200, r.text
    return r.json()["tokens"]


def streamed(server, body: dict) -> dict:
    """A streamed chat answer gathered: content, reasoning, token ids, budget, usage."""
    got = {"content": "", "reasoning": "", "token_ids": [], "budget": None, "usage": None}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", headers=HEADERS,
                      json={**body, "stream": True,
                            "stream_options": {"include_usage": True}}, timeout=300) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            got["usage"] = chunk.get("usage") or got["usage"]
            for c in chunk.get("choices", []):
                got["content"] += c["delta"].get("content") or ""
                got["reasoning"] += c["delta"].get("reasoning") or ""
                got["token_ids"] += c.get("token_ids") or []
                got["budget"] = c.get("budget") or got["budget"]
    return got


PROMPT = ("<|im_start|>user\nHow many s in horseradish?<|im_end|>\n<|im_start|>assistant\n"
          "<|im_start|>think\n")
SURFACES = {
    "/v1/completions": {"prompt": PROMPT, "max_tokens": 40},
    "/v1/responses": {"input": MESSAGES[0]["content"], "max_output_tokens": 40},
    "/v1/messages": {"model": "s1-demo", "messages": MESSAGES, "max_tokens": 40},
}
