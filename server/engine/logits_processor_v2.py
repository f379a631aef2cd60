"""The vLLM Model Runner V2 adapter: budget forcing as a V2 custom logits processor.

Same semantics as :mod:`server.engine.logits_processor` (the V1 processor), in V2's
shape. V2 keeps each request's committed tokens only on the device
(``req_states.all_token_ids`` up to ``total_len``) and recycles request *slots*,
so the state machine runs on the device, one row per slot
(:mod:`server.engine.budget_device`):

- ``add_request`` stages the slot's budget on the host (constants and a fresh
  state); ``apply_staged_writes`` copies staged slots with non-blocking copies.
  A slot's state is rebuilt from its committed tokens, so preemption and resume
  (``prefill_len`` > ``prompt_len``) and slot reuse need nothing else;
- ``apply`` first observes the tokens committed since the last step (several per
  step under speculative decoding, a whole output after a resume), reading
  ``all_token_ids`` at ``prompt_len + position``; then each logits row gets a copy
  of its slot's state advanced by the row's draft prefix (``input_ids`` by
  ``expanded_local_pos``, as vLLM's own V2 thinking budget reads them), decides,
  and the logits are edited. Drafts never touch the slot state, so rejected ones
  leave no trace, and the edit of each row depends only on the history it
  conditions on: greedy output with drafts equals output without.

No host synchronisation in ``apply``, and a fixed number of launches per step
whatever the batch size. Two implementations of the same steps:

- ``triton`` (the default on CUDA, :mod:`server.engine.budget_triton`): three kernels,
  one program per slot walking all its new tokens, one per logits row walking its
  drafts and deciding, one per row editing its logits (free rows return at once);
- ``torch`` (CPU, and the reference the tests compare the kernels with,
  :mod:`server.engine.budget_device`): the host keeps bounds only (tokens a slot may have
  committed since it was last observed, rows that may be sampled guarded rows)
  and loops a host-known number of times over fixed sequences of tensor ops.

``S1_BUDGET_KERNELS=torch|triton`` overrides the choice.

Decisions are those of the V1 processor exactly: force; hold (mask the attempt
ids); guard (greedy: did an attempt id win the argmax; sampled: the counter-based
uniform of (decision seed, position) against the attempt probability after
temperature). V2 calls ``apply`` after logit bias, penalties, bad words and the
grammar and before temperature and top-k/top-p.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import torch
from vllm import SamplingParams
from vllm.v1.worker.gpu.sample.logits_processor import (
    LogitsContext,
    LogitsProcessor,
    LogitsProcRequestState,
)

from server.budget.machine import FORCE, GUARD, GUARD_TURN, GUARD_WAIT, HOLD
from server.engine.budget_device import C_ACTIVE, C_GREEDY, C_INV_T, C_SEED, S_POS, SlotTable
from server.engine.budget_device import decide as decide_rows
from server.engine.budget_device import observe as observe_rows
from server.engine.budget_device import uniform_bits as device_uniform_bits
from server.engine.logits_edit import float32_bits
from server.engine.logits_processor import check_request, register_engine_newlines, request_budget

if TYPE_CHECKING:
    from vllm.config import VllmConfig

_GREEDY_EPS = 1e-5
_TWO_53 = float(1 << 53)


def speculative_tokens(vllm_config: VllmConfig | None) -> int:
    """Draft tokens per request and step (0 without speculative decoding)."""
    spec = getattr(vllm_config, "speculative_config", None) if vllm_config else None
    return int(getattr(spec, "num_speculative_tokens", 0) or 0) if spec is not None else 0


def choose_kernels(device: torch.device) -> str:
    """``triton`` on CUDA (three launches per step), else ``torch``;
    ``S1_BUDGET_KERNELS=torch|triton`` overrides."""
    forced = os.environ.get("S1_BUDGET_KERNELS", "").strip().lower()
    if forced in ("torch", "triton"):
        return forced
    return "triton" if device.type == "cuda" else "torch"


class BudgetLogitsProcessorV2(LogitsProcessor):
    """Per-request thinking budgets (min and max) for Model Runner V2, on the device."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        check_request(sampling_params)  # BudgetError is a ValueError -> HTTP 400

    def __init__(self, vllm_config: VllmConfig | None, req_states: LogitsProcRequestState,
                 num_speculative_tokens: int | None = None, kernels: str | None = None) -> None:
        register_engine_newlines(vllm_config)
        self.req_states = req_states
        self.kernels = kernels or choose_kernels(req_states.device)
        n = req_states.max_num_reqs
        self.table = SlotTable(n, req_states.vocab_size, req_states.device)
        self.num_spec = (speculative_tokens(vllm_config) if num_speculative_tokens is None
                         else num_speculative_tokens)
        self.budgeted = np.zeros(n, dtype=bool)
        self.sampled = np.zeros(n, dtype=bool)
        # Host upper bound on tokens a slot committed that its state has not observed.
        self.pending = np.zeros(n, dtype=np.int64)
        self.table.flush()

    # ------------------------------------------------------------- batch state
    def add_request(self, req_idx: int, sampling_params: SamplingParams) -> bool:
        found = request_budget(sampling_params)
        if found is None:
            if self.budgeted[req_idx]:
                self.table.set_slot(req_idx, None)
            self.budgeted[req_idx] = self.sampled[req_idx] = False
            return False
        spec, seed = found
        temperature = sampling_params.temperature
        greedy = temperature < _GREEDY_EPS
        self.table.set_slot(req_idx, spec, seed=seed, greedy=greedy,
                            inv_t_bits=0 if greedy else float32_bits(1.0 / temperature))
        self.budgeted[req_idx], self.sampled[req_idx] = True, not greedy
        # A resumed request comes back with its output so far as part of the prefill.
        rs = self.req_states
        self.pending[req_idx] = int(rs.prefill_len.np[req_idx]) - int(rs.prompt_len.np[req_idx])
        return True

    def apply_staged_writes(self) -> None:
        self.table.flush()

    # ------------------------------------------------------------------ apply
    def apply(self, logits: torch.Tensor, ctx: LogitsContext) -> torch.Tensor:
        slots = ctx.idx_mapping_np
        mine = slots[self.budgeted[slots]]
        if mine.size == 0:
            return logits
        if self.kernels == "triton":
            self._apply_triton(logits, ctx)
            return logits
        n_rows = logits.shape[0]
        emap = ctx.expanded_idx_mapping
        action, token, pos, const, attempts, turns = self._decide_torch(ctx, n_rows)
        action = torch.where(emap >= 0, action, 0)
        n_sampled = min(n_rows, int(self.sampled[mine].sum()) * (1 + self.num_spec))
        any_greedy = bool((~self.sampled[mine]).any())
        edit_logits(logits, attempts, turns, const, pos, action, token, any_greedy, n_sampled)
        return logits

    def _apply_triton(self, logits: torch.Tensor, ctx: LogitsContext) -> None:
        """Catch-up, decisions and the edit in three kernel launches
        (:mod:`server.engine.budget_triton`); rows with nothing to do return at once."""
        from server.engine import budget_triton

        rs, table = self.req_states, self.table
        budget_triton.catch_up(table, ctx.idx_mapping, rs.all_token_ids.gpu, rs.prompt_len.gpu,
                               rs.total_len.gpu)
        emap = ctx.expanded_idx_mapping
        action, token, pos = budget_triton.decide_rows(table, emap, ctx.expanded_local_pos,
                                                       ctx.input_ids)
        budget_triton.edit_rows(logits, table, emap, action, token, pos)

    def _decide_torch(self, ctx: LogitsContext, n_rows: int) -> tuple[torch.Tensor, ...]:
        """The same in eager torch: a host-known number of masked steps."""
        slots = ctx.idx_mapping_np
        mine = slots[self.budgeted[slots]]
        self._catch_up(int(self.pending[mine].max()))
        self.pending[slots] = 1 + self.num_spec  # what this step can commit, seen next step
        emap = ctx.expanded_idx_mapping
        rows = self.table.rows(emap.clamp(min=0).long())
        drafts = self.num_spec if n_rows > slots.shape[0] else 0
        if drafts:
            local = ctx.expanded_local_pos.long()
            first = torch.arange(n_rows, device=emap.device) - local
            input_ids = ctx.input_ids.long()
            for d in range(1, drafts + 1):
                tok = input_ids.index_select(0, (first + d).clamp(max=n_rows - 1))
                observe_rows(rows, tok, local >= d)
        action, token = decide_rows(rows, self.table.nl)
        return action, token, rows.s[S_POS], rows.const, rows.attempts, rows.turns

    def _catch_up(self, steps: int) -> None:
        """Observe up to ``steps`` committed tokens per slot (fewer where fewer exist)."""
        if steps <= 0:
            return
        rs = self.req_states
        all_ids = rs.all_token_ids.gpu
        prompt = rs.prompt_len.gpu.long()
        out_len = rs.total_len.gpu.long() - prompt
        rows = self.table.rows()
        active = rows.c[C_ACTIVE] != 0
        last_col = all_ids.shape[1] - 1
        for _ in range(steps):
            pos = rows.s[S_POS]
            col = (prompt + pos).clamp(max=last_col).unsqueeze(1)
            tok = all_ids.gather(1, col).squeeze(1).long()
            observe_rows(rows, tok, active & (pos < out_len))
        self.table.store(rows)


