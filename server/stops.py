"""Stop strings on our native path: what to hold back while streaming, what to cut.

vLLM recognises a stop string in the engine, on the text it decodes, once the string's
last token arrives; it then cuts its text there but still returns every token id. Our
native path decodes the ids itself, so it cuts the same way (:func:`trim_stop`) and,
when streaming, holds back any ending that may be the start of a stop string
(:func:`stop_prefix_len`), so a stop string is never sent in part.
"""

from __future__ import annotations

from typing import Any

from server.reasoning import ChoiceSplitter


def stop_prefix_len(text: str, stops: list[str]) -> int:
    """Length of the longest end of ``text`` that begins some stop string."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best


def trim_stop(splitter: ChoiceSplitter, delta: Any, stop: str) -> Any:
    """vLLM cut the text at a stop string but kept its token: cut our text the same way."""
    for attr, text_attr in (("content", "content_text"), ("reasoning", "reasoning_text")):
        full = getattr(splitter, text_attr)
        cut = full.rfind(stop)
        if cut < 0:
            continue
        removed = len(full) - cut
        setattr(splitter, text_attr, full[:cut])
        piece = getattr(delta, attr)
        setattr(delta, attr, piece[:max(0, len(piece) - removed)])
        break
    return delta
