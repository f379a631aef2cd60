"""Constants and small helpers shared by several test modules (test modules import from
here, never from each other)."""

from __future__ import annotations

import re

import httpx

from server.engine.preflight import ModelShape
from tests.conftest import API_KEY, DEMO_KEY
from tests.stream_reader import DONE, stream_post

# The columns of the published simplescaling/s1K dataset, in its order: what the "s1k"
# export layout must reproduce (an oracle of the tests, not used by the exporter).
S1K_COLUMNS = ("question", "solution", "cot_type", "source_type", "metadata", "cot",
               "thinking_trajectories", "attempt")

# ------------------------------------------------------------- the API server's requests
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MSG = [{"role": "user", "content": "How many r in raspberry?"}]


def post(server, path: str, body: dict, headers: dict | None = None) -> httpx.Response:
    """POST ``body`` to the shared API server with its key."""
    return httpx.post(server.base_url + path, json=body, headers={**AUTH, **(headers or {})},
                      timeout=120)


# ------------------------------------------------------------ the demo server's requests
DEMO_Q = "How many s in horseradish?"
DEMO_HEADERS = {"Authorization": f"Bearer {DEMO_KEY}"}


def demo_chat(server, stream: bool = False, **body) -> dict:
    """A greedy chat request to the demo server (``DEMO_Q``); streamed, the chunks are
    joined into the non-streamed shape (reasoning, content, the budget object)."""
    payload = {"messages": [{"role": "user", "content": DEMO_Q}], "temperature": 0, **body}
    if not stream:
        r = httpx.post(server.base_url + "/v1/chat/completions", json=payload,
                       headers=DEMO_HEADERS, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()
    reasoning, content, budget, finish = "", "", None, None
    events = stream_post(server.base_url, "/v1/chat/completions", payload, DEMO_HEADERS)
    assert events[-1] == DONE
    for event in events[:-1]:
        for ch in event["choices"]:
            assert budget is None, "the budget object comes with the choice's last chunk"
            reasoning += ch["delta"].get("reasoning") or ""
            content += ch["delta"].get("content") or ""
            budget, finish = ch.get("budget"), ch.get("finish_reason")
    assert finish is not None and budget is not None
    return {"choices": [{"message": {"reasoning": reasoning, "content": content},
                         "budget": budget}]}


# ------------------------------------------------------------------ pre-flight shapes
# config.json of Qwen/Qwen2.5-32B, the base of simplescaling/s1.1-32B (the fields that count).
QWEN25_32B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 152064,
    "hidden_size": 5120, "num_hidden_layers": 64, "num_attention_heads": 40,
    "num_key_value_heads": 8, "intermediate_size": 27648, "tie_word_embeddings": False,
    "max_position_embeddings": 32768, "torch_dtype": "bfloat16",
}
# What NVML reports for an H100 80GB HBM3: 81,559 MiB (79.65 GiB).
H100_BYTES = 81559 * 1024**2
SHAPE = ModelShape.from_config(QWEN25_32B)


# ---------------------------------------------------------------------------- PromQL
_PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                    "and", "or", "unless", "offset", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (not functions, labels, keywords or variables)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"'(?:[^'\\]|\\.)*'", "''", expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range selectors
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\$\{?\w+\}?", " ", expr)  # Grafana variables
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word = m.group(0)
        if m.start() > 0 and (expr[m.start() - 1].isalnum() or expr[m.start() - 1] == "."):
            continue  # the exponent or unit of a number (1e3, 5m)
        if expr[m.end():].lstrip().startswith("(") or word.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


def count_runs(ids: list[int], run: list[int]) -> int:
    """Non-overlapping occurrences of ``run`` in ``ids``, read off the raw ids."""
    count = i = 0
    while i + len(run) <= len(ids):
        if ids[i:i + len(run)] == run:
            count, i = count + 1, i + len(run)
        else:
            i += 1
    return count


def shutdown_llm(llm) -> None:
    """Stop an in-process ``vllm.LLM``'s engine processes. vLLM 0.32's CPU worker does not
    exit within its grace period, so the default shutdown waits 5 s and force-kills it
    anyway; 1 s is that wait, and the same end."""
    llm.llm_engine.engine_core.shutdown(timeout=1)


def s1_app(argv: list[str], monkeypatch) -> object:
    """s1-serve's ASGI app for ``argv`` with no engine: vLLM's own app built from the
    command line (the s1 plugin attached by vLLM's loader), behind the front, its state
    never initialised (as while the model loads; run no lifespan)."""
    from vllm.entrypoints.launchers.app import build_app

    from server.__main__ import plugins_with_s1
    from server.api import plugin
    from server.api.cli import parse
    from server.api.front import Front

    args, settings = parse(argv)
    # Through monkeypatch: a VLLM_PLUGINS left behind would reach every later server.
    monkeypatch.setenv("VLLM_PLUGINS", plugins_with_s1(None))
    monkeypatch.setattr(plugin, "_SETTINGS", settings)
    front = Front(None, keys=settings.all_api_keys(), exempt=settings.auth_exempt_health,
                  max_body=settings.max_body_bytes)
    front.app = build_app(args, ("generate",), None)
    return front
