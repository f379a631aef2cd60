"""The budget processor as it was before the sync-free rewrite (benchmarks only).

Kept so ``bench/bench_processor_micro.py`` can time "before" and "after" side by
side in one run and check that both make the same decisions. It observes tokens
in ``update_state`` (wrong under async scheduling: it sees ``-1`` placeholders)
and synchronises with the device in ``apply``. The server does not use it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import (
    BatchUpdate,
    LogitsProcessor,
    MoveDirectionality,
)

from server.budget.draws import uniform_bits
from server.budget.machine import FORCE, FREE, BudgetState, Phase
from server.engine.logits_processor import spec_from_params

if TYPE_CHECKING:
    from vllm.config import VllmConfig

_GREEDY_EPS = 1e-5


def uniform_for_step(seed: int, position: int) -> float:
    """The draw as the legacy processor made it: a float in [0, 1) (the server now compares
    the 53 bits with ``p * 2**53``, the same test exactly)."""
    return uniform_bits(seed, position) * (1.0 / (1 << 53))


@dataclass(slots=True)
class _Row:
    state: BudgetState
    out: list[int]  # vLLM's live output list for this request
    seed: int
    greedy: bool
    inv_temperature: float


class LegacyBudgetLogitsProcessor(LogitsProcessor):
    """Per-request thinking budgets (min and max), enforced token by token."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        spec_from_params(sampling_params)  # raises BudgetError, a ValueError -> HTTP 400

    def __init__(self, vllm_config: VllmConfig, device: torch.device,
                 is_pin_memory: bool) -> None:
        self.device = device
        self.rows: dict[int, _Row] = {}
        self._neg_inf = torch.tensor(float("-inf"), device=device)
        self._zero = torch.tensor(0.0, device=device)

    def is_argmax_invariant(self) -> bool:
        return False  # it forces and suppresses tokens, so greedy picks change

    # ------------------------------------------------------------ batch state
    def update_state(self, batch_update: BatchUpdate | None) -> None:
        rows = self.rows
        if batch_update is not None:
            for index in batch_update.removed:
                rows.pop(index, None)
            for index, params, _prompt, out in batch_update.added:
                rows.pop(index, None)
                row = self._new_row(params, out)
                if row is not None:
                    rows[index] = row
            for a, b, direction in batch_update.moved:
                row_a, row_b = rows.pop(a, None), rows.pop(b, None)
                if row_a is not None:
                    rows[b] = row_a
                if direction == MoveDirectionality.SWAP and row_b is not None:
                    rows[a] = row_b
        if not rows:
            return
        finished = []
        for index, row in rows.items():
            state, out = row.state, row.out
            n = len(out)
            if n > state.position:
                if n == state.position + 1:
                    state.observe(out[-1])
                else:
                    state.observe_many(out[state.position:n])
                if state.phase != Phase.THINKING and state.done:
                    finished.append(index)
        for index in finished:
            del rows[index]

    def _new_row(self, params: SamplingParams, out: list[int]) -> _Row | None:
        found = spec_from_params(params)
        if found is None:
            return None
        spec, seed = found
        state = BudgetState(spec)
        # A request re-added after preemption resumes from its output so far.
        state.observe_many(out)
        if state.done:
            return None
        temperature = params.temperature
        greedy = temperature < _GREEDY_EPS
        return _Row(
            state=state,
            out=out,
            seed=random.getrandbits(63) if seed is None else seed,
            greedy=greedy,
            inv_temperature=0.0 if greedy else 1.0 / temperature,
        )

    # ------------------------------------------------------------------ apply
    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        force_rows: list[int] = []
        force_toks: list[int] = []
        guards: list[tuple[int, _Row]] = []
        for index, row in self.rows.items():
            state = row.state
            action = state.decide()
            if action == FREE:
                continue
            if action == FORCE:
                tok = state.forced_token
                force_rows.append(index)
                force_toks.append(tok)
            else:
                guards.append((index, row))
        supp_rows: list[int] = []
        supp_toks: list[int] = []
        if guards:
            self._resolve_guards(logits, guards, force_rows, force_toks, supp_rows, supp_toks)
        if supp_rows:
            logits.index_put_(self._idx(supp_rows, supp_toks), self._neg_inf)
        if force_rows:
            r = torch.tensor(force_rows, dtype=torch.long, device=logits.device)
            t = torch.tensor(force_toks, dtype=torch.long, device=logits.device)
            logits.index_fill_(0, r, float("-inf"))
            logits.index_put_((r, t), self._zero)
        return logits

    def _idx(self, rows: list[int], toks: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self._neg_inf.device
        return (torch.tensor(rows, dtype=torch.long, device=dev),
                torch.tensor(toks, dtype=torch.long, device=dev))

    def _resolve_guards(self, logits: torch.Tensor, guards: list[tuple[int, _Row]],
                        force_rows: list[int], force_toks: list[int],
                        supp_rows: list[int], supp_toks: list[int]) -> None:
        """Decide, per guarded row, whether the model tried to end its thinking.

        Either way the attempt tokens are masked unless the continuation is forced:
        penalties applied after this processor could otherwise promote them.
        """
        happened = self._greedy_attempts(logits, [g for g in guards if g[1].greedy])
        happened.update(self._sampled_attempts(logits, [g for g in guards if not g[1].greedy]))
        for index, row in guards:
            state = row.state
            if happened[index]:
                force_rows.append(index)
                force_toks.append(state.guard_continuation_token)
            else:
                for tok in state.spec.attempt_ids:
                    supp_rows.append(index)
                    supp_toks.append(tok)

    @staticmethod
    def _greedy_attempts(logits: torch.Tensor,
                         rows: list[tuple[int, _Row]]) -> dict[int, bool]:
        """Greedy: an attempt is an attempt token winning the argmax, as vLLM would pick."""
        if not rows:
            return {}
        idx = torch.tensor([i for i, _ in rows], dtype=torch.long, device=logits.device)
        winners = logits.index_select(0, idx).argmax(dim=1).tolist()
        return {i: w in row.state.spec.attempt_ids
                for (i, row), w in zip(rows, winners, strict=True)}

    @staticmethod
    def _sampled_attempts(logits: torch.Tensor,
                          rows: list[tuple[int, _Row]]) -> dict[int, bool]:
        """Sampling: an attempt happens with the model's probability of the attempt
        tokens after temperature, drawn from the request's counter-based stream."""
        if not rows:
            return {}
        attempts = [row.state.spec.attempt_ids for _, row in rows]
        width = max(len(a) for a in attempts)
        # Pad with -1 and mask it out, so each real id counts once.
        padded = [list(a) + [-1] * (width - len(a)) for a in attempts]
        dev = logits.device
        row_idx = torch.tensor([i for i, _ in rows], dtype=torch.long, device=dev)
        att_idx = torch.tensor(padded, dtype=torch.long, device=dev)
        inv_t = torch.tensor([row.inv_temperature for _, row in rows], dtype=logits.dtype,
                             device=dev).unsqueeze(1)
        sub = logits.index_select(0, row_idx) * inv_t
        att = sub.gather(1, att_idx.clamp(min=0))
        att = att.masked_fill(att_idx < 0, float("-inf"))
        p_att = torch.exp(torch.logsumexp(att, 1) - torch.logsumexp(sub, 1)).tolist()
        return {i: p == p and uniform_for_step(row.seed, row.state.position) < p  # NaN: no
                for (i, row), p in zip(rows, p_att, strict=True)}
