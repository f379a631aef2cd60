"""Terminal output of the ``s1-client`` command line.

Thinking is printed dimmed (ANSI "faint") when colour is on, the answer plainly,
then one line of token usage, so a person can watch a budgeted model think and
still tell where the answer starts. Without colour (a pipe, ``NO_COLOR``,
``--color never``) the text is the same minus the escape codes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TextIO

from client.types import (
    AnswerDelta,
    ChatResult,
    CompletionResult,
    Finished,
    StreamEvent,
    ThinkingDelta,
    Usage,
    UsageEvent,
)

DIM = "\x1b[2m"
RESET = "\x1b[0m"


class Printer:
    """Writes results to ``out``, dimming thinking when ``color`` is on."""

    def __init__(self, out: TextIO, color: bool, show_thinking: bool = True) -> None:
        self.out = out
        self.color = color
        self.show_thinking = show_thinking

    def _dim(self, text: str) -> str:
        return f"{DIM}{text}{RESET}" if self.color and text else text

    def json(self, data: Any, indent: int | None = 2) -> None:
        self.out.write(json.dumps(data, indent=indent, ensure_ascii=False) + "\n")

    def result(self, result: ChatResult | CompletionResult) -> None:
        """Every choice's thinking and answer, then the usage line."""
        many = len(result.choices) > 1
        for choice in result.choices:
            if many:
                self.out.write(self._dim(f"[choice {choice.index}]") + "\n")
            if self.show_thinking and choice.reasoning:
                self.out.write(self._dim(choice.reasoning) + "\n\n")
            self.out.write(choice.answer + "\n")
        self.usage(result.usage, [c.finish_reason for c in result.choices])

    def stream(self, events: Iterable[StreamEvent]) -> Usage | None:
        """Print deltas as they come (one choice); returns the final usage."""
        thinking = wrote = False
        finish: list[str | None] = []
        usage = None
        try:
            for event in events:
                if isinstance(event, ThinkingDelta) and self.show_thinking:
                    if not thinking and self.color:
                        self.out.write(DIM)
                    thinking = wrote = True
                    self.out.write(event.text)
                elif isinstance(event, AnswerDelta):
                    if thinking:  # the thinking is over: the answer starts after a blank line
                        self.out.write((RESET if self.color else "") + "\n\n")
                        thinking = False
                    wrote = True
                    self.out.write(event.text)
                elif isinstance(event, Finished):
                    finish.append(event.finish_reason)
                elif isinstance(event, UsageEvent):
                    usage = event.usage
                self.out.flush()
        finally:  # also on an error mid-stream: never leave the terminal dimmed
            self.out.write((RESET if thinking and self.color else "") + ("\n" if wrote else ""))
            self.out.flush()
        if usage is not None:
            self.usage(usage, finish)
        return usage

    def usage(self, usage: Usage, finish: list[str | None]) -> None:
        reasons = ",".join(sorted({r for r in finish if r})) or "?"
        line = (f"[usage] prompt {usage.prompt_tokens}, thinking {usage.reasoning_tokens}, "
                f"answer {usage.answer_tokens}, total {usage.total_tokens} tokens; "
                f"finish: {reasons}")
        self.out.write(self._dim(line) + "\n")