def edit_logits(logits: torch.Tensor, attempts: torch.Tensor, turns: torch.Tensor,
                const: torch.Tensor, pos: torch.Tensor, action: torch.Tensor, token: torch.Tensor,
                any_greedy: bool, n_sampled: int) -> None:
    """Apply each row's decision to ``logits`` in place, without a host sync. Per row:
    its slot's attempt and end-of-turn id sets, constants (``const``) and position.

    ``n_sampled`` bounds the rows that may be sampled guarded rows: the attempt
    probability (a softmax over the vocabulary) is computed for that many rows only,
    those sorted first, so a batch with few sampled budgeted requests pays little."""
    n = logits.shape[0]
    exclusive = action == GUARD_WAIT  # the continuation's first token only ever forced
    guard = (action == GUARD) | (action == GUARD_TURN) | exclusive
    masked = guard | (action == HOLD)
    sets = torch.where((action == GUARD_TURN).unsqueeze(1), turns, attempts)
    valid = sets >= 0
    idx = torch.where(valid, sets, sets[:, :1]).clamp(min=0)
    greedy = const[:, C_GREEDY] != 0
    hit = torch.zeros(n, dtype=torch.bool, device=logits.device)
    if any_greedy:
        winners = logits.argmax(dim=1)
        hit = guard & greedy & (winners.unsqueeze(1) == idx).any(dim=1)
    if n_sampled:
        want = guard & ~greedy
        order = torch.argsort((~want).to(torch.uint8), stable=True)[:n_sampled]
        inv_t = const[:, C_INV_T].index_select(0, order).to(torch.int32).view(torch.float32)
        probs = torch.softmax(logits.index_select(0, order) * inv_t.to(logits.dtype).unsqueeze(1),
                              dim=1)
        p_attempt = probs.gather(1, idx.index_select(0, order)).masked_fill_(
            ~valid.index_select(0, order), 0.0).sum(dim=1)
        del probs
        u = device_uniform_bits(const[:, C_SEED].index_select(0, order),
                                pos.index_select(0, order))
        tried = (u.to(torch.float64) < p_attempt.to(torch.float64) * _TWO_53)
        hit = hit.index_copy(0, order, hit.index_select(0, order) | (tried & want.index_select(0, order)))
    # Masked rows lose their attempt ids; forced rows and guarded rows whose model tried
    # keep only their token.
    original = logits.gather(1, idx)
    logits.scatter_(1, idx, torch.where(masked.unsqueeze(1), float("-inf"), original))
    whole = ((action == FORCE) | hit).unsqueeze(1)
    col = token.clamp(min=0).unsqueeze(1)
    kept = logits.gather(1, col)
    logits.masked_fill_(whole, float("-inf"))
    kept = torch.where((exclusive & ~hit).unsqueeze(1), float("-inf"), kept)
    logits.scatter_(1, col, torch.where(whole, torch.zeros_like(kept), kept))
