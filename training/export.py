"""Write the final servable checkpoint: safetensors in the save dtype, tokenizer, s1 template.

Why its own step: the Trainer's checkpoints are for resuming (fp32 master weights, optimizer
state). What the server needs is a plain Hugging Face directory that `s1-serve --model DIR`
loads with no flags: bf16 safetensors, the tokenizer, a generation config, and a chat template
whose generation prompt opens the thinking block (`<|im_start|>think`), which
server/budget/formats.py `detect_format` recognises as the s1 format. Under FSDP the full state
dict is gathered to CPU on rank 0, which alone writes files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cast_state_dict(state: dict[str, torch.Tensor], dtype: torch.dtype
                    ) -> dict[str, torch.Tensor]:
    """Floating tensors cast to dtype; tensors that shared storage (tied weights) still do."""
    seen: dict[tuple[int, torch.Size], torch.Tensor] = {}
    out = {}
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            out[name] = tensor
            continue
        key = (tensor.data_ptr(), tensor.shape)
        if key not in seen:
            seen[key] = tensor.detach().to("cpu", dtype).contiguous()
        out[name] = seen[key]
    return out


def save_tokenizer(tokenizer: Any, out_dir: Path, chat_template: str) -> None:
    """save_pretrained with the given template, also copied into tokenizer_config.json.

    transformers 5 keeps the template in chat_template.jinja only; older readers (and some
    serving stacks) look in tokenizer_config.json.
    """
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(str(out_dir))
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = chat_template
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def set_config_dtype(config_path: Path, dtype: str) -> None:
    """Record the saved dtype in config.json (save_pretrained writes the in-memory dtype,
    float32 master weights here); servers load `dtype: auto` from it."""
    cfg = json.loads(config_path.read_text())
    cfg["dtype"] = dtype
    if "torch_dtype" in cfg:  # transformers 4 name
        cfg["torch_dtype"] = dtype
    config_path.write_text(json.dumps(cfg, indent=2) + "\n")


def save_final(trainer: Any, tokenizer: Any, out_dir: str | Path, *, save_dtype: str,
               chat_template: str, info: dict[str, Any]) -> Path:
    """Gather, cast and save the trained model; every rank must call this (collective)."""
    out = Path(out_dir)
    accelerator = trainer.accelerator
    state = accelerator.get_state_dict(trainer.model)  # full tensors on rank 0
    if accelerator.is_main_process:
        dtype = DTYPES[save_dtype]
        model = accelerator.unwrap_model(trainer.model)
        model.config.use_cache = True
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out), state_dict=cast_state_dict(state, dtype),
                              safe_serialization=True)
        set_config_dtype(out / "config.json", save_dtype)
        save_tokenizer(tokenizer, out, chat_template)
        (out / "s1_train.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    accelerator.wait_for_everyone()
    return out
