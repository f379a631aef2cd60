"""Time the device half of budget forcing alone: ``server.engine.logits_edit.apply_plan``.

Why: a GPU machine with torch but without vLLM (such as a borrowed one for a few
minutes) can still time the part of the processor that runs on the device, at a
real model's vocabulary. ``bench_processor_micro.py`` times the whole processor
(it needs vLLM); this script needs only torch and ``server/engine/logits_edit.py``.

Plans cover every row of the batch with one row type (forced, guarded greedy,
guarded sampled), the worst case for a step. Reported per step: host ms spent in
``apply_plan`` (dispatch only on CUDA: nothing in it waits for the GPU) and, on
CUDA, the GPU ms between two events around it.

Run: ``python bench/bench_logits_edit.py --device cuda`` (default vocabulary
152,064, batches 256 and 1,024).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.engine.logits_edit import (  # noqa: E402
    FORCED,
    GUARD_GREEDY,
    GUARD_SAMPLED,
    apply_plan,
    float32_bits,
)

END, EOS, CONT = 7, 2, 20


def make_plan(kind: int, batch: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(batch):
        u = int(torch.randint(0, 1 << 53, (1,), generator=g))
        if kind == FORCED:
            rows.append([i, 30, FORCED, 0, -1, -1, 0])
        else:
            inv_t = float32_bits(1.0) if kind == GUARD_SAMPLED else 0
            rows.append([i, CONT, kind, inv_t, END, EOS, u])
    plan = torch.tensor(rows, dtype=torch.int64)
    return plan.pin_memory().to(device) if device.type == "cuda" else plan


def time_kind(kind: int, batch: int, vocab: int, device: torch.device, steps: int,
              repeats: int) -> tuple[float, float | None]:
    plan = make_plan(kind, batch, device)
    n_forced = batch if kind == FORCED else 0
    n_greedy = batch if kind == GUARD_GREEDY else 0
    base = torch.randn(batch, vocab, device=device)
    hosts, gpus = [], []
    for _ in range(repeats):
        host = gpu = 0.0
        for _ in range(steps):
            logits = base.clone()
            if device.type == "cuda":
                torch.cuda.synchronize()
                start, end = (torch.cuda.Event(enable_timing=True),
                              torch.cuda.Event(enable_timing=True))
                start.record()
            t0 = time.perf_counter()
            apply_plan(logits, plan, n_forced, n_greedy)
            host += time.perf_counter() - t0
            if device.type == "cuda":
                end.record()
                end.synchronize()
                gpu += start.elapsed_time(end)
        hosts.append(host * 1000 / steps)
        gpus.append(gpu / steps)
    return statistics.median(hosts), (statistics.median(gpus) if device.type == "cuda"
                                      else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--vocab", type=int, default=152064)
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # OpenMP spinning on a shared 2-core box distorts it
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"apply_plan on {name}, torch {torch.__version__}, vocabulary {args.vocab}, "
          f"{args.steps} steps x {args.repeats} repeats (median), ms per step")
    print("| rows | batch | host ms | GPU ms |\n|---|---|---|---|")
    for label, kind in (("forced", FORCED), ("guard greedy", GUARD_GREEDY),
                        ("guard sampled", GUARD_SAMPLED)):
        for batch in args.batches:
            # Warm up kernels and the caching allocator first.
            time_kind(kind, batch, args.vocab, device, 3, 1)
            host, gpu = time_kind(kind, batch, args.vocab, device, args.steps, args.repeats)
            gpu_text = f"{gpu:.3f}" if gpu is not None else "-"
            print(f"| {label} | {batch} | {host:.3f} | {gpu_text} |", flush=True)


if __name__ == "__main__":
    main()
