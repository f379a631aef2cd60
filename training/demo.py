"""Build the server's embedded demo model from nothing: data, tokenizer, tiny Qwen2, CPU training.

`make demo-model` runs this (`python -m training.demo`). It writes the letter-counting data of
training.demo_data, a byte-level tokenizer with the s1 chat template that opens the
thinking block ("s1-open"), trains a small Qwen2 from random init on the s1 recipe (loss on the
assistant turn only), and saves a float32 safetensors checkpoint to server/demo_model/. Seeded;
it fits in 15 minutes on 2 CPU cores (a wall-clock guard stops training early on a loaded
machine and says so).
"""

from __future__ import annotations

import os

# Spinning OpenMP threads collapse when another process holds a core (a shared 2-core box):
# passive waiting keeps the step time steady. Must be set before torch starts its pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass
from pathlib import Path

import torch  # noqa: E402

from training.data import collate, encode_example  # noqa: E402
from training.demo_data import (  # noqa: E402
    Example,
    build_splits,
    generate,
    split_words,
    write_jsonl,
)
from training.tiny import (  # noqa: E402
    QWEN_SYSTEM,
    build_random_model,
    build_tokenizer,
    save_tokenizer,
)

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "server" / "demo_model"


@dataclass
class DemoConfig:
    """Everything that determines the demo checkpoint."""

    seed: int = 0
    n_warmup_data: int = 11_000  # stage 1: careful counts only (learn to copy and count)
    n_train: int = 23_000  # stage 2: the full mix (glances, Waits, slips, cut traces)
    cut_share: float = 0.2  # stage-2 rows cut as at a thinking_max cap, then "Final Answer: N"
    n_eval: int = 400
    batch_size: int = 16
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    max_minutes: float = 13.5  # wall-clock guard for the training loop


def demo_tokenizer(out_dir: Path):
    """Byte-level tokenizer (no merges) with the s1-open template.

    Every letter is its own token, which the letter-by-letter traces need. Qwen's default
    system prompt and the role names, present in every chat, are added tokens so they cost
    one position each. The think/answer delimiters stay "<|im_start|>" + letters, as the
    server's s1 format encodes them.
    """
    return build_tokenizer(out_dir, chat_format="s1-open", corpus=["a"], vocab_size=259,
                           extra_tokens=[QWEN_SYSTEM, "system\n", "user\n", "assistant\n"])


def encode_rows(tokenizer, rows: list[Example]) -> list[dict[str, list[int]]]:
    return [
        encode_example(tokenizer, r.question, r.thinking_trajectories[0], r.attempt) for r in rows
    ]


def length_batches(n_items: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of similar length (less padding), in random order."""
    order = list(range(len(n_items)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches = []
    for s in range(0, len(order), chunk):
        part = sorted(order[s : s + chunk], key=lambda i: n_items[i])
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def lr_at(progress: float, step: int, cfg: DemoConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def plan_batches(stages: list[list[dict[str, list[int]]]], cfg: DemoConfig
                 ) -> tuple[list[dict[str, list[int]]], list[list[int]]]:
    """Concatenate the stages; batches are shuffled within a stage, stages run in order."""
    rng = random.Random(cfg.seed)
    items: list[dict[str, list[int]]] = []
    batches: list[list[int]] = []
    for stage in stages:
        offset = len(items)
        items += stage
        lengths = [len(e["input_ids"]) for e in stage]
        batches += [[offset + i for i in b] for b in length_batches(lengths, cfg.batch_size, rng)]
    return items, batches


def train(model, stages: list[list[dict[str, list[int]]]], cfg: DemoConfig, *,
          max_steps: int | None = None, log_every: int = 50, pad_id: int = 0) -> list[float]:
    """Plain AdamW loop with bf16 autocast on CPU, one pass; returns the per-step losses.

    The cosine schedule follows max(step share, wall-clock share of cfg.max_minutes): on an
    idle machine it is the step schedule (deterministic); on a loaded one the learning rate
    still decays before the wall-clock guard stops training.
    """
    items, batches = plan_batches(stages, cfg)
    total = len(batches) if max_steps is None else min(len(batches), max_steps)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.95),
    )
    model.train()
    losses: list[float] = []
    start = time.time()
    budget = cfg.max_minutes * 60
    for step in range(total):
        elapsed = time.time() - start
        lr = lr_at(max(step / total, elapsed / budget), step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = collate([items[i] for i in batches[step]], pad_id)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % log_every == 0 or step == total - 1:
            recent = sum(losses[-log_every:]) / len(losses[-log_every:])
            print(f"step {step + 1}/{total} loss {recent:.4f} lr {lr:.2e} {elapsed:.0f}s",
                  flush=True)
        if time.time() - start > budget:
            print(f"wall-clock guard: stopping at step {step + 1}/{total} after "
                  f"{time.time() - start:.0f}s")
            break
    model.eval()
    return losses


def build_demo_model(out_dir: Path = DEFAULT_OUT, cfg: DemoConfig | None = None,
                     data_dir: Path | None = None) -> Path:
    """Data, tokenizer, model, training, save. Returns the checkpoint directory."""
    cfg = cfg or DemoConfig()
    t0 = time.time()
    torch.set_num_threads(2)
    torch.manual_seed(cfg.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_rows, eval_rows = build_splits(cfg.n_train, cfg.n_eval, cfg.seed, cfg.cut_share)
    warm_rows = generate(cfg.n_warmup_data, cfg.seed + 1, split_words(cfg.seed)[0],
                         exclude={r.question for r in eval_rows}, careful_only=True)
    if data_dir is not None:
        write_jsonl(warm_rows + train_rows, data_dir / "train.jsonl")
        write_jsonl(eval_rows, data_dir / "eval.jsonl")
    tokenizer = demo_tokenizer(out_dir)
    model = build_random_model(
        out_dir, tokenizer, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
        num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size, max_position_embeddings=1024, seed=cfg.seed,
    )
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
          f"vocab {len(tokenizer)}; {len(warm_rows)} + {len(train_rows)} training rows", flush=True)
    stages = [encode_rows(tokenizer, warm_rows), encode_rows(tokenizer, train_rows)]
    losses = train(model, stages, cfg, pad_id=tokenizer.pad_token_id)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    save_tokenizer(tokenizer, out_dir)
    minutes = (time.time() - t0) / 60
    info = {"config": asdict(cfg), "final_loss": sum(losses[-50:]) / len(losses[-50:]),
            "steps": len(losses), "build_minutes": round(minutes, 2)}
    (out_dir / "demo_build.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"saved {out_dir} in {minutes:.1f} min; final loss {info['final_loss']:.4f}")
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="also write train.jsonl / eval.jsonl (s1K columns) here")
    for name, value in asdict(DemoConfig()).items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = vars(parser.parse_args(argv))
    out, data_dir = args.pop("out"), args.pop("data_dir")
    build_demo_model(out, DemoConfig(**args), data_dir)


if __name__ == "__main__":
    main()
