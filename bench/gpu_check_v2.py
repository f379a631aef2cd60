"""GPU check of the V2 budget processor: CUDA against CPU, no host syncs, time and memory.

For the first session with a GPU. Needs torch with CUDA, Triton and the project, and
nothing from vLLM: without vLLM, :mod:`v2_standins` provides the few interface classes
the processors import (checked by running ``--dry-run-cpu`` with every ``vllm`` import
refused). Expected to take 1-3 minutes on one H100 (Triton compiles three kernels; the
V1 processor at batch 1024 is the slowest part); it prints its own elapsed time:

1. equivalence: the same steps (random logits, two random drafts per request, every
   request budgeted, greedy and sampled) on CUDA with the Triton kernels, on CUDA
   with the torch kernels, and on CPU with the torch kernels; the edited logits must
   match the CPU ones exactly on greedy rows; sampled rows may differ only where
   CUDA's and the CPU's softmax round differently (counted, must be under 0.1%);
2. no host sync: ``apply`` runs under ``torch.cuda.set_sync_debug_mode("error")``;
3. kernel launches per steady step of V2 at batch 256, torch and Triton kernels
   (torch's profiler: the driver's launch calls);
4. host ms (wall time of the call), device ms (CUDA events) and peak memory per
   step at batch 256 and 1024 with a 152k vocabulary, V1 vs V2 (both kernel kinds).

Run: ``python bench/gpu_check_v2.py`` (``--dry-run-cpu``: the same code paths on CPU
at small sizes, Triton left out); exits non-zero when a check fails.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import bench_processor_v2 as bench  # noqa: E402  (installs the stand-ins when needed)

from server.engine.logits_processor_v2 import BudgetLogitsProcessorV2  # noqa: E402

VOCAB_CHECK = 4096
DRAFTS = 2


def _processor(batch: int, device: torch.device, kernels: str):
    rs = bench.req_states(batch, device, VOCAB_CHECK)
    proc = BudgetLogitsProcessorV2(None, rs, num_speculative_tokens=DRAFTS, kernels=kernels)
    for i in range(batch):
        proc.add_request(i, bench.make_params(i))
    proc.apply_staged_writes()
    return proc, rs


def _context(batch: int, drafts: torch.Tensor, device: torch.device):
    slots = np.arange(batch, dtype=np.int32)
    expanded = torch.tensor(np.repeat(slots, DRAFTS + 1), device=device)
    local = torch.arange(DRAFTS + 1, dtype=torch.int32).repeat(batch).to(device)
    inputs = torch.cat([torch.ones(batch, 1, dtype=torch.int32), drafts], 1).flatten()
    return bench.LogitsContext(
        expanded_idx_mapping=expanded, idx_mapping=torch.tensor(slots, device=device),
        idx_mapping_np=slots, expanded_local_pos=local, input_ids=inputs.to(device),
        pos=torch.zeros(expanded.shape[0], dtype=torch.int64, device=device),
        seq_lens_upper_bound_np=np.ones(batch, dtype=np.int32))


def check_equivalence(batch: int = 96, steps: int = 40, cuda: torch.device | None = None,
                      kinds: tuple[str, ...] = ("torch", "triton")) -> None:
    """``cuda``/``kinds`` exist for a dry run of this script on a machine without a GPU."""
    cuda = cuda or torch.device("cuda")
    runs = {"cpu": _processor(batch, torch.device("cpu"), "torch")}
    runs.update({f"cuda-{kind}": _processor(batch, cuda, kind) for kind in kinds})
    greedy = torch.tensor([bench.make_params(i).temperature < 1e-5 for i in range(batch)])
    greedy_rows = greedy.repeat_interleave(DRAFTS + 1)
    g = torch.Generator().manual_seed(0)
    sampled_diff = decisions = 0
    for step in range(steps):
        logits = torch.randn(batch * (DRAFTS + 1), VOCAB_CHECK, generator=g) * 3
        logits[:, [bench.END[0], bench.EOS, bench.EOT, bench.NL]] += 4 * torch.rand(1, 4,
                                                                                   generator=g)
        drafts = torch.randint(0, 40, (batch, DRAFTS), generator=g, dtype=torch.int32)
        results = {}
        for name, (proc, _rs) in runs.items():
            device = torch.device("cpu") if name == "cpu" else cuda
            ctx = _context(batch, drafts, device)
            if device.type == "cuda" and step == 0:  # compiles the kernels; same inputs again
                proc.apply(logits.clone().to(device), ctx)  # below: a no-op catch-up, same edit
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("error")
            try:
                out = proc.apply(logits.clone().to(device), ctx)
            finally:
                if device.type == "cuda":
                    torch.cuda.set_sync_debug_mode("default")
            results[name] = out.cpu()
        ref = results["cpu"]
        decisions += int((ref != logits).any(1).sum())
        for name in [n for n in results if n != "cpu"]:
            differ = (results[name] != ref) & ~(results[name].isnan() & ref.isnan())
            rows = differ.any(1)
            assert not rows[greedy_rows].any(), f"{name}: greedy rows differ at step {step}"
            sampled_diff += int(rows.sum())
        tokens = ref.view(batch, DRAFTS + 1, -1)[:, 0].argmax(1)  # commit row 0's argmax
        for name, (_proc, rs) in runs.items():
            device = torch.device("cpu") if name == "cpu" else cuda
            total = rs.total_len.gpu
            rs.all_token_ids.gpu[torch.arange(batch, device=device), total.long()] = \
                tokens.to(device, torch.int32)
            total += 1
    rows_seen = len(kinds) * steps * batch * (DRAFTS + 1)
    print(f"equivalence: {decisions} edited rows on CPU; sampled rows differing on CUDA: "
          f"{sampled_diff} of {rows_seen}")
    assert decisions > steps * batch // 4, "the check edited too few rows to mean anything"
    assert sampled_diff <= rows_seen // 1000


def timings(device: torch.device, batches: tuple[int, ...] = (256, 1024),
            vocab: int = bench.VOCAB, steps: int = 10) -> None:
    """Host ms (wall time of the call), device ms (CUDA events) and peak memory per step,
    V1 against V2 with either kernel kind."""
    cuda = device.type == "cuda"
    for batch in batches:
        for name, cls, kernels in (("V1", bench.V1Driver, ""), ("V2 torch", bench.V2Driver, "torch"),
                                   ("V2 triton", bench.V2Driver, "triton")):
            if kernels == "triton" and not cuda:
                continue
            os.environ["S1_BUDGET_KERNELS"] = kernels
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            timed = bench.time_steps(cls, batch, device, steps=steps, warmup=3, vocab=vocab)
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else float("nan")
            print(f"batch {batch:5d} {name:9s}: host {timed['host']:7.3f} ms  device "
                  f"{timed['device']:7.3f} ms  peak +{peak:7.1f} MiB (logits "
                  f"{batch * vocab * 4 / 2**20:.0f} MiB included)", flush=True)
    os.environ.pop("S1_BUDGET_KERNELS", None)


def launches(device: torch.device, batch: int = 256, vocab: int = bench.VOCAB) -> None:
    """Kernel launches of one steady V2 step per kernel kind, from torch's profiler (on
    CPU, without a GPU: the aten ops, what would launch there)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    for kernels in ("torch", "triton") if cuda else ("torch",):
        os.environ["S1_BUDGET_KERNELS"] = kernels
        driver = bench.V2Driver(batch, device, vocab)
        logits = torch.randn(batch, vocab, device=device)
        for _ in range(3):  # compile, catch up: steady from here on
            driver.commit(driver.apply(logits.clone()).argmax(dim=1))
        step = logits.clone()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            driver.apply(step)
            if cuda:
                torch.cuda.synchronize()
        events = prof.key_averages()
        if cuda:
            count = sum(e.count for e in events if e.key in (
                "cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx"))
            kind = "kernel launches"
        else:
            count = sum(e.count for e in events if e.key.startswith("aten::"))
            kind = "aten ops (views and nested calls included)"
        print(f"batch {batch} V2 {kernels}: {count} {kind} per step", flush=True)
    os.environ.pop("S1_BUDGET_KERNELS", None)


def main() -> None:
    start = time.perf_counter()
    if "--dry-run-cpu" in sys.argv:  # the script's own logic, without a GPU
        cpu = torch.device("cpu")
        torch.set_num_threads(1)  # CPU time of one thread (idle pool threads spin otherwise)
        check_equivalence(batch=16, steps=8, cuda=cpu, kinds=("torch",))
        timings(cpu, batches=(8,), vocab=1024, steps=2)
        launches(cpu, batch=8, vocab=1024)
        print(f"dry run done in {time.perf_counter() - start:.0f} s")
        return
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    cuda = torch.device("cuda")
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "vLLM",
          sys.modules["vllm"].__version__)
    check_equivalence()
    print("no host sync in apply: ok (sync debug mode 'error')", flush=True)
    launches(cuda)
    timings(cuda)
    print(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
