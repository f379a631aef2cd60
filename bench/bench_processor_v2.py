"""Benchmark: the Model Runner V2 budget processor against the V1 one, per engine step.

What is timed is one ``apply`` per step on a steady decode batch (one committed
token per request and step), every request budgeted, in a mix of the cases that
cost something: guarded below the minimum (greedy and sampled), the end of turn
watched under the s1 rules (greedy and sampled), forced strings, and free rows.

- ``host``: what the CPU spends in the call. On CUDA the wall time of the call
  (the GPU runs behind it). On CPU there is no separate device, so it is the CPU
  time of the call at a tiny vocabulary: the same Python and the same ops, next
  to no compute (the launch overhead a GPU would see, without the kernels).
- ``device``: on CUDA, CUDA events around the call; on CPU, the CPU time of the
  call at the full vocabulary (the kernels run inline, one thread).

V2 is driven as V2's sampler drives it (committed tokens in a device-side history,
``LogitsContext`` per step); V1 as V1's (live output lists, ``apply(logits)``).
Needs torch and the project; vLLM's interface classes are used when vLLM is
importable, else :mod:`bench.v2_standins` provides them (so it also runs on a bare
GPU machine). Run: ``python bench/bench_processor_v2.py [--device cuda] [--record]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import v2_standins  # noqa: E402

v2_standins.install_if_missing()

from vllm import SamplingParams  # noqa: E402
from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext  # noqa: E402

from bench.results import append_results  # noqa: E402
from server.budget.machine import BudgetSpec  # noqa: E402
from server.engine.logits_processor import BudgetLogitsProcessor, budget_extra_args  # noqa: E402
from server.engine.logits_processor_v2 import BudgetLogitsProcessorV2  # noqa: E402

VOCAB = 152_064
HOST_VOCAB = 128  # the host-time proxy on CPU: the same ops, next to no compute
END, EOS, EOT, CONT, PREFIX, NL = (7, 8), 2, 3, (20, 21), (30, 31), 12
CASES = [  # (thinking_min, thinking_max, temperature, s1 rules)
    (10**6, None, 0.0, False), (10**6, None, 1.0, False),  # guarded
    (0, 10**6, 0.0, True), (0, 10**6, 1.0, True),  # end of turn watched
    (None, 2, 0.0, True),  # forced end, newline, answer prefix, then free
    (0, 10**6, 0.7, False),  # free
]


def make_params(i: int) -> SamplingParams:
    lo, hi, temperature, rules = CASES[i % len(CASES)]
    spec = BudgetSpec(start_ids=(), end_ids=END, stop_ids={EOS, EOT}, continuation_ids=CONT,
                      answer_prefix_ids=PREFIX, thinking_min=lo, thinking_max=hi,
                      newline_id=NL if rules else None, newline_ids={NL, 13},
                      turn_ends_thinking=rules, hold_after_continuation=rules)
    return SamplingParams(temperature=temperature, max_tokens=10**6,
                          extra_args=budget_extra_args(spec, seed=i))


def req_states(batch: int, device: torch.device, vocab: int,
               max_len: int = 512) -> SimpleNamespace:
    """What V2's ``LogitsProcRequestState`` exposes, as plain tensors (one prompt token)."""
    ones = np.ones(batch, dtype=np.int32)
    return SimpleNamespace(
        device=device, max_num_reqs=batch, vocab_size=vocab,
        all_token_ids=SimpleNamespace(gpu=torch.ones(batch, max_len, dtype=torch.int32,
                                                     device=device)),
        prompt_len=SimpleNamespace(np=ones, gpu=torch.ones(batch, dtype=torch.int32,
                                                           device=device)),
        prefill_len=SimpleNamespace(np=ones.copy()),
        total_len=SimpleNamespace(gpu=torch.ones(batch, dtype=torch.int32, device=device)))


class V2Driver:
    def __init__(self, batch: int, device: torch.device, vocab: int) -> None:
        self.rs = req_states(batch, device, vocab)
        self.proc = BudgetLogitsProcessorV2(None, self.rs, num_speculative_tokens=0)
        for i in range(batch):
            self.proc.add_request(i, make_params(i))
        self.proc.apply_staged_writes()
        slots = torch.arange(batch, dtype=torch.int32, device=device)
        self.ctx = LogitsContext(
            expanded_idx_mapping=slots, idx_mapping=slots,
            idx_mapping_np=np.arange(batch, dtype=np.int32),
            expanded_local_pos=torch.zeros(batch, dtype=torch.int32, device=device),
            input_ids=torch.ones(batch, dtype=torch.int32, device=device),
            pos=torch.zeros(batch, dtype=torch.int64, device=device),
            seq_lens_upper_bound_np=np.ones(batch, dtype=np.int32))
        self.rows = torch.arange(batch, device=device)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return self.proc.apply(logits, self.ctx)

    def commit(self, tokens: torch.Tensor) -> None:
        """``post_update``: one token per request into the device history, no sync."""
        total = self.rs.total_len.gpu
        self.rs.all_token_ids.gpu[self.rows, total.long()] = tokens.to(torch.int32)
        total += 1


