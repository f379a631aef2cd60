"""FSDP settings for the recipe: full shard, auto-wrap of the model's decoder layer.

Why: the run is launched two ways and both must give the same sharding.
- `accelerate launch --config_file training/configs/accelerate_fsdp_*.yaml`: accelerate puts
  the YAML's fsdp_config into FSDP_* environment variables and the Trainer's Accelerator
  reads them; nothing is set here (we only check the wrapped class exists in the model).
- `torchrun ... --fsdp-config training/configs/accelerate_fsdp_*.yaml`: the same YAML's
  fsdp_config section becomes TrainingArguments(fsdp=True, fsdp_config=...). transformers
  strips the `fsdp_` prefix from the keys itself.
Gradient checkpointing under FSDP is done by FSDP's activation checkpointing (the Trainer
refuses both at once, and FSDP's avoids a redundant all-gather in the backward pass).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from training.config import TrainConfig


@dataclass(frozen=True)
class FsdpPlan:
    """How FSDP is set up for this process: by accelerate's launcher, by us, or not at all."""

    source: str  # "accelerate", "trainer", "off"
    fsdp_config: dict[str, Any] | None = None
    activation_checkpointing: bool = False

    @property
    def enabled(self) -> bool:
        return self.source != "off"


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def read_fsdp_file(path: str | Path) -> dict[str, Any]:
    """The fsdp_config mapping of an accelerate YAML, or a flat YAML/JSON mapping."""
    text = Path(path).read_text()
    data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping")
    section = data.get("fsdp_config", data)
    return dict(section)


def default_fsdp_config(layer_cls: str, activation_checkpointing: bool) -> dict[str, Any]:
    """FSDP2, parameters, gradients and optimizer state sharded (full shard), one unit per layer."""
    return {
        "fsdp_version": 2,
        "fsdp_reshard_after_forward": True,
        "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "fsdp_transformer_layer_cls_to_wrap": layer_cls,
        "fsdp_state_dict_type": "FULL_STATE_DICT",
        "fsdp_cpu_ram_efficient_loading": True,
        "fsdp_activation_checkpointing": activation_checkpointing,
    }


def plan_fsdp(cfg: TrainConfig, layer_cls: str, cuda: bool, world: int) -> FsdpPlan:
    """Decide who sets up FSDP; see the module docstring."""
    if _truthy(os.environ.get("ACCELERATE_USE_FSDP", "false")):
        wrapped = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "")
        if wrapped and layer_cls not in wrapped.split(","):
            raise ValueError(f"the accelerate config wraps {wrapped}, but this model's decoder "
                             f"layer is {layer_cls}: fix fsdp_transformer_layer_cls_to_wrap")
        ckpt = _truthy(os.environ.get("FSDP_ACTIVATION_CHECKPOINTING", "false"))
        return FsdpPlan("accelerate", None, ckpt)
    wanted = cfg.fsdp == "on" or (cfg.fsdp == "auto" and cuda and world > 1)
    if not wanted:
        return FsdpPlan("off")
    base = default_fsdp_config(layer_cls, cfg.gradient_checkpointing)
    if cfg.fsdp_config:
        base.update(read_fsdp_file(cfg.fsdp_config))
    key = "fsdp_transformer_layer_cls_to_wrap"
    if base.get(key) and layer_cls not in str(base[key]).split(","):
        raise ValueError(f"{cfg.fsdp_config} wraps {base[key]}, but this model's decoder layer "
                         f"is {layer_cls}")
    ckpt = _truthy(base.get("fsdp_activation_checkpointing", False))
    return FsdpPlan("trainer", base, ckpt)


def decoder_layer_class(model_config: Any, override: str | None = None) -> str:
    """The class FSDP wraps: the model's first `_no_split_modules` entry (Qwen2DecoderLayer)."""
    if override:
        return override
    from transformers import AutoModelForCausalLM

    model_cls = AutoModelForCausalLM._model_mapping[type(model_config)]
    names = list(getattr(model_cls, "_no_split_modules", None) or [])
    if not names:
        raise ValueError(f"{model_cls.__name__} names no decoder layer; pass --fsdp-layer-cls")
    return names[0]
