"""The V2 processor's engine contracts: no host synchronisation inside ``apply()``, and
a number of tensor ops per step that does not grow with the batch.

The no-sync check reuses the V1 contract's method (``tests/test_processor_contract.py``):
request state, logits and the step's layout live on the meta device, which has no
data, so any read of a device value on the host fails. Ops are counted with a
``TorchDispatchMode`` (every aten op that reaches a backend is a kernel launch on a
GPU, give or take fusion).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from vllm import SamplingParams
from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext, LogitsProcRequestState

from server.engine.logits_processor_v2 import BudgetLogitsProcessorV2
from tests.processor_reference import VOCAB, random_request
from tests.v2_replay import request_state

META = torch.device("meta")


class _HostSync(AssertionError):
    pass


def _context(slots: list[int], drafts: int, device: torch.device) -> LogitsContext:
    expanded = [s for s in slots for _ in range(drafts + 1)]
    local = [j for _ in slots for j in range(drafts + 1)]
    n = len(expanded)
    return LogitsContext(
        expanded_idx_mapping=torch.tensor(expanded, dtype=torch.int32).to(device),
        idx_mapping=torch.tensor(slots, dtype=torch.int32).to(device),
        idx_mapping_np=np.array(slots, dtype=np.int32),
        expanded_local_pos=torch.tensor(local, dtype=torch.int32).to(device),
        input_ids=torch.randint(0, VOCAB, (n,), dtype=torch.int32).to(device),
        pos=torch.arange(n).to(device),
        seq_lens_upper_bound_np=np.full(len(slots), 10, dtype=np.int32))


def _processor(n: int, drafts: int, device: torch.device, seed: int = 1,
               ) -> tuple[BudgetLogitsProcessorV2, list[int]]:
    rs = request_state(n, 128, VOCAB, drafts, device)
    proc = BudgetLogitsProcessorV2(None, LogitsProcRequestState.from_request_state(rs),
                                   num_speculative_tokens=drafts)
    rng = random.Random(seed)
    slots = []
    for i in range(n):
        rs.add_request(f"r{i}", 3, [1, 2, 3], 3, 100)
        slot = rs.req_id_to_index[f"r{i}"]
        params = random_request(rng) if i % 5 else SamplingParams(temperature=1.0)
        if i < 2:  # both kinds of guarded rows, whatever the random draw
            params.temperature = 0.0 if i == 0 else 0.9
        proc.add_request(slot, params)
        slots.append(slot)
    rs.apply_staged_writes()
    proc.apply_staged_writes()
    return proc, slots


@pytest.mark.parametrize("drafts", [0, 2])
def test_apply_never_synchronises_with_the_device(monkeypatch: pytest.MonkeyPatch,
                                                  drafts: int) -> None:
    proc, slots = _processor(32, drafts, META)
    proc.pending[slots] = 3  # as after a resume: catch-up runs too
    real_to = torch.Tensor.to
    copies: list[bool] = []

    def counting_to(self: torch.Tensor, *args, **kwargs):
        result = real_to(self, *args, **kwargs)
        if result.device != self.device:
            if self.device.type == "meta":
                raise _HostSync("device-to-host copy inside apply()")
            copies.append(bool(kwargs.get("non_blocking")))
        return result

    def forbidden(*_args, **_kwargs):
        raise _HostSync("host read of a device value inside apply()")

    for _ in range(3):
        ctx = _context(slots, drafts, META)
        with monkeypatch.context() as m:
            m.setattr(torch.Tensor, "to", counting_to)
            for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__"):
                m.setattr(torch.Tensor, name, forbidden)
            out = proc.apply(torch.empty(len(slots) * (drafts + 1), VOCAB, device=META), ctx)
        assert out.device == META
    assert copies == []  # the step's data is already on the device


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def _ops_per_step(n: int, drafts: int) -> list[int]:
    proc, slots = _processor(n, drafts, torch.device("cpu"))
    rs = proc.req_states
    counts = []
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        ctx = _context(slots, drafts, torch.device("cpu"))
        logits = torch.randn(len(slots) * (drafts + 1), VOCAB, generator=g)
        with _CountOps() as mode:
            proc.apply(logits, ctx)
        counts.append(mode.count)
        for slot in slots:  # commit one token per request (post_update)
            total = int(rs.total_len.gpu[slot])
            rs.all_token_ids.gpu[slot, total] = int(torch.randint(0, VOCAB, (1,), generator=g))
            rs.total_len.gpu[slot] = total + 1
    return counts


@pytest.mark.parametrize("drafts", [0, 3])
def test_ops_per_step_do_not_grow_with_the_batch(drafts: int) -> None:
    small, large = _ops_per_step(8, drafts), _ops_per_step(64, drafts)
    assert small == large
    assert small[0] > 20  # the count is real: the step did run the machine and the edit


def _triton_step_ops(n: int, monkeypatch: pytest.MonkeyPatch) -> tuple[int, list[str]]:
    """Aten ops and kernel launches of one CUDA-path step (kernels recorded, not run)."""
    import server.engine.budget_triton as kernels

    launched: list[str] = []
    empty = torch.zeros(n * 3, dtype=torch.int64)
    monkeypatch.setattr(kernels, "catch_up", lambda *a: launched.append("catch_up"))
    monkeypatch.setattr(kernels, "decide_rows",
                        lambda *a: launched.append("decide_rows") or (empty, empty, empty))
    monkeypatch.setattr(kernels, "edit_rows", lambda *a: launched.append("edit_rows"))
    proc, slots = _processor(n, 2, torch.device("cpu"))
    proc.kernels = "triton"
    ctx = _context(slots, 2, torch.device("cpu"))
    with _CountOps() as mode:
        proc.apply(torch.zeros(n * 3, VOCAB), ctx)
    return mode.count, launched


def test_the_cuda_path_is_three_launches_whatever_the_batch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    small, large = _triton_step_ops(8, monkeypatch), _triton_step_ops(64, monkeypatch)
    assert small == large
    assert small[1] == ["catch_up", "decide_rows", "edit_rows"]


def test_a_steady_speculative_step_catches_up_in_one_observation() -> None:
    """Under speculative decoding a slot resumes from its state after the accepted drafts
    (the last step's draft rows); the token loop, one observation per token the step
    could commit, runs only where that state is missing (after an add or a resume)."""
    proc, slots = _processor(16, 3, torch.device("cpu"))
    counts = []
    for fresh in (False, True):
        proc.fresh[:] = fresh
        proc.pending[slots] = 4  # as after a step that could commit 1 + 3 tokens
        with _CountOps() as mode:
            proc.apply(torch.zeros(len(slots) * 4, VOCAB), _context(slots, 3, torch.device("cpu")))
        counts.append(mode.count)
        assert proc.fresh[slots].all()
    loop, resumed = counts
    per_observation = (loop - resumed) / 3  # four observations against one
    assert 30 < per_observation < 150, counts


def test_a_live_slots_total_len_only_grows() -> None:
    """Both V2 paths catch a slot up from the committed tokens between the ``total_len``
    they saw last and the current one, and never rewind. That holds because vLLM writes
    ``total_len`` in exactly two places: ``add_request`` (a new or resumed request: the
    processor's own ``add_request`` resets the slot) and the post-sampling update, which
    adds the step's sampled count. Any other writer, after an upgrade, fails here."""
    import re
    from pathlib import Path

    import vllm

    root = Path(vllm.__file__).parent / "v1" / "worker" / "gpu"
    write = re.compile(r"total_lens?(_ptr)?\b[^=\n]*\)?\s*(\.stage_write\w*\(|\.copy_\(|"
                       r"\.fill_\(|\.zero_\(|\[[^\]]*\]\s*[-+]?=[^=])|tl\.store\(total_lens?_ptr")
    writers = sorted(
        (str(path.relative_to(root)), line.strip())
        for path in root.rglob("*.py")
        for line in path.read_text().splitlines()
        if write.search(line) and not line.lstrip().startswith("#"))
    assert writers == [
        ("input_batch.py", "tl.store(total_len_ptr + req_state_idx, total_len + num_sampled)"),
        ("states.py", "self.total_len.stage_write_elem(req_idx, prefill_len)"),
    ], writers
