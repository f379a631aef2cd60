"""Replay vLLM's Model Runner V2 sampler call order on CPU, around its real request state.

Why: the V2 runner needs Triton and a GPU, so no CPU engine run exercises a V2
logits processor. This harness builds vLLM's own ``RequestState`` (slots from its
free list, ``prompt_len``/``prefill_len``/``total_len``/``all_token_ids``) and
``LogitsProcRequestState``/``LogitsContext`` over CPU tensors. Only the buffer
classes are stand-ins (:class:`HostUva` for ``UvaBackedTensor``, :class:`HostStaged`
for ``StagedWriteTensor``); each ``copy_to_uva`` hands out a fresh tensor, as the
real round-robin pool does, so a processor that keeps a stale ``.gpu`` is caught.

One step, in ``model_runner.py``'s order:

1. ``finish_requests``: finished and preempted requests leave their slots (sorted);
2. ``add_requests``: ``req_states.add_request`` (a resumed request's prefill is its
   prompt plus its output so far) then the processor's ``add_request``; then
   ``req_states.apply_staged_writes`` and the processor's ``apply_staged_writes``;
3. the batch: requests in a new random order each step; under speculative decoding
   a request owns one logits row per draft plus one, ``input_ids`` holds the last
   committed token at local position 0 and the drafts after it;
4. the sampler: ``apply(logits, ctx)``, then sampling row by row with rejection:
   a row's sample is committed, and the next row is looked at only when it equals
   the draft there (greedy: the argmax; seeded: one draw per committed token from
   the request's generator, so a run with drafts draws what a run without does);
5. ``post_update``: the committed tokens go to ``all_token_ids`` at ``total_len``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from vllm import SamplingParams
from vllm.v1.worker.gpu import states as v2_states
from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext, LogitsProcRequestState

LogitsFn = Callable[[list[int]], torch.Tensor]  # history (output so far) -> logits [vocab]
DraftFn = Callable[["Req", random.Random], list[int]]


class HostUva:
    """``UvaBackedTensor`` stand-in: ``np``/``cpu`` are the truth, ``gpu`` a fresh copy
    after each ``copy_to_uva`` (on ``device``: the meta device for the contract test)."""

    device = torch.device("cpu")

    def __init__(self, size: int, dtype: torch.dtype, max_concurrency: int | None = None) -> None:
        self.cpu = torch.zeros(size, dtype=dtype)
        self.np = self.cpu.numpy()
        self.device = HostUva.device  # where its readers live: fixed at construction
        self.gpu = self.cpu.clone().to(self.device)

    def copy_to_uva(self, n: int | None = None) -> torch.Tensor:
        self.gpu = self.cpu.clone().to(self.device)
        return self.gpu


class HostStaged:
    """``StagedWriteTensor`` stand-in: writes staged on the host, applied in ``apply_write``."""

    def __init__(self, size: int | tuple[int, ...], dtype: torch.dtype, device: torch.device,
                 max_concurrency: int | None = None, uva_instead_of_gpu: bool = False) -> None:
        self.gpu = torch.zeros(size, dtype=dtype, device=device)
        self.staged: list[tuple[int, int | None, list]] = []

    def stage_write(self, index: int, start: int, x: list) -> None:
        if x:
            self.staged.append((index, start, list(x)))

    def stage_write_elem(self, index: int, x: int) -> None:
        self.staged.append((index, None, [x]))

    def apply_write(self) -> None:
        for index, start, x in self.staged:
            if self.gpu.device.type == "meta":
                continue
            if start is None:
                self.gpu[index] = x[0]
            else:
                self.gpu[index, start:start + len(x)] = torch.tensor(x, dtype=self.gpu.dtype)
        self.staged.clear()

    def clear_staged_writes(self) -> None:
        self.staged.clear()


@contextmanager
def host_buffers(device: torch.device):
    real = v2_states.StagedWriteTensor, v2_states.UvaBackedTensor
    HostUva.device = device
    v2_states.StagedWriteTensor, v2_states.UvaBackedTensor = HostStaged, HostUva
    try:
        yield
    finally:
        v2_states.StagedWriteTensor, v2_states.UvaBackedTensor = real
        HostUva.device = torch.device("cpu")


_CPU = torch.device("cpu")


def request_state(max_reqs: int, max_model_len: int, vocab: int, num_spec: int,
                  device: torch.device = _CPU) -> v2_states.RequestState:
    with host_buffers(device):
        return v2_states.RequestState(max_reqs, max_model_len, 4096, num_spec, vocab, device)


@dataclass
class Req:
    req_id: str
    params: SamplingParams
    model: LogitsFn
    max_tokens: int
    prompt: list[int] = field(default_factory=lambda: [1, 2, 3])
    sample_seed: int = 0
    stop_ids: frozenset[int] = frozenset()
    out: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.sample_seed)

    def finished(self) -> bool:
        return len(self.out) >= self.max_tokens or bool(self.out and self.out[-1] in self.stop_ids)


class V2Replay:
    """One V2 request state and one processor, stepped in the V2 runner's order."""

    def __init__(self, make_processor: Callable[[LogitsProcRequestState], object], vocab: int,
                 num_spec: int = 0, drafts: DraftFn | None = None, order_seed: int = 0,
                 max_reqs: int = 16, max_model_len: int = 256) -> None:
        self.vocab, self.num_spec, self.drafts = vocab, num_spec, drafts
        self.rs = request_state(max_reqs, max_model_len, vocab, num_spec)
        self.proc = make_processor(LogitsProcRequestState.from_request_state(self.rs))
        self.reqs: dict[str, Req] = {}
        self.rng = random.Random(order_seed)
        self.slots_used: list[int] = []
        self.drafted = self.accepted = 0

    def step(self, add: list[Req] = (), preempt: list[str] = (), **_: object) -> None:
        rs = self.rs
        finished = [rid for rid, r in self.reqs.items() if r.finished()]
        for rid in sorted({*finished, *preempt}):
            rs.remove_request(rid)
            if rid in finished:
                del self.reqs[rid]
        for req in add:
            if req.finished():  # it finished before the scheduler could resume it
                continue
            self.reqs[req.req_id] = req
            tokens = [*req.prompt, *req.out]
            rs.add_request(req.req_id, len(req.prompt), tokens, len(tokens), req.max_tokens)
            slot = rs.req_id_to_index[req.req_id]
            self.slots_used.append(slot)
            self.proc.add_request(slot, req.params)
        if add:
            rs.apply_staged_writes()
        self.proc.apply_staged_writes()
        batch = [rid for rid in rs.req_id_to_index if rid in self.reqs]
        if not batch:
            return
        self.rng.shuffle(batch)
        self._sample([self.reqs[rid] for rid in batch])

    def _sample(self, batch: list[Req]) -> None:
        rs = self.rs
        slots, rows, local, inputs, pos, drafts = [], [], [], [], [], []
        for req in batch:
            slot = rs.req_id_to_index[req.req_id]
            d = self.drafts(req, self.rng) if self.drafts and self.num_spec else []
            d = d[:self.num_spec]
            drafts.append(d)
            slots.append(slot)
            history = [*req.prompt, *req.out]
            for j in range(len(d) + 1):
                rows.append(req.model([*req.out, *d[:j]]))
                local.append(j)
                inputs.append(history[-1] if j == 0 else d[j - 1])
                pos.append(len(history) - 1 + j)
        n_rows = len(rows)
        expanded = [s for s, d in zip(slots, drafts, strict=True) for _ in range(len(d) + 1)]
        ctx = LogitsContext(
            expanded_idx_mapping=torch.tensor(expanded, dtype=torch.int32),
            idx_mapping=torch.tensor(slots, dtype=torch.int32),
            idx_mapping_np=np.array(slots, dtype=np.int32),
            expanded_local_pos=torch.tensor(local, dtype=torch.int32),
            input_ids=torch.tensor(inputs, dtype=torch.int32),
            pos=torch.tensor(pos, dtype=torch.int64),
            seq_lens_upper_bound_np=np.array(pos, dtype=np.int32)[:len(slots)] + 1,
        )
        logits = self.proc.apply(torch.stack(rows).float(), ctx)
        assert logits.shape[0] == n_rows
        start = 0
        for req, slot, d in zip(batch, slots, drafts, strict=True):
            committed = []
            for j in range(len(d) + 1):
                tok = _sample_row(req, logits[start + j])
                committed.append(tok)
                if j == len(d) or tok != d[j]:
                    break
            self.drafted += len(d)
            self.accepted += len(committed) - 1
            start += len(d) + 1
            self._commit(req, slot, committed)

    def _commit(self, req: Req, slot: int, tokens: list[int]) -> None:
        """``post_update``: append to the device history; the scheduler stops at a stop
        id or at ``max_tokens``."""
        kept = []
        for tok in tokens:
            if len(req.out) + len(kept) >= req.max_tokens:
                break
            kept.append(tok)
            if tok in req.stop_ids:
                break
        total = int(self.rs.total_len.gpu[slot])
        self.rs.all_token_ids.gpu[slot, total:total + len(kept)] = torch.tensor(kept)
        self.rs.total_len.gpu[slot] = total + len(kept)
        req.out.extend(kept)

    def run(self, schedule: dict[int, dict], steps: int) -> dict[str, list[int]]:
        """``schedule[step]`` holds ``step()`` keyword arguments; returns true outputs."""
        everyone: dict[str, Req] = {}
        for t in range(steps):
            kwargs = schedule.get(t, {})
            for req in kwargs.get("add", ()):
                everyone[req.req_id] = req
            self.step(**kwargs)
        return {rid: list(r.out) for rid, r in everyone.items()}


def _sample_row(req: Req, row: torch.Tensor) -> int:
    if req.params.temperature < 1e-5:
        return int(row.argmax())
    probs = torch.softmax(row / req.params.temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=req.generator))
