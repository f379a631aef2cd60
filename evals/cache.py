"""The answer cache that makes a sweep resumable: one record per (question, setting).

Records live in ``<out>/cache.sqlite``, the project's one response cache
(:class:`s1_common.cache.ResponseCache`, shared with the curation pipeline): every
finished request is committed at once, so a run that is interrupted (Ctrl-C, a
crash, a dead server) loses at most the requests in flight; the next run with the
same settings skips what is there. A record is reused only when the *run signature*
matches (model, sampling, token limits, system prompt: everything that changes the
answer besides the budget) and the rendered prompt is the same (its hash is part of
the key), so changing ``--temperature`` or the choice seed never mixes old answers
in. The signature does not include the server address: use one ``--out`` directory
per endpoint when comparing servers that share a model name. Grading is not cached:
it is redone from the stored answer text on every run, so a grader fix applies
without regenerating.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from s1_common.cache import ResponseCache, request_key


def digest(obj: Any) -> str:
    """A short stable hash of a JSON-able object."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class Record:
    """One generation of one question under one setting, as stored."""

    signature: str
    question_id: str
    prompt_hash: str
    setting: str
    method: str
    value: int
    thinking_min: int | None
    thinking_max: int | None
    thinking_tokens: int
    thinking_source: str  # "reasoning_tokens" (exact, from usage) or "completion_tokens"
    completion_tokens: int
    finish_reason: str | None
    answer: str
    reasoning: str | None
    extended: bool | None = None  # waits settings: whether at least one end was suppressed
    # what budget forcing realised (evals.realised); None = unknown
    waits_realised: int | None = None
    forced_cut: bool | None = None
    realised_source: str | None = None  # "server" (budget object) or "text"
    tries: int | None = None  # rejection sampling: samples drawn until one fit
    thinking_waits: int | None = None  # waits settings: the thinking_waits sent
    probe_tokens: int | None = None  # early_stop settings: tokens its answer probes made

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.question_id, self.setting, self.prompt_hash)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class Cache:
    """The records of one run signature, read from and written to a response cache file."""

    def __init__(self, path: str | Path, signature: str, *, fresh: bool = False) -> None:
        self.path = Path(path)
        self.signature = signature
        self.store = ResponseCache(self.path)
        self.records: dict[tuple[str, str, str], Record] = {}
        if not fresh:
            for _, data in self.store.responses(signature):
                try:
                    record = Record.from_json(data)
                except TypeError:
                    continue  # written by another version of this module
                self.records[record.key] = record

    def get(self, question_id: str, setting: str, prompt_hash: str) -> Record | None:
        return self.records.get((question_id, setting, prompt_hash))

    def put(self, record: Record) -> None:
        self.records[record.key] = record
        request = dict(zip(("question_id", "setting", "prompt_hash"), record.key, strict=True))
        self.store.put(request_key(self.signature, request), self.signature, request,
                       response=asdict(record))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.records)
