"""s1-serve's engine gets ``vllm serve``'s batch sizes (``max_num_seqs``,
``max_num_batched_tokens``) on a GPU: the defaults vLLM resolves for s1-serve's engine
arguments and usage context against those of ``vllm serve``, on a faked H100 (see
:func:`test_scheduler_defaults_match_vllm_serve` for what is faked and why)."""

from __future__ import annotations

import copy
import shlex
from typing import Any

import pytest

from server.settings import DEMO_MODEL
from tests.vllm_serve import vllm_serve_args

pytestmark = pytest.mark.usefixtures("clean_cli_env")


# --------------------------------------------------------- scheduler defaults
GiB = 1 << 30


class FakeCudaPlatform:
    """The real (CPU) platform, except what the batch defaults read: a CUDA device with an
    H100's name and 80 GiB. Everything else is the real platform's."""

    device_type = "cuda"
    device_name = "cuda"

    def __init__(self, real: Any) -> None:
        self._real = real
        self.queried = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def is_cpu(self) -> bool:
        return False

    def is_tpu(self) -> bool:
        return False

    def is_cuda(self) -> bool:
        return True

    def is_cuda_alike(self) -> bool:
        return True

    def get_device_total_memory(self, device_id: int = 0) -> int:
        self.queried += 1
        return 80 * GiB

    def get_device_name(self, device_id: int = 0) -> str:
        return "NVIDIA H100 80GB HBM3"


def resolved_batch(engine_args: Any, usage_context: Any,
                   model_config: Any) -> tuple[int, int]:
    """``(max_num_seqs, max_num_batched_tokens)`` as vLLM resolves them when it builds the
    engine config (EngineArgs.create_engine_config runs these two steps on the model config
    before it builds SchedulerConfig from the result)."""
    from vllm.config import ParallelConfig

    args = copy.deepcopy(engine_args)
    args._set_default_chunked_prefill_and_prefix_caching_args(model_config)  # noqa: SLF001
    args._set_default_max_num_seqs_and_batched_tokens_args(  # noqa: SLF001
        usage_context, model_config, ParallelConfig())
    return args.max_num_seqs, args.max_num_batched_tokens


@pytest.mark.parametrize("flags", [
    "",  # no batch flags: the device and usage-context defaults decide
    "--max-num-batched-tokens 10240 --max-num-seqs 128",  # recipes: OpenAI/GPT-OSS.md
])
def test_scheduler_defaults_match_vllm_serve(flags: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """s1-serve's engine gets ``vllm serve``'s batch sizes on a GPU.

    vLLM picks ``max_num_seqs`` and ``max_num_batched_tokens`` (when the command line sets
    none) from a table keyed by the usage context and the device: on an H100,
    ``OPENAI_API_SERVER`` (``vllm serve``) gets 1024 sequences and 8192 tokens per step,
    ``ENGINE_CONTEXT`` (``AsyncLLM.from_engine_args`` without one) 128 and 2048.

    What is faked, and why: this machine has no GPU, and building the whole engine
    config needs one (device, memory profiling). ``EngineArgs.get_batch_defaults`` reads
    only ``current_platform.get_device_total_memory()``, ``get_device_name()``,
    ``is_tpu()`` and ``is_cpu()``, and ``_set_default_chunked_prefill_and_prefix_caching_args``
    ``is_cpu()``; server/engine/loader.py reads ``is_cpu()`` (chunked prefill off on CPU). Those
    are replaced by :class:`FakeCudaPlatform` (an H100: 80 GiB), in vllm.engine.arg_utils
    and behind ``vllm.platforms.current_platform``; the model config of the demo model is
    built by vLLM on the real platform, and vLLM's own two default-setting steps run on
    it. s1-serve's engine arguments are the ones ``server.engine.loader.start_engine`` builds
    from the configured command line (``create_engine_config`` patched to record them and
    the usage context instead of building the config and starting an engine).
    """
    import vllm.engine.arg_utils as arg_utils
    import vllm.platforms
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    import server.engine.loader
    from server.api.cli import parse

    argv = shlex.split(f"{DEMO_MODEL} {flags}")
    vllm_engine_args = AsyncEngineArgs.from_cli_args(vllm_serve_args(argv))
    args, settings = parse(argv)

    fake = FakeCudaPlatform(vllm.platforms.current_platform)
    calls: list[tuple[Any, Any]] = []

    def record(engine_args: Any, usage_context: Any = None, **kwargs: Any) -> str:
        calls.append((engine_args, usage_context))
        return "config"

    with monkeypatch.context() as m:
        m.setattr(vllm.platforms, "_current_platform", fake)
        m.setattr(arg_utils, "current_platform", fake)
        m.delenv("S1_PARSER_FORMAT", raising=False)
        m.setattr(AsyncEngineArgs, "create_engine_config", record)
        m.setattr(AsyncLLM, "from_vllm_config", lambda vllm_config, **kw: vllm_config)
        server.engine.loader.configure_args(args, settings)
        assert server.engine.loader.start_engine(args) == "config"
    ((s1_engine_args, s1_usage),) = calls
    assert s1_usage == UsageContext.OPENAI_API_SERVER, "server/engine/loader.py start_engine"

    # The demo model's config, built by vLLM on the real platform (each side its own).
    s1_model = s1_engine_args.create_model_config()
    serve_model = vllm_engine_args.create_model_config()
    with monkeypatch.context() as m:
        m.setattr(arg_utils, "current_platform", fake)
        s1 = resolved_batch(s1_engine_args, s1_usage, s1_model)
        serve = resolved_batch(vllm_engine_args, UsageContext.OPENAI_API_SERVER, serve_model)
        engine_context = resolved_batch(vllm_engine_args, UsageContext.ENGINE_CONTEXT,
                                        serve_model)
    assert fake.queried >= 3, "the batch defaults did not read the (fake) device memory"
    assert s1 == serve, (f"s1-serve's (max_num_seqs, max_num_batched_tokens) {s1} != "
                         f"vllm serve's {serve} on an H100")
    if flags:
        assert serve == engine_context == (128, 10240)
    else:
        assert serve == (1024, 8192)
        assert engine_context != serve, (
            f"ENGINE_CONTEXT {engine_context} should differ from OPENAI_API_SERVER {serve}")
