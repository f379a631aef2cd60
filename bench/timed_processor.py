"""A timing wrapper around ``BudgetLogitsProcessor`` for the benchmarks (not for serving).

Why: on a shared 2-core machine, end-to-end throughput differences of 1-2% drown in
other users' load. Timing the processor's own ``update_state`` and ``apply`` inside the
engine gives its share of each step directly. The processor runs in vLLM's worker
process, so the wrapper keeps its running totals in a small memory-mapped file (one per
process) in the directory named by ``BENCH_PROC_TIMING_DIR``, which the benchmark reads
between runs. Wall time (``perf_counter``) gives the processor's share of each run;
thread CPU time (``thread_time``) gives its cost per step with the time spent
descheduled by other users' load left out. The bookkeeping costs four clock reads and
one 40-byte store per step.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from vllm.v1.sample.logits_processor import BatchUpdate

from server.engine.logits_processor import BudgetLogitsProcessor

if TYPE_CHECKING:
    from vllm.config import VllmConfig

ENV_VAR = "BENCH_PROC_TIMING_DIR"
FIELDS = ("apply_ns", "update_ns", "cpu_ns", "steps", "busy_steps")
_RECORD = struct.Struct("<5q")


class TimedBudgetLogitsProcessor(BudgetLogitsProcessor):
    """``BudgetLogitsProcessor`` plus cumulative time spent in ``apply``/``update_state``."""

    def __init__(self, vllm_config: VllmConfig, device: torch.device,
                 is_pin_memory: bool) -> None:
        super().__init__(vllm_config, device, is_pin_memory)
        self._totals = [0, 0, 0, 0, 0]
        self._mm: mmap.mmap | None = None
        directory = os.environ.get(ENV_VAR)
        if directory:
            path = Path(directory) / f"timing-{os.getpid()}.bin"
            path.write_bytes(b"\0" * _RECORD.size)
            with open(path, "r+b") as fh:
                self._mm = mmap.mmap(fh.fileno(), _RECORD.size)

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        super().update_state(batch_update)
        t1, c1 = time.perf_counter_ns(), time.thread_time_ns()
        self._totals[1] += t1 - t0
        self._totals[2] += c1 - c0

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        busy = bool(self.rows)
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        out = super().apply(logits)
        t1, c1 = time.perf_counter_ns(), time.thread_time_ns()
        totals = self._totals
        totals[0] += t1 - t0
        totals[2] += c1 - c0
        totals[3] += 1
        totals[4] += busy
        if self._mm is not None:
            _RECORD.pack_into(self._mm, 0, *totals)
        return out


def read_timing(directory: str | Path) -> dict[str, int]:
    """Totals over every process's file in ``directory``."""
    totals = dict.fromkeys(FIELDS, 0)
    for path in Path(directory).glob("timing-*.bin"):
        data = path.read_bytes()
        if len(data) >= _RECORD.size:
            for name, value in zip(FIELDS, _RECORD.unpack_from(data), strict=True):
                totals[name] += value
    return totals
