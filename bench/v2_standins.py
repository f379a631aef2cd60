"""Minimal stand-ins for the few vLLM classes the budget processors import, for a
machine with torch but without vLLM (a bare GPU box for the device checks).

Only what ``server.engine.logits_processor`` and ``server.engine.logits_processor_v2`` touch:
``SamplingParams`` (the fields they read), the V1 ``BatchUpdate``/``LogitsProcessor``/
``MoveDirectionality`` and the V2 ``LogitsContext``/``LogitsProcessor``/
``LogitsProcRequestState``. With vLLM installed nothing is replaced.
"""

from __future__ import annotations

import enum
import sys
import types
from dataclasses import dataclass, field
from typing import Any


def install_if_missing() -> bool:
    """Register the stand-ins unless vLLM imports; True when they were installed."""
    try:
        import vllm  # noqa: F401
        return False
    except ImportError:
        pass

    @dataclass
    class SamplingParams:
        temperature: float = 1.0
        max_tokens: int | None = 16
        seed: int | None = None
        extra_args: dict[str, Any] | None = None
        bad_words: list[str] | None = None
        allowed_token_ids: list[int] | None = None

    class MoveDirectionality(enum.Enum):
        UNIDIRECTIONAL = enum.auto()
        SWAP = enum.auto()

    @dataclass
    class BatchUpdate:
        batch_size: int
        removed: list = field(default_factory=list)
        added: list = field(default_factory=list)
        moved: list = field(default_factory=list)

    class LogitsProcessor:
        @classmethod
        def validate_params(cls, sampling_params: Any) -> None:
            return None

    @dataclass(frozen=True)
    class LogitsContext:
        expanded_idx_mapping: Any
        idx_mapping: Any
        idx_mapping_np: Any
        expanded_local_pos: Any
        input_ids: Any
        pos: Any
        seq_lens_upper_bound_np: Any

    root = types.ModuleType("vllm")
    root.SamplingParams = SamplingParams
    root.__version__ = "absent (stand-ins)"
    v1_lp = types.ModuleType("vllm.v1.sample.logits_processor")
    v1_lp.BatchUpdate, v1_lp.LogitsProcessor = BatchUpdate, LogitsProcessor
    v1_lp.MoveDirectionality = MoveDirectionality
    v2_lp = types.ModuleType("vllm.v1.worker.gpu.sample.logits_processor")
    v2_lp.LogitsContext = LogitsContext
    v2_lp.LogitsProcessor = type("LogitsProcessor", (), {"validate_params": classmethod(
        lambda cls, sp: None)})
    v2_lp.LogitsProcRequestState = object
    modules = {"vllm": root, "vllm.v1.sample.logits_processor": v1_lp,
               "vllm.v1.worker.gpu.sample.logits_processor": v2_lp}
    for name in ("vllm.v1", "vllm.v1.sample", "vllm.v1.worker", "vllm.v1.worker.gpu",
                 "vllm.v1.worker.gpu.sample"):
        modules[name] = types.ModuleType(name)
    sys.modules.update(modules)
    return True
