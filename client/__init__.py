"""Python client for s1-serve: chat and completions with thinking budgets.

    from client import Client

    with Client() as s1:  # S1_BASE_URL / S1_API_KEY, or pass them
        r = s1.chat("How many r in raspberry?", thinking_min=64, thinking_max=512)
        print(r.reasoning, r.answer, r.usage.reasoning_tokens, r.finish_reason)
        for event in s1.chat("Again", thinking_max=128, stream=True):
            ...  # ThinkingDelta, AnswerDelta, Finished, UsageEvent

:class:`AsyncClient` has the same methods, awaited. Errors are subclasses of
:class:`S1Error` (see :mod:`client.errors`). The command line is ``s1-client``
(:mod:`client.cli`).
"""

from client.async_client import AsyncClient, AsyncStream
from client.config import DEFAULT_BASE_URL, RetryPolicy
from client.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    RateLimitError,
    S1Error,
    ServerError,
    ServiceUnavailableError,
)
from client.sync_client import Client, Stream
from client.types import (
    AnswerDelta,
    ChatResult,
    Choice,
    CompletionResult,
    Finished,
    Health,
    Message,
    ModelInfo,
    StreamEvent,
    ThinkingDelta,
    Usage,
    UsageEvent,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AnswerDelta",
    "AsyncClient",
    "AsyncStream",
    "AuthenticationError",
    "BadRequestError",
    "ChatResult",
    "Choice",
    "Client",
    "CompletionResult",
    "Finished",
    "Health",
    "Message",
    "ModelInfo",
    "NotFoundError",
    "RateLimitError",
    "RetryPolicy",
    "S1Error",
    "ServerError",
    "ServiceUnavailableError",
    "Stream",
    "StreamEvent",
    "ThinkingDelta",
    "Usage",
    "UsageEvent",
]
