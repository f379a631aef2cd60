"""What budget forcing actually did to each answer: Waits inserted, and whether the cut was forced.

Why: a ``waits=K`` setting asks for K suppressed ends of thinking, but what a request gets
can differ (a cap reached before the K-th Wait; a server that does not report it).
Averaging such answers into the ``waits=K`` point would silently mix K with K-1 or K+1. Each record
therefore carries what was realised, and the report lists the settings where it differs.

How each number is derived, most exact source first:

1. The server's per-choice ``budget`` object, when a server sends one (s1-serve does on
   every generating surface; fields read: ``continuation_count`` (forced
   continuations, or the length of the ``continuations`` list when the field is absent;
   null is unknown) and ``hit_max``). Exact by construction: the server replays the
   choice's token ids through its state machine.
2. Otherwise from the response text and usage:

   * forced cut = the thinking reached the maximum sent: ``reasoning_tokens >= thinking_max``
     (s1-serve counts thinking tokens without the end delimiter and forces the end at
     exactly ``thinking_max``). Needs exact counts (``thinking_source == reasoning_tokens``),
     else unknown.
   * Waits: without a ``budget`` object the count is unknown for a request that sent
     ``thinking_waits`` or ``thinking_min``, and 0 for one that sent neither (no
     insertion is possible).

Counting occurrences of "Wait" in the text is *not* used: the models write it themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Realised:
    """What one request realised; None = cannot be known from what the server returned."""

    waits: int | None
    forced_cut: bool | None
    source: str  # "server" (budget object) or "text"


def server_budget(raw: dict[str, Any]) -> dict[str, Any] | None:
    """The first choice's ``budget`` object, if the server sent one."""
    choices = raw.get("choices") or []
    budget = choices[0].get("budget") if choices and isinstance(choices[0], dict) else None
    return budget if isinstance(budget, dict) else None


def forced_cut(thinking_tokens: int, thinking_max: int | None, exact: bool) -> bool | None:
    """Whether the server cut the thinking at ``thinking_max`` (None: counts not exact)."""
    if thinking_max is None:
        return False
    if not exact:
        return None
    return thinking_tokens >= thinking_max


def from_budget(budget: dict[str, Any]) -> Realised | None:
    """Realised values from a server ``budget`` object (None if it lacks the fields)."""
    waits = budget.get("continuation_count")
    # null: the server cannot tell (no-string Waits, whose suppressions leave no token,
    # after a cut); only an older object without the field is counted from its list.
    if "continuation_count" not in budget and isinstance(budget.get("continuations"), list):
        waits = len(budget["continuations"])
    hit = budget.get("hit_max")
    if not isinstance(waits, int) and not isinstance(hit, bool):
        return None
    return Realised(waits if isinstance(waits, int) else None,
                    hit if isinstance(hit, bool) else None, "server")
