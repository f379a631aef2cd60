"""s1 training-text formatting and loss masking, shared by the demo trainer and the SFT recipe.

The s1 recipe: the assistant turn is "<|im_start|>think\\n" + thinking + "\\n<|im_start|>answer\\n"
+ attempt, closed by the end-of-turn token; the loss covers only that assistant part (labels
are -100 over the system and user turns and over padding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from server.budget.formats import FORMATS

IGNORE = -100
# The s1 delimiters (server.budget.formats is their one definition), each on a line of its own.
THINK_START = FORMATS["s1"].start + "\n"
THINK_END = FORMATS["s1"].end + "\n"
ASSISTANT_START = "<|im_start|>assistant\n"
END_OF_TURN = "<|im_end|>"


def assistant_text(thinking: str, attempt: str) -> str:
    """The s1 assistant content (without the end-of-turn token)."""
    return THINK_START + thinking + "\n" + THINK_END + attempt


def prompt_text(tokenizer: Any, question: str, system: str | None = None) -> str:
    """System and user turns from the tokenizer's chat template, then the assistant header.

    The generation prompt of the template is not used, so the same text comes out whether or
    not the template opens the thinking block itself (the s1 recipe puts the think delimiter
    in the assistant content).
    """
    messages = [{"role": "user", "content": question}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    return text + ASSISTANT_START


def encode_example(
    tokenizer: Any, question: str, thinking: str, attempt: str, max_len: int | None = None
) -> dict[str, list[int]]:
    """input_ids and labels for one example; labels are -100 outside the assistant turn."""
    prompt = tokenizer.encode(prompt_text(tokenizer, question), add_special_tokens=False)
    answer = tokenizer.encode(assistant_text(thinking, attempt) + END_OF_TURN,
                              add_special_tokens=False)
    ids = prompt + answer
    labels = [IGNORE] * len(prompt) + answer
    if max_len is not None:
        ids, labels = ids[:max_len], labels[:max_len]
    return {"input_ids": ids, "labels": labels}


def collate(batch: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding is masked out of attention and loss."""
    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[i, :n] = torch.tensor(b["input_ids"])
        labels[i, :n] = torch.tensor(b["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
