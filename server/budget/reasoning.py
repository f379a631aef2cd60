"""Split one choice's output tokens into reasoning text and answer text, incrementally.

The split replays the request's budget state machine (the same code the engine
ran), so the boundary is exact at the token level: reasoning is the thinking
block without its delimiters, content is everything after the end delimiter
(answer prefix included). Each phase is detokenized on its own with an
incremental decoder that holds back incomplete UTF-8 sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.budget.interventions import Tracker, details
from server.budget.machine import BudgetSpec, BudgetState, Phase


class IncrementalDecoder:
    """Streams text for a growing list of ids (the prefix/read offset method)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.text = ""

    def push(self, tok: int) -> str:
        self.ids.append(tok)
        dec = self.tokenizer.decode
        prefix = dec(self.ids[self.prefix_offset:self.read_offset], skip_special_tokens=True)
        full = dec(self.ids[self.prefix_offset:], skip_special_tokens=True)
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            new = full[len(prefix):]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            self.text += new
            return new
        return ""

    def flush(self, final: bool = True) -> str:
        """Emit the text held back: at the end of the output (``final``) an incomplete
        character is dropped, as vLLM's detokenizer does; where the text is cut short
        mid-output (a delimiter follows) its bytes become U+FFFD, as vLLM's decode of
        the whole output gives them."""
        if self.read_offset >= len(self.ids):
            return ""
        dec = self.tokenizer.decode
        prefix = dec(self.ids[self.prefix_offset:self.read_offset], skip_special_tokens=True)
        full = dec(self.ids[self.prefix_offset:], skip_special_tokens=True)
        self.prefix_offset = self.read_offset = len(self.ids)
        new = full[len(prefix):]
        if final:
            new = new.rstrip("\ufffd")
        self.text += new
        return new


@dataclass
class Delta:
    reasoning: str = ""
    content: str = ""


@dataclass
class ChoiceSplitter:
    """Feeds tokens of one choice; returns reasoning/content deltas.

    ``spec`` may be inactive (no budget): it still locates the delimiters.
    Without a thinking format (``spec is None``) everything is content.
    """

    spec: BudgetSpec | None
    tokenizer: Any
    state: BudgetState | None = None
    tracker: Tracker = field(default_factory=Tracker)  # forced continuations, cut, end
    _reasoning: IncrementalDecoder = field(init=False)
    _content: IncrementalDecoder = field(init=False)
    _pending_delim: list[int] = field(default_factory=list)
    reasoning_text: str = ""  # everything emitted so far, as the deltas added up
    _held_newlines: str = ""
    content_text: str = ""

    def __post_init__(self) -> None:
        self.state = BudgetState(self.spec) if self.spec is not None else None
        self._reasoning = IncrementalDecoder(self.tokenizer)
        self._content = IncrementalDecoder(self.tokenizer)

    @property
    def reasoning_tokens(self) -> int:
        return self.state.thinking if self.state else 0

    def push(self, tokens: list[int]) -> Delta:
        out = Delta()
        for tok in tokens:
            self._push_one(tok, out)
        return out

    def _push_one(self, tok: int, out: Delta) -> None:
        state = self.state
        if state is None:
            out.content += self._emit(self._content.push(tok), "content")
            return
        before, thinking_before = state.phase, state.thinking
        self.tracker.step(state, tok)
        after = state.phase
        if before == Phase.THINKING:
            if state.thinking > thinking_before:  # a thinking token; else a delimiter: no text
                out.reasoning += self._emit(self._reasoning.push(tok), "reasoning")
            elif after != Phase.THINKING or tok == state.spec.end_ids[0]:
                out.reasoning += self._emit(self._reasoning.flush(final=False), "reasoning")
        elif before == Phase.ANSWER:
            if tok not in state.spec.stop_ids:
                out.content += self._emit(self._content.push(tok), "content")
        elif before == Phase.BEFORE:
            # No block yet: text is content, unless it turns out to be the start delimiter.
            self._pending_delim.append(tok)
            if after == Phase.THINKING:
                self._pending_delim.clear()
            elif tok not in state.spec.start_ids:
                for t in self._pending_delim:
                    if t not in state.spec.stop_ids:
                        out.content += self._emit(self._content.push(t), "content")
                self._pending_delim.clear()

    def budget_details(self) -> dict[str, Any] | None:
        """The choice's ``budget`` object (:func:`server.budget.interventions.details`); None
        without a thinking format. Call after :meth:`flush` (and any stop-string trim)."""
        if self.state is None:
            return None
        return details(self.state.spec, self.state, self.tracker, self._reasoning.ids,
                       self.reasoning_text, self.tokenizer)

    def flush(self) -> Delta:
        """Call once the choice has finished: releases held-back text."""
        return Delta(self._emit(self._reasoning.flush(), "reasoning"),
                     self._emit(self._content.flush(), "content"))

    def _emit(self, text: str, which: str) -> str:
        """Record a delta. The reasoning neither starts nor ends with newlines (those
        around the delimiters, forced or not, are formatting: trailing ones are held
        until more reasoning follows); the answer does not start with them."""
        if which == "reasoning":
            text = self._held_newlines + text
            if not self.reasoning_text:
                text = text.lstrip("\n")
            body = text.rstrip("\n")
            self._held_newlines = text[len(body):]
            self.reasoning_text += body
            return body
        else:
            if not self.content_text:
                text = text.lstrip("\n")
            self.content_text += text
        return text
