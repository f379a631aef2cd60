"""Micro-benchmark: the budget processor's host time per engine step, before and after.

Why: a decode step of a 32B model on one H100 takes ~20 ms; the processor runs on
the host inside every step, and a host sync there also removes vLLM's CPU/GPU
overlap. Here the processor is driven as the engine drives it (one
``update_state`` and one ``apply`` per step, the "sampler" appending each row's
token to its live output list) and only those two calls are timed, for:

- ``before``: ``bench/legacy_processor.py``, the processor as it was (observes in
  ``update_state``, ``.tolist()`` in ``apply``);
- ``after``: ``server.engine.logits_processor.BudgetLogitsProcessor`` (catch-up in
  ``apply``, one packed plan, one non-blocking copy, decisions on the device).

Row types, every row of the batch the same: ``free`` (past the minimum, far from
the maximum), ``guard greedy`` / ``guard sampled`` (below the minimum, the model
not trying to stop: the suppression path), ``forced`` (every step forces a token).
Before timing, both implementations must edit the logits identically.

On CUDA (``--device cuda``, torch without vLLM is enough) host time is what the
CPU spends in the calls (the GPU runs behind it), and the GPU time of ``apply``
is read from CUDA events. Run: ``.venv/bin/python bench/bench_processor_micro.py``
(``--record`` appends the table to ``bench/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from legacy_processor import LegacyBudgetLogitsProcessor  # noqa: E402
from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate  # noqa: E402

import server.engine.logits_processor as lp  # noqa: E402
from bench.results import append_results  # noqa: E402
from server.budget.machine import BudgetSpec  # noqa: E402
from server.engine.logits_processor import BudgetLogitsProcessor, budget_extra_args  # noqa: E402

END, EOS, CONT = (7, 8), 2, (20, 21)
SCENARIOS = {  # name: (thinking_min, thinking_max, temperature, forced answer prefix, s1 rules)
    "free": (0, 10**6, 0.0, False, False),
    "turn-guarded (s1 rules), greedy": (0, 10**6, 0.0, False, True),
    "turn-guarded (s1 rules), sampled": (0, 10**6, 1.0, False, True),
    "guard greedy": (10**6, None, 0.0, False, False),
    "guard sampled": (10**6, None, 1.0, False, False),
    "forced": (None, 0, 0.0, True, False),
}


def make_params(scenario: str, steps: int, i: int, rules: bool = True) -> SamplingParams:
    lo, hi, temperature, prefix, s1_rules = SCENARIOS[scenario]
    # The legacy processor knows no s1 rules: "before" runs such rows as it did, free.
    s1_rules = s1_rules and rules
    spec = BudgetSpec(start_ids=(), end_ids=END, stop_ids={EOS}, continuation_ids=CONT,
                      answer_prefix_ids=tuple(30 + k % 50 for k in range(steps + 4)) if prefix
                      else (), thinking_min=lo, thinking_max=hi,
                      turn_ends_thinking=s1_rules, hold_after_continuation=s1_rules)
    return SamplingParams(temperature=temperature, max_tokens=steps + 8,
                          extra_args=budget_extra_args(spec, seed=1000 + i))


class Driver:
    """One processor and its batch, stepped with logits that never favour ending."""

    def __init__(self, cls: type, scenario: str, batch: int, vocab: int, steps: int,
                 device: torch.device) -> None:
        self.proc = cls(None, device, device.type == "cuda")
        # CPU: thread CPU time, so other processes' load on a shared machine counts less.
        self.clock = time.perf_counter if device.type == "cuda" else time.thread_time
        self.outs: list[list[int]] = [[] for _ in range(batch)]
        rules = cls is not LegacyBudgetLogitsProcessor
        added = [(i, make_params(scenario, steps, i, rules), [1], self.outs[i])
                 for i in range(batch)]
        self.pending: BatchUpdate | None = BatchUpdate(batch_size=batch, removed=[], moved=[],
                                                       added=added)
        g = torch.Generator(device="cpu").manual_seed(0)
        self.logits = (torch.randn(batch, vocab, generator=g) * 2).to(device)
        self.logits[:, [END[0], EOS]] -= 8.0  # no attempts: guarded rows stay guarded

    def step(self) -> tuple[float, torch.Tensor]:
        """Host seconds inside update_state + apply, and the edited logits."""
        logits = self.logits.clone()
        t0 = self.clock()
        self.proc.update_state(self.pending)
        out = self.proc.apply(logits)
        host = self.clock() - t0
        self.pending = None
        for row, tok in zip(self.outs, out.argmax(dim=1).tolist(), strict=True):
            row.append(tok)  # the engine's bookkeeping, outside the timed calls
        return host, out


def same_edits(scenario: str, vocab: int, device: torch.device) -> bool:
    a = Driver(LegacyBudgetLogitsProcessor, scenario, 16, vocab, 12, device)
    b = Driver(BudgetLogitsProcessor, scenario, 16, vocab, 12, device)
    return all(torch.equal(a.step()[1], b.step()[1]) for _ in range(12))


class _DeviceShare:
    """Times ``apply_plan`` (the tensor ops) inside the new processor's ``apply`` and
    counts the ops it dispatches, so the host's own share (state machines, plan,
    launches) can be told apart from the tensor maths, which on CPU is host work too."""

    def __init__(self, clock) -> None:
        self.clock, self.seconds, self.ops, self.calls = clock, 0.0, 0, 0

    def __enter__(self) -> _DeviceShare:
        from torch.utils._python_dispatch import TorchDispatchMode

        share = self

        class Count(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                share.ops += 1
                return func(*args, **(kwargs or {}))

        def timed(*args, **kwargs):
            t0 = self.clock()
            if self.calls == 0:  # count the ops of one step (the same every step)
                with Count():
                    _real_apply_plan(*args, **kwargs)
            else:
                _real_apply_plan(*args, **kwargs)
            self.seconds += self.clock() - t0
            self.calls += 1

        lp.apply_plan = timed
        return self

    def __exit__(self, *exc: object) -> None:
        lp.apply_plan = _real_apply_plan


_real_apply_plan = lp.apply_plan


def measure(cls: type, scenario: str, batch: int, vocab: int, steps: int,
            device: torch.device, repeats: int) -> dict[str, float]:
    """Median host ms per step; for the new processor also the host ms outside the
    tensor ops, the ops per step and (CUDA) the GPU ms per step."""
    runs: dict[str, list[float]] = {"host": [], "own": [], "gpu": [], "ops": []}
    for _ in range(repeats):
        d = Driver(cls, scenario, batch, vocab, steps + 2, device)
        d.step()  # the first step adds the rows: not a steady-state step
        host = gpu = 0.0
        with _DeviceShare(d.clock) as share:
            for _ in range(steps):
                if device.type == "cuda":
                    start = torch.cuda.Event(enable_timing=True)
                    end = torch.cuda.Event(enable_timing=True)
                    start.record()
                    dt_host, _ = d.step()
                    end.record()
                    end.synchronize()
                    gpu += start.elapsed_time(end)
                else:
                    dt_host, _ = d.step()
                host += dt_host
        runs["host"].append(host * 1000 / steps)
        own = host if device.type == "cuda" else host - share.seconds
        runs["own"].append(own * 1000 / steps)
        runs["gpu"].append(gpu / steps)
        runs["ops"].append(share.ops)
    return {k: statistics.median(v) for k, v in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--vocab", type=int, default=None,
                    help="vocabulary size (default 1024 on CPU, 152064 on CUDA)")
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = ap.parse_args()
    device = torch.device(args.device)
    vocab = args.vocab or (152064 if device.type == "cuda" else 1024)
    torch.set_num_threads(1)

    lines = [f"## Processor micro-benchmark {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC "
             "(bench/bench_processor_micro.py)", "",
             f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
             f"device {device}"
             + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else "")
             + f", vocabulary {vocab}, {args.steps} steps x {args.repeats} repeats (median), "
             "ms per step in update_state + apply (CPU: thread time).", ""]
    cuda = device.type == "cuda"
    header = ("| rows | batch | before ms | after ms | after/before | after, host share ms "
              "| tensor ops/step |" + (" after GPU ms |" if cuda else ""))
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for scenario in SCENARIOS:
        if not SCENARIOS[scenario][4] and not same_edits(scenario, vocab, device):
            raise SystemExit(f"{scenario}: before and after edit the logits differently")
        for batch in args.batches:
            before = measure(LegacyBudgetLogitsProcessor, scenario, batch, vocab,
                             args.steps, device, args.repeats)
            after = measure(BudgetLogitsProcessor, scenario, batch, vocab,
                            args.steps, device, args.repeats)
            row = (f"| {scenario} | {batch} | {before['host']:.3f} | {after['host']:.3f} | "
                   f"{after['host'] / before['host']:.2f} | {after['own']:.3f} | "
                   f"{after['ops']:.0f} |" + (f" {after['gpu']:.3f} |" if cuda else ""))
            lines.append(row)
            print(row, flush=True)
    lines += ["", "turn-guarded rows: between the minimum and the maximum under the s1 rules "
              "(the server's default), every step checks for an end of turn inside the block; "
              "'before' is the same rows as the old processor ran them (free, unchecked).",
              "host share: time in update_state + apply outside the tensor ops "
              "(state machines, the plan, dispatch); on CPU the tensor ops run on the host "
              "too and are in 'after ms'. On CUDA 'after ms' is all host time (no sync)."]
    lines += ["", "Both implementations edited the logits identically in every row type "
              "they share (checked before timing).", ""]
    text = "\n".join(lines)
    print(text)
    if args.record:
        append_results(text)


if __name__ == "__main__":
    main()
