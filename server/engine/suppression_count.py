"""Counting the end attempts suppressed under ``thinking_waits`` with no string.

``thinking_waits`` with the empty continuation (the paper's "no string") is the
one budget the token ids do not determine: a suppressed end attempt leaves no
token, and whether the model tried is decided on the device from the logits. So
the processor counts those suppressions itself, per request, in a
:class:`SuppressionRecord` kept on the request's own ``SamplingParams`` object:

- survives preemption: the V1 runner keeps a preempted request's
  ``CachedRequestState`` (with its ``SamplingParams``) in ``self.requests`` and only
  drops its batch row; the resumed request is re-added with the same object and its
  output so far (a new list under async scheduling), and the row catches up through
  the record like any row through its ids;
- no leak: the record lives and dies with the request's ``SamplingParams`` (the
  runner drops it when the request finishes); the processor holds a record only
  for the step its last decisions are pending;
- no slot confusion: nothing is keyed by batch index. Entries are keyed by
  (output position, hash of the output before it), so a decision redone after its
  token was thrown away (preemption, a KV-load failure that shortens the output)
  overwrites the stale one, and a row rebuilt from its ids counts exactly the
  suppressions of the history it has;
- tensor parallelism: every rank runs this processor on the same logits with the
  same seeded draws, so every rank's own record is the same.

Whether a counted row's model tried is read back one step late (a non-blocking copy
at this step, read at the next :meth:`apply`, when the runner has already waited for
this step's sampled ids), so it adds no host synchronisation; the decision it feeds
is the next step's, which the state machine needs only then.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm import SamplingParams


class SuppressionRecord(dict):
    """One request's end attempts suppressed under ``thinking_waits`` with the empty
    continuation: ``(output position, history hash) -> True``, the hash being
    :func:`history_hash` of the output ids before that position. A decision that did not
    suppress removes its key, so a step redone at the same history keeps only its last
    outcome, the one whose token the output holds.

    Requests that share one ``SamplingParams`` object (vLLM's in-process engine gives the
    n children of an unseeded request the same one) share the record: their entries
    meet only where their histories are equal, where the same logits and decision seed
    make the same decision."""

    __slots__ = ()


_RECORD_ATTR = "_s1_suppressed"  # on the request's SamplingParams (vLLM's Struct has a __dict__)


def suppression_record(params: SamplingParams) -> SuppressionRecord:
    """The request's record, created on first use, kept on its ``SamplingParams``."""
    record = params.__dict__.get(_RECORD_ATTR)
    if record is None:
        record = params.__dict__[_RECORD_ATTR] = SuppressionRecord()
    return record


def history_hash(previous: int, tok: int) -> int:
    """The running hash of an output extended by ``tok`` (0 for the empty output)."""
    return hash((previous, tok))


class PendingCounts:
    """The last step's counted decisions of one processor, read at the next ``apply()``:
    whether each model tried (a host tensor, and the event its copy waits for on a GPU),
    and where each is recorded."""

    def __init__(self, pin_memory: bool) -> None:
        self.pin_memory = pin_memory
        self.pending: tuple[torch.Tensor, Any, list[tuple[int, SuppressionRecord, tuple]]] | None
        self.pending = None

    def keep(self, hits: torch.Tensor, counted: list, n_greedy: int) -> None:
        """Start copying the guarded rows' decisions to the host, without waiting (the
        counted rows' places in them are known here, so nothing is indexed on the device)."""
        event = None
        if hits.device.type != "cpu":
            cuda = hits.device.type == "cuda"
            host = torch.empty(hits.shape, dtype=torch.bool, pin_memory=self.pin_memory and cuda)
            host.copy_(hits, non_blocking=cuda)
            if cuda:
                event = torch.cuda.Event()
                event.record()
            hits = host
        self.pending = (hits, event, [(n_greedy + i if is_sampled else i, record, key)
                                      for is_sampled, i, record, key in counted])

    def record(self) -> None:
        """Record the last step's counted decisions (their copy is done by now: the
        runner waited for that step's sampled ids, which come after it)."""
        if self.pending is None:
            return
        hits, event, entries = self.pending
        self.pending = None
        if event is not None:
            event.synchronize()
        tried = hits.tolist()
        for at, record, key in entries:
            if tried[at]:
                record[key] = True
            else:
                record.pop(key, None)
