"""One request to any API surface of a running server, and the parts of its answer the
parity and budget tests compare (test_vllm_parity, test_budget_surfaces): the case (path,
body, streamed or not), the answer (status, JSON body or typed SSE events), its shape as
``path:type`` leaves, its generated texts by kind, its token counts and finish reasons,
its error message."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import API_KEY, API_MODEL
from tests.stream_reader import sse_typed

AUTH = {"Authorization": f"Bearer {API_KEY}"}
MSG = [{"role": "user", "content": "How many r in raspberry?"}]
CHAT, COMPL = "/v1/chat/completions", "/v1/completions"
OPEN_PROMPT = ("<|im_start|>user\nHow many r in raspberry?<|im_end|>\n"
               "<|im_start|>assistant\n<|im_start|>think\n")
ANTHROPIC = {"model": API_MODEL, "max_tokens": 8, "temperature": 0, "messages": MSG}


@dataclasses.dataclass(frozen=True)
class Case:
    path: str
    body: dict | None = None  # None: GET
    stream: bool = False
    text: bool = True  # greedy: the generated texts must be equal too
    auth: bool = True
    shape: bool = True  # compare the body's shape (False: the status only)
    no_ws: bool = False  # ban whitespace tokens (conftest.no_whitespace): tool calls finish
    # A deliberate difference (README): asserts s1-serve's documented answer exactly,
    # given (vLLM's answer, ours), instead of parity.
    differs: Callable[[Any, Any], None] | None = None


def chat(**kw: Any) -> dict:
    return {"model": API_MODEL, "messages": MSG, "max_tokens": 8, "temperature": 0, **kw}


def cmpl(**kw: Any) -> dict:
    return {"model": API_MODEL, "prompt": "Let me think", "max_tokens": 6, "temperature": 0,
            **kw}



@dataclasses.dataclass
class Answer:
    status: int
    body: Any = None  # JSON (unstreamed)
    # (event name, data): chat and completions events are all ``message``
    events: list[tuple[str, Any]] = dataclasses.field(default_factory=list)


def call(server: Any, case: Case) -> Answer:
    url = server.base_url + case.path
    headers = AUTH if case.auth else {}
    if case.body is None:
        r = httpx.get(url, headers=headers, timeout=120)
        return Answer(r.status_code, r.json() if r.content else {})
    body = {k: v for k, v in case.body.items() if v is not None}
    if not case.stream:
        r = httpx.post(url, json=body, headers=headers, timeout=120)
        return Answer(r.status_code, r.json())
    with httpx.stream("POST", url, json=body, headers=headers, timeout=120) as r:
        if r.status_code != 200:
            r.read()
            return Answer(r.status_code, r.json())
        return Answer(200, events=sse_typed(r))


def leaves(x: Any, path: str = "") -> set[str]:
    """``path:type`` of every node; nulls count as absent, list items are merged."""
    if isinstance(x, dict):
        out = {f"{path}:dict"} if path else set()
        for k, v in x.items():
            if v is not None:
                out |= leaves(v, f"{path}.{k}" if path else k)
        return out
    if isinstance(x, list):
        out = {f"{path}:list"}
        for v in x:
            if v is not None:
                out |= leaves(v, path + "[]")
        return out
    return {f"{path}:{type(x).__name__}"}


def shape(a: Answer) -> set[str]:
    if not a.events:
        return leaves(a.body)
    out = set()
    for kind, data in a.events:
        out |= {f"<{kind}>"} | {f"<{kind}>.{p}" for p in leaves(data)}
    return out


def allowed(leaf: str, patterns: tuple[str, ...]) -> bool:
    bare = leaf.split(">.", 1)[-1]  # a stream's event prefix does not matter here
    return any(fnmatch.fnmatchcase(x, p) for x in (leaf, bare) for p in patterns)


def texts(a: Answer) -> dict[str, str]:
    """The generated texts by kind (content, reasoning, per choice), None as ''."""
    out: dict[str, str] = {}

    def add(key: str, value: Any) -> None:
        if isinstance(value, str):
            out[key] = out.get(key, "") + value

    if a.body is not None and not a.events:
        body = a.body
        for c in body.get("choices") or ():
            i = c.get("index", 0)
            add(f"text{i}", c.get("text"))
            m = c.get("message") or {}
            add(f"content{i}", m.get("content"))
            add(f"reasoning{i}", m.get("reasoning"))
            for t in m.get("tool_calls") or ():
                add(f"tool{i}", t["function"]["name"] + t["function"]["arguments"])
        for item in body.get("output") or ():  # Responses
            for part in item.get("content") or ():
                add(f"{item['type']}:{part.get('type')}", part.get("text"))
        if body.get("type") == "message":  # Anthropic
            for block in body.get("content") or ():
                add(f"block:{block['type']}", block.get("text") or block.get("thinking"))
    for kind, data in a.events:
        if not isinstance(data, dict):
            continue
        for c in data.get("choices") or ():
            i = c.get("index", 0)
            add(f"text{i}", c.get("text"))
            d = c.get("delta") or {}
            add(f"content{i}", d.get("content"))
            add(f"reasoning{i}", d.get("reasoning"))
            for t in d.get("tool_calls") or ():
                f = t.get("function") or {}
                add(f"tool{i}", (f.get("name") or "") + (f.get("arguments") or ""))
        if kind == "response.output_text.delta":
            add("message:output_text", data.get("delta"))
        if kind == "content_block_delta":  # text_delta -> block:text, as unstreamed
            delta = data.get("delta") or {}
            add(f"block:{str(delta.get('type')).removesuffix('_delta')}",
                delta.get("text") or delta.get("thinking"))
    return {k: v for k, v in out.items() if v}


def values(a: Answer) -> dict[str, Any]:
    """Token counts (every ``usage`` object) and finish reasons; the last one seen wins."""
    out: dict[str, Any] = {}

    def walk(x: Any, path: str) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                if k in ("finish_reason", "stop_reason") and isinstance(v, str):
                    out[f"{path}.{k}"] = v
                elif k == "usage" and isinstance(v, dict):
                    out.update({p: n for p, n in _ints(v, "usage")})
                else:
                    walk(v, path)
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, f"{path}[{v.get('index', i) if isinstance(v, dict) else i}]")

    for b in [a.body] if not a.events else [d for _, d in a.events]:
        walk(b, "")
    return out


def _ints(x: Any, path: str) -> list[tuple[str, int]]:
    if isinstance(x, dict):
        return [t for k, v in x.items() for t in _ints(v, f"{path}.{k}")]
    return [(path, x)] if isinstance(x, int) and not isinstance(x, bool) else []


def error_message(a: Answer) -> str | None:
    err = a.body.get("error") if isinstance(a.body, dict) else None
    if isinstance(err, dict):
        return err.get("message")
    return err if isinstance(err, str) else None



def reasoning_tokens(body: dict) -> int:
    """The reasoning token count of a final body (chat/completions or Responses usage)."""
    usage = body["usage"]
    details = usage.get("completion_tokens_details") or usage.get("output_tokens_details")
    return details["reasoning_tokens"]
