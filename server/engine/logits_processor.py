"""The vLLM v1 adapter: budget forcing as a token-level logits processor.

Each request carries its :class:`~server.budget.machine.BudgetSpec` as a plain dict in
``SamplingParams.extra_args["s1_budget"]`` (see :func:`budget_extra_args`),
with an explicit decision seed. The processor keeps one
:class:`~server.budget.machine.BudgetState` per budgeted row.

When it looks at tokens matters. Under async scheduling (vLLM's default on
GPUs) the model runner appends a ``-1`` placeholder to each request's output
list at the end of a step, calls :meth:`update_state` at the next batch refresh
(placeholder still there) and writes the real sampled id over it only in
``InputBatch.update_async_output_token_ids()``, right before the sampler calls
:meth:`apply`. So :meth:`update_state` only does bookkeeping (rows added,
removed, moved), and :meth:`apply` first catches each row's state up with its
live output list, never consuming a ``-1``. Under synchronous scheduling the
list is already complete at :meth:`update_state`; catching up in :meth:`apply`
gives the same result.

:meth:`apply` then runs the state machines on the host (they need only token
ids) and hands the logits-dependent part to :func:`server.engine.logits_edit.apply_plan`
through one packed int64 plan and one non-blocking host-to-device copy: no
host synchronisation per step. Rows with nothing to enforce cost a few
attribute reads; batches without budgets return at once; rows whose thinking
is over are parked: they cost a length check, so that a list the runner
shortens in place (a KV-load failure, ``gpu_model_runner.py``) rebuilds the row.

Under tensor parallelism every rank runs this processor on identical inputs.
Decisions depend only on token ids, logits and the request's decision seed
(sent by the API process), so every rank decides the same. Nothing is counted
here for the API: the API process derives forced ends and continuations from the
output token ids, exactly once per request whatever the parallel layout (the one
count kept here, below, steers decisions only).

Approximation: the attempt probability is computed from the logits this
processor sees, i.e. after ``logit_bias``/``min_tokens`` but before penalties,
top-k, top-p and min-p, which vLLM applies later.

Speculative decoding is not supported on the V1 runner (vLLM refuses custom
logits processors with it); :mod:`server.engine.logits_processor_v2` is the Model
Runner V2 processor, with the same decisions, that supports it.

A request without a decision seed gets one in :meth:`validate_params` (the
frontend, once, before the request reaches any rank); one that reaches the
engine without any derives it from its budget (:func:`fallback_seed`), never
from a process's own random state.

``thinking_waits`` with the empty continuation (the paper's "no string") is the
one budget the token ids do not determine; its count is kept per request
(:mod:`server.engine.suppression_count`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import (
    BatchUpdate,
    LogitsProcessor,
    MoveDirectionality,
)

from server.budget.draws import uniform_bits_block
from server.budget.machine import (
    DONE,
    FORCE,
    FREE,
    GUARD,
    GUARD_TURN,
    GUARD_WAIT,
    HOLD,
    BudgetError,
    BudgetSpec,
    BudgetState,
)
from server.engine.logits_edit import (
    COUNTED,
    EXCLUSIVE,
    FIXED_COLUMNS,
    FORCED,
    GUARD_GREEDY,
    GUARD_SAMPLED,
    SUPPRESS,
    apply_plan,
    float32_bits,
)
from server.engine.suppression_count import (
    PendingCounts,
    SuppressionRecord,
    history_hash,
    suppression_record,
)

if TYPE_CHECKING:
    from vllm.config import VllmConfig

logger = logging.getLogger(__name__)

EXTRA_ARGS_KEY = "s1_budget"
_GREEDY_EPS = 1e-5  # vLLM's own threshold for "temperature 0"
_U_BLOCK = 64  # uniform draws computed at a time per sampled guarded row (vectorised)


def budget_extra_args(spec: BudgetSpec, seed: int | None = None) -> dict[str, Any]:
    """The ``SamplingParams.extra_args`` entry that turns budget forcing on.

    Send a ``seed``: without one each engine process draws its own, and
    tensor-parallel ranks could then decide differently.
    """
    payload = spec.to_dict()
    if seed is not None:
        payload["seed"] = int(seed)
    return {EXTRA_ARGS_KEY: payload}


def spec_from_params(params: SamplingParams) -> tuple[BudgetSpec, int | None] | None:
    """The request's active budget and decision seed, or None."""
    extra = params.extra_args
    if not extra:
        return None
    payload = extra.get(EXTRA_ARGS_KEY)
    if payload is None:
        return None
    if not isinstance(payload, dict):
        raise BudgetError(f"extra_args[{EXTRA_ARGS_KEY!r}] must be a dict, got {type(payload)}")
    spec = BudgetSpec.from_dict(payload)
    # vLLM gives each of n > 1 children its own seed (seed + index): prefer it.
    seed = params.seed if params.seed is not None else payload.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BudgetError(f"the budget seed must be an integer, got {seed!r}", "seed")
    return (spec, seed) if spec.active else None


def fallback_seed(payload: dict) -> int:
    """A decision seed derived from the budget payload alone (no process state), for a
    request that reached the engine without one: every rank derives the same."""
    text = json.dumps(payload, sort_keys=True, default=sorted)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


