"""Host time and ops per step of the V2 processor's torch path: this tree against an
earlier revision, side by side in one process, on the same inputs.

Why: on a GPU every tensor op of the torch path is a kernel launch (some 5-10 us of
host time each), so the ops per step are what the path costs the host there; on
this CPU machine the same call's CPU time at a tiny vocabulary (128 tokens: the same
Python and dispatch, next to no arithmetic) is the measurable proxy. The earlier
revision's ``budget_device`` and ``logits_processor_v2`` are read with ``git show``
and loaded as separate modules, so both run in the same process, interleaved step by
step on the same logits and the same committed tokens; every step's edited logits
must be bit-identical between the two (checked, the run stops otherwise).

Reported per (batch, drafts): the median thread CPU time of ``apply`` over the steps,
for both; the aten ops one step dispatches and, of those, the ones that launch a
kernel on a GPU (views and host scalars left out); the 1-minute load average before
and after (a shared 2-core machine). Every request is budgeted, in the mix of
:mod:`bench_processor_v2` (guarded, turn-watched, forced, free; greedy and sampled).

Run: ``python bench/bench_v2_host.py [--baseline REV] [--record]`` (``--record``
appends the table to ``bench/RESULTS.md`` with ``bench.results.append_results``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import bench_processor_v2 as bench  # noqa: E402  (installs the stand-ins when needed)

from server.engine.logits_processor_v2 import BudgetLogitsProcessorV2  # noqa: E402

BASELINE = "b8ef327"  # the per-column torch path (one op per state column and case)
VOCAB = 128
_QUIET = ("scalar_tensor", "empty")  # host-side scalars and allocations: no launch


def load_revision(rev: str) -> type:
    """``BudgetLogitsProcessorV2`` as of git revision ``rev``, with its own copy of
    ``budget_device`` (the other modules it imports are shared with this tree)."""
    names = {}
    for name in ("budget_device", "logits_processor_v2"):
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:server/engine/{name}.py"],
                             capture_output=True, text=True, check=True).stdout
        for other, alias in names.items():
            src = src.replace(f"server.engine.{other}", alias)
        alias = names[name] = f"_rev_{rev}_{name}"
        module = types.ModuleType(alias)
        sys.modules[alias] = module
        exec(compile(src, f"{rev}:server/engine/{name}.py", "exec"), module.__dict__)  # noqa: S102
    return sys.modules[names["logits_processor_v2"]].BudgetLogitsProcessorV2


class Driver:
    """One processor over ``batch`` budgeted requests, each with ``drafts`` draft rows;
    the first row's token is committed every step (the drafts rejected)."""

    def __init__(self, cls: type, batch: int, drafts: int, vocab: int = VOCAB) -> None:
        cpu = torch.device("cpu")
        self.rs = bench.req_states(batch, cpu, vocab, max_len=4096)
        self.proc = cls(None, self.rs, num_speculative_tokens=drafts, kernels="torch")
        for i in range(batch):
            self.proc.add_request(i, bench.make_params(i))
        self.proc.apply_staged_writes()
        slots = np.arange(batch, dtype=np.int32)
        per = drafts + 1
        self.ctx = bench.LogitsContext(
            expanded_idx_mapping=torch.tensor(np.repeat(slots, per)),
            idx_mapping=torch.tensor(slots), idx_mapping_np=slots,
            expanded_local_pos=torch.arange(per, dtype=torch.int32).repeat(batch),
            input_ids=torch.randint(0, 40, (batch * per,), dtype=torch.int32,
                                    generator=torch.Generator().manual_seed(1)),
            pos=torch.zeros(batch * per, dtype=torch.int64),
            seq_lens_upper_bound_np=np.ones(batch, dtype=np.int32))
        self.first = torch.arange(batch) * per
        self.rows = torch.arange(batch)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return self.proc.apply(logits, self.ctx)

    def commit(self, out: torch.Tensor) -> None:
        total = self.rs.total_len.gpu
        self.rs.all_token_ids.gpu[self.rows, total.long()] = \
            out.index_select(0, self.first).argmax(1).to(torch.int32)
        total += 1


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops = self.launches = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        if not func.is_view and func.overloadpacket.__name__ not in _QUIET:
            self.launches += 1
        return func(*args, **(kwargs or {}))


