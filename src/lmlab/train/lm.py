"""Causal-LM loss and perplexity, with padding excluded.

The loss of a batch is the sum of next-token cross-entropies over positions whose label is not
-100 (padding), and perplexity = exp(total loss / total scored tokens) over a whole split — the
mean per *token*, not a mean of per-batch means.

>>> import torch
>>> class Uniform(torch.nn.Module):            # predicts every token with probability 1/V
...     def forward(self, input_ids, attention_mask=None):
...         return type("Out", (), {"logits": torch.zeros(*input_ids.shape, 7)})()
>>> batch = {"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": torch.ones(1, 3),
...          "labels": torch.tensor([[1, 2, 3]])}
>>> loss, n = token_loss_sum(Uniform(), batch)
>>> n, round(float(loss / n), 4), round(torch.log(torch.tensor(7.0)).item(), 4)
(2, 1.9459, 1.9459)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lmlab.train.core import batch_to_device
from lmlab.train.distributed import DistContext, all_reduce_sum

__all__ = ["token_loss_sum", "loss_sum", "scored_tokens", "evaluate_lm", "LMEval"]


def token_loss_sum(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy of a batch and the number of scored tokens (counted
    from ``batch["labels"]``: a read from the device when they are on a GPU; a loop counts
    them on the host with :func:`scored_tokens` and calls :func:`loss_sum`)."""
    return loss_sum(model, batch), scored_tokens(batch["labels"])


def loss_sum(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy of a batch, padding (label -100) excluded; nothing is
    read back from the device."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # position t predicts token t+1: shift the labels, not the (B, T, V) logits, which would
    # copy the largest tensor of the step (and its gradient)
    labels = F.pad(batch["labels"][:, 1:], (0, 1), value=-100)  # (B, T)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                           ignore_index=-100, reduction="sum")


def scored_tokens(labels: torch.Tensor) -> int:
    """How many next-token predictions of a ``(B, T)`` label batch are scored (label -100 is
    padding; the first position predicts nothing)."""
    return int((labels[:, 1:] != -100).sum())


@dataclass(frozen=True)
class LMEval:
    """Mean token loss, its perplexity, and the number of tokens scored."""

    loss: float
    perplexity: float
    tokens: int


@torch.no_grad()
def evaluate_lm(model: Any, examples: Sequence[Sequence[int]],
                collate: Callable[[Sequence[Sequence[int]]], dict[str, torch.Tensor]], *,
                batch_size: int = 8, device: Any = None,
                ctx: DistContext | None = None) -> LMEval:
    """Loss and perplexity of ``model`` on tokenised ``examples`` (padding never scored).

    Under data parallelism each rank scores a strided share and the sums are combined.
    """
    ctx = ctx or DistContext()
    was_training = model.training
    model.eval()
    summed: torch.Tensor | float = 0.0  # on the device: read once, after the last batch
    count = 0
    mine = list(examples)[ctx.rank :: ctx.world_size]
    for start in range(0, len(mine), batch_size):
        on_host = collate(mine[start : start + batch_size])
        count += scored_tokens(on_host["labels"])
        batch = batch_to_device(on_host, device)
        summed = summed + loss_sum(model, batch).double()
    total, count_f = all_reduce_sum([float(summed), float(count)], ctx)
    model.train(was_training)
    if count_f == 0:
        return LMEval(float("nan"), float("nan"), 0)
    mean = total / count_f
    return LMEval(mean, math.exp(mean) if mean < 700 else float("inf"), int(count_f))
