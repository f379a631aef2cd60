"""One error type and one builder for every error the API returns.

Bodies follow OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``
(vLLM's too) so that the official SDKs raise their usual exception classes.
"""

from __future__ import annotations

from http import HTTPStatus

from fastapi.responses import JSONResponse
from pydantic import BaseModel

# Statuses vLLM's own serving classes also answer carry vLLM's type names, so that one
# kind of error reads alike whichever check refused it; the rest are OpenAI's names.
_TYPES = {
    400: "BadRequestError",
    401: "authentication_error",
    404: "NotFoundError",
    413: "BadRequestError",
    429: "rate_limit_error",
    499: "client_closed_request",
    504: "timeout_error",
    500: "InternalServerError",
    503: "service_unavailable_error",
}


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int | str | None = None
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


class APIError(Exception):
    """Raised anywhere in request handling; turned into an error response."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 headers: dict[str, str] | None = None, type_: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = headers or {}
        self.type = type_ or _TYPES.get(status, "api_error")

    def body(self, request_id: str | None = None) -> dict:
        info = ErrorInfo(message=self.message, type=self.type,
                         param=self.param, code=self.status, request_id=request_id)
        return ErrorResponse(error=info).model_dump()

    def response(self, request_id: str | None = None) -> JSONResponse:
        # The x-request-id header itself is added to every response by the middleware.
        return JSONResponse(self.body(request_id), status_code=self.status,
                            headers=dict(self.headers))


# nginx's status for a request whose client left before the answer: not a server error,
# so it stays out of 5xx alerts. (The client is gone; the status is for logs and metrics.)
CLIENT_CLOSED_REQUEST = 499


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(HTTPStatus.BAD_REQUEST, message, param)


def engine_stopped() -> APIError:
    """The 503 for a request that arrives after the engine core has died."""
    return APIError(HTTPStatus.SERVICE_UNAVAILABLE,
                    "the inference engine has stopped; restart the server")


# Declared on routes so /openapi.json tells clients what can fail.
ERROR_RESPONSES: dict[int | str, dict] = {
    code: {"model": ErrorResponse, "description": HTTPStatus(code).phrase}
    for code in (400, 401, 404, 413, 429, 503, 504)
}