def request_budget(params: SamplingParams) -> tuple[BudgetSpec, int] | None:
    """The request's active budget and its decision seed (derived when none was sent)."""
    found = spec_from_params(params)
    if found is None:
        return None
    spec, seed = found
    return spec, fallback_seed(params.extra_args[EXTRA_ARGS_KEY]) if seed is None else seed


def check_request(params: SamplingParams) -> None:
    """Admission check (``validate_params``, in the frontend process, once per request).

    Refuses ``bad_words`` and ``allowed_token_ids`` with a budget: a forced token would
    override them silently. Gives a request without a decision seed one, drawn here
    once, so every tensor-parallel rank receives the same seed."""
    found = spec_from_params(params)
    if found is None:
        return
    for name in ("bad_words", "allowed_token_ids"):
        if getattr(params, name, None):
            raise BudgetError(
                f"{name} cannot be combined with a thinking budget: budget forcing emits "
                "delimiter and continuation tokens that these settings would forbid", name)
    payload = params.extra_args[EXTRA_ARGS_KEY]
    if found[1] is None:
        payload["seed"] = random.getrandbits(63)


def register_engine_newlines(vllm_config: VllmConfig | None) -> None:
    """Register the served tokenizer's newline-ending ids in this engine worker, once,
    so budget payloads can name them by key (:mod:`server.budget.newline_sets`)."""
    model_config = getattr(vllm_config, "model_config", None)
    if model_config is None or getattr(model_config, "skip_tokenizer_init", False):
        return
    try:
        from vllm.tokenizers import cached_tokenizer_from_config

        from server.budget.formats import newline_tokens

        newline_tokens(cached_tokenizer_from_config(model_config))
    except Exception as exc:  # budgets still work; the newline rule then sees no set
        logger.warning("could not register the tokenizer's newline ids: %s", exc)


@dataclass(slots=True)
class _Row:
    state: BudgetState
    out: list[int]  # vLLM's live output list for this request (may end in -1 placeholders)
    seed: int
    greedy: bool
    # The row's plan entries after its batch index and before the uniform draw:
    # (replacement token, kind, 1/temperature as float32 bits, attempt ids padded with -1)
    # for GUARD (below the minimum), GUARD_WAIT (below thinking_waits), GUARD_TURN (end
    # of turn in thinking) and HOLD.
    min_plan: tuple[int, ...] = ()
    wait_plan: tuple[int, ...] = ()
    turn_plan: tuple[int, ...] = ()
    hold_plan: tuple[int, ...] = ()
    inv_t_bits: int = 0
    u_start: int = 0  # uniform draws for positions u_start, u_start + 1, ... (sampled rows)
    u_bits: list[int] | None = None
    done: bool = False  # nothing left to enforce, unless the runner shortens the list
    # thinking_waits with the empty continuation: the request's record and the running
    # hash of the ids the state has observed (see SuppressionRecord).
    record: SuppressionRecord | None = None
    history: int = 0


