"""Causal-LM batches: tokenisation of real texts and a collator that never scores padding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from lmlab.data import CausalLMCollator, format_records, load_ir_triplets, tokenize_texts
from lmlab.errors import LmlabError


@pytest.fixture(scope="module")
def texts(ir_path: Path) -> list[str]:
    return format_records(load_ir_triplets(ir_path)[:16])


def test_tokenize_truncates_without_padding(texts: list[str], tokenizer: Any) -> None:
    full = tokenize_texts(texts, tokenizer, max_length=10_000)
    short = tokenize_texts(texts, tokenizer, max_length=20)
    assert len(full) == len(short) == len(texts)
    assert all(len(s) == min(len(f), 20) for f, s in zip(full, short, strict=True))
    assert all(s == f[: len(s)] for f, s in zip(full, short, strict=True))
    assert len({len(f) for f in full}) > 1, "no padding: lengths differ"
    assert tokenizer.unk_token_id not in full[0]
    assert tokenizer.decode(full[0]).startswith("Context :")


def test_tokenize_drops_empty_texts(tokenizer: Any) -> None:
    assert tokenize_texts(["", "Question", "   "], tokenizer, 8) == [
        [tokenizer.convert_tokens_to_ids("Question")]
    ]
    with pytest.raises(LmlabError, match="max_length"):
        tokenize_texts(["x"], tokenizer, 0)


def test_collator_pads_to_the_longest_and_masks_padding(texts: list[str], tokenizer: Any) -> None:
    ids = tokenize_texts(texts[:4], tokenizer, max_length=64)
    collate = CausalLMCollator(pad_token_id=tokenizer.pad_token_id)
    out = collate(ids)
    longest = max(map(len, ids))
    assert set(out) == {"input_ids", "attention_mask", "labels"}
    for tensor in out.values():
        assert tensor.shape == (4, longest) and tensor.dtype == torch.long
    for row, seq in enumerate(ids):
        n = len(seq)
        assert out["input_ids"][row, :n].tolist() == seq
        assert out["attention_mask"][row].tolist() == [1] * n + [0] * (longest - n)
        assert out["labels"][row].tolist() == seq + [-100] * (longest - n)
        assert (out["input_ids"][row, n:] == tokenizer.pad_token_id).all()
    shorter = collate([ids[0][:5], ids[1][:3]])
    assert shorter["input_ids"].shape == (2, 5), "dynamic padding: per batch, not global"


def test_real_eos_tokens_keep_their_labels_when_pad_is_eos(tokenizer: Any) -> None:
    eos = tokenizer.eos_token_id
    assert eos == tokenizer.pad_token_id
    seqs = [tokenizer("Question : why ?")["input_ids"] + [eos], [eos, 7]]
    out = CausalLMCollator(pad_token_id=tokenizer.pad_token_id)(seqs)
    assert out["labels"][0].tolist() == seqs[0]
    assert out["labels"][1].tolist() == [eos, 7] + [-100] * (len(seqs[0]) - 2)
    assert out["attention_mask"][1, :2].tolist() == [1, 1]


def test_collator_loss_ignores_padding(tokenizer: Any) -> None:
    """Cross-entropy over a padded batch equals the loss over the real tokens alone."""
    seqs = [[3, 4, 5, 6], [7, 8]]
    out = CausalLMCollator(pad_token_id=0)(seqs)
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 11)
    padded = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 11), out["labels"][:, 1:].reshape(-1)
    )
    targets = torch.tensor([4, 5, 6, 8])
    rows = torch.stack([logits[0, 0], logits[0, 1], logits[0, 2], logits[1, 0]])
    assert torch.allclose(padded, torch.nn.functional.cross_entropy(rows, targets))


def test_collator_errors() -> None:
    with pytest.raises(LmlabError, match="pad_token_id"):
        CausalLMCollator(pad_token_id=None)  # type: ignore[arg-type]
    with pytest.raises(LmlabError, match="empty batch"):
        CausalLMCollator(pad_token_id=0)([])
    with pytest.raises(LmlabError, match="empty"):
        CausalLMCollator(pad_token_id=0)([[], []])
    assert CausalLMCollator(pad_token_id=0)([[1], []])["labels"].tolist() == [[1], [-100]]
