"""The server benchmark's model: a ~3.7M-parameter random Qwen2 with the ``<think>`` format.

A tiny model makes the per-step and per-request overheads of the serving layer as visible as
they can be. Built into ``.cache/bench-think`` by :func:`build_model` (and reused while its
parameters are unchanged).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / ".cache" / "bench-think"
MODEL_NAME = "bench-think"
MODEL_SHAPE: dict[str, int] = {"hidden_size": 256, "num_layers": 4, "num_heads": 4,
                               "num_kv_heads": 2, "intermediate_size": 896, "seed": 0}
# Non-norm weights are multiplied by this. At the default init scale greedy decoding
# repeats one token, and after a forced `</think>` it repeats `</think>`: a special token
# with no text, so a budgeted answer would stream (almost) nothing and be cheaper to
# serve than plain thinking. Scaled weights give varied text before and after the end
# Then the (tied) embedding rows of the special tokens (`</think>`, end of turn, ...)
# and of the 128 tokens that are a lone byte >= 0x80 are zeroed: their logit is 0
# while the best other logit stays positive, so greedy decoding never picks them.
# Every generated token is then text on its own (so the first text chunk marks the
# first token; a held-back partial UTF-8 character would otherwise delay it by a
# varying number of tokens), and thinking never ends by itself, so every budgeted
# request reaches its cap. Forcing still works: a forced token's logit is set by the
# processor, and the ignore_eos check's +100 logit bias still makes the end of turn win.
WEIGHT_SCALE = 3.0


@dataclass(frozen=True)
class ModelFacts:
    path: Path
    n_params: int
    eos_id: int
    think_end_id: int


def build_model(out: Path = MODEL_DIR) -> ModelFacts:
    """Build (or reuse) the ~3.7M-parameter ``<think>`` checkpoint (weights scaled)."""
    from training.tiny import IM_END, THINK_CLOSE, build_random_model, build_tokenizer

    stamp = out / "bench_server_build.json"
    params = {**MODEL_SHAPE, "chat_format": "think", "weight_scale": WEIGHT_SCALE,
              "version": 4}
    saved = json.loads(stamp.read_text()) if stamp.exists() else {}
    if saved.get("params") != params:
        import torch

        tokenizer = build_tokenizer(out, chat_format="think")
        model = build_random_model(out, tokenizer, **MODEL_SHAPE)
        never = sorted(set(tokenizer.all_special_ids) | {
            i for i in range(len(tokenizer)) if "\ufffd" in tokenizer.decode([i])})
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "norm" not in name:
                    param.mul_(WEIGHT_SCALE)
            model.get_input_embeddings().weight[never] = 0.0  # tied: the output rows too
        model.save_pretrained(str(out), safe_serialization=True)
        saved = {"params": params, "n_params": sum(p.numel() for p in model.parameters()),
                 "eos_id": tokenizer.convert_tokens_to_ids(IM_END),
                 "think_end_id": tokenizer.convert_tokens_to_ids(THINK_CLOSE)}
        stamp.write_text(json.dumps(saved))
    return ModelFacts(out, int(saved["n_params"]), int(saved["eos_id"]),
                      int(saved["think_end_id"]))


def prompts(count: int = 64) -> list[list[dict[str, str]]]:
    """Distinct short chat prompts (15-30 tokens with the template), same for both servers."""
    return [[{"role": "user", "content": f"What is {7 * i + 3} + {13 * i % 97}? "
              "Think step by step."}] for i in range(count)]
