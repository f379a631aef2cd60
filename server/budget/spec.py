"""What one request's budget is, as token ids: :class:`BudgetSpec` (the limits, the
format's delimiters and strings, the s1 rules in force), its checks, and its plain-dict
form for the trip to the engine process. Pure Python, no vLLM or torch; the state
machine that enforces it is :mod:`server.budget.machine`.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from server.budget import newline_sets

__all__ = ["REQUEST_BUDGET", "BudgetError", "BudgetSpec", "SpecHolder", "check_budget_values"]


class SpecHolder(Protocol):
    """What the API layer keeps per request: the budget spec once it is resolved (and,
    optionally, ``spec_for(output_ids)``: the spec of the choice with those ids, which
    differs where a thinking deadline cut it, see server/budget/cut.py)."""

    spec: BudgetSpec | None


# The current request's budget in the API process: set by the API layer when a request
# arrives (its spec is filled once the prompt is known), read by the reasoning parser
# (server/engine/reasoning_parser.py), which must tell forced tokens from thinking as the engine did.
REQUEST_BUDGET: ContextVar[SpecHolder | None] = ContextVar("s1_request_budget",
                                                           default=None)


class BudgetError(ValueError):
    """A budget setting that cannot be honoured; the message says what to change."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class BudgetSpec:
    """Everything one request's budget needs, as token ids.

    ``stop_ids`` are the ids that end the turn (EOS, end-of-turn): under the
    minimum, emitting one of them counts as an attempt to stop thinking.

    The s1 evaluation's details (the server turns them on by default; off here):
    ``newline_id`` is forced before a cut end delimiter unless the thinking text
    already ends with a newline (a token of ``newline_ids``, or
    ``opens_on_newline`` before the first thinking token); ``turn_ends_thinking``
    turns an end of turn inside the block into its end; ``hold_after_continuation``
    allows no attempt right after a continuation string.

    ``thinking_waits`` k: the first k attempts to end thinking become the continuation
    string (s1's ``thinking_n_ignore``), the next one ends it; with ``thinking_min``
    both must hold. An empty ``continuation_ids`` suppresses an attempt without
    inserting anything (the paper's "no string"); under ``thinking_waits`` such a
    suppression leaves no token to count it by, so the engine counts it
    (:mod:`server.engine.logits_processor`; Model Runner V2 refuses the combination).
    """

    start_ids: tuple[int, ...]
    end_ids: tuple[int, ...]
    stop_ids: frozenset[int]
    continuation_ids: tuple[int, ...]
    answer_prefix_ids: tuple[int, ...] = ()
    thinking_min: int | None = None
    thinking_max: int | None = None
    thinking_waits: int | None = None
    prompt_opens: bool = True
    newline_id: int | None = None
    newline_ids: frozenset[int] = frozenset()
    opens_on_newline: bool = False
    turn_ends_thinking: bool = False
    hold_after_continuation: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "start_ids", tuple(self.start_ids))
        object.__setattr__(self, "end_ids", tuple(self.end_ids))
        object.__setattr__(self, "stop_ids", frozenset(self.stop_ids))
        object.__setattr__(self, "continuation_ids", tuple(self.continuation_ids))
        object.__setattr__(self, "answer_prefix_ids", tuple(self.answer_prefix_ids))
        object.__setattr__(self, "newline_ids", frozenset(self.newline_ids))
        if self.end_ids:  # derived once: the engine reads these every step
            attempts = (self.end_ids[0], *sorted(self.stop_ids - {self.end_ids[0]}))
            object.__setattr__(self, "_attempt_ids", attempts)
            object.__setattr__(self, "_turn_ids", attempts[1:])
            special = frozenset(attempts) | frozenset(self.continuation_ids[:1])
            if self.newline_id is not None:
                special |= {self.newline_id}
            object.__setattr__(self, "_special_ids", special)
        self.validate()

    @property
    def active(self) -> bool:
        """True when the request has a budget the engine must enforce."""
        return (self.thinking_min is not None or self.thinking_max is not None
                or bool(self.thinking_waits))

    @property
    def attempt_ids(self) -> tuple[int, ...]:
        """Tokens whose emission under the minimum means "stop thinking"."""
        return self._attempt_ids

    @property
    def turn_ids(self) -> tuple[int, ...]:
        """End-of-turn ids that are not the end delimiter: what GUARD_TURN watches."""
        return self._turn_ids

    @property
    def special_ids(self) -> frozenset[int]:
        """Tokens that can change the state inside the thinking block; others just count."""
        return self._special_ids

    def validate(self) -> None:
        check_budget_values(self.thinking_min, self.thinking_max, self.thinking_waits)
        if not self.end_ids:
            raise BudgetError("the thinking format has an empty end delimiter", "thinking_format")
        if not self.prompt_opens and not self.start_ids:
            raise BudgetError(
                "the prompt does not open the thinking block and the format has no start "
                "delimiter to wait for",
                "thinking_format",
            )
        if self.newline_id is not None and self.newline_id in self.attempt_ids:
            raise BudgetError("the newline token is an end-of-thinking or end-of-turn id",
                              "thinking_format")
        clash = set(self.continuation_ids) & set(self.attempt_ids)
        if clash:
            raise BudgetError(
                "the continuation string contains the end-of-thinking or end-of-turn "
                f"token ids {sorted(clash)}; choose another thinking_continuation",
                "thinking_continuation",
            )

    def to_dict(self) -> dict:
        """A plain dict that survives vLLM's msgpack trip to the engine process."""
        return {
            "start_ids": list(self.start_ids),
            "end_ids": list(self.end_ids),
            "stop_ids": sorted(self.stop_ids),
            "continuation_ids": list(self.continuation_ids),
            "answer_prefix_ids": list(self.answer_prefix_ids),
            "thinking_min": self.thinking_min,
            "thinking_max": self.thinking_max,
            "thinking_waits": self.thinking_waits,
            "prompt_opens": self.prompt_opens,
            "newline_id": self.newline_id,
            # A registered set travels as its key (server.budget.newline_sets), not its ids.
            **({"newline_key": key} if (key := newline_sets.key_of(self.newline_ids))
               else {"newline_ids": sorted(self.newline_ids)}),
            "opens_on_newline": self.opens_on_newline,
            "turn_ends_thinking": self.turn_ends_thinking,
            "hold_after_continuation": self.hold_after_continuation,
        }

    @classmethod
    def from_dict(cls, data: dict) -> BudgetSpec:
        try:
            return cls(
                start_ids=tuple(data.get("start_ids", ())),
                end_ids=tuple(data["end_ids"]),
                stop_ids=frozenset(data.get("stop_ids", ())),
                continuation_ids=tuple(data.get("continuation_ids", ())),
                answer_prefix_ids=tuple(data.get("answer_prefix_ids", ())),
                thinking_min=data.get("thinking_min"),
                thinking_max=data.get("thinking_max"),
                thinking_waits=data.get("thinking_waits"),
                prompt_opens=bool(data.get("prompt_opens", True)),
                newline_id=data.get("newline_id"),
                newline_ids=(newline_sets.lookup(data["newline_key"]) if "newline_key" in data
                             else frozenset(data.get("newline_ids", ()))),
                opens_on_newline=bool(data.get("opens_on_newline", False)),
                turn_ends_thinking=bool(data.get("turn_ends_thinking", False)),
                hold_after_continuation=bool(data.get("hold_after_continuation", False)),
            )
        except (KeyError, TypeError) as exc:
            raise BudgetError(f"malformed budget settings: {exc!r}") from exc


def check_budget_values(thinking_min: object, thinking_max: object,
                        thinking_waits: object = None) -> None:
    """Raise :class:`BudgetError` unless each is None or a non-negative int, min <= max."""
    for name, value in (("thinking_min", thinking_min), ("thinking_max", thinking_max),
                        ("thinking_waits", thinking_waits)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            what = "a count" if name == "thinking_waits" else "a number of tokens"
            raise BudgetError(f"{name} must be an integer ({what}), got {value!r}", name)
        if value < 0:
            raise BudgetError(f"{name} must be >= 0, got {value}", name)
    if thinking_min is not None and thinking_max is not None and thinking_min > thinking_max:
        raise BudgetError(
            f"thinking_min ({thinking_min}) is larger than thinking_max ({thinking_max}); "
            "lower thinking_min or raise thinking_max",
            "thinking_min",
        )
