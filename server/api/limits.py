"""The checks a request's budget and token limits must pass, with the 400s that say
what to change: used by the request dependency (:mod:`server.api.request_layer`) and the hook on
vLLM's engine call (:mod:`server.api.engine_hook`), for every surface alike.
"""

from __future__ import annotations

from server.api.errors import bad_request
from server.budget.machine import BudgetError, BudgetSpec, check_budget_values
from server.settings import Settings


def resolve_budget(lo: int | None, hi: int | None, settings: Settings,
                   closed: bool = False) -> tuple[int | None, int | None]:
    """The request's ``thinking_min``/``thinking_max`` with the server's defaults filled
    in and checked. ``closed``: the prompt ends after a closed thinking block, so there
    is no thinking to budget (a budget is a 400; none is ``(None, None)``)."""
    if closed:
        if lo is not None or hi:
            raise bad_request(
                "the chat template closed the thinking block (e.g. chat_template_kwargs "
                "enable_thinking=false), so there is no thinking to budget; drop "
                "thinking_min/thinking_max or let the model think",
                "thinking_min" if lo is not None else "thinking_max")
        return None, None
    d_lo, d_hi = settings.default_thinking_min, settings.default_thinking_max
    if lo is None and d_lo is not None:
        lo = d_lo if hi is None else min(d_lo, hi)
    if hi is None and d_hi is not None:
        hi = d_hi if lo is None else max(d_hi, lo)
    try:
        check_budget_values(lo, hi)
    except BudgetError as exc:
        raise bad_request(str(exc), exc.param) from None
    return lo, hi


def check_waits(waits: int | None, settings: Settings, closed: bool = False) -> None:
    """``thinking_waits`` against the server's limit (and a closed thinking block)."""
    if waits is None:
        return
    try:
        check_budget_values(None, None, waits)
    except BudgetError as exc:
        raise bad_request(str(exc), exc.param) from None
    if waits > settings.max_thinking_waits:
        raise bad_request(
            f"thinking_waits={waits} is above this server's limit of "
            f"{settings.max_thinking_waits}; ask for fewer (the s1 paper's gains flatten "
            "around 6) or raise --max-thinking-waits", "thinking_waits")
    if closed and waits:
        raise bad_request(
            "the chat template closed the thinking block (e.g. chat_template_kwargs "
            "enable_thinking=false), so there is no thinking to extend; drop "
            "thinking_waits or let the model think", "thinking_waits")


def max_tokens_for(max_tokens: int | None, spec: BudgetSpec | None, room: int,
                   context: int) -> int:
    """The engine's ``max_tokens``: the request's, checked against the budget (thinking
    plus what is forced plus one answer token must fit) and the ``room`` the prompt
    leaves in the ``context``; without one, the rest of the context (the engine hook calls
    it only with a budget or a client max_tokens; otherwise vLLM's own default stands)."""
    hi = spec.thinking_max if spec else None
    lo = spec.thinking_min if spec else None
    forced = (len(spec.end_ids) + len(spec.answer_prefix_ids)) if spec else 0
    # Forced Waits are thinking tokens too (at least their strings' length).
    waits = (spec.thinking_waits or 0) * len(spec.continuation_ids) if spec else 0
    need = None
    if hi is not None:
        need, what = hi + forced + 1, f"thinking_max ({hi})"
    elif lo and lo >= waits:
        need, what = lo + len(spec.end_ids) + 1, f"thinking_min ({lo})"
    elif waits:
        need = waits + len(spec.end_ids) + 1
        what = f"thinking_waits ({spec.thinking_waits} x {len(spec.continuation_ids)} tokens)"
    if max_tokens is not None:
        if need is not None and max_tokens < need:
            raise bad_request(
                f"max_tokens ({max_tokens}) leaves no room for an answer after "
                f"{what}: max_tokens counts thinking and answer together; raise it to at "
                f"least {need} or lower the thinking budget", "max_tokens")
        if max_tokens > room:
            raise bad_request(
                f"max_tokens ({max_tokens}) plus the prompt exceed the "
                f"{context}-token context: at most {room} tokens fit", "max_tokens")
        return max_tokens
    if need is not None and need > room:
        param = ("thinking_max" if hi is not None else "thinking_waits"
                 if what.startswith("thinking_waits") else "thinking_min")
        raise bad_request(f"{what} plus an answer does not fit in the context left after "
                          f"the prompt ({room} tokens); lower the budget or shorten the "
                          "prompt", param)
    # As vLLM's chat: without max_tokens the answer may use the rest of the context
    # (a budgeted completion too: its thinking would not fit in 16 tokens).
    return room


def logit_bias(bias: dict[str, float] | None, vocab_size: int,
               most: int) -> dict[int, float] | None:
    """OpenAI's ``logit_bias`` (token id strings -> [-100, 100]) as vLLM takes it."""
    if not bias:
        return None
    if len(bias) > most:
        raise bad_request(f"logit_bias has {len(bias)} entries; at most {most} are accepted",
                          "logit_bias")
    try:
        out = {int(k): float(v) for k, v in bias.items()}
    except ValueError:
        raise bad_request("logit_bias keys must be token ids (integers as strings)",
                          "logit_bias") from None
    if any(k < 0 or k >= vocab_size for k in out):
        raise bad_request(f"logit_bias token ids must lie in [0, {vocab_size})", "logit_bias")
    if any(not -100 <= v <= 100 for v in out.values()):
        raise bad_request("logit_bias values must lie in [-100, 100]", "logit_bias")
    return out


def stop_strings(stop: str | list[str] | None, settings: Settings) -> list[str]:
    """The request's stop strings as a list, within the server's limits."""
    out = [stop] if isinstance(stop, str) else list(stop or [])
    if len(out) > settings.max_stop:
        raise bad_request(f"at most {settings.max_stop} stop strings are accepted", "stop")
    if any(not s or len(s) > settings.max_stop_chars for s in out):
        raise bad_request(f"stop strings must be 1 to {settings.max_stop_chars} characters",
                          "stop")
    return out
