"""``--thinking-cap auto``: s1's automatic thinking cap, context - prompt - overheads.

Why: s1's evaluation (``max_tokens_thinking=auto``) lets thinking use whatever the context
leaves after the prompt and the answer: cap = generation limit - longest prompt of the run -
the think/answer delimiter tokens (with ``\\nFinal Answer:``) - 100 tokens kept for the answer.
One cap for every question (the longest prompt sets it), so Control's bounds are the same for
all of them. Here:

    cap = min(context - longest prompt, max_tokens if given) - overhead

``context`` is the server's ``max_model_len`` (``GET /v1/models``) unless
``--context-length`` is given; prompt lengths are measured by the server itself (one probe
per question: ``thinking_max=0, max_tokens=1``, whose ``usage.prompt_tokens`` is exact and
costs one prefill); ``overhead`` (``--auto-cap-overhead``, default 120) is s1's 100 answer
tokens plus about 20 for the delimiters and ``\\nFinal Answer:`` (the server's tokenizer is
not available to the client, so this part is an allowance, not a count).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from client import AsyncClient
from evals.benchmarks import Question

AUTO = "auto"
DEFAULT_OVERHEAD = 120


@dataclass(frozen=True)
class AutoCap:
    """The resolved cap and what it came from (recorded in results.json)."""

    cap: int
    context: int
    longest_prompt: int
    max_tokens: int | None
    overhead: int


def parse_cap(text: str | None) -> int | str | None:
    """``--thinking-cap``: None, ``auto``, or a positive integer (ValueError otherwise)."""
    if text is None:
        return None
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"--thinking-cap: {text!r} is neither an integer nor 'auto'") from None
    if value <= 0:
        raise ValueError(f"--thinking-cap must be positive, got {value}")
    return value


def compute_cap(context: int, longest_prompt: int, overhead: int,
                max_tokens: int | None = None) -> int:
    """The cap from its parts; ValueError when nothing is left for thinking."""
    if overhead < 0:
        raise ValueError(f"--auto-cap-overhead must be >= 0, got {overhead}")
    room = context - longest_prompt
    if max_tokens is not None:
        room = min(room, max_tokens)
    cap = room - overhead
    if cap <= 0:
        raise ValueError(f"--thinking-cap auto: nothing left for thinking (context {context}, "
                         f"longest prompt {longest_prompt}, max_tokens {max_tokens}, overhead "
                         f"{overhead})")
    return cap


async def prompt_tokens(client: AsyncClient, questions: list[Question], *, model: str | None,
                        system: str | None, concurrency: int = 8) -> list[int]:
    """Each question's prompt length in the server's tokens (one 1-token probe each)."""
    slots = asyncio.Semaphore(max(1, concurrency))

    async def one(q: Question) -> int:
        async with slots:
            result = await client.chat(q.prompt, model=model, system=system, thinking_max=0,
                                       max_tokens=1, temperature=0.0)
        return result.usage.prompt_tokens

    return list(await asyncio.gather(*(one(q) for q in questions)))


async def resolve_auto_cap(client: AsyncClient, questions: list[Question], *,
                           model: str | None, system: str | None, max_tokens: int | None,
                           context: int | None, overhead: int = DEFAULT_OVERHEAD,
                           concurrency: int = 8) -> AutoCap:
    """Measure the prompts, read the context length if not given, and compute the cap."""
    if context is None:
        served = await client.models()
        lengths = [m.max_model_len for m in served if (model is None or m.id == model)]
        context = next((n for n in lengths if n), None)
        if context is None:
            raise ValueError("--thinking-cap auto: the server does not report max_model_len; "
                             "give --context-length")
    lengths = await prompt_tokens(client, questions, model=model, system=system,
                                  concurrency=concurrency)
    longest = max(lengths, default=0)
    return AutoCap(compute_cap(context, longest, overhead, max_tokens), context, longest,
                   max_tokens, overhead)
