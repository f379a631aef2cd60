"""vLLM reasoning parser ``s1``: splits reasoning from answer for every thinking format.

vLLM's serving layer (chat, Responses, Anthropic Messages) and its structured-output
manager ask a :class:`~vllm.reasoning.ReasoningParser` where thinking ends. This one
works on token ids with the project's own delimiter matcher (:class:`BudgetState`
with the request's budget when the API process set one, else none), so it handles
multi-token delimiters such as s1's ``<|im_start|>answer`` and counts
``reasoning_tokens`` exactly as the budget processor does (forced tokens excluded).
Registered under the name ``s1`` (imported by s1-serve; on stock ``vllm serve`` the
``s1`` general plugin imports it in every process). The format is read from the
``S1_PARSER_FORMAT`` environment variable (JSON ``{"start", "end"}``) that s1-serve sets
before the engine starts, so the engine core process, which builds its own instance
for structured outputs, sees the same delimiters; without it (stock ``vllm serve`` with
the plugin) it is resolved from the tokenizer and the ``S1_*`` settings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

from vllm.entrypoints.generate.base.protocol import DeltaMessage
from vllm.reasoning import ReasoningParser, ReasoningParserManager

from server.budget.machine import BudgetSpec, BudgetState
from server.budget.spec import REQUEST_BUDGET

ENV = "S1_PARSER_FORMAT"
NAME = "s1"


def export_format(start: str, end: str) -> None:
    """Publish the delimiters for parser instances in this and child processes."""
    os.environ[ENV] = json.dumps({"start": start, "end": end})


# Delimiters found from a tokenizer, per tokenizer object (the engine core builds one
# parser per structured-output request).
_FOUND: dict[int, tuple[str, str]] = {}


def _delimiters(tokenizer: Any) -> tuple[str, str]:
    """The served format's delimiters: as the API process published them, else (vLLM's
    engine core under stock ``vllm serve`` with the s1 plugin) resolved from the
    tokenizer and the ``S1_*`` settings as s1-serve resolves them."""
    raw = os.environ.get(ENV)
    if raw:
        fmt = json.loads(raw)
        return fmt["start"], fmt["end"]
    key = id(tokenizer)
    if key not in _FOUND:
        from server.engine.thinking_format import resolve_format
        from server.settings import Settings

        try:
            name = str(getattr(tokenizer, "name_or_path", "") or "")
            found = resolve_format(Settings(model=name) if name else Settings(), tokenizer)
        except Exception:  # an unreadable template: the common delimiters
            found = None
        _FOUND[key] = (found.start, found.end) if found else ("<think>", "</think>")
    return _FOUND[key]


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
        self.start, self.end = _delimiters(tokenizer)
        enc = lambda s: tuple(tokenizer.encode(s, add_special_tokens=False)) if s else ()  # noqa: E731
        self.start_ids, self.end_ids = enc(self.start), enc(self.end)
        eos = getattr(tokenizer, "eos_token_id", None)
        self._stop = frozenset([eos] if isinstance(eos, int) else [])
        ctk = kwargs.get("chat_template_kwargs") or {}
        # A chat prompt opens the block (the server's template does), unless the
        # template was asked not to think (Qwen3's enable_thinking=False closes it).
        self.prompt_opens = ctk.get("enable_thinking", True) is not False
        # Streaming (the API's instance): positions in vLLM's text, so each chunk costs
        # time for its own characters only, never a rescan or re-decoding of the output.
        self._streaming = False
        self._body: int | None = None  # where the thinking text starts
        self._end_at: int | None = None  # where the end delimiter starts
        self._scanned = 0  # text searched for the next delimiter so far
        self._reasoning_sent: int | None = None  # reasoning streamed up to here
        self._content_sent = 0  # answer characters streamed
        # Special-token delimiters vanish from text decoded with skip_special_tokens.
        self._needs_special = any(
            t in getattr(tokenizer, "all_special_ids", ()) for t in self.start_ids + self.end_ids)

    # vLLM reads these into its ReasoningConfig (and warns when they are missing). Its own
    # thinking_token_budget would use them too, but the s1 layer takes that field as
    # thinking_max and clears it, so only the s1 processor ever enforces a budget.
    @property
    def reasoning_start_str(self) -> str | None:
        return self.start or None

    @property
    def reasoning_end_str(self) -> str | None:
        return self.end or None

    # ------------------------------------------------------------------ ids
    def _spec(self, output_ids: Sequence[int] = ()) -> BudgetSpec:
        # The request's own budget when the API process knows it: forced tokens (the
        # newline before a forced end) are then told from thinking, as the processor did;
        # a choice that a thinking deadline cut is counted with the cut's spec.
        req = REQUEST_BUDGET.get()
        if req is not None and req.spec is not None:
            spec_for = getattr(req, "spec_for", None)
            return spec_for(output_ids) if spec_for is not None else req.spec
        return BudgetSpec(start_ids=self.start_ids, end_ids=self.end_ids, stop_ids=self._stop,
                          continuation_ids=(), answer_prefix_ids=(), thinking_min=None,
                          thinking_max=None, prompt_opens=self.prompt_opens)

    def is_reasoning_end(self, input_ids: Sequence[int]) -> bool:
        end = _last(input_ids, self.end_ids)
        return end >= 0 and end > _last(input_ids, self.start_ids)

    def is_reasoning_end_streaming(self, input_ids: Sequence[int],
                                   delta_ids: Iterable[int]) -> bool:
        if self._streaming:
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
        state = BudgetState(self._spec(token_ids))
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
        opened = self.prompt_opens or not self.start
        if not opened and self.start in text:  # the output opens the block itself
            text, opened = text.split(self.start, 1)[1], True
        if self.end in text:
            reasoning, _, content = text.partition(self.end)
        elif opened:
            reasoning, content = text, ""
        else:
            reasoning, content = "", text
        # No newlines around the reasoning (the streamed split holds them back alike).
        reasoning, content = reasoning.strip("\n"), content.lstrip("\n")
        return reasoning or None, content or None

    def extract_reasoning_streaming(self, previous_text: str, current_text: str, delta_text: str,
                                    previous_token_ids: Sequence[int],
                                    current_token_ids: Sequence[int],
                                    delta_token_ids: Sequence[int]) -> DeltaMessage | None:
        """The split of :meth:`extract_reasoning`, streamed: every delta is the growth of
        that split of vLLM's text (so streamed and non-streamed reasoning are equal), with
        newlines and a possibly unfinished delimiter at the end held back."""
        self._streaming = True
        text = current_text
        if self._body is None and not self._find_body(text):
            # No thinking block (yet): as in the non-streamed split, the text is the answer,
            # unless all of it may still begin a delimiter. Once some goes out, vLLM streams
            # the rest as content, so nothing is held back from then on.
            held = max(_partial_suffix(text, self.start), _partial_suffix(text, self.end))
            if not text[:len(text) - held].strip("\n"):
                return None
            self._content_sent = len(text.lstrip("\n"))
            return DeltaMessage(content=text.lstrip("\n"))
        reasoning = self._new_reasoning(text)
        content = self._new_content(text)
        if not reasoning and not content:
            return None
        return DeltaMessage(reasoning=reasoning or None, content=content or None)

    def _find_body(self, text: str) -> bool:
        """Locate where the thinking text starts (after the start delimiter, or at 0 when
        the prompt opened the block); False while it is not known yet."""
        if self.prompt_opens or not self.start:
            self._body = 0
        else:
            at = text.find(self.start, max(0, self._scanned - len(self.start) + 1))
            if at >= 0:
                self._body = at + len(self.start)
            elif self.end in text:  # an end without a start: what precedes it is thinking
                self._body = 0
            else:
                self._scanned = len(text)
                return False
        self._scanned = self._reasoning_sent = self._body
        return True

    def _new_reasoning(self, text: str) -> str:
        sent = self._reasoning_sent
        assert sent is not None and self._body is not None
        if self._end_at is None:
            at = text.find(self.end, max(self._body, self._scanned - len(self.end) + 1))
            if at >= 0:
                self._end_at = at
            else:
                self._scanned = len(text)
        upto = self._end_at if self._end_at is not None else (
            len(text) - _partial_suffix(text, self.end))
        while upto > sent and text[upto - 1] == "\n":  # held until more reasoning follows
            upto -= 1
        if sent == self._body:  # nothing out yet: the reasoning starts after newlines
            while sent < upto and text[sent] == "\n":
                sent += 1
        self._reasoning_sent = max(sent, upto)
        return text[sent:upto]

    def _new_content(self, text: str) -> str:
        if self._end_at is None:
            return ""
        answer = text[self._end_at + len(self.end):].lstrip("\n")
        new = answer[self._content_sent:]
        self._content_sent = max(self._content_sent, len(answer))
        return new


def _partial_suffix(text: str, delimiter: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``delimiter``."""
    if not delimiter:
        return 0
    at = text.find(delimiter[0], max(0, len(text) - len(delimiter) + 1))
    while at >= 0:
        if delimiter.startswith(text[at:]):
            return len(text) - at
        at = text.find(delimiter[0], at + 1)
    return 0