class V1Driver:
    def __init__(self, batch: int, device: torch.device, vocab: int) -> None:
        from vllm.v1.sample.logits_processor import BatchUpdate

        self.proc = BudgetLogitsProcessor(None, device, device.type == "cuda")
        self.outs: list[list[int]] = [[] for _ in range(batch)]
        self.proc.update_state(BatchUpdate(batch_size=batch, removed=[], moved=[], added=[
            (i, make_params(i), [1], self.outs[i]) for i in range(batch)]))

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        self.proc.update_state(None)
        return self.proc.apply(logits)

    def commit(self, tokens: torch.Tensor) -> None:
        for out, tok in zip(self.outs, tokens.tolist(), strict=True):
            out.append(tok)


def time_steps(driver_cls: type, batch: int, device: torch.device, steps: int,
               vocab: int = VOCAB, warmup: int = 2) -> dict[str, float]:
    """Median ms per step: ``host`` (CPU time of the call; wall time on CUDA) and
    ``device`` (CUDA events; on CPU the CPU time of the call, kernels included)."""
    driver = driver_cls(batch, device, vocab)
    base = torch.randn(batch, vocab, generator=torch.Generator().manual_seed(0)).to(device)
    cuda = device.type == "cuda"
    host, dev = [], []
    for step in range(warmup + steps):
        logits = base.clone()
        if cuda:
            torch.cuda.synchronize()
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0, c0 = time.perf_counter(), time.process_time()
        out = driver.apply(logits)
        t1, c1 = time.perf_counter(), time.process_time()
        if cuda:
            stop.record()
            torch.cuda.synchronize()
        if step >= warmup:
            host.append((t1 - t0 if cuda else c1 - c0) * 1e3)
            dev.append(start.elapsed_time(stop) if cuda else (c1 - c0) * 1e3)
        driver.commit(out.argmax(dim=1))
    return {"host": statistics.median(host), "device": statistics.median(dev)}


def run(device: torch.device, batches: list[int], steps: int) -> list[tuple]:
    """Rows of (batch, processor, host ms, device ms)."""
    rows = []
    for batch in batches:
        for name, cls in (("V1", V1Driver), ("V2", V2Driver)):
            if device.type == "cpu":
                host = time_steps(cls, batch, device, steps, vocab=HOST_VOCAB)["host"]
                dev = time_steps(cls, batch, device, steps)["device"]
            else:
                timed = time_steps(cls, batch, device, steps)
                host, dev = timed["host"], timed["device"]
            rows.append((batch, name, host, dev))
            print(f"batch {batch:5d} {name}: host {host:8.3f} ms  device {dev:8.3f} ms",
                  flush=True)
    return rows


def report(rows: list[tuple], device: torch.device, steps: int) -> str:
    from machine import machine_info

    info = machine_info()
    where = (torch.cuda.get_device_name() if device.type == "cuda"
             else f"CPU {info['cpu']}, {info['cores']} cores (shared)")
    lines = [f"## V2 vs V1 processor, per step ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
             "bench/bench_processor_v2.py)", "",
             f"Machine: {where}; torch {info['torch']}, vLLM {info['vllm']}. Vocabulary "
             f"{VOCAB}, every request budgeted (guarded, turn-watched, forced, free; greedy "
             f"and sampled), median of {steps} steps, CPU times with one torch thread. On CPU, host = the "
             f"call at a {HOST_VOCAB}-token vocabulary (the same ops, next to no compute: "
             "Python and dispatch, what a GPU step would cost the CPU); device = the call "
             "at the full vocabulary.", "",
             "| batch | V1 host ms | V2 host ms | V1 device ms | V2 device ms |",
             "|---|---|---|---|---|"]
    by = {(b, n): (h, d) for b, n, h, d in rows}
    for batch in sorted({b for b, *_ in rows}):
        (h1, d1), (h2, d2) = by[(batch, "V1")], by[(batch, "V2")]
        lines.append(f"| {batch} | {h1:.3f} | {h2:.3f} | {d1:.1f} | {d2:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="256,1024")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # CPU time of one thread: stable on a shared machine
    rows = run(device, [int(b) for b in args.batches.split(",")], args.steps)
    text = report(rows, device, args.steps)
    print(text)
    if args.record:
        append_results(text)


if __name__ == "__main__":
    main()
