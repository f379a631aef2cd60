"""Loss normalisation of the SFT recipe: s1's per-example mean, or the per-token mean.

Why this matters: s1 trained with one example per device and no gradient accumulation, so
each device's loss is the mean over that example's own loss tokens and the data-parallel
average makes every example weigh the same, however long its trace. transformers' Trainer
instead normalises by the loss tokens of the whole global batch (``num_items_in_batch``),
so an example with a 20,000-token trace weighs 100 times one with 200 tokens. The two give
different gradients, hence different models.

- ``per_example`` (s1, the recipe's default): loss = mean over the examples of the step of
  (sum of the example's token losses / its loss tokens). Computed per micro-batch as the mean
  over its examples; the Trainer divides by the accumulation steps and data parallelism
  averages over devices, so the step's loss is the mean over the global batch as long as the
  micro-batches hold equal numbers of examples (always, except a short last batch of an
  epoch). With packing (one row holding several examples), examples are told apart by
  ``position_ids`` restarting at 0.
- ``per_token``: the Trainer's own normalisation over all loss tokens of the global batch.

    loss = per_example_loss(logits, labels)          # logits [B, T, V], labels [B, T]
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from training.data import IGNORE


def example_ids(labels: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Index of the example each position belongs to, [B, T], numbered across the batch.

    One example per row unless ``position_ids`` is given (packing): then a new example starts
    wherever the position restarts at 0.
    """
    rows, width = labels.shape
    if position_ids is None:
        return torch.arange(rows, device=labels.device).unsqueeze(1).expand(rows, width)
    starts = (position_ids == 0).long()
    starts[:, 0] = 1  # a row always starts an example
    return torch.cumsum(starts.flatten(), 0).view(rows, width) - 1


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor,
                     position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over examples of each example's mean next-token loss (labels -100 are ignored).

    The usual causal shift: the logits at position t predict the label at t + 1. Examples
    without any loss token do not count. Returns a scalar (0 with grad when nothing counts).
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} "
                         "disagree on batch and length")
    ids = example_ids(labels, position_ids)[:, 1:].reshape(-1)
    target = labels[:, 1:].reshape(-1)
    token_loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                 target, ignore_index=IGNORE, reduction="none")
    valid = (target != IGNORE).to(token_loss.dtype)
    n = int(ids.max().item()) + 1 if ids.numel() else 0
    sums = torch.zeros(n, dtype=token_loss.dtype, device=token_loss.device)
    counts = torch.zeros(n, dtype=token_loss.dtype, device=token_loss.device)
    sums = sums.index_add(0, ids, token_loss * valid)
    counts = counts.index_add(0, ids, valid)
    present = counts > 0
    if not bool(present.any()):
        return logits.sum() * 0.0
    return (sums[present] / counts[present]).mean()


def per_example_trainer_class() -> type:
    """A transformers ``Trainer`` whose loss is :func:`per_example_loss` (built lazily, so
    that importing this module does not import transformers)."""
    from transformers import Trainer

    class PerExampleTrainer(Trainer):
        """Trainer with s1's per-example loss normalisation (see the module doc)."""

        # a per-micro-batch mean: the Trainer divides it by the accumulation steps
        loss_is_scaled_for_ga = False

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            inputs = dict(inputs)
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            loss = per_example_loss(outputs.logits, labels, inputs.get("position_ids"))
            return (loss, outputs) if return_outputs else loss

    return PerExampleTrainer
