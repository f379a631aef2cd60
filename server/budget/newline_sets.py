"""Newline-ending token ids, registered once per tokenizer instead of sent per request.

A budget's "does the thinking text already end with a newline?" rule needs every id
whose text ends with ``\\n``: thousands at a 150k vocabulary. Sent inside every
request's budget payload, they were serialised per request and rebuilt into a set per
request on every tensor-parallel rank. Instead each process registers the set once
(the API process when it encodes the thinking format, each engine worker when its
processor starts, from the same tokenizer) under a key derived from the ids
themselves, and payloads carry the key. Both sides compute the key from the content,
so they agree without talking to each other. Pure Python, no vLLM or torch.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

logger = logging.getLogger(__name__)

_SETS: dict[str, frozenset[int]] = {}
_KEYS: dict[frozenset[int], str] = {}
_missing: set[str] = set()


def register(ids: Iterable[int]) -> str:
    """Register ``ids`` in this process; returns their key (content-derived)."""
    ids = ids if isinstance(ids, frozenset) else frozenset(ids)
    key = _KEYS.get(ids)
    if key is None:
        digest = hashlib.blake2b(",".join(map(str, sorted(ids))).encode(), digest_size=10)
        key = f"nl:{len(ids)}:{digest.hexdigest()}"
        _SETS[key], _KEYS[ids] = ids, key
    return key


def key_of(ids: frozenset[int]) -> str | None:
    """The key of a registered set (O(1) for the registered object itself), else None."""
    return _KEYS.get(ids) if ids else None


def lookup(key: str) -> frozenset[int]:
    """The set registered under ``key``. An unknown key (this process never registered
    the tokenizer's set) degrades to the empty set with an error logged once, rather than
    failing the engine step: a newline may then be forced where the text had one."""
    found = _SETS.get(key)
    if found is None:
        if key not in _missing:
            _missing.add(key)
            logger.error("newline id set %s is not registered in this process; the newline "
                         "before a forced end ignores the text's own newlines", key)
        return frozenset()
    return found
