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
  and loops a host-known number of times over fixed sequences of tensor ops. Under
  speculative decoding a slot resumes from its state after the drafts the last step
  accepted (kept from that step's draft rows), so a steady step observes one committed
  token per slot, not one per token the step could commit.

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

from server.budget.spec import BudgetError
from server.engine.budget_device import (
    F_ACTIVE,
    F_GREEDY,
    F_SAMPLED,
    N_STATE,
    S_POS,
    T_INV_T64,
    T_PROMPT,
    T_SEED_MIX,
    Rows,
    premixed_bits,
)
from server.engine.budget_device import decide as decide_rows
from server.engine.budget_device import observe as observe_rows
from server.engine.budget_slots_v2 import SlotTable
from server.engine.logits_edit import float32_bits
from server.engine.logits_processor import check_request, register_engine_newlines, request_budget

if TYPE_CHECKING:
    from vllm.config import VllmConfig

_GREEDY_EPS = 1e-5
_TWO_53 = float(1 << 53)

# Why V2 refuses what V1 counts (see server/engine/logits_processor.py): an end attempt
# suppressed without a string leaves no token, so its count is state the token ids cannot
# rebuild. V2 drops a preempted request from the worker (``finish_requests`` frees its
# slot; processors are not told) and resumes it as a new request, with a SamplingParams
# decoded afresh on each worker process, so neither a slot's device state nor anything
# kept on the request's objects reaches the resumed request; and there is no request
# id to keep it by that does not leak when requests end. Counting would be right only
# until the first preemption, so it is refused instead.
NO_STRING_WAITS_V2 = (
    "thinking_waits with an empty thinking_continuation is not supported on vLLM's Model "
    "Runner V2: an end suppressed without a string leaves no token to count it by, and V2 "
    "does not keep a request's own state across preemption; send a continuation (default "
    "'Wait'), or serve with VLLM_USE_V2_MODEL_RUNNER=0 (the V1 runner counts them)")


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
        found = request_budget(sampling_params)
        if found is not None and found[0].thinking_waits and not found[0].continuation_ids:
            raise BudgetError(NO_STRING_WAITS_V2, "thinking_waits")

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
        # Under speculative decoding, per slot, its state after 0..num_spec drafts at the
        # last step it was in (the last row: where padding rows write); ``fresh``: that
        # step's, unchanged since (see _catch_up_from_drafts).
        self.after = (torch.zeros(n * (self.num_spec + 1) + 1, N_STATE, dtype=torch.int64,
                                 device=req_states.device)
                      if self.num_spec and self.kernels == "torch" else None)
        self.fresh = np.zeros(n, dtype=bool)
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
        rs = self.req_states
        prompt = int(rs.prompt_len.np[req_idx])
        self.table.set_slot(req_idx, spec, seed=seed, greedy=greedy,
                            inv_t_bits=0 if greedy else float32_bits(1.0 / temperature),
                            prompt_len=prompt)
        self.budgeted[req_idx], self.sampled[req_idx] = True, not greedy
        self.fresh[req_idx] = False
        # A resumed request comes back with its output so far as part of the prefill.
        self.pending[req_idx] = int(rs.prefill_len.np[req_idx]) - prompt
        return True

    def apply_staged_writes(self) -> None:
        self.table.flush()

    # ------------------------------------------------------------------ apply
    def apply(self, logits: torch.Tensor, ctx: LogitsContext) -> torch.Tensor:
        slots = ctx.idx_mapping_np
        budgeted = self.budgeted[slots]
        if not budgeted.any():
            return logits
        if self.kernels == "triton":
            self._apply_triton(logits, ctx)
            return logits
        n_rows = logits.shape[0]
        mine = slots[budgeted]
        pending = int(self.pending[mine].max())
        if self.after is not None and pending <= 1 + self.num_spec and self.fresh[mine].all():
            rows = self._catch_up_from_drafts(ctx)
        else:
            rows = self._catch_up(ctx, pending)
        self.pending[slots] = 1 + self.num_spec  # what this step can commit, seen next step
        # One row per request (V2 then passes idx_mapping as expanded_idx_mapping): the
        # caught-up rows are the logits rows; else one row per draft prefix.
        drafted = n_rows != slots.shape[0]
        if drafted:
            rows = self._draft_rows(ctx, n_rows)
        if self.after is not None:
            self._keep_draft_states(ctx, rows, drafted)
        action, token = decide_rows(rows, self.table.nl)
        if drafted:
            action = torch.where(ctx.expanded_idx_mapping >= 0, action, 0)
        sampled = self.sampled[mine]
        n_sampled = int(sampled.sum()) * (1 + self.num_spec if drafted else 1)
        edit_logits(logits, rows, action, token, not sampled.all(), min(n_rows, n_sampled))
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

    def _catch_up(self, ctx: LogitsContext, steps: int) -> Rows:
        """The batch's rows, each having observed up to ``steps`` more committed tokens
        (fewer where fewer exist; the host bound ``pending`` says how many may), read
        from ``all_token_ids`` after the prompt; written back to the slot table."""
        idx = ctx.idx_mapping
        rows = self.table.rows(idx)
        if steps <= 0:
            return rows
        rs = self.req_states
        all_ids = rs.all_token_ids.gpu
        total = rs.total_len.gpu.index_select(0, idx)
        prompt, active = rows.c(T_PROMPT), rows.flag(F_ACTIVE)
        last_col = all_ids.shape[1] - 1
        for _ in range(steps):
            col = prompt + rows.state[:, S_POS]
            observe_rows(rows, all_ids[idx, col.clamp(max=last_col)], active & (col < total))
        self.table.store(rows, idx)
        return rows

    def _catch_up_from_drafts(self, ctx: LogitsContext) -> Rows:
        """:meth:`_catch_up` in one observation under speculative decoding: a step commits
        a prefix of its drafts and one token more, so a slot whose ``c`` new tokens came
        from the step it was last in resumes from its state after ``c - 1`` drafts (kept
        by :meth:`_keep_draft_states`) and observes only the last committed token."""
        idx = ctx.idx_mapping
        rows = self.table.rows(idx)
        total = self.req_states.total_len.gpu.index_select(0, idx)
        new = total - rows.c(T_PROMPT) - rows.state[:, S_POS]
        kept = idx * (self.num_spec + 1) + (new - 1).clamp(0, self.num_spec)
        rows.state = self.after.index_select(0, kept)
        last = self.req_states.all_token_ids.gpu[idx, (total - 1).clamp(min=0)]
        observe_rows(rows, last, rows.flag(F_ACTIVE) & (new > 0))
        self.table.store(rows, idx)
        return rows

    def _keep_draft_states(self, ctx: LogitsContext, rows: Rows, drafted: bool) -> None:
        """Keep each slot's state after each of its draft prefixes (the rows' states)
        for the next step's :meth:`_catch_up_from_drafts`."""
        if drafted:
            emap = ctx.expanded_idx_mapping
            dst = torch.where(emap >= 0, emap * (self.num_spec + 1) + ctx.expanded_local_pos,
                              self.after.shape[0] - 1)
        else:
            dst = ctx.idx_mapping * (self.num_spec + 1)
        self.after.index_put_((dst,), rows.state)
        self.fresh[ctx.idx_mapping_np] = True

    def _draft_rows(self, ctx: LogitsContext, n_rows: int) -> Rows:
        """One row per logits row: its slot's state advanced by the row's draft prefix
        (``input_ids`` after the request's first row, up to ``expanded_local_pos``)."""
        emap = ctx.expanded_idx_mapping
        rows = self.table.rows(emap.clamp(min=0))
        local = ctx.expanded_local_pos
        first = torch.arange(n_rows, device=emap.device) - local
        for d in range(1, self.num_spec + 1):
            tok = ctx.input_ids.index_select(0, (first + d).clamp(max=n_rows - 1))
            observe_rows(rows, tok, local >= d)
        return rows


def edit_logits(logits: torch.Tensor, rows: Rows, action: torch.Tensor, token: torch.Tensor,
                any_greedy: bool, n_sampled: int) -> None:
    """Apply each row's decision to ``logits`` in place, without a host sync. Per row:
    its slot's id sets, constants and position (``rows``).

    ``n_sampled`` bounds the rows that may be sampled guarded rows: the attempt
    probability (a softmax over the vocabulary) is computed for that many rows only,
    those sorted first, so a batch with few sampled budgeted requests pays little."""
    force, guard, masked, exclusive, turn = rows.acts(action)
    sets = rows.id_sets(turn)
    idx = sets[:, :rows.width]
    if any_greedy:  # did an attempt id win the argmax?
        hit = guard & rows.flag(F_GREEDY) & (logits.argmax(dim=1).unsqueeze(1) == idx).any(1)
    else:
        hit = torch.zeros_like(guard)
    if n_sampled:  # the draw against the attempt probability after temperature
        want = guard & rows.flag(F_SAMPLED)
        order = torch.argsort(want, descending=True, stable=True)[:n_sampled]
        seed_mix, inv_t = rows.const[:, T_SEED_MIX:T_INV_T64 + 1].index_select(0, order).unbind(1)
        inv_t = inv_t.view(torch.float64).to(logits.dtype).unsqueeze(1)
        probs = torch.softmax(logits.index_select(0, order) * inv_t, dim=1)
        picked = sets.index_select(0, order)
        p_attempt = (probs.gather(1, picked[:, :rows.width]) * picked[:, rows.width:]).sum(1)
        del probs
        u = premixed_bits(seed_mix, rows.state[:, S_POS].index_select(0, order))
        tried = (u.to(torch.float64) < p_attempt.to(torch.float64) * _TWO_53)
        tried &= want.index_select(0, order)
        hit = hit.index_copy(0, order, hit.index_select(0, order) | tried)
    # Masked rows lose their attempt ids; forced rows and guarded rows whose model tried
    # keep only their token, which GUARD_WAIT rows whose model did not try lose.
    original = logits.gather(1, idx)
    logits.scatter_(1, idx, torch.where(masked.unsqueeze(1), float("-inf"), original))
    whole = (force | hit).unsqueeze(1)
    col = token.clamp(min=0).unsqueeze(1)
    kept = logits.gather(1, col)
    logits.masked_fill_(whole, float("-inf"))
    kept = torch.where((exclusive > hit).unsqueeze(1), float("-inf"), kept)  # and not hit
    logits.scatter_(1, col, torch.where(whole, 0.0, kept))
