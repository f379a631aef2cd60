"""Counters incremented inside the engine process and read by the API process.

The logits processor runs in vLLM's engine-core process, while ``/metrics`` is
served by the API process. Each writing process owns one small memory-mapped
file of int64 slots in a shared directory (``S1_COUNTERS_DIR``); the reader sums
all files. One writer per file and aligned 8-byte stores keep it lock-free.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

ENV_VAR = "S1_COUNTERS_DIR"
NAMES = ("forced_ends", "forced_continuations", "budgeted_requests")
_SLOT = struct.Struct("<q")
_SIZE = _SLOT.size * len(NAMES)


class CounterWriter:
    """Process-local handle; a no-op when the directory is not configured."""

    def __init__(self, directory: str | None) -> None:
        self._mm: mmap.mmap | None = None
        if not directory:
            return
        path = Path(directory) / f"counters-{os.getpid()}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(b"\0" * _SIZE)
        with open(path, "r+b") as fh:
            self._mm = mmap.mmap(fh.fileno(), _SIZE)

    def add(self, index: int, amount: int = 1) -> None:
        mm = self._mm
        if mm is None or not amount:
            return
        offset = index * _SLOT.size
        (value,) = _SLOT.unpack_from(mm, offset)
        _SLOT.pack_into(mm, offset, value + amount)


FORCED_ENDS, FORCED_CONTINUATIONS, BUDGETED_REQUESTS = range(len(NAMES))


def read_counters(directory: str | Path) -> dict[str, int]:
    """Sum every process's counters in ``directory``."""
    totals = dict.fromkeys(NAMES, 0)
    for path in Path(directory).glob("counters-*.bin"):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for i, name in enumerate(NAMES):
            if len(data) >= (i + 1) * _SLOT.size:
                totals[name] += _SLOT.unpack_from(data, i * _SLOT.size)[0]
    return totals
