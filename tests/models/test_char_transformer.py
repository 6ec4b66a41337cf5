"""The character transformer: parameter count, shapes, causality, the padded sequence loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from lmlab.data.names import Vocab, word_sequences
from lmlab.errors import LmlabError
from lmlab.models.char_transformer import CharTransformer, sequence_loss


def expected_params(vocab_size: int, block_size: int, n_layer: int, n_embd: int) -> int:
    """Token and position embeddings, blocks, final LayerNorm, read-out without bias."""
    C = n_embd
    attn = 4 * (C * C + C)  # W_Q, W_K, W_V, W_O with biases
    mlp = (C * 4 * C + 4 * C) + (4 * C * C + C)
    block = 2 * (2 * C) + attn + mlp  # two LayerNorms
    return vocab_size * C + block_size * C + n_layer * block + 2 * C + C * vocab_size


@pytest.mark.parametrize(("vocab_size", "block_size", "n_layer", "n_head", "n_embd"),
                         [(27, 16, 4, 4, 64), (30, 9, 2, 2, 16)])
def test_parameter_count(vocab_size: int, block_size: int, n_layer: int, n_head: int,
                         n_embd: int) -> None:
    model = CharTransformer(vocab_size, block_size, n_layer=n_layer, n_head=n_head,
                            n_embd=n_embd)
    assert sum(p.numel() for p in model.parameters()) == expected_params(
        vocab_size, block_size, n_layer, n_embd)


def test_makemore_default_size() -> None:
    assert expected_params(27, 16, 4, 64) == 204_544
    assert sum(p.numel() for p in CharTransformer(27, 16).parameters()) == 204_544


def test_shapes_and_length_check() -> None:
    torch.manual_seed(0)
    model = CharTransformer(27, block_size=16, n_layer=2)
    assert model(torch.randint(0, 27, (3, 16))).shape == (3, 16, 27)
    assert model(torch.randint(0, 27, (3, 5))).shape == (3, 5, 27)
    with pytest.raises(LmlabError, match="block_size=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(LmlabError, match="n_head"):
        CharTransformer(27, 16, n_head=3, n_embd=64)


def test_causal_later_tokens_do_not_change_earlier_logits() -> None:
    torch.manual_seed(0)
    model = CharTransformer(27, block_size=16, n_layer=2).eval()
    X = torch.randint(1, 27, (4, 16))
    X2 = X.clone()
    X2[:, 9:] = (X2[:, 9:] + 5) % 27
    with torch.no_grad():
        a, b = model(X), model(X2)
    torch.testing.assert_close(a[:, :9], b[:, :9], atol=1e-6, rtol=0)
    assert (a[:, 9:] - b[:, 9:]).abs().amax(dim=-1).min() > 1e-4  # every later position moves


def test_sequence_loss_ignores_padding() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, 27, generator=g)
    Y = torch.randint(0, 27, (5, 7), generator=g)
    Y[:, 4:] = -1
    Y[0, 1:] = -1
    loss = sequence_loss(logits, Y)
    torch.testing.assert_close(
        loss, F.cross_entropy(logits.view(-1, 27), Y.view(-1), ignore_index=-1))
    keep = Y >= 0
    torch.testing.assert_close(loss, F.cross_entropy(logits[keep], Y[keep]))  # sum / count
    logits2 = logits.clone()
    logits2[~keep] = 100 * torch.randn(int((~keep).sum()), 27, generator=g)
    assert sequence_loss(logits2, Y) == loss


def test_initial_loss_is_near_uniform_on_word_sequences() -> None:
    words = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "charlotte", "amelia"]
    vocab = Vocab.from_words(words)
    X, Y = word_sequences(words, vocab)
    torch.manual_seed(0)
    model = CharTransformer(vocab.size, block_size=X.shape[1])
    with torch.no_grad():
        loss = sequence_loss(model(X), Y).item()
    assert abs(loss - math.log(vocab.size)) < 0.1, loss
