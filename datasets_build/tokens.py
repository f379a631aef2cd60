"""Count tokens with a given tokenizer (the second difficulty signal: trace length).

Why a thin wrapper: a local directory with ``tokenizer.json`` is read with the fast
``tokenizers`` library (no transformers import, which is slow), anything else (a hub id,
or a directory with only slow-tokenizer files) goes through ``AutoTokenizer``. Counts leave
out special tokens, so they measure the text alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


class TokenCounter:
    """``count(texts)`` -> token counts with one tokenizer."""

    def __init__(self, name_or_path: str) -> None:
        self.name = name_or_path
        path = Path(name_or_path).expanduser()
        self._fast: Any = None
        self._hf: Any = None
        if (path / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            self._fast = Tokenizer.from_file(str(path / "tokenizer.json"))
        else:
            from transformers import AutoTokenizer

            try:
                self._hf = AutoTokenizer.from_pretrained(name_or_path)
            except (OSError, ValueError) as exc:
                raise ValueError(f"cannot load the tokenizer {name_or_path!r}: {exc}") from None

    def count(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        if self._fast is not None:
            return [len(e.ids) for e in self._fast.encode_batch(list(texts),
                                                                add_special_tokens=False)]
        return [len(ids) for ids in self._hf(list(texts), add_special_tokens=False)["input_ids"]]
