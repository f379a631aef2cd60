"""The pre-flight memory arithmetic, with the real numbers of s1.1-32B (Qwen2.5-32B) on H100s.

No GPU needed: the arithmetic is pure, and :func:`run_preflight` is driven through a fake
GPU platform. The README's and the compose file's numbers come from these cases.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from server.engine.preflight import (
    GiB,
    ModelShape,
    PreflightSkip,
    checkpoint_bytes,
    dtype_bytes_for,
    failure_message,
    plan_memory,
    run_preflight,
    suggestions,
    valid_tp_sizes,
    weight_bytes_for,
)
from server.settings import Settings
from tests.helpers import H100_BYTES, QWEN25_32B, SHAPE


def test_qwen25_32b_weights_and_kv_per_token():
    params = SHAPE.param_count()
    assert 32.7e9 < params < 32.8e9, params  # Qwen reports 32.8B with biases
    assert params * 2 / GiB == pytest.approx(61.03, abs=0.01)  # bf16
    assert SHAPE.head_dim == 128
    assert SHAPE.kv_bytes_per_token(2) == 64 * 8 * 128 * 2 * 2 == 256 * 1024
    assert SHAPE.kv_bytes_per_token(2) * 32768 == 8 * GiB
    assert SHAPE.kv_bytes_per_token(2, tp=8) == 32 * 1024  # one KV head per GPU
    assert valid_tp_sizes(SHAPE) == [1, 2, 4, 8]


def test_one_h100_at_vllm_default_utilization_does_not_fit_32k():
    plan = plan_memory(SHAPE, 2, 32768, 1, H100_BYTES, 0.9)
    # 71.68 GiB budget - 61.03 weights - 4 overhead = 6.66 GiB of KV: 27k tokens < 32k.
    assert not plan.fits
    assert plan.kv_tokens == 27263
    assert plan.needed / GiB == pytest.approx(73.03, abs=0.01)
    fixes = suggestions(SHAPE, 2, plan, gpus=8)
    assert fixes[0].startswith("S1_MAX_MODEL_LEN=26624 (--max-model-len 26624)")
    assert fixes[1].startswith("S1_TENSOR_PARALLEL_SIZE=2 (--tensor-parallel-size 2)")
    assert fixes[2].startswith("S1_GPU_MEMORY_UTILIZATION=0.92 (--gpu-memory-utilization 0.92)")
    for fix in fixes:  # each suggestion, alone, really fits
        name, value = fix.split()[0].split("=")
        args = {"max_model_len": 32768, "tp": 1, "gpu_memory_utilization": 0.9}
        key = {"S1_MAX_MODEL_LEN": "max_model_len", "S1_TENSOR_PARALLEL_SIZE": "tp",
               "S1_GPU_MEMORY_UTILIZATION": "gpu_memory_utilization"}[name]
        args[key] = type(args[key])(value)
        changed = plan_memory(SHAPE, 2, args["max_model_len"], args["tp"], H100_BYTES,
                              args["gpu_memory_utilization"])
        assert changed.fits, fix
    message = failure_message(plan, fixes, "simplescaling/s1.1-32B")
    for name in ("S1_MAX_MODEL_LEN", "--max-model-len", "S1_TENSOR_PARALLEL_SIZE",
                 "--tensor-parallel-size", "S1_GPU_MEMORY_UTILIZATION",
                 "--gpu-memory-utilization", "--no-preflight", "73.03 GiB", "71.68 GiB"):
        assert name in message, name


def test_one_h100_compose_defaults_fit_32k():
    """The compose defaults: TP=1, utilization 0.95, max_model_len 32768."""
    plan = plan_memory(SHAPE, 2, 32768, 1, H100_BYTES, 0.95)
    assert plan.fits
    assert plan.kv_free / GiB == pytest.approx(10.64, abs=0.01)
    assert plan.kv_tokens == 43575
    assert plan.full_sequences == pytest.approx(1.33, abs=0.01)
    # Still fits if the real overhead is 6 GiB rather than 4.
    assert plan_memory(SHAPE, 2, 32768, 1, H100_BYTES, 0.95, overhead_bytes=6 * GiB).fits


@pytest.mark.parametrize(("tp", "dp", "tokens_per_replica", "sequences_total"), [
    (8, 1, 2098356, 64.0), (4, 2, 924195, 56.4), (2, 4, 337115, 41.2), (1, 8, 43575, 10.6)])
def test_eight_h100_layouts(tp, dp, tokens_per_replica, sequences_total):
    """The README's table: 8 H100s at utilization 0.95 and 32k context."""
    plan = plan_memory(SHAPE, 2, 32768, tp, H100_BYTES, 0.95)
    assert plan.fits
    assert plan.kv_tokens == tokens_per_replica
    assert plan.full_sequences * dp == pytest.approx(sequences_total, abs=0.05)


