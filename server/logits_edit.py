"""The device half of budget forcing: one step's plan applied to the logits, sync-free.

The host (:mod:`server.logits_processor`) decides per row from the token ids
alone whether a row is forced (the token is known) or guarded (below
``thinking_min``: whether the model tried to end its thinking depends on the
logits). It packs those rows into one int64 *plan* and copies it to the device
once, without blocking. Everything that depends on the logits is decided here,
on the device, so the host never waits for the GPU: no ``.item()``, ``.tolist()``,
``.cpu()`` or blocking copy, and the CPU can run ahead as vLLM's async
scheduling expects.

Plan layout, one row per forced or guarded request: forced rows, then greedy
guarded rows, then sampled guarded rows (the host knows each count)::

    [batch_row, token, kind, inv_temperature_bits, attempt_0, ..., attempt_{W-1}, u_bits]

- ``kind``: :data:`FORCED`, :data:`GUARD_GREEDY` or :data:`GUARD_SAMPLED`;
- ``token``: the forced token, or for a guarded row the continuation's first token;
- ``u_bits``: 53 uniform bits per (seed, position) (:func:`server.budget.uniform_bits`);
- ``inv_temperature_bits``: ``1 / temperature`` as float32 bits (a signed int32);
- ``attempt_*``: the row's end-attempt token ids, padded with ``-1``.

Guarded rows, the s1 rule made exact: greedy, the model tried to stop when an
attempt token wins the argmax; sampled, it tried with the model's probability of
the attempt tokens after temperature, drawn against the counter-based uniform
(``u < p``, compared as ``u_bits < p * 2**53``, which is the same test exactly).
If it tried, the continuation's first token is forced; otherwise the attempt
tokens are set to ``-inf`` and the rest of the distribution is sampled as before.
"""

from __future__ import annotations

import struct

import torch

FORCED, GUARD_GREEDY, GUARD_SAMPLED = 0, 1, 2
COL_ROW, COL_TOKEN, COL_KIND, COL_INV_T, COL_ATTEMPTS = range(5)
COL_U = -1
FIXED_COLUMNS = 5  # all but the attempt ids
_TWO_53 = float(1 << 53)


def float32_bits(value: float) -> int:
    """``value`` rounded to float32, its bits as a signed int32 (exact in an int64 plan)."""
    return struct.unpack("<i", struct.pack("<f", value))[0]


def apply_plan(logits: torch.Tensor, plan: torch.Tensor, n_forced: int, n_greedy: int) -> None:
    """Edit ``logits`` in place. ``plan`` is on the logits' device: ``n_forced`` forced
    rows, ``n_greedy`` greedy guarded rows, then sampled guarded rows. Never synchronises."""
    if n_forced:
        rows = plan[:n_forced, COL_ROW]
        logits.index_fill_(0, rows, float("-inf"))
        logits.index_put_((rows, plan[:n_forced, COL_TOKEN]),
                          torch.zeros((), dtype=logits.dtype, device=logits.device))
    end_greedy = n_forced + n_greedy
    if n_greedy:
        _guard(logits, plan[n_forced:end_greedy], sampled=False)
    if plan.shape[0] > end_greedy:
        _guard(logits, plan[end_greedy:], sampled=True)


def _guard(logits: torch.Tensor, guard: torch.Tensor, sampled: bool) -> None:
    rows = guard[:, COL_ROW]
    attempts = guard[:, COL_ATTEMPTS:COL_U]
    valid = attempts >= 0
    # Every row has at least one attempt id (the end delimiter's first token): pad with it.
    att_idx = torch.where(valid, attempts, attempts[:, :1])
    sub = logits.index_select(0, rows)  # a copy: [guarded rows, vocabulary]
    if sampled:
        inv_t = guard[:, COL_INV_T].to(torch.int32).view(torch.float32).to(logits.dtype)
        probs = torch.softmax(sub * inv_t.unsqueeze(1), dim=1)
        p_attempt = probs.gather(1, att_idx).masked_fill_(~valid, 0.0).sum(dim=1)
        del probs
        # NaN probabilities compare False: no attempt.
        hit = guard[:, COL_U].to(torch.float64) < p_attempt.to(torch.float64) * _TWO_53
    else:
        hit = (sub.argmax(dim=1, keepdim=True) == att_idx).any(dim=1)
    hit = hit.unsqueeze(1)
    # Not tried: attempt tokens masked. Tried: only the continuation token is left.
    sub.scatter_(1, att_idx, float("-inf"))
    cont = guard[:, COL_TOKEN].unsqueeze(1)
    kept = sub.gather(1, cont)
    sub.masked_fill_(hit, float("-inf"))
    sub.scatter_(1, cont, torch.where(hit, torch.zeros_like(kept), kept))
    logits.index_copy_(0, rows, sub)
