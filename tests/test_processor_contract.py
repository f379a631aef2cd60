"""The processor's contracts without an engine: same decisions as a plain reference,
no host synchronisation inside ``apply()``, identical decisions on every rank.

The reference (tests/processor_reference.py) is written row by row with Python floats,
the way the s1 rule reads, independently of the packed plan and the device code.
"""

from __future__ import annotations

import random

import pytest
import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate

from server.budget.machine import BudgetSpec
from server.engine.logits_processor import BudgetLogitsProcessor, budget_extra_args
from tests.processor_reference import (
    CONT,
    END,
    EOS,
    VOCAB,
    attempt_prone_logits,
    random_request,
    reference_edit,
    sample,
)


@pytest.mark.parametrize("seed", range(6))
def test_apply_matches_the_row_by_row_reference(seed: int) -> None:
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    n = 16
    params = [random_request(rng) for _ in range(n)]
    outs: list[list[int]] = [[] for _ in range(n)]
    proc = BudgetLogitsProcessor(None, torch.device("cpu"), False)
    proc.update_state(BatchUpdate(batch_size=n, removed=[], moved=[],
                                  added=[(i, p, [1], outs[i]) for i, p in enumerate(params)]))
    decisions = 0
    for _ in range(70):
        logits = attempt_prone_logits(g, n)
        expected = reference_edit(logits, params, outs)
        got = proc.apply(logits.clone())
        assert torch.equal(got, expected)
        decisions += int((got != logits).any(dim=1).sum())
        for i in range(n):
            outs[i].append(sample(got[i], params[i].temperature, g))
    assert decisions > 40  # the run really forced and guarded


def test_apply_leaves_batches_without_budgets_alone() -> None:
    proc = BudgetLogitsProcessor(None, torch.device("cpu"), False)
    plain = SamplingParams(temperature=1.0)
    proc.update_state(BatchUpdate(batch_size=2, removed=[], moved=[],
                                  added=[(0, plain, [1], []), (1, plain, [1], [])]))
    logits = torch.randn(2, VOCAB)
    assert proc.apply(logits.clone()).equal(logits)
    assert not proc.rows


class _HostSync(AssertionError):
    pass


def test_apply_never_synchronises_with_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Logits on the meta device have no data: any read of a device value on the host
    (``.item()``, ``.tolist()``, ``bool()``, a device-to-host copy) fails. The only
    host-to-device traffic allowed is one non-blocking copy per step."""
    rng = random.Random(1)
    n = 64
    params = [random_request(rng) for _ in range(n)]
    outs: list[list[int]] = [[] for _ in range(n)]
    meta = torch.device("meta")
    proc = BudgetLogitsProcessor(None, meta, False)
    proc.update_state(BatchUpdate(batch_size=n, removed=[], moved=[],
                                  added=[(i, p, [1], outs[i]) for i, p in enumerate(params)]))
    copies: list[bool] = []
    real_to = torch.Tensor.to

    def counting_to(self: torch.Tensor, *args, **kwargs):
        result = real_to(self, *args, **kwargs)
        if result.device != self.device:
            if self.device.type == "meta":
                raise _HostSync("device-to-host copy inside apply()")
            copies.append(bool(kwargs.get("non_blocking")))
        return result

    def forbidden(*_args, **_kwargs):
        raise _HostSync("host read of a device value inside apply()")

    g = torch.Generator().manual_seed(0)
    forced_or_guarded = 0
    for _ in range(40):
        copies.clear()
        with monkeypatch.context() as m:
            m.setattr(torch.Tensor, "to", counting_to)
            for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__"):
                m.setattr(torch.Tensor, name, forbidden)
            proc.apply(torch.empty(n, VOCAB, device=meta))
        assert copies in ([], [True])
        forced_or_guarded += len(copies)
        for out in outs:  # advance every row with some token (meta logits cannot be sampled)
            out.append(int(torch.randint(0, VOCAB, (1,), generator=g)))
    assert forced_or_guarded > 10


def _run_rank(params: list[SamplingParams], python_seed: int, steps: int) -> list[torch.Tensor]:
    """One "TP rank": its own processor and Python random state, the same inputs (the
    global ``random`` state is restored afterwards, so no other test sees the reseed)."""
    saved = random.getstate()
    try:
        random.seed(python_seed)
        return _run_rank_seeded(params, steps)
    finally:
        random.setstate(saved)


def _run_rank_seeded(params: list[SamplingParams], steps: int) -> list[torch.Tensor]:
    n = len(params)
    outs: list[list[int]] = [[] for _ in range(n)]
    proc = BudgetLogitsProcessor(None, torch.device("cpu"), False)
    proc.update_state(BatchUpdate(batch_size=n, removed=[], moved=[],
                                  added=[(i, p, [1], outs[i]) for i, p in enumerate(params)]))
    g = torch.Generator().manual_seed(123)  # ranks see identical logits
    edited = []
    for _ in range(steps):
        logits = proc.apply(attempt_prone_logits(g, n))
        edited.append(logits)
        for i in range(n):
            outs[i].append(int(logits[i].argmax()))  # the same token on every rank
    return edited


@pytest.mark.parametrize("with_seed", [True, False])
def test_ranks_with_different_python_random_states_agree(with_seed: bool) -> None:
    rng = random.Random(5)
    params = [SamplingParams(temperature=1.0, max_tokens=100, extra_args=budget_extra_args(
        BudgetSpec(start_ids=(), end_ids=END, stop_ids={EOS}, continuation_ids=CONT,
                   thinking_min=60), rng.getrandbits(40) if with_seed else None))
        for _ in range(8)]
    a = _run_rank(params, python_seed=1, steps=40)
    b = _run_rank(params, python_seed=2, steps=40)
    # With the API's decision seed the ranks agree; without one (a direct engine user's
    # request) each derives the same seed from the request's budget, not from its own
    # random state, so they agree too.
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
