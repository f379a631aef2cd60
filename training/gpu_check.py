"""GPU check of the SFT recipe on one H100 in under 10 minutes: tokens/s, memory, loss, save.

Why: the full recipe needs 16 H100s and a 32B download; this runs the same code path
(training.sft.run: chat-template formatting, assistant-only loss, Trainer, bf16 autocast
with fp32 master weights, gradient checkpointing, cosine schedule, bf16 export with the s1
template) on a random ~0.5B Qwen2 (Qwen2.5-0.5B's shape and vocabulary size) built locally,
with the tiny byte-level tokenizer of training/tiny.py and long synthetic traces. No hub
access, no vLLM. A second, short phase runs the FSDP path (FSDP2 full shard, activation
checkpointing, full-state-dict export) as a one-process torchrun-style job.

    python -m training.gpu_check                       # both phases, ~5-7 minutes on an H100
    python -m training.gpu_check --steps 50 --no-fsdp  # quicker
Prints one JSON summary per phase and writes them to OUT/gpu_check.json (OUT: --out, or
$OUT when set, else .cache/gpu_check). Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

# Qwen2.5-0.5B's shape: 494M parameters with the 151,936-token vocabulary.
QWEN_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                num_attention_heads=14, num_key_value_heads=2, vocab_size=151936)


def build_model(out: Path, small: bool) -> Path:
    """Tokenizer from training/tiny.py + a random Qwen2 (0.5B shape, or tiny with --small)."""
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from training.tiny import ENDOFTEXT, IM_END, build_tokenizer

    tok = build_tokenizer(out, chat_format="s1")
    shape = (dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tok))
             if small else QWEN_05B)
    im_end, eot = tok.convert_tokens_to_ids(IM_END), tok.convert_tokens_to_ids(ENDOFTEXT)
    config = Qwen2Config(**shape, max_position_embeddings=32768, tie_word_embeddings=True,
                         bos_token_id=eot, eos_token_id=im_end, pad_token_id=eot)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=[im_end, eot], pad_token_id=eot)
    model.save_pretrained(str(out), safe_serialization=True)
    return out


def build_data(path: Path, n: int, target_chars: int) -> Path:
    """s1K-layout rows whose thinking strings several letter-counting traces together."""
    from training.demo_data import generate, split_words

    rows = generate(n * 8, 0, split_words(0)[0])
    out = []
    for i in range(n):
        parts, j = [], i
        while sum(len(p) for p in parts) < target_chars:
            parts.append(rows[j % len(rows)].thinking_trajectories[0])
            j += n
        head = rows[i]
        out.append({"question": head.question, "thinking_trajectories": ["\n".join(parts)],
                    "attempt": head.attempt})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    return path


class TimeGuard:
    """A Trainer callback that stops training after a wall-clock budget (and says so)."""

    def __init__(self, seconds: float) -> None:
        from transformers import TrainerCallback

        guard = self

        class _Cb(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                guard.start = time.time()

            def on_step_end(self, args, state, control, **kw):
                if time.time() - guard.start > guard.seconds:
                    guard.stopped_at = state.global_step
                    control.should_training_stop = True
                return control

        self.seconds, self.start, self.stopped_at = seconds, time.time(), None
        self.callback = _Cb()


def run_phase(args: argparse.Namespace, fsdp: bool) -> dict[str, Any]:
    from server.budget.formats import detect_format
    from training.config import TrainConfig
    from training.sft import run

    work = Path(args.work)
    base = work / "base"
    if not (base / "config.json").exists():
        t = time.time()
        build_model(base, args.small)
        print(f"built random model in {time.time() - t:.0f}s", flush=True)
    data = work / "data" / "train.jsonl"
    if not data.exists():
        build_data(data, args.examples, args.chars)
    steps = args.fsdp_steps if fsdp else args.steps
    cfg = TrainConfig(
        model=str(base), data=str(data), output_dir=str(work / ("out-fsdp" if fsdp else "out")),
        block_size=args.block_size, max_steps=steps, global_batch_size=args.global_batch,
        per_device_batch_size=args.per_device, learning_rate=args.lr, logging_steps=max(1, steps // 20),
        save_strategy="no", fsdp="on" if fsdp else "off", bf16=torch.cuda.is_available(),
        progress_bar=False, report_to="none",
    )
    guard = TimeGuard(args.minutes * 60 * (0.35 if fsdp else 1.0))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = run(cfg, callbacks=[guard.callback])
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    tokens = max((h.get("num_input_tokens_seen", 0) for h in result.log_history), default=0)
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(result.output_dir)
    saved = AutoConfig.from_pretrained(result.output_dir)
    fmt = detect_format(tok)
    summary = {
        "phase": "fsdp" if fsdp else "single",
        "fsdp_active": result.fsdp_active,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "params_millions": round(_count_params(saved) / 1e6, 1),
        "steps": result.global_step, "stopped_by_time_guard_at": guard.stopped_at,
        "train_seconds": round(result.train_seconds, 1),
        "tokens": tokens, "tokens_per_second": round(tokens / result.train_seconds, 1),
        "examples_mean_tokens": round(result.report.tokens / max(1, result.report.kept), 1),
        "peak_memory_allocated_gib": _gib(torch.cuda.max_memory_allocated),
        "peak_memory_reserved_gib": _gib(torch.cuda.max_memory_reserved),
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
        "saved_dtype": str(getattr(saved, "dtype", None)),
        "detected_format": fmt.name if fmt else None,
    }
    summary["ok"] = bool(len(losses) > 1 and losses[-1] < losses[0] and fmt is not None
                         and fmt.name == "s1"
                         and (result.fsdp_active or not fsdp or args.small))
    return summary


def _gib(fn) -> float | None:
    return round(fn() / 2**30, 2) if torch.cuda.is_available() else None


def _count_params(config: Any) -> int:
    h, i, n, v = (config.hidden_size, config.intermediate_size, config.num_hidden_layers,
                  config.vocab_size)
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i
    return per_layer * n + v * h


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200, help="optimizer steps, single-GPU phase")
    p.add_argument("--fsdp-steps", type=int, default=30, help="optimizer steps, FSDP phase")
    p.add_argument("--fsdp", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the FSDP phase (a one-process distributed job)")
    p.add_argument("--phase", choices=("single", "fsdp", "all"), default="all",
                   help=argparse.SUPPRESS)
    p.add_argument("--global-batch", type=int, default=16)
    p.add_argument("--per-device", type=int, default=4)
    p.add_argument("--block-size", type=int, default=4096)
    p.add_argument("--chars", type=int, default=3000, help="thinking length per example")
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-4, help="higher than the recipe: random init")
    p.add_argument("--minutes", type=float, default=6.0, help="wall-clock guard for training")
    p.add_argument("--small", action="store_true", help="tiny model (CPU smoke of this script)")
    p.add_argument("--work", default=".cache/gpu_check/work")
    p.add_argument("--out", default=os.environ.get("OUT") or ".cache/gpu_check")
    return p.parse_args(argv)


def fsdp_subprocess(argv: list[str]) -> dict[str, Any]:
    """The FSDP phase in a fresh process set up as rank 0 of a one-process job."""
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
           "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29512"}
    cmd = [sys.executable, "-m", "training.gpu_check", *argv, "--phase", "fsdp"]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    sys.stdout.write(proc.stdout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("GPU_CHECK ")]
    if proc.returncode or not lines:
        return {"phase": "fsdp", "ok": False, "returncode": proc.returncode}
    return json.loads(lines[-1][len("GPU_CHECK "):])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if not torch.cuda.is_available() and not args.small:
        print("gpu_check: no CUDA device (use --small for a CPU smoke run)", file=sys.stderr)
        return 1
    if args.phase == "fsdp":
        summary = run_phase(args, fsdp=True)
        print("GPU_CHECK " + json.dumps(summary), flush=True)
        return 0 if summary["ok"] else 1
    t0 = time.time()
    results = [run_phase(args, fsdp=False)]
    print("GPU_CHECK " + json.dumps(results[0]), flush=True)
    if args.fsdp and args.phase == "all":
        results.append(fsdp_subprocess([a for a in argv if not a.startswith("--phase")]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"gpu_check: {'PASS' if all(r['ok'] for r in results) else 'FAIL'} "
          f"in {time.time() - t0:.0f}s")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
