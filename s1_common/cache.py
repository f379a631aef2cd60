"""A persistent cache of model responses in SQLite, so a stopped run resumes without paying twice.

Used by the curation pipeline (datasets_build: every model call) and by s1-eval (every
graded generation of a sweep). Why SQLite: one file, safe against a kill at any moment
(every answer is committed as it arrives; WAL journal, so a torn write is never read back),
readable with any SQLite tool, and fast enough for the tens of thousands of calls of a full
run. The key is a hash of everything that decides the answer (:func:`request_key`: the
model name and the request body, seed included); the server's address is left out, so
moving a model to another host keeps its cache. ``endpoint`` groups entries (the pipeline:
the endpoint's name; s1-eval: the run signature). Callers store successful answers and
permanent refusals (HTTP 400-class errors such as a prompt longer than the context);
transient failures are tried again on the next run.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT,
    error TEXT,
    created REAL NOT NULL
)
"""


def request_key(model: str | None, body: dict[str, Any]) -> str:
    """The cache key of a request: sha256 of the canonical JSON of model and body."""
    blob = json.dumps({"model": model, "body": body}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """``get``/``put`` of raw JSON responses (or permanent errors) by request key."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None)  # autocommit
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(_SCHEMA)

    def get(self, key: str) -> tuple[dict[str, Any] | None, str | None] | None:
        """(response JSON, None) or (None, error message); None when not cached."""
        row = self.db.execute("SELECT response, error FROM responses WHERE key = ?",
                              (key,)).fetchone()
        if row is None:
            return None
        return (json.loads(row[0]) if row[0] is not None else None), row[1]

    def put(self, key: str, endpoint: str, request: dict[str, Any],
            response: dict[str, Any] | None = None, error: str | None = None) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO responses (key, endpoint, request, response, error, created)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (key, endpoint, json.dumps(request, ensure_ascii=False),
             None if response is None else json.dumps(response, ensure_ascii=False),
             error, time.time()))

    def responses(self, endpoint: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """(key, response JSON) of every answer stored (under ``endpoint`` when given)."""
        where, args = ("AND endpoint = ?", (endpoint,)) if endpoint is not None else ("", ())
        rows = self.db.execute("SELECT key, response FROM responses WHERE response IS NOT "
                               f"NULL {where} ORDER BY created", args)
        for key, response in rows:
            yield key, json.loads(response)

    def count(self, endpoint: str | None = None) -> int:
        if endpoint is None:
            return self.db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM responses WHERE endpoint = ?",
                               (endpoint,)).fetchone()[0]

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
