"""Thinking formats: which strings open and close a model's thinking block.

A small registry (``s1``, ``deepseek-r1``, ``qwen3``), explicit user strings,
and auto-detection from a tokenizer's chat template and vocabulary. A format
turns into a :class:`~server.budget.machine.BudgetSpec` once a tokenizer has encoded
its strings (:class:`FormatTokens`). No vLLM import here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from server.budget import newline_sets
from server.budget.machine import BudgetError, BudgetSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ThinkingFormat:
    """Delimiters of a thinking block, as text.

    ``answer_prefix`` is appended after a forced end (the s1 evaluation appends
    ``\\nFinal Answer:`` so the model answers at once); formats whose models
    answer on their own after the end delimiter have none.
    """

    name: str
    start: str
    end: str
    answer_prefix: str = ""

    def __post_init__(self) -> None:
        if not self.end:
            raise BudgetError("a thinking format needs a non-empty end delimiter", "thinking_end")


FORMATS: dict[str, ThinkingFormat] = {
    "s1": ThinkingFormat("s1", "<|im_start|>think", "<|im_start|>answer", "\nFinal Answer:"),
    "deepseek-r1": ThinkingFormat("deepseek-r1", "<think>", "</think>"),
    "qwen3": ThinkingFormat("qwen3", "<think>", "</think>"),
}


def get_format(name: str, start: str | None = None, end: str | None = None,
               answer_prefix: str | None = None) -> ThinkingFormat:
    """A registered format by name, or ``custom`` built from explicit strings.

    Explicit strings override the registered ones, so ``get_format("s1",
    answer_prefix="")`` is the s1 format without the "Final Answer:" nudge.
    """
    if name == "custom":
        if not end:
            raise BudgetError(
                "the custom thinking format needs at least an end delimiter "
                "(--thinking-end, e.g. '</think>')", "thinking_end")
        base = ThinkingFormat("custom", start or "", end, answer_prefix or "")
        return base
    try:
        base = FORMATS[name]
    except KeyError:
        known = ", ".join([*FORMATS, "custom", "auto"])
        raise BudgetError(f"unknown thinking format {name!r}; choose one of: {known}",
                          "thinking_format") from None
    return ThinkingFormat(
        base.name,
        base.start if start is None else start,
        base.end if end is None else end,
        base.answer_prefix if answer_prefix is None else answer_prefix,
    )


# ------------------------------------------------------------------ detection
class _Tokenizer(Protocol):
    chat_template: Any

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...
    def get_vocab(self) -> dict[str, int]: ...
    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


def render_generation_prompt(tokenizer: _Tokenizer) -> str:
    """The text a chat template puts after one user message, or '' without a template."""
    if not getattr(tokenizer, "chat_template", None):
        return ""
    try:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": "ping"}], tokenize=False, add_generation_prompt=True
        )
    except Exception as exc:  # a template that needs other inputs: detection falls back
        logger.debug("chat template did not render for detection: %s", exc)
        return ""


def detect_format(tokenizer: _Tokenizer, model_name: str = "") -> ThinkingFormat | None:
    """Guess the thinking format from the chat template, the vocabulary and the name.

    Order: a template that opens a block names it; a template that mentions the
    s1 delimiters is s1; ``<think>``/``</think>`` in the vocabulary means the
    R1/Qwen3 family; a model called ``s1...`` (the s1 models ship Qwen2.5's plain
    template) is s1. None when nothing matches: budgets are then refused.
    """
    prompt = render_generation_prompt(tokenizer).rstrip()
    template = str(getattr(tokenizer, "chat_template", "") or "")
    vocab = tokenizer.get_vocab()
    if prompt.endswith(FORMATS["s1"].start) or "<|im_start|>think" in template:
        return FORMATS["s1"]
    if prompt.endswith("<think>"):
        return FORMATS["deepseek-r1"]
    if "<think>" in vocab and "</think>" in vocab:
        return FORMATS["qwen3"] if "enable_thinking" in template else FORMATS["deepseek-r1"]
    base = re.split(r"[\\/]", model_name.rstrip("/\\"))[-1].lower()
    if base.startswith("s1") or "simplescaling" in model_name.lower():
        return FORMATS["s1"]
    return None


# ------------------------------------------------------------- token encoding
@dataclass(frozen=True)
class S1Rules:
    """Which of the s1 evaluation's details the budget follows (all on by default)."""

    newline_before_forced_end: bool = True
    end_of_turn_ends_thinking: bool = True
    hold_after_continuation: bool = True