def test_single_gpu_suggests_no_tensor_parallelism():
    plan = plan_memory(SHAPE, 2, 32768, 1, H100_BYTES, 0.9)
    assert not any("TENSOR_PARALLEL" in fix for fix in suggestions(SHAPE, 2, plan, gpus=1))


def test_nothing_fits_says_so():
    """fp32 weights (122 GiB) on one 80 GB GPU: no context length, no utilization helps."""
    plan = plan_memory(SHAPE, 4, 32768, 1, H100_BYTES, 0.9)
    assert plan.kv_free < 0 and plan.kv_tokens == 0 and not plan.fits
    fixes = suggestions(SHAPE, 4, plan, gpus=1)
    assert fixes == []
    assert "No single setting fits" in failure_message(plan, fixes, "m")
    # TP=2 holds the weights (61 GiB per GPU) but only 27k tokens of fp32 KV cache.
    assert suggestions(SHAPE, 4, plan, gpus=8)[0].startswith("S1_TENSOR_PARALLEL_SIZE=4")


def test_checkpoint_size_beats_the_formula():
    plan = plan_memory(SHAPE, 2, 32768, 1, H100_BYTES, 0.95, weight_bytes=70 * GiB)
    assert plan.weights_per_gpu == 70 * GiB and not plan.fits


def test_config_parsing():
    assert ModelShape.from_config({"text_config": QWEN25_32B}) == SHAPE
    with pytest.raises(PreflightSkip, match="mixture-of-experts"):
        ModelShape.from_config({**QWEN25_32B, "num_experts": 128})
    with pytest.raises(PreflightSkip, match="intermediate_size"):
        ModelShape.from_config({k: v for k, v in QWEN25_32B.items() if k != "intermediate_size"})
    mha = ModelShape.from_config({k: v for k, v in QWEN25_32B.items()
                                  if k != "num_key_value_heads"})
    assert mha.num_kv_heads == 40
    assert dtype_bytes_for("auto", QWEN25_32B) == 2
    assert dtype_bytes_for("auto", {"torch_dtype": "float32"}) == 2  # vLLM casts to bf16
    assert dtype_bytes_for("float32", QWEN25_32B) == 4
    with pytest.raises(PreflightSkip):
        dtype_bytes_for("int3", QWEN25_32B)


def test_checkpoint_bytes(tmp_path):
    assert checkpoint_bytes(tmp_path) is None
    (tmp_path / "a.safetensors").write_bytes(b"x" * 100)
    (tmp_path / "b.safetensors").write_bytes(b"x" * 50)
    assert checkpoint_bytes(tmp_path) == 150
    config = {"torch_dtype": "float32"}
    assert weight_bytes_for(tmp_path, config, 2) == 75  # served in bf16
    assert weight_bytes_for(tmp_path, {**config, "quantization_config": {}}, 2) == 150
    index = {"metadata": {"total_size": 65_527_752_704}, "weight_map": {}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert checkpoint_bytes(tmp_path) == 65_527_752_704


# ------------------------------------------------------------------------------ run_preflight
class FakeGPUs:
    """The parts of vLLM's platform run_preflight uses: n identical GPUs."""

    device_type = "cuda"

    def __init__(self, n: int, total: int = H100_BYTES) -> None:
        self.n, self.total = n, total

    def is_cuda_alike(self) -> bool:
        return True

    def device_count(self) -> int:
        return self.n

    def get_device_total_memory(self, device_id: int = 0) -> int:
        assert device_id < self.n
        return self.total


@pytest.fixture
def qwen_dir(tmp_path) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(QWEN25_32B))
    return tmp_path


@pytest.fixture
def fake_gpus(monkeypatch):
    import vllm.platforms

    def install(n: int) -> None:
        monkeypatch.setattr(vllm.platforms, "current_platform", FakeGPUs(n))

    return install


