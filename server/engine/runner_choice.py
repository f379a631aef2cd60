"""Which vLLM model runner serves, and so which budget processor class vLLM loads.

vLLM 0.32 picks Model Runner V2 on GPUs by default (``VllmConfig.use_v2_model_runner``:
the ``VLLM_USE_V2_MODEL_RUNNER`` variable when set; else V2 when Triton is present and
no unsupported feature is configured; watermarking and HiSparse force V2). Each runner
loads only processors of its own interface, so s1-serve follows vLLM's choice and
registers the matching class: :class:`server.engine.logits_processor_v2.BudgetLogitsProcessorV2`
on V2, :class:`server.engine.logits_processor.BudgetLogitsProcessor` on V1, with the same
decisions. Speculative decoding works with budgets on V2 only: on V1, vLLM refuses any
custom logits processor together with speculative decoding, so that combination is
refused here, before the engine starts, with a message saying what to change.

Pure: the caller reads the environment and vLLM's config and applies the result.
"""

from __future__ import annotations

from dataclasses import dataclass

ENV = "VLLM_USE_V2_MODEL_RUNNER"
V1_PROCESSOR = "server.engine.logits_processor:BudgetLogitsProcessor"
V2_PROCESSOR = "server.engine.logits_processor_v2:BudgetLogitsProcessorV2"


class RunnerError(ValueError):
    """A configuration budget forcing cannot serve; the message says what to change."""


@dataclass(frozen=True)
class RunnerChoice:
    runner: str  # "v1" or "v2"
    processor: str  # the processor class, "module:Class" (vLLM's FQCN form)
    reason: str

    def describe(self) -> dict[str, str]:
        """What ``/version`` reports."""
        return {"model_runner": self.runner, "budget_processor": self.processor}

    def processor_class(self) -> type:
        import importlib

        module, name = self.processor.split(":")
        return getattr(importlib.import_module(module), name)


def parse_env(value: str | None) -> bool | None:
    """``VLLM_USE_V2_MODEL_RUNNER`` as vLLM reads it: unset or empty is None."""
    if value is None or not value.strip():
        return None
    text = value.strip().lower()
    if text in ("1", "true"):
        return True
    if text in ("0", "false"):
        return False
    raise RunnerError(f"{ENV}={value!r}: use 1 or 0, or leave it unset")


def choose_runner(env_value: str | None, *, vllm_default_v2: bool, speculative: bool,
                  v2_forced_by: str | None = None) -> RunnerChoice:
    """The runner vLLM will run and the processor to register with it.

    ``vllm_default_v2``: what vLLM picks with the variable unset (Triton present, no
    feature V2 lacks). ``v2_forced_by``: a configured feature that makes vLLM use V2
    whatever the variable says (watermarking, HiSparse). ``speculative``: a
    speculative-decoding method is configured."""
    requested = parse_env(env_value)
    if v2_forced_by:
        return RunnerChoice("v2", V2_PROCESSOR, f"{v2_forced_by} needs Model Runner V2")
    if requested is None:
        use_v2 = vllm_default_v2
        reason = ("vLLM's default here" if use_v2 else
                  "vLLM picks V1 here (no Triton, or a feature V2 does not support)")
    else:
        use_v2 = requested
        reason = f"{ENV}={int(requested)}"
    if use_v2:
        return RunnerChoice("v2", V2_PROCESSOR, reason)
    if speculative:
        how = (f"unset {ENV}=0" if requested is False else
               "use a speculative method Model Runner V2 supports (ngram, EAGLE, MTP, draft "
               "model) on a GPU with Triton")
        raise RunnerError(
            "speculative decoding with thinking budgets needs vLLM's Model Runner V2: the V1 "
            f"runner refuses custom logits processors with speculative decoding ({reason}); "
            f"{how}, or turn speculative decoding off")
    return RunnerChoice("v1", V1_PROCESSOR, reason)