@dataclass(frozen=True)
class FormatTokens:
    """A format encoded by one tokenizer, ready to build per-request budget specs."""

    fmt: ThinkingFormat
    start_ids: tuple[int, ...]
    end_ids: tuple[int, ...]
    answer_prefix_ids: tuple[int, ...]
    stop_ids: frozenset[int]
    rules: S1Rules = S1Rules()
    newline_id: int | None = None  # the token for "\n", when it is one token
    newline_ids: frozenset[int] = frozenset()  # tokens whose text ends with a newline

    @classmethod
    def build(cls, fmt: ThinkingFormat, tokenizer: _Tokenizer, stop_ids: Iterable[int],
              rules: S1Rules = S1Rules()) -> FormatTokens:
        enc = lambda s: tuple(tokenizer.encode(s, add_special_tokens=False)) if s else ()  # noqa: E731
        end_ids = enc(fmt.end)
        if not end_ids:
            raise BudgetError(f"the end delimiter {fmt.end!r} encodes to no tokens",
                              "thinking_end")
        newline_id, newline_ids = None, frozenset()
        if rules.newline_before_forced_end:
            newline_id, newline_ids = newline_tokens(tokenizer)
            if newline_id is None:
                logger.warning("'\\n' is not one token for this tokenizer: no newline is "
                               "forced before a cut end delimiter")
        return cls(fmt, enc(fmt.start), end_ids, enc(fmt.answer_prefix), frozenset(stop_ids),
                   rules, newline_id, newline_ids)

    def prompt_opens(self, prompt: str) -> bool:
        """True when ``prompt`` ends inside an open thinking block."""
        if not self.fmt.start:
            return True  # formats without a start delimiter think from the first token
        tail = prompt.rstrip()
        return tail.endswith(self.fmt.start.rstrip())

    def spec(self, *, thinking_min: int | None, thinking_max: int | None,
             continuation_ids: Iterable[int], prompt_opens: bool,
             prompt_text: str | None = None, thinking_waits: int | None = None) -> BudgetSpec:
        """The budget of one request. ``prompt_text`` tells whether the text before the
        first thinking token ends with a newline (when the prompt opens the block)."""
        before = (prompt_text or "") if prompt_opens else self.fmt.start
        return BudgetSpec(
            start_ids=self.start_ids,
            end_ids=self.end_ids,
            stop_ids=self.stop_ids,
            continuation_ids=tuple(continuation_ids),
            answer_prefix_ids=self.answer_prefix_ids,
            thinking_min=thinking_min,
            thinking_max=thinking_max,
            thinking_waits=thinking_waits,
            prompt_opens=prompt_opens,
            newline_id=self.newline_id,
            newline_ids=self.newline_ids,
            opens_on_newline=before.endswith("\n"),
            turn_ends_thinking=self.rules.end_of_turn_ends_thinking,
            hold_after_continuation=self.rules.hold_after_continuation,
        )


def newline_tokens(tokenizer: Any) -> tuple[int | None, frozenset[int]]:
    """The id of ``"\n"`` (None unless it is a single token) and every id whose text ends
    with a newline, decoded once from the whole vocabulary."""
    ids = tokenizer.encode("\n", add_special_tokens=False)
    if len(ids) != 1:
        return None, frozenset()
    size = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(size)])
    found = frozenset(i for i, text in enumerate(texts) if text.endswith("\n"))
    newline_sets.register(found)  # budgets then carry its key, not the ids
    return ids[0], found
