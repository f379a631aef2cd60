"""The shapes s1-serve adds to vLLM's API (pydantic): the budget fields a request may
carry on every surface, the ``budget`` object of each choice, and the model card,
health and version answers. Requests and responses themselves are vLLM's.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from server.api.errors import bad_request

# Aliases other servers use for the same two numbers.
THINKING_ALIASES = {
    "min_thinking_tokens": "thinking_min",
    "max_thinking_tokens": "thinking_max",
    "thinking_token_budget": "thinking_max",  # vLLM's name for the maximum
}


class EarlyStop(BaseModel):
    """``thinking_early_stop``: probe the answer every ``every`` thinking tokens; cut
    thinking once ``agree`` consecutive probes gave the same non-empty answer
    (server.api.early_stop)."""

    model_config = ConfigDict(extra="forbid")

    every: StrictInt = Field(..., ge=1, le=1_000_000, description="Thinking tokens "
                             "between two probes of the answer.")
    agree: StrictInt = Field(..., le=1_000_000, description="Consecutive probes that must "
                             "give the same non-empty answer (at least 2).")

    @field_validator("agree")
    @classmethod
    def _two_at_least(cls, value: int) -> int:
        if value < 2:
            raise ValueError(f"must be at least 2, got {value}: a single probe always "
                             "agrees with itself")
        return value


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
    thinking_waits: StrictInt | None = Field(None, ge=0, description="Ignore the end of "
                                             "thinking this many times (s1's "
                                             "thinking_n_ignore): the first k attempts "
                                             "become the continuation string, the next ends "
                                             "thinking.")
    thinking_continuation: str | None = Field(None, max_length=200,
                                              description="String appended when thinking is "
                                              "extended (default 'Wait'); '' suppresses the "
                                              "end attempt without appending anything.")
    thinking_deadline_ms: StrictInt | None = Field(
        None, ge=0, description="Cut thinking this many milliseconds after the request "
        "arrived, as at thinking_max (server.api.deadline).")
    thinking_early_stop: EarlyStop | None = Field(
        None, description="Cut thinking once the answer, probed every `every` thinking "
        "tokens, was the same `agree` times in a row (server.api.early_stop).")

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


# ------------------------------------------------------------------ responses
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
