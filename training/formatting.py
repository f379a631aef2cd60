"""s1 formatting through any chat template, exact loss masks, and the block-size policy.

Why a module beside training/data.py: data.py writes the ChatML prompt and assistant header
by hand, which fits the demo's own tokenizer. The full recipe has to go through the base
model's chat template (Qwen2.5-Instruct's default system message, whatever it renders around
turns), so here the whole conversation is rendered by `apply_chat_template` and the loss mask
starts exactly where the template puts the assistant content:

    text  = template([system?, user: question, assistant: content])
    content = "<|im_start|>think\\n" + thinking + "\\n<|im_start|>answer\\n" + "Answer: " + answer
    prompt part (labels -100)   = text[:text.rindex(content)]    system, user, assistant header
    completion part (labels = ids) = text[text.rindex(content):]  content and end of turn

The two parts are tokenized separately, as the server does (it tokenizes the prompt and the
model continues from there). Examples longer than the block size are counted and dropped or
cut, and the caller reports the count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.data import IGNORE, THINK_START, assistant_text
from training.sources import Triple

ANSWER_PREFIX = "Answer: "
THINK_OPEN = THINK_START.rstrip("\n")  # the s1 start delimiter, what detect_format looks for


class TemplateError(ValueError):
    """The chat template does not render the assistant content verbatim."""


def s1_answer(attempt: str) -> str:
    """The attempt as s1 trains on it: "Answer: " is prepended only when the attempt contains
    "Answer:" nowhere (s1's tokenization checks the whole attempt, not just its start: an
    attempt that ends "... Answer: 42" is kept as is)."""
    return attempt if ANSWER_PREFIX.strip() in attempt else ANSWER_PREFIX + attempt


def s1_content(thinking: str, attempt: str) -> str:
    """The assistant content of the s1 recipe (thinking block, then :func:`s1_answer`)."""
    return assistant_text(thinking, s1_answer(attempt))


def messages_for(question: str, content: str | None = None,
                 system: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "user", "content": question}]
    if system is not None:
        msgs.insert(0, {"role": "system", "content": system})
    if content is not None:
        msgs.append({"role": "assistant", "content": content})
    return msgs


def render(tokenizer: Any, triple: Triple, system: str | None = None) -> tuple[str, int]:
    """(full conversation text, index where the assistant content starts)."""
    content = s1_content(triple.thinking, triple.attempt)
    text = tokenizer.apply_chat_template(messages_for(triple.question, content, system),
                                         tokenize=False)
    start = text.rfind(content)
    if start < 0:
        raise TemplateError("the chat template changed the assistant content (does it strip "
                            "thinking from past turns?); use a template that renders it as is")
    return text, start


@dataclass
class Encoded:
    """One tokenized example: ids, and how many leading tokens are masked out of the loss."""

    input_ids: np.ndarray  # int32
    prompt_len: int

    def labels(self) -> np.ndarray:
        out = self.input_ids.astype(np.int64)
        out[: self.prompt_len] = IGNORE
        return out

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(tokenizer: Any, triple: Triple, system: str | None = None) -> Encoded:
    text, start = render(tokenizer, triple, system)
    prompt = tokenizer.encode(text[:start], add_special_tokens=False)
    completion = tokenizer.encode(text[start:], add_special_tokens=False)
    return Encoded(np.asarray(prompt + completion, dtype=np.int32), len(prompt))


@dataclass
class EncodeReport:
    """What happened to the rows: kept, over the block size (dropped or cut), length stats."""

    total: int
    block_size: int
    policy: str
    overlong: int = 0
    unusable: int = 0  # prompt alone fills the block: nothing left to learn from
    kept: int = 0
    max_len: int = 0
    tokens: int = 0
    loss_tokens: int = 0
    lengths: list[int] = field(default_factory=list, repr=False)

    @property
    def overlong_share(self) -> float:
        return self.overlong / self.total if self.total else 0.0

    def summary(self) -> str:
        verb = "dropped" if self.policy == "drop" else "truncated"
        lines = [
            f"{self.total} examples; {self.overlong} ({self.overlong_share:.1%}) longer than "
            f"block_size={self.block_size} tokens: {verb}",
            f"kept {self.kept}; longest {self.max_len} tokens; {self.tokens} tokens, "
            f"{self.loss_tokens} in the loss",
        ]
        if self.unusable:
            lines.append(f"{self.unusable} dropped: the prompt alone exceeds the block size")
        return "\n".join(lines)


def encode_all(tokenizer: Any, triples: Iterable[Triple], block_size: int,
               overlong: str = "drop", system: str | None = None
               ) -> tuple[list[Encoded], EncodeReport]:
    """Encode every triple and apply the block-size policy; nothing is cut silently."""
    triples = list(triples)
    report = EncodeReport(total=len(triples), block_size=block_size, policy=overlong)
    kept: list[Encoded] = []
    for triple in triples:
        ex = encode(tokenizer, triple, system)
        report.lengths.append(len(ex))
        report.max_len = max(report.max_len, len(ex))
        if len(ex) > block_size:
            report.overlong += 1
            if overlong == "drop":
                continue
            if ex.prompt_len >= block_size:
                report.unusable += 1
                continue
            ex = Encoded(ex.input_ids[:block_size], ex.prompt_len)
        kept.append(ex)
        report.tokens += len(ex)
        report.loss_tokens += len(ex) - ex.prompt_len
    report.kept = len(kept)
    return kept, report


class SFTDataset:
    """A map-style dataset of encoded examples for the Trainer (features: input_ids, labels)."""

    def __init__(self, examples: Sequence[Encoded]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        ex = self.examples[i]
        return {"input_ids": ex.input_ids.tolist(), "labels": ex.labels().tolist()}


# ------------------------------------------------------------- the saved template
# The generation prompt ends with the start delimiter and no newline, as the s1 harness's
# prompt does (it appends "<|im_start|>think"): the model writes the newline itself, as in
# training, so its thinking counts one token more than a template that includes it.
OPEN_SUFFIX = "{%- if add_generation_prompt %}{{- '" + THINK_OPEN + "' }}{%- endif %}"


def generation_prompt(tokenizer: Any) -> str:
    return tokenizer.apply_chat_template(messages_for("ping"), tokenize=False,
                                         add_generation_prompt=True)


def open_thinking_template(tokenizer: Any) -> str:
    """The tokenizer's template, changed so its generation prompt opens the thinking block.

    A ChatML template's generation prompt is the last thing it renders, so the start
    delimiter is appended after it, under the same add_generation_prompt condition. A template
    that already opens the block is returned unchanged. The result is checked by rendering.
    """
    template = tokenizer.chat_template
    if not isinstance(template, str) or not template:
        raise TemplateError("the tokenizer has no (single) chat template to extend")
    if generation_prompt(tokenizer).rstrip().endswith(THINK_OPEN):
        return template
    new = template + OPEN_SUFFIX
    old = tokenizer.chat_template
    try:
        tokenizer.chat_template = new
        prompt = generation_prompt(tokenizer)
        plain = tokenizer.apply_chat_template(messages_for("ping"), tokenize=False)
    finally:
        tokenizer.chat_template = old
    if not prompt.endswith(THINK_OPEN) or prompt.count(THINK_OPEN) != 1 or THINK_OPEN in plain:
        raise TemplateError("could not make the chat template open the thinking block")
    return new
