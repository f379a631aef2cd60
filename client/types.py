"""Typed results of the s1-serve client (pydantic).

The server's JSON keeps OpenAI's field names (``message.content``,
``completion_tokens_details.reasoning_tokens`` ...); these models give the
names a thinking-budget user reaches for first: ``answer``, ``reasoning``,
``usage.reasoning_tokens``, ``finish_reason``. The untouched JSON stays
available as ``raw`` for anything not lifted here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Usage(BaseModel):
    """Token counts of one request (all choices together)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    reasoning_tokens: int = 0
    probe_tokens: int = 0  # thinking_early_stop's answer probes (not completion tokens)

    @property
    def answer_tokens(self) -> int:
        """Completion tokens that are not thinking (answer and forced delimiters)."""
        return self.completion_tokens - self.reasoning_tokens

    @classmethod
    def from_api(cls, data: dict[str, Any] | None) -> Usage:
        data = data or {}
        details = data.get("completion_tokens_details") or {}
        return cls(prompt_tokens=data.get("prompt_tokens") or 0,
                   completion_tokens=data.get("completion_tokens") or 0,
                   total_tokens=data.get("total_tokens") or 0,
                   reasoning_tokens=details.get("reasoning_tokens") or 0,
                   probe_tokens=data.get("probe_tokens") or 0)


class Choice(BaseModel):
    """One generated alternative: its thinking, its answer and why it stopped."""

    index: int
    answer: str
    reasoning: str | None = None
    finish_reason: str | None = None


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    model: str
    created: int = 0
    choices: list[Choice]
    usage: Usage
    request_id: str | None = None
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    def _first(self) -> Choice:
        if not self.choices:
            raise ValueError("the response has no choices")
        return self.choices[0]

    @property
    def answer(self) -> str:
        """The first choice's answer (the text after thinking)."""
        return self._first().answer

    @property
    def reasoning(self) -> str | None:
        """The first choice's thinking; None when the model has no thinking format."""
        return self._first().reasoning

    @property
    def finish_reason(self) -> str | None:
        """The first choice's finish reason: ``stop`` or ``length``."""
        return self._first().finish_reason


class ChatResult(_Result):
    """Result of ``chat``."""

    @classmethod
    def from_api(cls, data: dict[str, Any], request_id: str | None = None) -> ChatResult:
        choices = []
        for c in data.get("choices") or []:
            msg = c.get("message") or {}
            choices.append(Choice(index=c.get("index", len(choices)),
                                  answer=msg.get("content") or "",
                                  reasoning=_reasoning(msg),
                                  finish_reason=c.get("finish_reason")))
        return cls(id=data.get("id", ""), model=data.get("model", ""),
                   created=data.get("created") or 0, choices=choices,
                   usage=Usage.from_api(data.get("usage")), request_id=request_id, raw=data)


class CompletionResult(_Result):
    """Result of ``complete``."""

    @classmethod
    def from_api(cls, data: dict[str, Any], request_id: str | None = None) -> CompletionResult:
        choices = [Choice(index=c.get("index", i), answer=c.get("text") or "",
                          reasoning=_reasoning(c), finish_reason=c.get("finish_reason"))
                   for i, c in enumerate(data.get("choices") or [])]
        return cls(id=data.get("id", ""), model=data.get("model", ""),
                   created=data.get("created") or 0, choices=choices,
                   usage=Usage.from_api(data.get("usage")), request_id=request_id, raw=data)


def _reasoning(obj: dict[str, Any]) -> str | None:
    value = obj.get("reasoning")
    return value if value is not None else obj.get("reasoning_content")


# ------------------------------------------------------------------ streaming
class ThinkingDelta(BaseModel):
    """A piece of a choice's thinking."""

    type: Literal["thinking"] = "thinking"
    index: int = 0
    text: str


class AnswerDelta(BaseModel):
    """A piece of a choice's answer."""

    type: Literal["answer"] = "answer"
    index: int = 0
    text: str


class Finished(BaseModel):
    """A choice has ended."""

    type: Literal["finish"] = "finish"
    index: int = 0
    finish_reason: str | None = None


class UsageEvent(BaseModel):
    """The final token counts (sent once, after every choice has finished)."""

    type: Literal["usage"] = "usage"
    usage: Usage


StreamEvent = ThinkingDelta | AnswerDelta | Finished | UsageEvent


def events_from_chunk(chunk: dict[str, Any]) -> list[StreamEvent]:
    """The events in one streamed chunk (chat or completions)."""
    events: list[StreamEvent] = []
    for c in chunk.get("choices") or []:
        index = c.get("index", 0)
        delta = c.get("delta")
        source = delta if isinstance(delta, dict) else c
        answer = source.get("content") if isinstance(delta, dict) else c.get("text")
        reasoning = _reasoning(source)
        if reasoning:
            events.append(ThinkingDelta(index=index, text=reasoning))
        if answer:
            events.append(AnswerDelta(index=index, text=answer))
        if c.get("finish_reason") is not None:
            events.append(Finished(index=index, finish_reason=c["finish_reason"]))
    if chunk.get("usage"):
        events.append(UsageEvent(usage=Usage.from_api(chunk["usage"])))
    return events


# --------------------------------------------------------------------- others
class ModelInfo(BaseModel):
    """One entry of ``GET /v1/models``."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    id: str
    object: str = "model"
    created: int = 0
    owned_by: str | None = None
    root: str | None = None
    max_model_len: int | None = None
    thinking_format: str | None = None


class Health(BaseModel):
    """``GET /health``: ``ok``, ``loading`` (503) or ``dead`` (503)."""

    model_config = ConfigDict(extra="allow")

    status: str
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Message(BaseModel):
    """A chat message; plain dicts with the same keys are accepted too."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str