def test_run_preflight_refuses_before_loading(qwen_dir, fake_gpus, caplog):
    fake_gpus(8)
    with pytest.raises(SystemExit) as exc:
        run_preflight(Settings(model=str(qwen_dir)))  # 0.9, model's 32768
    message = str(exc.value)
    assert "does not fit" in message and "S1_MAX_MODEL_LEN=26624" in message
    assert "S1_TENSOR_PARALLEL_SIZE=2" in message
    caplog.set_level(logging.INFO, logger="server.engine.preflight")
    run_preflight(Settings(model=str(qwen_dir), gpu_memory_utilization=0.95))
    assert "fits" in caplog.text and "43,575 tokens" in caplog.text
    run_preflight(Settings(model=str(qwen_dir), tensor_parallel_size=2))
    run_preflight(Settings(model=str(qwen_dir), max_model_len=16384))


def test_run_preflight_skips(qwen_dir, fake_gpus, caplog, tmp_path):
    caplog.set_level(logging.INFO, logger="server.engine.preflight")
    run_preflight(Settings(model=str(qwen_dir), preflight=False))
    assert "off (--no-preflight)" in caplog.text
    fake_gpus(1)
    run_preflight(Settings(model=str(qwen_dir), tensor_parallel_size=2))
    assert "1 GPU(s) visible" in caplog.text
    run_preflight(Settings(model="nobody/not-downloaded-32B"))
    assert "not on disk yet" in caplog.text
    moe = tmp_path / "moe"
    moe.mkdir()
    (moe / "config.json").write_text(json.dumps({**QWEN25_32B, "num_experts": 64}))
    run_preflight(Settings(model=str(moe)))
    assert "mixture-of-experts" in caplog.text


def test_run_preflight_skips_on_cpu(qwen_dir, caplog):
    caplog.set_level(logging.INFO, logger="server.engine.preflight")
    import vllm.platforms

    if vllm.platforms.current_platform.is_cuda_alike():
        pytest.skip("a GPU machine")
    run_preflight(Settings(model=str(qwen_dir)))
    assert "skipped on cpu (GPU only)" in caplog.text


def test_preflight_setting_and_flag():
    from server.api.cli import load_settings

    assert Settings().preflight is True
    assert load_settings(["--no-preflight"]).preflight is False


def test_run_preflight_skips_replicas_that_may_span_nodes(qwen_dir, fake_gpus, caplog):
    """With PP > 1 or the Ray executor, this node's GPUs are not all of the replica's."""
    fake_gpus(8)
    caplog.set_level(logging.INFO, logger="server.engine.preflight")
    # 0.9 and 32k would not fit at TP=1 on one GPU (test above); across stages it may.
    run_preflight(Settings(model=str(qwen_dir), pipeline_parallel_size=2))
    run_preflight(Settings(model=str(qwen_dir), distributed_executor_backend="ray"))
    assert caplog.text.count("skipped (pipeline parallel or Ray executor") == 2


def test_cuda_total_is_read_in_a_child_and_the_smallest_gpu_counts():
    """The total vLLM budgets against (CUDA's, ~79.1 GiB on an H100) is read in a child
    process, so this process holds no CUDA context before vLLM's workers start. Here the
    child is a real process whose output stands in for torch's (no GPU on this machine)."""
    import subprocess
    import sys

    from server.engine.preflight import cuda_total_bytes

    seen: list[list[str]] = []

    def child(output: str, code: int = 0):
        def run(argv, **kwargs):
            seen.append(argv)
            assert "torch.cuda.mem_get_info(i)[1] for i in range(2)" in argv[-1]
            return subprocess.run([sys.executable, "-c", f"print({output!r}); exit({code})"],
                                  **kwargs)
        return run

    h100_cuda = 84_929_216_512  # 79.1 GiB
    assert cuda_total_bytes(2, child(f"[{h100_cuda + 10**9}, {h100_cuda}]")) == h100_cuda
    assert seen[0][0] == sys.executable
    assert cuda_total_bytes(2, child("[1, 2]", code=1)) is None  # the child failed
    assert cuda_total_bytes(2, child("[5]")) is None  # not one total per GPU
    assert cuda_total_bytes(2, child("no json")) is None
