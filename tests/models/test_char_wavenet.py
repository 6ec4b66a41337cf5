"""The WaveNet-style hierarchical MLP: parameter count, shapes, its BatchNorm, the initial loss."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lmlab.data.names import Vocab, context_windows, read_words
from lmlab.errors import LmlabError
from lmlab.models.char_wavenet import BatchNorm, CharWaveNet, FlattenConsecutive

NAMES_2018 = Path(__file__).resolve().parents[3] / "shared" / "data" / "names_2018.txt"


def expected_params(vocab_size: int, n_embd: int, n_hidden: int, block_size: int) -> int:
    """Embedding, log2(block) levels of Linear (no bias) + BatchNorm (gamma, beta), read-out."""
    levels = int(math.log2(block_size))
    first = 2 * n_embd * n_hidden + 2 * n_hidden
    later = (levels - 1) * (2 * n_hidden * n_hidden + 2 * n_hidden)
    return vocab_size * n_embd + first + later + n_hidden * vocab_size + vocab_size


@pytest.mark.parametrize(("vocab_size", "n_embd", "n_hidden", "block_size"),
                         [(27, 24, 128, 8), (30, 10, 64, 16), (27, 5, 7, 2)])
def test_parameter_count(vocab_size: int, n_embd: int, n_hidden: int, block_size: int) -> None:
    model = CharWaveNet(vocab_size, n_embd=n_embd, n_hidden=n_hidden, block_size=block_size)
    assert sum(p.numel() for p in model.parameters()) == expected_params(
        vocab_size, n_embd, n_hidden, block_size)


def test_lecture_size_is_76579() -> None:
    assert expected_params(27, 24, 128, 8) == 76_579
    assert sum(p.numel() for p in CharWaveNet(27).parameters()) == 76_579


def test_shapes_through_the_levels() -> None:
    torch.manual_seed(0)
    model = CharWaveNet(27)
    shapes: list[tuple[int, ...]] = []
    for layer in model.levels:
        if isinstance(layer, BatchNorm):
            layer.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    logits = model(torch.randint(0, 27, (32, 8)))
    assert shapes == [(32, 4, 128), (32, 2, 128), (32, 128)]
    assert logits.shape == (32, 27)
    x = torch.arange(2 * 4 * 3.0).reshape(2, 4, 3)
    assert torch.equal(FlattenConsecutive(2)(x)[0, 1], torch.tensor([6.0, 7, 8, 9, 10, 11]))


@pytest.mark.parametrize("block_size", [0, 1, 3, 6, 12])
def test_block_size_must_be_a_power_of_two(block_size: int) -> None:
    with pytest.raises(LmlabError, match="power of 2"):
        CharWaveNet(27, block_size=block_size)


def test_wrong_context_length_is_a_clear_error() -> None:
    with pytest.raises(LmlabError, match=r"\(B, 8\)"):
        CharWaveNet(27)(torch.zeros(4, 3, dtype=torch.long))


def test_batchnorm_training_statistics_over_batch_and_time() -> None:
    g = torch.Generator().manual_seed(0)
    C = 5
    x = torch.randn(16, 4, C, generator=g) * torch.arange(1.0, C + 1) + torch.arange(C) * 3.0
    x[:, 0] += 10.0  # one time step far off: per-position statistics would differ
    bn = BatchNorm(C)
    y = bn(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y.mean((0, 1)), torch.zeros(C), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var((0, 1), correction=0), torch.ones(C), atol=1e-3, rtol=0)
    assert y[:, 0].mean() > 1.0  # the shifted step stays shifted: no per-time normalisation
    mean = x.mean((0, 1))
    var = x.var((0, 1), correction=0)
    torch.testing.assert_close(y, (x - mean) / torch.sqrt(var + 1e-5))


def test_batchnorm_inside_the_model_normalises_each_channel() -> None:
    torch.manual_seed(0)
    model = CharWaveNet(27)
    outs: list[torch.Tensor] = []
    model.levels[2].register_forward_hook(lambda m, i, o: outs.append(o.detach()))
    model(torch.randint(0, 27, (64, 8)))
    (h,) = outs  # (64, 4, 128), gamma = 1 and beta = 0 at init
    assert h.shape == (64, 4, 128)
    assert h.mean((0, 1)).abs().max() < 1e-5
    assert (h.var((0, 1), correction=0) - 1).abs().max() < 1e-3


def test_batchnorm_running_statistics_move_by_momentum() -> None:
    g = torch.Generator().manual_seed(1)
    bn = BatchNorm(3, momentum=0.1)
    x = torch.randn(8, 4, 3, generator=g) * 2 + 1
    bn(x)
    m = 0.1
    torch.testing.assert_close(bn.running_mean, m * x.mean((0, 1)))
    torch.testing.assert_close(bn.running_var, (1 - m) + m * x.var((0, 1), correction=1))
    before = (bn.running_mean.clone(), bn.running_var.clone())
    bn.eval()
    bn(x * 7)
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert CharWaveNet(27).levels[2].momentum == 0.001  # the spec's default


def test_eval_mode_uses_running_statistics() -> None:
    bn = BatchNorm(3).eval()
    bn.running_mean.copy_(torch.tensor([1.0, -2.0, 0.5]))
    bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
    x = torch.randn(6, 2, 3)
    expected = (x - bn.running_mean) / torch.sqrt(bn.running_var + 1e-5)
    torch.testing.assert_close(bn(x), expected)


def test_eval_output_does_not_depend_on_the_batch() -> None:
    torch.manual_seed(0)
    model = CharWaveNet(27)
    for _ in range(3):  # move the running statistics off their initial values
        model(torch.randint(0, 27, (32, 8)))
    model.eval()
    X = torch.randint(0, 27, (32, 8))
    with torch.no_grad():
        together = model(X)
        alone = torch.cat([model(X[i:i + 1]) for i in range(len(X))])
        other = model(torch.cat([X[:1], torch.randint(0, 27, (15, 8))]))
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together[:1], other[:1], atol=1e-5, rtol=1e-5)
    model.train()
    with pytest.raises(LmlabError, match="model.eval"):
        model(X[:1])  # one example: no batch statistics


def test_initial_loss_is_close_to_uniform_on_real_names() -> None:
    if not NAMES_2018.is_file():
        pytest.skip(f"the names file is not at {NAMES_2018}")
    words = read_words(NAMES_2018)
    vocab = Vocab.from_words(words)
    assert vocab.size == 27
    X, Y = context_windows(words[::8], vocab, block_size=8)
    g = torch.Generator().manual_seed(0)
    ix = torch.randint(0, len(X), (4096,), generator=g)
    torch.manual_seed(0)
    model = CharWaveNet(vocab.size)
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(X[ix]), Y[ix]).item()
    assert abs(loss - math.log(27)) < 0.15, loss
