"""Which request fields a surface honours, ignores or refuses: no silent ignores.

A field the surface's request model declares is honoured (by vLLM's serving class, or
by s1-serve for its budget extensions). A field it does not declare is either harmless
bookkeeping (``user``, ``metadata``, ``store``, ...), which is ignored with a debug log
as OpenAI clients send it routinely, or a field that would change the output somewhere
(a sampling knob of another surface, an OpenAI feature vLLM lacks such as ``audio``):
such a field is a 400 that names it, because answering without it would silently give
the client something other than what it asked for. Any other unknown field (a typo such
as ``temprature``, another server's ``thinking_budget``) is a 400 naming the closest
known field, as OpenAI's API does, unless the server runs with
``--no-reject-unknown-fields`` (vLLM's warn-and-ignore).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from functools import cache
from typing import Any

from server.api.errors import bad_request

logger = logging.getLogger(__name__)

# Declared by some OpenAI/Anthropic API but changing nothing in the generated output.
HARMLESS = frozenset({
    "user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key",
    "prompt_cache_retention", "prompt_cache_options", "request_id", "priority", "cache_salt",
    "kv_transfer_params", "ec_transfer_params", "stream_options", "cache_control",
    "workspace_id", "user_profile_id", "inference_geo", "diagnostics", "background_options",
    "moderation", "return_mm_kwargs", "session_id", "vllm_xargs", "speed", "container",
})

# OpenAI features that change the output and that vLLM 0.32 does not implement.
UNSUPPORTED = {
    "audio": "audio output is not supported; drop 'audio'",
    "modalities": "only text output is supported; send modalities ['text'] or drop it",
    "verbosity": "verbosity is not supported; ask for brevity in the prompt instead",
    "web_search_options": "web search is not supported",
    "functions": "the legacy 'functions' field is not supported; send 'tools'",
    "function_call": "the legacy 'function_call' field is not supported; send 'tool_choice'",
    "conversation": "server-side conversations are not supported; send the full 'input'",
    "context_management": "context management is not supported",
    "best_of": "best_of is not supported (as in vLLM 0.32's engine); send n and rank the "
               "choices yourself",
}

# Fields that routers in front of vLLM (vllm-router, from SGLang's request types) add to
# every request at these values, which ask for nothing vLLM does not do anyway: accepted
# at exactly these values, refused as unknown otherwise.
PROXY_DEFAULTS: dict[str, Any] = {"no_stop_trim": False, "return_hidden_states": False,
                                  "separate_reasoning": True, "stream_reasoning": True}

# Our extensions, read by server.api.budget_request on every surface.
EXTENSIONS = frozenset({"thinking_min", "thinking_max", "min_thinking_tokens",
                        "max_thinking_tokens", "thinking_token_budget",
                        "thinking_continuation", "thinking_waits",
                        "thinking_deadline_ms", "thinking_early_stop", "seed"})


@cache
def _vllm_fields() -> frozenset[str]:
    """Every field of vLLM's request models: each changes the output somewhere."""
    from vllm.entrypoints.anthropic.protocol import AnthropicMessagesRequest
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest
    from vllm.entrypoints.openai.responses.protocol import ResponsesRequest

    names: set[str] = set()
    for model in (ChatCompletionRequest, CompletionRequest, ResponsesRequest,
                  AnthropicMessagesRequest):
        names |= declared(model)
    return frozenset(names)


def declared(model: type) -> frozenset[str]:
    """Field names and aliases of a pydantic model."""
    fields = model.model_fields  # type: ignore[attr-defined]
    return frozenset(set(fields) | {f.alias for f in fields.values() if f.alias})


def check(surface: str, body: Mapping[str, Any], known: frozenset[str],
          strict: bool = True) -> None:
    """Refuse the fields of ``body`` outside ``known`` that would change the output, and
    with ``strict`` every field no API declares (naming the closest known one)."""
    unknown = sorted(set(body) - known - EXTENSIONS)
    if not unknown:
        return
    for name in unknown:
        reason = refusal(name, body, surface)
        if reason is not None:
            raise bad_request(reason, name)
    if strict:
        for name in unknown:
            if body.get(name) is None or (name in PROXY_DEFAULTS
                                          and body[name] == PROXY_DEFAULTS[name]):
                continue  # asks for nothing
            if name not in HARMLESS and name not in UNSUPPORTED and name not in _vllm_fields():
                raise bad_request(_unknown(name, surface, known), name)
    logger.debug("%s: ignoring fields that change nothing: %s", surface, ", ".join(unknown))


def _unknown(name: str, surface: str, known: frozenset[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known | EXTENSIONS), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (f"unrecognized request argument {name!r} on {surface}{hint} (start the server "
            "with --no-reject-unknown-fields to ignore unknown fields, as vLLM does)")


def refusal(name: str, body: Mapping[str, Any], surface: str) -> str | None:
    """Why ``name`` (not declared by ``surface``) is refused; None if it is harmless."""
    value = body.get(name)
    if value is None or (name == "modalities" and value == ["text"]) or (
            name == "best_of" and value in (1, body.get("n") or 1)):
        return None  # asks for nothing beyond the default
    if name in UNSUPPORTED:
        return f"{name}: {UNSUPPORTED[name]}"
    if name in HARMLESS or name not in _vllm_fields():
        return None
    return (f"{name} is not supported on {surface}; it would change the output, so it is "
            "refused rather than ignored (see docs/api.md for this surface)")
