"""Client settings and the retry policy, shared by the sync and async clients.

Settings come from arguments first, then the environment (``S1_BASE_URL``,
``S1_API_KEY``), then defaults. Retries cover only failures where sending the
same request again is safe and likely to help: the connection could not be made
(or was dropped before an answer), 429 and 503. The wait doubles per attempt up
to a cap, with jitter so that many clients do not retry in lockstep; a
``Retry-After`` header, when the server sends one, is honoured instead.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field

import httpx

from client.errors import APIConnectionError, APIStatusError, S1Error

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
BASE_URL_ENV = "S1_BASE_URL"
API_KEY_ENV = "S1_API_KEY"
RETRY_STATUSES = frozenset({429, 503})

logger = logging.getLogger("client")


def resolve_base_url(base_url: str | None) -> str:
    """Argument, else ``S1_BASE_URL``, else the default; a trailing ``/v1`` is dropped
    (the client adds the paths itself, and ``/health`` lives at the root)."""
    url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url[:-3] if url.endswith("/v1") else url


def resolve_api_key(api_key: str | None) -> str | None:
    return api_key or os.environ.get(API_KEY_ENV) or None


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait before sending a request again."""

    max_retries: int = 3
    backoff_base: float = 0.5   # seconds before the first retry (before jitter)
    backoff_max: float = 8.0    # longest computed wait
    max_retry_after: float = 60.0  # a longer Retry-After is not honoured: give up instead

    def backoff(self, attempt: int) -> float:
        """Wait after the ``attempt``-th failure (1-based): exponential, jittered to 50-100 %."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def wait(self, attempt: int, error: S1Error) -> float | None:
        """Seconds to wait before the next attempt, or None to give up and raise."""
        if attempt > self.max_retries:
            return None
        if isinstance(error, APIStatusError):
            if error.status not in RETRY_STATUSES:
                return None
            if error.retry_after is not None:
                return error.retry_after if error.retry_after <= self.max_retry_after else None
            return self.backoff(attempt)
        if isinstance(error, APIConnectionError) and error.retryable:
            return self.backoff(attempt)
        return None


@dataclass(frozen=True)
class Options:
    """Everything a client needs to talk to one server."""

    base_url: str
    api_key: str | None
    model: str | None
    timeout: httpx.Timeout
    retry: RetryPolicy
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, base_url: str | None, api_key: str | None, model: str | None,
              timeout: float | httpx.Timeout | None, connect_timeout: float,
              max_retries: int, backoff_base: float, backoff_max: float,
              headers: dict[str, str] | None) -> Options:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if not isinstance(timeout, httpx.Timeout):
            timeout = httpx.Timeout(timeout, connect=connect_timeout)
        return cls(base_url=resolve_base_url(base_url), api_key=resolve_api_key(api_key),
                   model=model, timeout=timeout,
                   retry=RetryPolicy(max_retries=max_retries, backoff_base=backoff_base,
                                     backoff_max=backoff_max),
                   headers=dict(headers or {}))

    def call_timeout(self, seconds: float | None) -> httpx.Timeout:
        """The timeout of one call: the client's, or ``seconds`` (connect phase kept)."""
        if seconds is None:
            return self.timeout
        return httpx.Timeout(seconds, connect=self.timeout.connect)

    def request(self, http: httpx.Client | httpx.AsyncClient, method: str, path: str,
                json: object, timeout: float | None) -> httpx.Request:
        """One attempt's request (each attempt gets a fresh one)."""
        return http.build_request(method, self.base_url + path, json=json,
                                  headers=self.http_headers(), timeout=self.call_timeout(timeout))

    def http_headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "s1-client/0.1"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(self.headers)
        return headers


def log_retry(method: str, path: str, attempt: int, total: int, wait: float,
              error: S1Error) -> None:
    what = f"HTTP {error.status} {error}" if isinstance(error, APIStatusError) else str(error)
    logger.info("%s %s failed (attempt %d of %d): %s; retrying in %.2f s",
                method, path, attempt, total, what, wait)