class BudgetLogitsProcessor(LogitsProcessor):
    """Per-request thinking budgets (min and max), enforced token by token."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        check_request(sampling_params)  # raises BudgetError, a ValueError -> HTTP 400

    def __init__(self, vllm_config: VllmConfig | None, device: torch.device,
                 is_pin_memory: bool) -> None:
        register_engine_newlines(vllm_config)
        self.device = device
        self.pin_memory = bool(is_pin_memory) and device.type != "cpu"
        self.rows: dict[int, _Row] = {}
        self.width = 1  # attempt columns in the plan: the most any row needs
        # thinking_waits with no string: the last step's counted decisions, read back at
        # the next apply() (server.engine.suppression_count).
        self.counts = PendingCounts(self.pin_memory)

    def is_argmax_invariant(self) -> bool:
        return False  # it forces and suppresses tokens, so greedy picks change

    # ------------------------------------------------------------ batch state
    def update_state(self, batch_update: BatchUpdate | None) -> None:
        """Bookkeeping only: under async scheduling the newest token is still a placeholder."""
        if batch_update is None:
            return
        rows = self.rows
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

    def _new_row(self, params: SamplingParams, out: list[int]) -> _Row | None:
        found = request_budget(params)
        if found is None:
            return None
        spec, seed = found
        # A request re-added after preemption starts from position 0 and catches up
        # with its output list in apply(), like any other row.
        temperature = params.temperature
        greedy = temperature < _GREEDY_EPS
        if len(spec.attempt_ids) > self.width:
            self._widen(len(spec.attempt_ids))
        row = _Row(
            state=BudgetState(spec),
            out=out,
            seed=seed,
            greedy=greedy,
        )
        row.inv_t_bits = 0 if greedy else float32_bits(1.0 / temperature)
        if spec.thinking_waits and not spec.continuation_ids:
            row.record = suppression_record(params)
        self._set_plans(row)
        return row

    def _set_plans(self, row: _Row) -> None:
        spec, width = row.state.spec, self.width
        kind = GUARD_GREEDY if row.greedy else GUARD_SAMPLED
        pad = lambda ids: (*ids, *((-1,) * (width - len(ids))))  # noqa: E731
        attempts = pad(spec.attempt_ids)
        cont = spec.continuation_ids[0] if spec.continuation_ids else 0
        row.min_plan = (cont, kind, row.inv_t_bits, *attempts)
        row.wait_plan = ((attempts[0], kind | COUNTED, row.inv_t_bits, *attempts)
                         if row.record is not None else
                         (cont, kind | EXCLUSIVE, row.inv_t_bits, *attempts))
        row.turn_plan = (spec.end_ids[0], kind, row.inv_t_bits, *pad(spec.turn_ids))
        row.hold_plan = (0, SUPPRESS, 0, *attempts)

    def _widen(self, width: int) -> None:
        self.width = width
        for row in self.rows.values():
            self._set_plans(row)

    # ------------------------------------------------------------------ apply
    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        self.counts.record()
        rows = self.rows
        if not rows:
            return logits
        # The plan, flat: forced rows, held rows, greedy guarded rows, sampled guarded rows.
        forced: list[int] = []
        held: list[int] = []
        greedy: list[int] = []
        sampled: list[int] = []
        # Counted rows: (sampled?, index in its group, record, key).
        counted: list[tuple[bool, int, SuppressionRecord, tuple[int, int]]] = []
        width = self.width
        cols = FIXED_COLUMNS + width
        pad = (FORCED, 0, *((-1,) * width), 0)  # kind, 1/T, attempts, u: unused when forced
        for index, row in rows.items():
            state = row.state
            out = row.out
            n = len(out)
            pos = state.position
            if row.done:
                if n >= pos:
                    continue
                row.done = False
            if row.record is not None:  # the ids alone do not say where the Waits stand
                if n < pos:
                    state = self._rebuild(row)
                action = _catch_up_counted(row, n)
            elif n == pos + 1 and out[pos] >= 0:
                action = state.advance(out[pos])
            elif n == pos:
                action = state.decide()
            else:  # several new tokens (a re-added row), or a placeholder not yet repaired
                if n < pos:  # the runner shortened the list in place (KV-load failure)
                    state = self._rebuild(row)
                _catch_up(state, out, n)
                action = DONE if state.done else state.decide()
            if action == FREE:
                continue
            if action in (GUARD, GUARD_WAIT, GUARD_TURN):
                entry = (row.min_plan if action == GUARD else row.wait_plan
                         if action == GUARD_WAIT else row.turn_plan)
                if action == GUARD_WAIT and row.record is not None:
                    group = greedy if row.greedy else sampled
                    counted.append((not row.greedy, len(group) // cols, row.record,
                                    (state.position, row.history)))
                if row.greedy:
                    greedy.append(index)
                    greedy += entry
                    greedy.append(0)
                else:
                    sampled.append(index)
                    sampled += entry
                    k = state.position - row.u_start
                    block = row.u_bits
                    if block is None or not 0 <= k < len(block):
                        row.u_start, k = state.position, 0
                        block = row.u_bits = uniform_bits_block(row.seed, row.u_start, _U_BLOCK)
                    sampled.append(block[k])
            elif action == FORCE:
                forced.append(index)
                forced.append(state.forced_token)
                forced += pad
            elif action == HOLD:
                held.append(index)
                held += row.hold_plan
                held.append(0)
            else:  # DONE: thinking is over; the row stays only to notice a rewind
                row.done = True
        n_forced, n_held, n_greedy = len(forced) // cols, len(held) // cols, len(greedy) // cols
        if not (n_forced or n_held or n_greedy or sampled):
            return logits
        # array -> tensor is ~3x faster than torch.tensor(list); then pinned, so the
        # copy to the device really is asynchronous.
        plan = torch.frombuffer(array("q", forced + held + greedy + sampled), dtype=torch.int64)
        if self.pin_memory:
            plan = plan.pin_memory()
        plan = plan.view(-1, cols).to(logits.device, non_blocking=True)
        hits = apply_plan(logits, plan, n_forced, n_held, n_greedy)
        if counted and hits is not None:
            self.counts.keep(hits, counted, n_greedy)
        return logits

    def _rebuild(self, row: _Row) -> BudgetState:
        """A fresh state for a row whose output list the runner shortened in place."""
        row.state = BudgetState(row.state.spec)
        row.u_bits = None
        row.history = 0
        return row.state


def _catch_up_counted(row: _Row, n: int) -> int:
    """:func:`_catch_up` for a row under ``thinking_waits`` with the empty continuation,
    adding the record's suppressions on the way; then the row's action."""
    state, record = row.state, row.record
    for tok in row.out[state.position:n]:
        if tok < 0:
            break
        if record.get((state.position, row.history)):
            state.suppressed += 1
        row.history = history_hash(row.history, tok)
        state.observe(tok)
    return DONE if state.done else state.decide()


def _catch_up(state: BudgetState, out: list[int], n: int) -> None:
    """Observe ``out[state.position:n]``, stopping at a placeholder (-1) not yet repaired."""
    for tok in out[state.position:n]:
        if tok < 0:
            return
        state.observe(tok)

