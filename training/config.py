"""The s1 SFT recipe as one documented dataclass; its CLI and YAML loading are generated from it.

Why one dataclass: every knob of the recipe lives in one place with the paper's value as its
default (s1, arXiv 2501.19393, section 4: Qwen2.5-32B-Instruct, 5 epochs, global batch 16,
AdamW lr 1e-5 with betas (0.9, 0.95) and weight decay 1e-4, 5% linear warm-up then cosine
decay to 0, bf16, block size 32,768, no packing, gradient checkpointing). A YAML file and
command-line flags override any field; precedence is defaults < YAML < flags.

    cfg = load_config(["--config", "run.yaml", "--learning-rate", "2e-5"])
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

OVERLONG = ("drop", "truncate")
FSDP_MODES = ("auto", "on", "off")
DTYPES = ("float32", "bfloat16", "float16")
LOSS_NORMALISATIONS = ("per_example", "per_token")  # training/loss.py


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with its help text (shown by `s1-train --help`)."""
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Every setting of an s1 SFT run. Defaults are the paper's recipe."""

    # ---- model
    model: str = _f("Qwen/Qwen2.5-32B-Instruct",
                    "base model: a hub id or a local Hugging Face checkpoint directory")
    model_dtype: str = _f("float32",
                          "dtype the weights are loaded and updated in (the master copy); "
                          "bf16 compute comes from --bf16", choices=DTYPES)
    save_dtype: str = _f("bfloat16", "dtype of the saved final checkpoint", choices=DTYPES)
    attn_implementation: str = _f("sdpa", "attention kernel: sdpa, eager, flash_attention_2, ...")

    # ---- data
    data: str = _f("simplescaling/s1K",
                   "training data: a .jsonl/.json/.parquet file, a `datasets` save_to_disk "
                   "directory, a directory of such files (datasets_build/ output), or a hub id")
    split: str = _f("train", "split to use when the data has several")
    trace: str = _f("auto",
                    "which reasoning trace to train on: s1k (thinking_trajectories/attempt), "
                    "or a teacher of the s1K-1.1 layout (gemini, deepseek, or any "
                    "<name>_thinking_trajectory/<name>_attempt pair); auto picks deepseek "
                    "when present, else s1k, else gemini, else the only teacher")
    thinking_column: str | None = _f(None, "explicit thinking column (overrides --trace)")
    attempt_column: str | None = _f(None, "explicit answer column (overrides --trace)")
    question_column: str = _f("question", "question column")
    system_prompt: str | None = _f(None, "system message; none = the chat template's default")
    block_size: int = _f(32768, "maximum tokens per example (the paper's 32,768)")
    overlong: str = _f("drop", "examples longer than block_size are dropped or cut (truncate); "
                               "either way they are counted and reported", choices=OVERLONG)
    packing: bool = _f(False, "padding-free batching of several examples per row (needs a "
                              "flash attention kernel); the recipe does not pack")
    max_examples: int | None = _f(None, "use only the first N rows (smoke runs)")

    # ---- optimisation
    num_train_epochs: float = _f(5.0, "epochs over the data")
    max_steps: int = _f(-1, "stop after this many optimizer steps (-1: run all epochs)")
    global_batch_size: int = _f(16, "examples per optimizer step, over all devices")
    per_device_batch_size: int = _f(1, "examples per device per forward pass")
    gradient_accumulation_steps: int | None = _f(
        None, "micro-batches per step; none = global_batch_size / (world size x per-device "
              "batch); when given, the three must multiply to global_batch_size")
    learning_rate: float = _f(1e-5, "peak learning rate")
    lr_scheduler_type: str = _f("cosine", "schedule after warm-up (cosine decays to 0)")
    warmup_ratio: float = _f(0.05, "share of steps spent in linear warm-up")
    adam_beta1: float = _f(0.9, "AdamW beta1")
    adam_beta2: float = _f(0.95, "AdamW beta2")
    adam_epsilon: float = _f(1e-8, "AdamW epsilon")
    weight_decay: float = _f(1e-4, "AdamW weight decay")
    loss_normalisation: str = _f(
        "per_example",
        "how token losses are averaged: per_example = each example's mean over its own loss "
        "tokens, then the mean over the examples (s1: one example per device, no "
        "accumulation, so every example weighs the same); per_token = the mean over all loss "
        "tokens of the global batch (transformers' default; long traces weigh more)",
        choices=LOSS_NORMALISATIONS)
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 disables)")
    bf16: bool = _f(True, "bf16 mixed-precision compute")
    gradient_checkpointing: bool = _f(True, "recompute activations in the backward pass "
                                            "(FSDP activation checkpointing under FSDP)")
    seed: int = _f(42, "random seed (model init of new layers, data order)")

    # ---- distribution
    fsdp: str = _f("auto", "FSDP full shard with auto-wrap of the decoder layer: auto = on when "
                           "several CUDA processes run and `accelerate launch` has not set it "
                           "up already", choices=FSDP_MODES)
    fsdp_config: str | None = _f(None, "FSDP settings file: one of training/configs/accelerate_*"
                                       ".yaml (its fsdp_config section) or a flat YAML/JSON "
                                       "mapping; used with torchrun")
    fsdp_layer_cls: str | None = _f(None, "decoder layer class to wrap; none = the model's own "
                                          "(Qwen2DecoderLayer for Qwen2.5)")

    # ---- output, logging, checkpoints
    output_dir: str = _f("runs/s1-32b", "where checkpoints and the final model are written")
    open_thinking: bool = _f(True, "the saved chat template opens the thinking block after the "
                                   "assistant header (so the server detects the s1 format)")
    save_strategy: str = _f("epoch", "when to write resumable checkpoints: no, steps, epoch")
    save_steps: int = _f(100, "checkpoint interval with save_strategy=steps")
    save_total_limit: int | None = _f(2, "keep at most this many checkpoints")
    resume_from_checkpoint: str | None = _f(None, "a checkpoint directory, or 'latest' for the "
                                                  "newest one in output_dir (if any)")
    logging_steps: int = _f(1, "log every N optimizer steps")
    report_to: str = _f("none", "extra loggers, comma separated: tensorboard, wandb")
    run_name: str | None = _f(None, "run name for tensorboard / W&B")
    progress_bar: bool = _f(True, "show a tqdm progress bar")
    dataloader_num_workers: int = _f(0, "data loader worker processes")

    def validate(self) -> TrainConfig:
        """Raise ValueError on values that cannot work; returns self."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ValueError(f"{f.name}={value!r}: choose one of {', '.join(choices)}")
        positive = ("block_size", "global_batch_size", "per_device_batch_size", "logging_steps")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be positive")
        if self.save_strategy not in ("no", "steps", "epoch"):
            raise ValueError("save_strategy must be no, steps or epoch")
        if self.num_train_epochs <= 0 and self.max_steps <= 0:
            raise ValueError("set num_train_epochs > 0 or max_steps > 0")
        if (self.thinking_column is None) != (self.attempt_column is None):
            raise ValueError("give --thinking-column and --attempt-column together")
        if self.packing and not self.attn_implementation.startswith("flash"):
            raise ValueError("packing needs a flash attention kernel (--attn-implementation "
                             "flash_attention_2): sdpa/eager would attend across examples")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def batch_layout(global_batch: int, per_device: int, world_size: int,
                 accumulation: int | None = None) -> int:
    """The gradient accumulation that makes world x per-device x accumulation = global batch.

    With `accumulation` given, checks the product instead. Raises ValueError when the global
    batch cannot be met exactly (the recipe's batch size is part of the recipe).
    """
    per_pass = per_device * world_size
    if accumulation is None:
        if global_batch % per_pass:
            raise ValueError(f"global batch {global_batch} is not a multiple of {world_size} "
                             f"devices x per-device batch {per_device}")
        return global_batch // per_pass
    if per_pass * accumulation != global_batch:
        raise ValueError(f"{world_size} devices x per-device batch {per_device} x gradient "
                         f"accumulation {accumulation} = {per_pass * accumulation}, "
                         f"not the global batch {global_batch}")
    return accumulation


# ------------------------------------------------------------------ CLI and YAML
def _base_type(tp: Any) -> type:
    """int for `int | None`, etc."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def _parse_optional(kind: type):
    def parse(text: str):
        return None if text.lower() in ("none", "null", "") else kind(text)

    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    """An argparse parser with one flag per TrainConfig field, plus --config and --print-config."""
    parser = argparse.ArgumentParser(
        prog="s1-train",
        description="s1 SFT: fine-tune a chat model on reasoning traces (defaults: the paper's "
                    "recipe). Flags override the --config YAML, which overrides the defaults.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", type=Path, help="YAML file of TrainConfig fields")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved configuration as YAML and exit")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = _base_type(hints[f.name])
        help_text = f"{f.metadata['help']} (default: {f.default!r})"
        kw: dict[str, Any] = {"dest": f.name, "help": help_text}
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        optional = kind is not hints[f.name]
        kw["type"] = _parse_optional(kind) if optional else kind
        if f.metadata.get("choices"):
            kw["choices"] = f.metadata["choices"]
        parser.add_argument(flag, **kw)
    return parser


def from_mapping(values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """A config from a mapping of field names (dashes or underscores); unknown keys raise."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    clean = {k.replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(clean) - names)
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(unknown)}")
    hints = typing.get_type_hints(TrainConfig)
    for key, value in clean.items():  # YAML reads 1e-5 as a string; coerce numbers
        kind = _base_type(hints[key])
        if value is not None and kind in (int, float) and not isinstance(value, bool):
            clean[key] = kind(value)
    return dataclasses.replace(base or TrainConfig(), **clean)


def load_yaml(path: str | Path) -> TrainConfig:
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config fields")
    return from_mapping(data)


def load_config(argv: list[str] | None = None) -> tuple[TrainConfig, bool]:
    """Parse flags (and the --config YAML); returns (validated config, print_config)."""
    args = vars(build_parser().parse_args(argv))
    config_path = args.pop("config", None)
    print_only = args.pop("print_config", False)
    cfg = load_yaml(config_path) if config_path else TrainConfig()
    return from_mapping(args, cfg).validate(), print_only
