"""Exceptions raised by the s1-serve client, one class per kind of failure.

The server answers errors in OpenAI's shape ``{"error": {"message", "type",
"param", "code"}}`` with an ``x-request-id`` header; :func:`error_for_status`
turns that into the matching class so callers can catch exactly what they can
handle (a bad budget, a missing key, an overloaded server) and quote the
request id when reporting a problem.

    S1Error
    ├── APIConnectionError          (no HTTP answer: refused, reset, DNS ...)
    │   └── APITimeoutError
    └── APIStatusError              (an HTTP error answer)
        ├── BadRequestError         400
        ├── AuthenticationError     401
        ├── NotFoundError           404
        ├── RateLimitError          429
        └── ServerError             5xx
            └── ServiceUnavailableError 503
"""

from __future__ import annotations

from typing import Any


class S1Error(Exception):
    """Base class of every client error.

    ``status`` is the HTTP status (None when no answer came), ``param`` the request
    field the server blamed, ``request_id`` the server's id for the request, and
    ``attempts`` how many times the request was sent (retries included).
    """

    def __init__(self, message: str, *, status: int | None = None, param: str | None = None,
                 request_id: str | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.request_id = request_id
        self.attempts = attempts

    def __str__(self) -> str:
        parts = [self.message]
        if self.param:
            parts.append(f"(param: {self.param})")
        if self.request_id:
            parts.append(f"[request id {self.request_id}]")
        return " ".join(parts)


class APIConnectionError(S1Error):
    """The server could not be reached or dropped the connection.

    ``retryable`` is True when the request cannot have reached the server (refused,
    connect timeout), so sending it again is safe.
    """

    def __init__(self, message: str, *, request_id: str | None = None, attempts: int = 1,
                 retryable: bool = False) -> None:
        super().__init__(message, request_id=request_id, attempts=attempts)
        self.retryable = retryable


class APITimeoutError(APIConnectionError):
    """The request took longer than the client's timeout."""


class APIStatusError(S1Error):
    """The server answered with an HTTP error status."""

    status: int

    def __init__(self, message: str, *, status: int, param: str | None = None,
                 request_id: str | None = None, attempts: int = 1, type: str | None = None,
                 code: Any = None, body: Any = None, retry_after: float | None = None) -> None:
        super().__init__(message, status=status, param=param, request_id=request_id,
                         attempts=attempts)
        self.type = type
        self.code = code
        self.body = body
        self.retry_after = retry_after


class BadRequestError(APIStatusError):
    """400: the request is invalid (for example thinking_min above thinking_max)."""


class AuthenticationError(APIStatusError):
    """401: missing or wrong API key."""


class NotFoundError(APIStatusError):
    """404: unknown model or path."""


class RateLimitError(APIStatusError):
    """429: too many requests; ``retry_after`` says when to come back, if the server said."""


class ServerError(APIStatusError):
    """5xx: the server failed."""


class ServiceUnavailableError(ServerError):
    """503: the model is still loading or the engine has stopped."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def error_class(status: int) -> type[APIStatusError]:
    """The exception class for an HTTP error status."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else APIStatusError


def error_for_status(status: int, body: Any, *, request_id: str | None = None,
                     attempts: int = 1, retry_after: float | None = None) -> APIStatusError:
    """Build the exception for an error answer; ``body`` is the decoded JSON or raw text."""
    info = body.get("error") if isinstance(body, dict) else None
    if isinstance(info, dict):
        message = str(info.get("message") or f"HTTP {status}")
        param, kind, code = info.get("param"), info.get("type"), info.get("code")
        request_id = request_id or info.get("request_id")
    else:
        text = body.strip() if isinstance(body, str) else ""
        message = f"HTTP {status}" + (f": {text[:500]}" if text else "")
        param = kind = code = None
    return error_class(status)(message, status=status, param=param, request_id=request_id,
                               attempts=attempts, type=kind, code=code, body=body,
                               retry_after=retry_after)
