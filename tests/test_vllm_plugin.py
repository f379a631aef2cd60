"""Stock vLLM with the s1 endpoint plugin (server/api/plugin.py) gives the budgets.

vLLM's own server (``python -m vllm.entrypoints.openai.api_server``, what ``vllm serve``
runs) is started with ``VLLM_PLUGINS=s1`` and the flags ``python -m server.api.plugin``
prints, on the demo model; the same requests go to s1-serve on the same model (the
``demo_server`` fixture). Budgets are checked on raw token ids (``return_token_ids``),
and both servers must give the same ids and the same ``budget`` objects.
"""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import httpx
import pytest

from tests.conftest import DEMO_KEY, ROOT

Q = [{"role": "user", "content": "How many s in horseradish?"}]
END = "<|im_start|>answer"  # the demo model's (s1's) end-of-thinking delimiter


@pytest.fixture(scope="module")
def plugin_server():
    from server.settings import DEMO_MODEL
    from tests.server_proc import VLLM_SERVER, ServerProcess

    flags = subprocess.run([sys.executable, "-m", "server.api.plugin"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    assert "--logits-processors" in flags
    proc = ServerProcess(DEMO_MODEL, *flags, "--served-model-name", "s1-demo", "--seed", "0",
                         "--kv-cache-memory-bytes", str(128 << 20), module=VLLM_SERVER,
                         env={"VLLM_PLUGINS": "s1"}, name="vllm-plugin")
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


def _post(server, path: str, body: dict, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(server.base_url + path, json=body, headers=headers, timeout=120)


def _chat(server, key: str | None = None, **budget) -> dict:
    body = {"model": "s1-demo", "messages": Q, "temperature": 0, "max_tokens": 200,
            "return_token_ids": True, **budget}
    r = _post(server, "/v1/chat/completions", body, key)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


def _thinking_ids(server, ids: list[int]) -> int:
    """Tokens before the end delimiter, counted on the raw ids (the prompt opened the
    block); a forced end's newline is among them (the caller takes it off)."""
    end = httpx.post(server.base_url + "/tokenize", json={"model": "s1-demo", "prompt": END,
                     "add_special_tokens": False}, timeout=30).json()["tokens"]
    at = next(i for i in range(len(ids)) if ids[i:i + len(end)] == end)
    return at


@pytest.mark.parametrize("budget", [{"thinking_max": 8}, {"thinking_min": 40},
                                    {"thinking_min": 12, "thinking_max": 30}])
def test_budgets_on_stock_vllm_equal_s1_serve(plugin_server, demo_server, budget):
    ours = _chat(plugin_server, **budget)
    s1 = _chat(demo_server, DEMO_KEY, **budget)
    assert ours["token_ids"] == s1["token_ids"]
    assert ours["budget"] == s1["budget"]
    assert ours["message"]["reasoning"] == s1["message"]["reasoning"]
    thinking = _thinking_ids(plugin_server, ours["token_ids"])
    forced_newline = int(ours["budget"]["hit_max"])
    if "thinking_max" in budget:
        assert thinking - forced_newline <= budget["thinking_max"]
    if "thinking_min" in budget:
        assert thinking >= budget["thinking_min"]


def test_unbudgeted_requests_are_vllm_s(plugin_server):
    # No budget: the plugin leaves the request to vLLM (max_tokens of 5 ends in thinking).
    r = _chat(plugin_server, max_tokens=5)
    assert len(r["token_ids"]) == 5 and r["finish_reason"] == "length"


def test_unknown_field_and_bad_budget_are_400s(plugin_server):
    r = _post(plugin_server, "/v1/chat/completions",
              {"model": "s1-demo", "messages": Q, "temprature": 0})
    assert r.status_code == 400 and "temperature" in r.json()["error"]["message"]
    r = _post(plugin_server, "/v1/chat/completions",
              {"model": "s1-demo", "messages": Q, "thinking_min": 9, "thinking_max": 3})
    assert r.status_code == 400
    assert r.json()["error"]["param"] in ("thinking_min", "thinking_max")


def test_streamed_budget_object_and_reasoning(plugin_server):
    body = {"model": "s1-demo", "messages": Q, "temperature": 0, "max_tokens": 200,
            "thinking_max": 8, "stream": True}
    reasoning, budget = "", None
    with httpx.stream("POST", plugin_server.base_url + "/v1/chat/completions", json=body,
                      timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    reasoning += choice["delta"].get("reasoning") or ""
                    budget = choice.get("budget") or budget
    whole = _chat(plugin_server, thinking_max=8)
    assert budget == whole["budget"] and budget["hit_max"] is True
    assert reasoning == whole["message"]["reasoning"]


def test_responses_and_messages_carry_the_budget(plugin_server):
    r = _post(plugin_server, "/v1/responses", {"model": "s1-demo", "input": "2+2?",
                                                "temperature": 0, "thinking_max": 6,
                                                "max_output_tokens": 100})
    assert r.status_code == 200, r.text
    assert r.json()["budget"]["thinking_max"] == 6
    r = _post(plugin_server, "/v1/messages", {
        "model": "s1-demo", "max_tokens": 100, "messages": [{"role": "user", "content": "2+2?"}],
        "thinking_max": 6})
    assert r.status_code == 200, r.text
    assert r.json()["budget"]["thinking_max"] == 6


def _config(processors: list, v2: bool) -> SimpleNamespace:
    return SimpleNamespace(use_v2_model_runner=v2,
                           model_config=SimpleNamespace(logits_processors=processors))


def test_the_plugin_refuses_an_engine_without_the_budget_processor():
    from server.api.plugin import check_engine
    from server.engine.runner_choice import V1_PROCESSOR, V2_PROCESSOR

    check_engine(_config([V1_PROCESSOR], v2=False), "s1")
    check_engine(_config([V2_PROCESSOR], v2=True), "s1")
    for processors, v2 in (([], False), ([V1_PROCESSOR], True), ([V2_PROCESSOR], False)):
        with pytest.raises(RuntimeError, match="--logits-processors server.engine"):
            check_engine(_config(processors, v2), "s1")


def test_the_printed_flags_parse_as_vllm_serve_arguments():
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    from server.api.plugin import vllm_flags

    args = make_arg_parser(FlexibleArgumentParser()).parse_args(["--model", "m", *vllm_flags()])
    assert args.logits_processors == ["server.engine.logits_processor:BudgetLogitsProcessor"]
    assert args.reasoning_parser == "s1" and args.enable_chunked_prefill is False
