"""The device half of budget forcing: one step's plan applied to the logits, sync-free.

The host (:mod:`server.engine.logits_processor`) decides per row from the token ids
alone whether a row is forced (the token is known) or guarded (below
``thinking_min``: whether the model tried to end its thinking depends on the
logits). It packs those rows into one int64 *plan* and copies it to the device
once, without blocking. Everything that depends on the logits is decided here,
on the device, so the host never waits for the GPU: no ``.item()``, ``.tolist()``,
``.cpu()`` or blocking copy, and the CPU can run ahead as vLLM's async
scheduling expects.

Plan layout, one row per request to edit, in groups whose sizes the host knows:
forced rows, held rows, greedy guarded rows, sampled guarded rows::

    [batch_row, token, kind, inv_temperature_bits, attempt_0, ..., attempt_{W-1}, u_bits]

- ``kind``: :data:`FORCED`, :data:`SUPPRESS`, :data:`GUARD_GREEDY` or :data:`GUARD_SAMPLED`,
  a guarded kind with the :data:`EXCLUSIVE` bit under ``thinking_waits`` (the
  replacement is masked too when the model did not try, so it is only ever forced),
  or with the :data:`COUNTED` bit under ``thinking_waits`` with the empty continuation
  (no replacement: the attempt ids are masked whether the model tried or not, and
  whether it tried is handed back to the host, which counts it);
- ``token``: the forced token, or for a guarded row the replacement (the
  continuation's first token below the minimum, the end delimiter's first
  token for an end of turn inside the block);
- ``inv_temperature_bits``: ``1 / temperature`` as float32 bits (a signed int32);
- ``attempt_*``: the token ids that count as the attempt, padded with ``-1``;
- ``u_bits``: 53 uniform bits per (seed, position) (:func:`server.budget.draws.uniform_bits`).

Held rows (s1's ``min_tokens=1`` after a continuation) only get their attempt
tokens masked. Guarded rows, the s1 rule made exact: greedy, the model tried when
an attempt token wins the argmax; sampled, it tried with the model's probability
of the attempt tokens after temperature, drawn against the counter-based
uniform (``u < p``, compared as ``u_bits < p * 2**53``, which is the same test
exactly). If it tried, the replacement is forced; otherwise the attempt tokens
are set to ``-inf`` and the rest of the distribution is sampled as before.
"""

from __future__ import annotations

import struct

import torch

FORCED, SUPPRESS, GUARD_GREEDY, GUARD_SAMPLED = 0, 1, 2, 3
EXCLUSIVE = 4  # flag on a guarded kind: the replacement token only ever comes forced
COUNTED = 8  # flag on a guarded kind: nothing replaces an attempt; apply_plan reports it
COL_ROW, COL_TOKEN, COL_KIND, COL_INV_T, COL_ATTEMPTS = range(5)
COL_U = -1
FIXED_COLUMNS = 5  # all but the attempt ids
_TWO_53 = float(1 << 53)


def float32_bits(value: float) -> int:
    """``value`` rounded to float32, its bits as a signed int32 (exact in an int64 plan)."""
    return struct.unpack("<i", struct.pack("<f", value))[0]


def apply_plan(logits: torch.Tensor, plan: torch.Tensor, n_forced: int, n_held: int,
               n_greedy: int) -> torch.Tensor | None:
    """Edit ``logits`` in place. ``plan`` is on the logits' device: ``n_forced`` forced
    rows, ``n_held`` held rows, ``n_greedy`` greedy guarded rows, then sampled guarded
    rows. Never synchronises with the device.

    Returns, on the device, whether each guarded row's model tried to end (greedy rows,
    then sampled rows), or None without guarded rows: the host reads it for the
    :data:`COUNTED` rows only."""
    if n_forced:
        rows = plan[:n_forced, COL_ROW]
        logits.index_fill_(0, rows, float("-inf"))
        logits.index_put_((rows, plan[:n_forced, COL_TOKEN]),
                          torch.zeros((), dtype=logits.dtype, device=logits.device))
    start = n_forced
    if n_held:
        held = plan[start:start + n_held]
        _mask_attempts(logits, held[:, COL_ROW], _attempt_index(held)[0])
    start += n_held
    hits = []
    if n_greedy:
        hits.append(_guard(logits, plan[start:start + n_greedy], sampled=False))
    start += n_greedy
    if plan.shape[0] > start:
        hits.append(_guard(logits, plan[start:], sampled=True))
    return torch.cat(hits) if len(hits) > 1 else hits[0] if hits else None


def _attempt_index(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The attempt ids with the ``-1`` padding replaced by each row's first attempt id
    (every row has one), and the mask of real ids."""
    attempts = rows[:, COL_ATTEMPTS:COL_U]
    valid = attempts >= 0
    return torch.where(valid, attempts, attempts[:, :1]), valid


def _mask_attempts(logits: torch.Tensor, rows: torch.Tensor, att_idx: torch.Tensor) -> None:
    logits.index_put_((rows.unsqueeze(1).expand_as(att_idx), att_idx),
                      torch.full((), float("-inf"), dtype=logits.dtype, device=logits.device))


def _guard(logits: torch.Tensor, guard: torch.Tensor, sampled: bool) -> torch.Tensor:
    rows = guard[:, COL_ROW]
    att_idx, valid = _attempt_index(guard)
    if sampled:
        inv_t = guard[:, COL_INV_T].to(torch.int32).view(torch.float32).to(logits.dtype)
        probs = torch.softmax(logits.index_select(0, rows) * inv_t.unsqueeze(1), dim=1)
        p_attempt = probs.gather(1, att_idx).masked_fill_(~valid, 0.0).sum(dim=1)
        del probs
        # NaN probabilities compare False: no attempt.
        hit = guard[:, COL_U].to(torch.float64) < p_attempt.to(torch.float64) * _TWO_53
    else:
        # Often every budgeted row is guarded (an end of turn is watched at each thinking
        # step): one argmax over the batch reads the logits once, without a copy.
        if 2 * rows.shape[0] >= logits.shape[0]:
            winners = logits.argmax(dim=1).index_select(0, rows)
        else:
            winners = logits.index_select(0, rows).argmax(dim=1)
        hit = (winners.unsqueeze(1) == att_idx).any(dim=1)
    # Not tried: the attempt tokens are masked (and an exclusive replacement with them).
    # Tried: only the replacement is left; a counted row has none, it is masked as if
    # not tried (the model samples from the rest, as the harness's next round would).
    _mask_attempts(logits, rows, att_idx)
    kind = guard[:, COL_KIND]
    replaced = hit & ((kind & COUNTED) == 0)
    repl = guard[:, COL_TOKEN]
    kept = logits[rows, repl]
    exclusive = (kind & EXCLUSIVE) != 0
    kept = torch.where(exclusive, torch.full_like(kept, float("-inf")), kept)
    tried = torch.zeros(logits.shape[0], 1, dtype=torch.bool, device=logits.device)
    tried.index_put_((rows,), replaced.unsqueeze(1))
    logits.masked_fill_(tried, float("-inf"))
    logits.index_put_((rows, repl), torch.where(replaced, torch.zeros_like(kept), kept))
    return hit
