"""Request and response shapes of the OpenAI-compatible API (pydantic).

Requests accept the usual OpenAI fields, vLLM's common sampling extras, and the
thinking budget (``thinking_min`` / ``thinking_max`` with their aliases).
Unknown fields are accepted and ignored (logged at debug level), as other
OpenAI-compatible servers do.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from server.errors import bad_request

# Aliases other servers use for the same two numbers.
THINKING_ALIASES = {
    "min_thinking_tokens": "thinking_min",
    "max_thinking_tokens": "thinking_max",
    "thinking_token_budget": "thinking_max",  # vLLM's name for the maximum
}


class StreamOptions(BaseModel):
    include_usage: bool = False


class BudgetFields(BaseModel):
    """The thinking budget (ours), on every generation surface."""

    # -- thinking budget (ours)
    thinking_min: StrictInt | None = Field(None, ge=0, description="Fewest thinking tokens: "
                                           "earlier end attempts become the continuation string.")
    thinking_max: StrictInt | None = Field(None, ge=0, description="Most thinking tokens: the "
                                           "end of thinking is forced there.")
    min_thinking_tokens: StrictInt | None = Field(None, ge=0, description="Alias of thinking_min.")
    max_thinking_tokens: StrictInt | None = Field(None, ge=0, description="Alias of thinking_max.")
    thinking_token_budget: StrictInt | None = Field(None, ge=0, description="Alias of "
                                                    "thinking_max (vLLM's name).")
    thinking_continuation: str | None = Field(None, min_length=1, max_length=200,
                                              description="String appended when thinking is "
                                              "extended (default 'Wait').")

    @model_validator(mode="after")
    def _merge_aliases(self) -> BudgetFields:
        for alias, target in THINKING_ALIASES.items():
            value = getattr(self, alias)
            if value is None:
                continue
            current = getattr(self, target)
            if current is not None and current != value:
                raise bad_request(f"{alias}={value} conflicts with {target}={current}; "
                                  "send only one of them", alias)
            setattr(self, target, value)
        return self


class _SamplingFields(BudgetFields):
    """Fields shared by chat and completions requests."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: StrictInt | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: StrictInt = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: StrictInt | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    # -- vLLM sampling extras (not in the OpenAI spec)
    top_k: StrictInt | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0)
    ignore_eos: bool = False

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> _SamplingFields:
        if self.stream_options is not None and not self.stream:
            raise bad_request("stream_options can only be set when stream is true",
                              "stream_options")
        return self

    def unknown_fields(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise bad_request(f"content parts of type {part.type!r} are not supported; "
                                  "send text parts only", "messages")
            parts.append(part.text)
        return "\n".join(parts)  # as vLLM's 'string' content format


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    chat_template_kwargs: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _merge_max_tokens(self) -> ChatCompletionRequest:
        if self.max_completion_tokens is not None:
            if self.max_tokens is not None and self.max_tokens != self.max_completion_tokens:
                raise bad_request("max_tokens and max_completion_tokens differ; send one",
                                  "max_completion_tokens")
            self.max_tokens = self.max_completion_tokens
        return self


class CompletionRequest(_SamplingFields):
    prompt: str | list[StrictInt] | list[str] = Field(..., description="One prompt: text "
                                                      "or token ids.")
    echo: bool = False


# ------------------------------------------------------------------ responses
class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails = Field(
        default_factory=CompletionTokensDetails)


class BudgetMark(BaseModel):
    """Where an intervention happened in the thinking."""

    token: int = Field(description="Thinking tokens before it (token offset in the thinking).")
    char: int = Field(description="Character offset in the returned reasoning text.")
    output_index: int = Field(description="Index of its first token in the choice's output.")


class BudgetDetails(BaseModel):
    """Per-choice budget-forcing details (an s1-serve extension; OpenAI clients ignore it).

    Computed by replaying the choice's token ids through the engine's state machine
    (:mod:`server.interventions`), the same replay as ``reasoning_tokens``.
    """

    thinking_min: int | None = Field(description="The minimum that applied (defaults included).")
    thinking_max: int | None = Field(description="The maximum that applied.")
    thinking_continuation: str | None = Field(description="The continuation string (with a "
                                              "minimum).")
    thinking_tokens: int = Field(description="Thinking tokens (= reasoning_tokens).")
    answer_tokens: int = Field(description="Answer tokens (forced answer prefix included).")
    continuation_count: int = Field(description="Forced continuations inserted.")
    continuations: list[BudgetMark] = Field(description="Where each forced continuation "
                                            "starts.")
    hit_max: bool = Field(description="Thinking was cut at thinking_max.")
    cut: BudgetMark | None = Field(description="Where thinking was cut (null: not cut).")
    natural_end: bool = Field(description="The model ended thinking itself (end delimiter, "
                                          "or an end of turn turned into it).")
    end: Literal["natural", "cut", "end_of_turn", "unfinished", "no_thinking"] = Field(
        description="How thinking ended.")


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None


class ChatChoice(BaseModel):
    index: int
    message: ResponseMessage
    finish_reason: str | None
    logprobs: None = None
    budget: BudgetDetails | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    finish_reason: str | None = None
    logprobs: None = None
    budget: BudgetDetails | None = None  # on the final chunk of each choice


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None  # on the last chunk, as vLLM


class CompletionChoice(BaseModel):
    index: int
    text: str
    reasoning: str | None = None
    reasoning_content: str | None = None
    finish_reason: str | None
    logprobs: None = None
    budget: BudgetDetails | None = None  # streamed: on the final chunk of each choice


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "s1-serve"
    root: str | None = None
    parent: str | None = None
    permission: list[dict[str, Any]] = Field(default_factory=list)  # as vLLM's card
    max_model_len: int | None = None
    thinking_format: str | None = None
    # reasoning_effort level -> thinking_max (server setting; clipped to the context)
    reasoning_effort_budgets: dict[str, int] | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "loading", "dead"]
    detail: str | None = None
