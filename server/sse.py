"""Server-sent events: one event is always one line of JSON.

Both paths (our native responses and vLLM's serving classes) stream through here, so
a client that splits lines on Unicode line separators still sees whole events.
"""

from __future__ import annotations

import json
from typing import Any

# Line breaks that JSON leaves raw but many line splitters (httpx, str.splitlines) honour;
# escaped so one event is always one line. They can only occur inside JSON strings.
_RAW_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def event(payload: Any) -> str:
    """One SSE event for a response model, a chunk with budget objects, or a dict."""
    choices = getattr(payload, "choices", None) or ()
    if any(getattr(c, "budget", None) is not None for c in choices):
        # A final chunk: the budget object keeps its nulls (cut, limits), as non-streamed.
        body = payload.model_dump(exclude_none=True)
        for out, choice in zip(body["choices"], choices, strict=True):
            if choice.budget is not None:
                out["budget"] = choice.budget.model_dump()
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    elif hasattr(payload, "model_dump_json"):
        data = payload.model_dump_json(exclude_none=True)
    else:
        data = json.dumps(payload)
    return f"data: {one_line(data)}\n\n"


def one_line(data: str) -> str:
    """JSON text with the line breaks JSON leaves raw escaped."""
    if not data.isascii():  # the check is ~40x cheaper than translate on every chunk
        data = data.translate(_RAW_BREAKS)
    return data
