"""Ask a model for a short structured reply, check it, and ask again when it is not valid.

Why: the judge (YES/NO) and the domain classifier (an MSC code) are free-text models asked
for one token of structure, and some replies are not usable (an essay, a code that does not
exist). Each retry shows the model its own reply and repeats what is wanted, with the
attempt number added to the seed, so even greedy decoding gets a different request (and a
different cache entry: resumed runs replay the same tries). After the retries the result
is None and the caller records "unknown".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from datasets_build.calls import ModelCaller, messages_for, seed_for
from datasets_build.config import Generation

T = TypeVar("T")


@dataclass(frozen=True)
class Validated(Generic[T]):
    value: T | None
    tries: int
    last_reply: str
    error: str | None = None


def reply_text(answer: str, reasoning: str | None) -> str:
    """What the model answered: the text after thinking, or the thinking when that is all."""
    return answer.strip() or (reasoning or "").strip()


async def ask_validated(caller: ModelCaller, gen: Generation, prompt: str, row_id: str,
                        parse: Callable[[str], T | None], retries: int,
                        reminder: str) -> Validated[T]:
    """Send ``prompt``; ``parse`` the reply (None: invalid); retry up to ``retries`` times."""
    messages = messages_for(gen, prompt)
    last, error = "", None
    for attempt in range(retries + 1):
        reply = await caller.chat(gen, messages, seed_for(gen, row_id, attempt))
        if not reply.ok:
            error = reply.error
            if reply.error and reply.error.startswith("HTTP 4"):
                break  # the request itself is refused: asking again will not help
            continue
        last = reply_text(reply.answer, reply.reasoning)
        value = parse(last)
        if value is not None:
            return Validated(value, attempt + 1, last)
        messages = [*messages, {"role": "assistant", "content": last[:2000]},
                    {"role": "user", "content": reminder}]
    return Validated(None, retries + 1, last, error)
