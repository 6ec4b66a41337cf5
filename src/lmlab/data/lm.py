"""Causal language-model batches: tokenised texts, dynamically padded, padding never scored.

:func:`tokenize_texts` turns texts into token-id lists (truncated, unpadded);
:class:`CausalLMCollator` pads a batch to its longest sequence and builds ``labels`` with
``-100`` on padding positions, decided by position rather than by token id, so that real
end-of-text tokens keep their labels when the pad token is the eos token.

>>> CausalLMCollator(pad_token_id=0)([[5, 6, 7], [8]])["labels"].tolist()
[[5, 6, 7], [8, -100, -100]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmlab.errors import LmlabError

if TYPE_CHECKING:
    import torch

__all__ = ["CausalLMCollator", "tokenize_texts"]

# The label value that cross-entropy losses skip (the default of PyTorch and Hugging Face).
_IGNORE_INDEX = -100


def tokenize_texts(texts: Sequence[str], tokenizer: Any, max_length: int) -> list[list[int]]:
    """Token ids of each text, truncated to ``max_length``, without padding.

    Args:
        texts: the texts.
        tokenizer: a Hugging Face tokenizer (called as
            ``tokenizer(text, truncation=True, max_length=max_length)``).
        max_length: the most tokens kept per text.

    Returns:
        One list of token ids per text; texts that give no tokens are dropped.

    Raises:
        LmlabError: ``max_length < 1``.

    >>> def tokenizer(text, truncation, max_length):  # a stand-in: one id per word
    ...     return {"input_ids": [len(w) for w in text.split()][:max_length]}
    >>> tokenize_texts(["a bb ccc", "", "dddd"], tokenizer, max_length=2)
    [[1, 2], [4]]
    """
    if max_length < 1:
        raise LmlabError(f"max_length must be at least 1, got {max_length}")
    out: list[list[int]] = []
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
        if len(ids):
            out.append([int(i) for i in ids])
    return out


@dataclass(frozen=True)
class CausalLMCollator:
    """Right-pads a batch of token-id sequences for causal-LM training.

    Args:
        pad_token_id: the id written into padding positions of ``input_ids``.

    Calling it on a batch returns ``input_ids`` and ``attention_mask`` of shape (B, T) with T
    the longest sequence of the batch, and ``labels``: the inputs with ``-100`` on padding
    positions (the model shifts labels itself).

    >>> out = CausalLMCollator(pad_token_id=9)([[1, 9], [2]])
    >>> out["input_ids"].tolist(), out["attention_mask"].tolist(), out["labels"].tolist()
    ([[1, 9], [2, 9]], [[1, 1], [1, 0]], [[1, 9], [2, -100]])
    """

    pad_token_id: int

    def __post_init__(self) -> None:
        if isinstance(self.pad_token_id, bool) or not isinstance(self.pad_token_id, int):
            raise LmlabError(
                f"pad_token_id must be an integer token id, got {self.pad_token_id!r}; "
                "if the tokenizer has no pad token, use its eos token id"
            )

    def __call__(self, batch: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        import torch

        if len(batch) == 0:
            raise LmlabError("cannot collate an empty batch; check the dataset and batch size")
        lengths = [len(seq) for seq in batch]
        n_ctx = max(lengths)
        if n_ctx == 0:
            raise LmlabError("every sequence in the batch is empty; drop empty texts first")
        input_ids = torch.full((len(batch), n_ctx), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), n_ctx), dtype=torch.long)  # (B, T)
        for row, (seq, length) in enumerate(zip(batch, lengths, strict=True)):
            if length:
                input_ids[row, :length] = torch.as_tensor(list(seq), dtype=torch.long)
                attention_mask[row, :length] = 1
        labels = input_ids.masked_fill(attention_mask == 0, _IGNORE_INDEX)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
