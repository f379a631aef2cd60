"""The thinking budget a request asks for, on every surface vLLM's serving layer serves.

People already send budgets in several dialects: ours (``thinking_min`` /
``thinking_max`` and their aliases, ``thinking_waits``), OpenAI's ``reasoning_effort`` and Responses'
``reasoning.effort``, Anthropic's ``thinking.budget_tokens``. :func:`budget_from_body`
reads them all into one :class:`BudgetRequest`, carried to the engine call
(:func:`server.api.engine_hook.install_hook`) in the context variable :data:`BUDGET`. The
same object collects each choice's ``budget`` object on the way back.
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from server.api.errors import bad_request
from server.api.protocol import BudgetFields
from server.budget.spec import REQUEST_BUDGET

BUDGET_KEYS = frozenset(BudgetFields.model_fields)


@dataclasses.dataclass
class BudgetRequest:
    thinking_min: int | None
    thinking_max: int | None
    thinking_continuation: str | None
    max_tokens: int | None  # what the client asked for (None: the server chooses)
    thinking_waits: int | None = None
    soft_max: bool = False  # from an effort level: clipped to the context, never a 400
    n: int = 1
    seed: int | None = None  # honoured on surfaces whose own model has no seed
    # Set at the engine call: the resolved budget spec (server.budget.machine.BudgetSpec).
    spec: Any = None
    # Filled on the way back: each choice's budget object, by choice index.
    budgets: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # Engine calls so far: a request with several prompts (a list on /v1/completions, a
    # batch of conversations) makes one per prompt, in order; vLLM numbers the choices
    # of prompt k from k * n.
    calls: int = 0
    timed_out: bool = False
    deadline_error: str | None = None  # the request deadline's message, once it passed
    beam_search: bool = False
    # thinking_deadline_ms, and when the request arrived (server.api.deadline's clock).
    thinking_deadline_ms: int | None = None
    arrival: float = 0.0
    # Choices whose thinking the deadline or early stop cut, by choice index
    # (server.budget.cut.Cut; its ``reason`` says which).
    cuts: dict[int, Any] = dataclasses.field(default_factory=dict)
    # thinking_early_stop (server.api.early_stop): (every, agree), each choice's probes
    # by choice index (position and answer), and the tokens all probes generated.
    early_stop: tuple[int, int] | None = None
    probes: dict[int, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    probe_tokens: int = 0

    @property
    def asked(self) -> bool:
        """The request itself asked for a budget (a field, an effort level, thinking)."""
        return (self.thinking_min is not None or self.thinking_max is not None
                or self.thinking_waits is not None
                or self.thinking_deadline_ms is not None or self.early_stop is not None)

    def spec_for(self, output_ids: Sequence[int]) -> Any:
        """The spec that accounts a choice with these output ids: the deadline cut's
        when the ids continue from one (for the reasoning parser's count), else the
        request's."""
        for cut in self.cuts.values():
            prefix = cut.prefix
            if len(output_ids) >= len(prefix) and tuple(output_ids[:len(prefix)]) == prefix:
                return cut.spec
        return self.spec


# The core's per-request context variable (the reasoning parser reads the spec there).
BUDGET: contextvars.ContextVar[BudgetRequest | None] = REQUEST_BUDGET  # type: ignore[assignment]


def budget_from_body(body: dict, efforts: Mapping[str, int]) -> BudgetRequest:
    """Read every budget dialect of ``body``; a 400 for values that make no sense.

    ``efforts``: thinking_max per reasoning_effort level (the server's setting)."""
    try:
        fields = BudgetFields.model_validate({k: body[k] for k in BUDGET_KEYS if k in body})
    except ValidationError as exc:
        err = exc.errors()[0]
        param = str(err["loc"][0]) if err.get("loc") else None
        where = ".".join(str(p) for p in err.get("loc") or ()) or param
        raise bad_request(f"{where}: {err['msg']}", param) from None
    hi, soft = fields.thinking_max, False
    effort = body.get("reasoning_effort")
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort"):
        effort = reasoning["effort"]
    thinking = body.get("thinking")
    if hi is None and isinstance(thinking, dict):
        if thinking.get("type") == "enabled" and isinstance(thinking.get("budget_tokens"), int):
            hi = thinking["budget_tokens"]
        elif thinking.get("type") == "disabled":
            hi = 0
    if hi is None and effort is not None:
        if effort not in efforts:
            raise bad_request(f"unknown reasoning effort {effort!r}; this server knows "
                              f"{', '.join(efforts)} (GET /v1/models lists their budgets)",
                              "reasoning_effort")
        hi, soft = efforts[effort], True
    user_max = next((body[k] for k in ("max_completion_tokens", "max_tokens",
                                       "max_output_tokens") if body.get(k) is not None), None)
    n = body.get("n") if isinstance(body.get("n"), int) else 1
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise bad_request("seed must be an integer", "seed")
    early = fields.thinking_early_stop
    return BudgetRequest(fields.thinking_min, hi, fields.thinking_continuation,
                         user_max if isinstance(user_max, int) else None, fields.thinking_waits,
                         soft, max(1, n), seed,
                         thinking_deadline_ms=fields.thinking_deadline_ms,
                         early_stop=(early.every, early.agree) if early is not None else None)
