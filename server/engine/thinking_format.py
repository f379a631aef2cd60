"""Which thinking format a served model has: the ``--thinking-format`` setting, or the
format detected from its tokenizer (chat template, vocabulary, name).

Its own module because both the engine start (server/engine/loader.py) and the reasoning
parser (server/engine/reasoning_parser.py, which vLLM also loads in its engine core)
resolve it, the same way.
"""

from __future__ import annotations

import logging
from typing import Any

from server.budget.formats import ThinkingFormat, detect_format, get_format
from server.settings import Settings

logger = logging.getLogger(__name__)


def resolve_format(settings: Settings, tokenizer: Any) -> ThinkingFormat | None:
    name = settings.thinking_format
    if name == "none":
        return None
    if name == "auto":
        fmt = detect_format(tokenizer, settings.model)
        if fmt is None:
            logger.warning("no thinking format detected; budgets will be refused. "
                           "Set --thinking-format (s1, deepseek-r1, qwen3, custom).")
            return None
        if any(v is not None for v in (settings.thinking_start, settings.thinking_end,
                                       settings.answer_prefix)):
            fmt = get_format(fmt.name, settings.thinking_start, settings.thinking_end,
                             settings.answer_prefix)
        logger.info("thinking format: %s (auto-detected)", fmt.name)
        return fmt
    fmt = get_format(name, settings.thinking_start, settings.thinking_end, settings.answer_prefix)
    logger.info("thinking format: %s", fmt.name)
    return fmt
