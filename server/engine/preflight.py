"""Pre-flight memory check: will the model fit on the GPUs before vLLM spends minutes loading it?

vLLM only finds out that weights plus one ``max_model_len`` sequence of KV cache do not fit
after it has downloaded and loaded the weights and profiled a forward pass, and then fails
with a message about its own internals. This check runs before the engine starts, from the
model's ``config.json`` (and the checkpoint's file sizes when they are on disk), and stops
with the settings to change and values that would fit.

Per GPU of one replica (tensor-parallel GPUs assumed identical), it requires::

    weights / TP  +  KV of one max_model_len sequence / TP  +  OVERHEAD  <=  memory x utilization

which is vLLM's own start condition (a KV cache that holds at least one full-context
sequence) with the profiled activation memory replaced by a fixed allowance. The arithmetic
(:class:`ModelShape`, :func:`plan_memory`, :func:`suggestions`) is pure, with no torch or vLLM
import, so it is unit-tested with real model numbers; :func:`run_preflight` gathers the inputs
and is skipped, with a log line, on CPU, when the config is not on disk (it never downloads),
and with ``--no-preflight``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

GiB = 1024**3
# Memory per GPU outside weights and KV cache that vLLM's budget must also hold: the
# activation peak of the profiling step (max_num_batched_tokens x intermediate size, ~1-2 GiB
# for a 32B model at 8k tokens), sampler buffers (max_num_seqs x vocab fp32 logits, a few
# hundred MiB), CUDA graphs (~0.5-1 GiB), and the CUDA context, cuBLAS and NCCL workspaces
# (~0.5-1 GiB). 4 GiB is at the low end of what vLLM reports for 7B-70B models on H100s on
# purpose: a check that refuses a setup vLLM would start is worse than none, and vLLM still
# makes its own exact check after profiling.
OVERHEAD_BYTES = 4 * GiB
# Bytes per element of the dtypes --dtype accepts; "auto" follows config.json (vLLM casts
# float32 checkpoints to bfloat16 on GPUs).
DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2}
SETTINGS_HINT = ("S1_MAX_MODEL_LEN (--max-model-len), S1_TENSOR_PARALLEL_SIZE "
                 "(--tensor-parallel-size), S1_GPU_MEMORY_UTILIZATION "
                 "(--gpu-memory-utilization); S1_PREFLIGHT=false (--no-preflight) skips this check")


class PreflightSkip(Exception):
    """The check cannot be made (unsupported architecture, missing config field)."""


# ------------------------------------------------------------------------------ arithmetic
@dataclass(frozen=True)
class ModelShape:
    """The numbers of a dense decoder-only transformer that size its weights and KV cache."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    tied_embeddings: bool

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        config = config.get("text_config") or config  # multimodal wrappers keep it nested
        if any(k in config for k in ("num_experts", "num_local_experts", "n_routed_experts")):
            raise PreflightSkip("mixture-of-experts model: no parameter formula here")
        try:
            hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
            return cls(
                vocab_size=int(config["vocab_size"]),
                hidden_size=hidden,
                num_layers=int(config["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                intermediate_size=int(config["intermediate_size"]),
                tied_embeddings=bool(config.get("tie_word_embeddings", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PreflightSkip(f"config.json lacks a usable {exc}") from None

    def param_count(self) -> int:
        """Embeddings (twice when untied), attention q/k/v/o, gated MLP and norms; biases
        (Qwen2's q/k/v, 0.001%) are left out."""
        h, kv_width = self.hidden_size, self.num_kv_heads * self.head_dim
        attention = h * self.num_heads * self.head_dim * 2 + h * kv_width * 2
        mlp = 3 * h * self.intermediate_size
        per_layer = attention + mlp + 2 * h
        embeddings = self.vocab_size * h * (1 if self.tied_embeddings else 2)
        return self.num_layers * per_layer + embeddings + h

    def kv_bytes_per_token(self, dtype_bytes: int, tp: int = 1) -> int:
        """K and V of every layer for one token, on one GPU of a TP group (KV heads are
        split across GPUs, or replicated when there are fewer heads than GPUs)."""
        heads_per_gpu = math.ceil(self.num_kv_heads / tp)
        return 2 * self.num_layers * heads_per_gpu * self.head_dim * dtype_bytes


@dataclass(frozen=True)
class MemoryPlan:
    """Per-GPU memory of one replica; all sizes in bytes."""

    weight_bytes: int  # whole model
    kv_bytes_per_token: int  # per GPU
    max_model_len: int
    tensor_parallel_size: int
    gpu_bytes: int  # per GPU
    gpu_memory_utilization: float
    overhead_bytes: int = OVERHEAD_BYTES

    @property
    def budget(self) -> int:
        return int(self.gpu_bytes * self.gpu_memory_utilization)

    @property
    def weights_per_gpu(self) -> int:
        return math.ceil(self.weight_bytes / self.tensor_parallel_size)

    @property
    def kv_free(self) -> int:
        """What is left for the KV cache (negative: the weights alone do not fit)."""
        return self.budget - self.weights_per_gpu - self.overhead_bytes

    @property
    def kv_tokens(self) -> int:
        """KV cache capacity of the replica in tokens."""
        return max(0, self.kv_free) // self.kv_bytes_per_token

    @property
    def needed(self) -> int:
        return (self.weights_per_gpu + self.max_model_len * self.kv_bytes_per_token
                + self.overhead_bytes)

    @property
    def fits(self) -> bool:
        return self.kv_tokens >= self.max_model_len

    @property
    def full_sequences(self) -> float:
        """How many max_model_len sequences the KV cache holds at once."""
        return self.kv_tokens / self.max_model_len

    def summary(self) -> str:
        return (f"per GPU: {gib(self.budget)} GiB budget ({gib(self.gpu_bytes)} GiB x "
                f"{self.gpu_memory_utilization:g}) - {gib(self.weights_per_gpu)} GiB weights "
                f"(TP={self.tensor_parallel_size}) - {gib(self.overhead_bytes)} GiB activations "
                f"and CUDA graphs = {gib(self.kv_free)} GiB KV cache = {self.kv_tokens:,} tokens "
                f"({self.full_sequences:.2f} sequences of {self.max_model_len:,})")


def gib(n: int | float) -> str:
    return f"{n / GiB:.2f}"


def plan_memory(shape: ModelShape, dtype_bytes: int, max_model_len: int, tp: int,
                gpu_bytes: int, gpu_memory_utilization: float,
                weight_bytes: int | None = None,
                overhead_bytes: int = OVERHEAD_BYTES) -> MemoryPlan:
    """The plan for one replica; ``weight_bytes`` (checkpoint size) beats the formula."""
    return MemoryPlan(
        weight_bytes=weight_bytes if weight_bytes is not None
        else shape.param_count() * dtype_bytes,
        kv_bytes_per_token=shape.kv_bytes_per_token(dtype_bytes, tp),
        max_model_len=max_model_len, tensor_parallel_size=tp, gpu_bytes=gpu_bytes,
        gpu_memory_utilization=gpu_memory_utilization, overhead_bytes=overhead_bytes)


def valid_tp_sizes(shape: ModelShape, max_tp: int = 8) -> list[int]:
    """TP sizes vLLM accepts for this model: they divide the attention heads, and the KV heads
    divide evenly (or are replicated) across the GPUs."""
    return [tp for tp in range(1, max_tp + 1) if shape.num_heads % tp == 0
            and (shape.num_kv_heads % tp == 0 or tp % shape.num_kv_heads == 0)]


def suggestions(shape: ModelShape, dtype_bytes: int, plan: MemoryPlan,
                gpus: int | None = None) -> list[str]:
    """Changes that would make ``plan`` fit, each with its value; ``gpus``: the most GPUs one
    replica may use (default 8)."""
    out: list[str] = []
    if plan.kv_free > 0:
        # Round down to a multiple of 1024 tokens, as people set it.
        longest = plan.kv_free // plan.kv_bytes_per_token // 1024 * 1024
        if longest >= 1024:
            out.append(f"S1_MAX_MODEL_LEN={longest} (--max-model-len {longest}): the longest "
                       f"context that fits at TP={plan.tensor_parallel_size}")
    for tp in valid_tp_sizes(shape, gpus or 8):
        if tp <= plan.tensor_parallel_size:
            continue
        bigger = plan_memory(shape, dtype_bytes, plan.max_model_len, tp, plan.gpu_bytes,
                             plan.gpu_memory_utilization, plan.weight_bytes,
                             plan.overhead_bytes)
        if bigger.fits:
            out.append(f"S1_TENSOR_PARALLEL_SIZE={tp} (--tensor-parallel-size {tp}): "
                       f"{bigger.kv_tokens:,} tokens of KV cache per replica")
            break
    utilization = math.ceil(plan.needed / plan.gpu_bytes * 100) / 100
    if utilization <= 0.95:
        out.append(f"S1_GPU_MEMORY_UTILIZATION={utilization:.2f} (--gpu-memory-utilization "
                   f"{utilization:.2f}) if nothing else uses the GPU")
    return out


def failure_message(plan: MemoryPlan, fixes: list[str], model: str) -> str:
    lines = [f"pre-flight check: {model} does not fit: weights plus one {plan.max_model_len:,}-"
             f"token sequence need {gib(plan.needed)} GiB per GPU, the budget is "
             f"{gib(plan.budget)} GiB.", "  " + plan.summary()]
    if fixes:
        lines.append("Any one of these fits:")
        lines += [f"  {fix}" for fix in fixes]
    else:
        lines.append("No single setting fits: use more or larger GPUs, or a smaller model.")
    lines.append(f"Settings: {SETTINGS_HINT}.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ inputs
def dtype_bytes_for(dtype: str, config: dict[str, Any]) -> int:
    if dtype != "auto":
        if dtype not in DTYPE_BYTES:
            raise PreflightSkip(f"unknown dtype {dtype!r}")
        return DTYPE_BYTES[dtype]
    config_dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
    return min(DTYPE_BYTES.get(config_dtype.removeprefix("torch."), 2), 2)


def local_model_dir(model: str) -> Path | None:
    """The model's directory when it is on disk: a path, or a hub id already in the HF cache."""
    if os.path.isdir(model):
        return Path(model)
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "config.json")
    except Exception:  # not a valid repo id, no cache
        return None
    return Path(found).parent if isinstance(found, str) else None


def checkpoint_bytes(model_dir: Path) -> int | None:
    """Size of the weights on disk: the safetensors index's total, else the files' sizes."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            total = json.loads(index.read_text()).get("metadata", {}).get("total_size")
            if total:
                return int(total)
        except (OSError, ValueError):
            pass
    files = list(model_dir.glob("*.safetensors"))
    if not files or not all(f.exists() for f in files):  # a dangling link: still downloading
        return None
    return sum(f.stat().st_size for f in files)


def weight_bytes_for(model_dir: Path, config: dict[str, Any], dtype_bytes: int) -> int | None:
    """Checkpoint size scaled to the serving dtype (quantized checkpoints as they are)."""
    size = checkpoint_bytes(model_dir)
    if size is None or "quantization_config" in config:
        return size
    stored = str(config.get("torch_dtype") or config.get("dtype") or "")
    stored_bytes = DTYPE_BYTES.get(stored.removeprefix("torch."))
    return size if stored_bytes is None else size * dtype_bytes // stored_bytes


def run_preflight(settings: Any) -> None:
    """Check the settings against the GPUs; raises SystemExit with the fix when they do not fit."""
    if not settings.preflight:
        logger.info("pre-flight memory check: off (--no-preflight)")
        return
    try:
        from vllm.platforms import current_platform

        if not current_platform.is_cuda_alike():
            logger.info("pre-flight memory check: skipped on %s (GPU only)",
                        current_platform.device_type or "this platform")
            return
        if settings.pipeline_parallel_size > 1 or settings.distributed_executor_backend == "ray":
            # A replica may span nodes: this node's GPUs are not the whole picture.
            raise PreflightSkip("pipeline parallel or Ray executor (GPUs on other nodes)")
        model_dir = local_model_dir(settings.model)
        if model_dir is None or not (model_dir / "config.json").is_file():
            logger.info("pre-flight memory check: skipped, %s is not on disk yet (vLLM "
                        "downloads it and checks memory itself)", settings.model)
            return
        config = json.loads((model_dir / "config.json").read_text())
        dtype_bytes = dtype_bytes_for(settings.dtype, config)
        weights = weight_bytes_for(model_dir, config, dtype_bytes)
        if weights is None and "quantization_config" in config:
            raise PreflightSkip("quantized checkpoint whose files are not on disk")
        shape = ModelShape.from_config(config)
        tp = settings.tensor_parallel_size
        if settings.max_model_len is not None and settings.max_model_len < 0:
            raise PreflightSkip("max_model_len auto: vLLM fits the context to memory itself")
        max_len = settings.max_model_len or int(
            (config.get("text_config") or config).get("max_position_embeddings") or 0)
        if max_len <= 0:
            raise PreflightSkip("no max_model_len and none in config.json")
        gpus = current_platform.device_count()
        if gpus < tp * settings.data_parallel_size:
            raise PreflightSkip(f"{gpus} GPU(s) visible, TP x DP needs "
                                f"{tp * settings.data_parallel_size}")
        gpu_bytes = cuda_total_bytes(tp) or min(
            current_platform.get_device_total_memory(i) for i in range(tp))
    except PreflightSkip as exc:
        logger.info("pre-flight memory check: skipped (%s)", exc)
        return
    except Exception as exc:  # the check must never be why a server does not start
        logger.warning("pre-flight memory check: skipped after an error: %s: %s",
                       type(exc).__name__, exc)
        return
    plan = plan_memory(shape, dtype_bytes, max_len, tp, gpu_bytes,
                       settings.gpu_memory_utilization, weights)
    if not plan.fits:
        fixes = suggestions(shape, dtype_bytes, plan, max(1, gpus // settings.data_parallel_size))
        raise SystemExit(failure_message(plan, fixes, settings.model))
    logger.info("pre-flight memory check: fits; %s", plan.summary())


# What vLLM budgets against is CUDA's total (torch.cuda.mem_get_info), about 79.1 GiB on
# an H100 80GB, not NVML's 79.65 GiB. Read in a child process: a CUDA context in this
# process before vLLM starts its workers would force them to spawn, or break them.
_CUDA_TOTAL = ("import json, torch; print(json.dumps("
               "[torch.cuda.mem_get_info(i)[1] for i in range({n})]))")


def cuda_total_bytes(devices: int, run: Any = None) -> int | None:
    """The smallest CUDA total memory of the first ``devices`` GPUs, as vLLM sees it; None
    when it cannot be read (the caller falls back to NVML's figure)."""
    import subprocess
    import sys

    run = run or subprocess.run
    try:
        done = run([sys.executable, "-c", _CUDA_TOTAL.format(n=int(devices))],
                   capture_output=True, text=True, timeout=120)
        totals = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError) as exc:
        logger.info("pre-flight: CUDA's total memory unreadable (%s); using NVML's", exc)
        return None
    if done.returncode != 0 or not isinstance(totals, list) or len(totals) != devices or \
            not all(isinstance(t, int) and t > 0 for t in totals):
        return None
    return min(totals)