def compare(old_cls: type, batch: int, drafts: int, steps: int,
            vocab: int = VOCAB) -> dict[str, float]:
    """Interleaved steps of both; medians of thread CPU ms, ops and launches per step."""
    drivers = {"old": Driver(old_cls, batch, drafts, vocab),
               "new": Driver(BudgetLogitsProcessorV2, batch, drafts, vocab)}
    g = torch.Generator().manual_seed(0)
    base = torch.randn(batch * (drafts + 1), vocab, generator=g) * 3
    base[:, [bench.END[0], bench.EOS, bench.EOT]] += 2.0  # attempts happen, guards fire
    times: dict[str, list[float]] = {"old": [], "new": []}
    counted: dict[str, _Ops] = {}
    for step in range(steps + 3):
        outs = {}
        for name, d in drivers.items():
            logits = base.roll(step, 1)
            if step == 2:  # a steady step: count its ops (not timed)
                with _Ops() as counted[name]:
                    outs[name] = d.apply(logits)
            else:
                t0 = time.thread_time()
                outs[name] = d.apply(logits)
                if step > 2:
                    times[name].append(time.thread_time() - t0)
        if not torch.equal(outs["old"], outs["new"]):
            raise SystemExit(f"batch {batch}, drafts {drafts}, step {step}: edits differ")
        for d in drivers.values():
            d.commit(outs["old"])
    result = {f"{k}_ms": 1e3 * statistics.median(v) for k, v in times.items()}
    for name, c in counted.items():
        result[f"{name}_ops"], result[f"{name}_launches"] = c.ops, c.launches
    return result


def one_op_us(n: int = 256, reps: int = 2000) -> float:
    """Median thread CPU time of one small elementwise op (``x & y`` on ``n`` bools):
    the dispatch floor each op of a step pays on this machine, for reading the table."""
    x = torch.ones(n, dtype=torch.bool)
    times = []
    for _ in range(reps):
        t0 = time.thread_time()
        x & x  # noqa: B018
        times.append(time.thread_time() - t0)
    return 1e6 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE, help="git revision to compare with")
    parser.add_argument("--batches", default="256,1024")
    parser.add_argument("--drafts", default="0,2")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--vocab", type=int, default=VOCAB,
                        help="152064 times the arithmetic too (device time on CPU)")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(1)  # thread CPU time of one thread: steadier on a shared machine
    old_cls = load_revision(args.baseline)
    load_before = os.getloadavg()[0]
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        for drafts in (int(d) for d in args.drafts.split(",")):
            r = compare(old_cls, batch, drafts, args.steps, args.vocab)
            rows.append((batch, drafts, r))
            print(batch, drafts, {k: round(v, 3) for k, v in r.items()}, flush=True)
    load_after = os.getloadavg()[0]
    floor = one_op_us()
    lines = [f"## V2 torch path, host time per step: {args.baseline} vs this tree "
             f"({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, bench/bench_v2_host.py)", "",
             f"CPU, torch {torch.__version__}, one thread; vocabulary {args.vocab}"
             + (" (host proxy: Python and dispatch, next to no arithmetic)"
                if args.vocab == VOCAB else " (the arithmetic included)") + "; every request budgeted (guarded, "
             "turn-watched, forced, free; greedy and sampled); median thread CPU time of "
             f"`apply` over {args.steps} interleaved steps, old and new on the same logits, "
             "edits bit-identical at every step (checked). Load average (1 min) "
             f"{load_before:.2f} before, {load_after:.2f} after (2 shared cores). Ops: aten "
             "ops one steady step dispatches; launches: those that are a kernel on a GPU "
             "(views and host scalars left out). One small op (`x & y`, 256 bools) took "
             f"{floor:.2f} us here: launches x that is the dispatch floor of a step; on a "
             "GPU each launch costs some 5-10 us of host time instead.", "",
             "| batch | drafts | old ms | new ms | new/old | old ops | new ops "
             "| old launches | new launches |", "|---|---|---|---|---|---|---|---|---|"]
    for batch, drafts, r in rows:
        lines.append(f"| {batch} | {drafts} | {r['old_ms']:.3f} | {r['new_ms']:.3f} | "
                     f"{r['new_ms'] / r['old_ms']:.2f} | {r['old_ops']} | {r['new_ops']} | "
                     f"{r['old_launches']} | {r['new_launches']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.record:
        from bench.results import append_results

        append_results(text)


if __name__ == "__main__":
    main()
