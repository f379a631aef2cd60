"""vLLM reasoning parser ``s1``: splits reasoning from answer for every thinking format.

vLLM's serving layer (chat, Responses, Anthropic Messages) and its structured-output
manager ask a :class:`~vllm.reasoning.ReasoningParser` where thinking ends. This one
works on token ids with the project's own delimiter matcher (:class:`BudgetState`
with the request's budget when the API process set one, else none), so it handles
multi-token delimiters such as s1's ``<|im_start|>answer`` and counts
``reasoning_tokens`` exactly as the budget processor does (forced tokens excluded). Registered under the name ``s1``; the format is read from the
``S1_PARSER_FORMAT`` environment variable (JSON ``{"start", "end"}``) that the API
process sets before the engine starts, so the engine core process, which builds
its own instance for structured outputs, sees the same delimiters.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

from vllm.entrypoints.generate.base.protocol import DeltaMessage
from vllm.reasoning import ReasoningParser, ReasoningParserManager

from server.budget.machine import BudgetSpec, BudgetState
from server.budget.reasoning import ChoiceSplitter
from server.budget.spec import REQUEST_BUDGET

ENV = "S1_PARSER_FORMAT"
NAME = "s1"


def export_format(start: str, end: str) -> None:
    """Publish the delimiters for parser instances in this and child processes."""
    os.environ[ENV] = json.dumps({"start": start, "end": end})


def _ends_with(seq: Sequence[int], tail: Sequence[int], upto: int) -> bool:
    n = len(tail)
    return upto >= n and list(seq[upto - n:upto]) == list(tail)


def _last(seq: Sequence[int], needle: Sequence[int]) -> int:
    """Index after the last occurrence of ``needle`` in ``seq``; -1 if none."""
    n = len(needle)
    if not n:
        return -1
    for i in range(len(seq), n - 1, -1):
        if seq[i - 1] == needle[-1] and _ends_with(seq, needle, i):
            return i
    return -1


@ReasoningParserManager.register_module(NAME)
class S1ReasoningParser(ReasoningParser):
    """Thinking delimiters of the served format, matched on token ids."""

    def __init__(self, tokenizer: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(tokenizer, *args, **kwargs)
        fmt = json.loads(os.environ.get(ENV) or '{"start": "<think>", "end": "</think>"}')
        self.start, self.end = fmt["start"], fmt["end"]
        enc = lambda s: tuple(tokenizer.encode(s, add_special_tokens=False)) if s else ()  # noqa: E731
        self.start_ids, self.end_ids = enc(self.start), enc(self.end)
        eos = getattr(tokenizer, "eos_token_id", None)
        self._stop = frozenset([eos] if isinstance(eos, int) else [])
        ctk = kwargs.get("chat_template_kwargs") or {}
        # A chat prompt opens the block (the server's template does), unless the
        # template was asked not to think (Qwen3's enable_thinking=False closes it).
        self.prompt_opens = ctk.get("enable_thinking", True) is not False
        self._splitter: ChoiceSplitter | None = None
        self._content_sent = 0  # answer characters streamed (from vLLM's text)
        self._reasoning_sent = 0  # reasoning characters streamed
        self._reasoning_held = ""  # the splitter's reasoning that vLLM's text does not show
        # Special-token delimiters vanish from text decoded with skip_special_tokens.
        self._needs_special = any(
            t in getattr(tokenizer, "all_special_ids", ()) for t in self.start_ids + self.end_ids)

    # ------------------------------------------------------------------ ids
    def _spec(self) -> BudgetSpec:
        # The request's own budget when the API process knows it: forced tokens (the
        # newline before a forced end) are then told from thinking, as the processor did.
        req = REQUEST_BUDGET.get()
        if req is not None and req.spec is not None:
            return req.spec
        return BudgetSpec(start_ids=self.start_ids, end_ids=self.end_ids, stop_ids=self._stop,
                          continuation_ids=(), answer_prefix_ids=(), thinking_min=None,
                          thinking_max=None, prompt_opens=self.prompt_opens)

    def is_reasoning_end(self, input_ids: Sequence[int]) -> bool:
        end = _last(input_ids, self.end_ids)
        return end >= 0 and end > _last(input_ids, self.start_ids)

    def is_reasoning_end_streaming(self, input_ids: Sequence[int],
                                   delta_ids: Iterable[int]) -> bool:
        if self._splitter is not None:
            # The API's streaming instance: hand over to vLLM's plain content deltas once
            # some answer text has gone out, so the newlines after the delimiter are
            # dropped as in the non-streamed answer. (The engine's instance, which gates
            # structured outputs, never streams text and switches at the delimiter.)
            return self._content_sent > 0
        n = len(list(delta_ids))
        return any(_ends_with(input_ids, self.end_ids, len(input_ids) - k) for k in range(n))

    def extract_content_ids(self, input_ids: list[int]) -> list[int]:
        end = _last(input_ids, self.end_ids)
        return list(input_ids[end:]) if end >= 0 else []

    def count_reasoning_tokens(self, token_ids: Sequence[int]) -> int:
        state = BudgetState(self._spec())
        for tok in token_ids:
            state.observe(tok)
        return state.thinking

    def adjust_initial_state_from_prompt(self, prompt_token_ids: Sequence[int]) -> None:
        start = _last(prompt_token_ids, self.start_ids) if self.start_ids else 0
        self.prompt_opens = start >= 0 and start > _last(prompt_token_ids, self.end_ids)

    def adjust_request(self, request: Any) -> Any:
        if self._needs_special and hasattr(request, "skip_special_tokens"):
            request.skip_special_tokens = False
        return request

    # ----------------------------------------------------------------- text
    def extract_reasoning(self, model_output: str, request: Any) -> tuple[str | None, str | None]:
        text = model_output
        if self.start and self.start in text:
            text = text.split(self.start, 1)[1]
        if self.end in text:
            reasoning, _, content = text.partition(self.end)
        elif self.prompt_opens:
            reasoning, content = text, ""
        else:
            reasoning, content = "", text
        # As the streaming splitter (server.budget.reasoning): no newlines around the reasoning.
        reasoning, content = reasoning.strip("\n"), content.lstrip("\n")
        return reasoning or None, content or None

    def extract_reasoning_streaming(self, previous_text: str, current_text: str, delta_text: str,
                                    previous_token_ids: Sequence[int],
                                    current_token_ids: Sequence[int],
                                    delta_token_ids: Sequence[int]) -> DeltaMessage | None:
        if self._splitter is None:
            self._splitter = ChoiceSplitter(self._spec(), self.model_tokenizer)
        delta = self._splitter.push(list(delta_token_ids))
        reasoning = self._shown_reasoning(delta.reasoning or "", current_text)
        # The answer comes from vLLM's own text, as the non-streamed answer does: it holds
        # back what may be a stop string, and vLLM's later deltas (once
        # is_reasoning_end_streaming says so) continue exactly where this text ends.
        content = self._new_content(current_text)
        if not reasoning and not content:
            return None
        return DeltaMessage(reasoning=reasoning or None, content=content or None)

    def _shown_reasoning(self, new: str, text: str) -> str:
        """The splitter's new reasoning (from the token ids), up to what vLLM's text shows
        of the thinking: a stop string inside the thinking cuts the text, not the ids,
        and vLLM holds back text that may begin one. The non-streamed reasoning is taken
        from the same text (:meth:`extract_reasoning`), so both end at the stop."""
        self._reasoning_held += new
        if self.start and self.start in text:
            text = text.split(self.start, 1)[1]
        shown = text.partition(self.end)[0].lstrip("\n")
        out = self._reasoning_held[:max(0, len(shown) - self._reasoning_sent)]
        self._reasoning_held = self._reasoning_held[len(out):]
        self._reasoning_sent += len(out)
        return out

    def _new_content(self, text: str) -> str:
        if self.start and self.start in text:
            text = text.split(self.start, 1)[1]
        _, sep, after = text.partition(self.end)
        if not sep:
            return ""
        answer = after.lstrip("\n")
        new = answer[self._content_sent:]
        self._content_sent = max(self._content_sent, len(answer))
        return new
