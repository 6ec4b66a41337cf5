"""A WaveNet-style hierarchical MLP over characters (makemore lecture, part 5).

Instead of squashing the whole context into one hidden layer at once, neighbouring characters
are fused in pairs, then pairs of pairs, and so on: a block of 8 characters is merged in
log2(8) = 3 levels, each ``FlattenConsecutive(2) -> Linear (no bias) -> BatchNorm -> tanh``,
and a last Linear reads out the logits of the next character.

With ``n_embd=24, n_hidden=128, block_size=8`` over 27 characters the model has 76,579
parameters, as in the lecture:

>>> model = CharWaveNet(vocab_size=27)
>>> sum(p.numel() for p in model.parameters())
76579
>>> model(torch.zeros(4, 8, dtype=torch.long)).shape
torch.Size([4, 27])
"""

from __future__ import annotations

import torch
from torch import nn

from lmlab.errors import LmlabError

__all__ = ["BatchNorm", "CharWaveNet", "FlattenConsecutive"]

TANH_GAIN = 5 / 3
"""Kaiming gain for tanh: keeps the pre-activations at unit scale through a tanh stack."""


class FlattenConsecutive(nn.Module):
    """Concatenate every ``n`` consecutive time steps: (B, T, C) -> (B, T/n, n*C).

    When one time step is left the time dimension is dropped: (B, n, C) -> (B, n*C).

    Args:
        n: how many consecutive steps to fuse; T must be a multiple of it.

    >>> FlattenConsecutive(2)(torch.zeros(5, 8, 3)).shape
    torch.Size([5, 4, 6])
    >>> FlattenConsecutive(2)(torch.zeros(5, 2, 3)).shape
    torch.Size([5, 6])
    """

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        x = x.reshape(B, T // self.n, C * self.n)  # (B, T/n, n*C)
        if x.shape[1] == 1:
            x = x.squeeze(1)  # (B, n*C)
        return x

    def extra_repr(self) -> str:
        return f"n={self.n}"


class BatchNorm(nn.Module):
    """Batch normalisation over the last dimension of (B, C) or (B, T, C) inputs.

    In training mode the statistics are taken over every dimension but the last (over (0, 1)
    for a (B, T, C) input), the input is normalised with the biased variance and the running
    mean and (unbiased) variance move towards the batch's by ``momentum``. In eval mode the
    running statistics are used, so the output of one example does not depend on the batch.
    ``torch.nn.BatchNorm1d`` normalises dimension 1 of a (B, C, T) input instead.

    Args:
        dim: the number of channels C.
        eps: added to the variance before the square root.
        momentum: the weight of the current batch in the running statistics.

    >>> bn = BatchNorm(3)
    >>> y = bn(torch.randn(16, 4, 3) * 5 + 2)
    >>> bool(y.mean((0, 1)).abs().max() < 1e-5), bn.running_mean.shape
    (True, torch.Size([3]))
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.001) -> None:
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(dim))  # gamma
        self.bias = nn.Parameter(torch.zeros(dim))  # beta
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            dims = tuple(range(x.ndim - 1))  # (0,) for (B, C); (0, 1) for (B, T, C)
            n = x.numel() // x.shape[-1]
            if n < 2:
                raise LmlabError("BatchNorm in training mode needs more than one value per "
                                 "channel (got a batch of 1); call model.eval() first")
            var, mean = torch.var_mean(x, dim=dims, correction=0)  # (C,), (C,)
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * (n / (n - 1)), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - mean) * torch.rsqrt(var + self.eps)  # (..., C)
        return x_hat * self.weight + self.bias

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, momentum={self.momentum}"


class CharWaveNet(nn.Module):
    """Embedding, then log2(block_size) levels of pairwise fusion, then a linear read-out.

    Each level is ``FlattenConsecutive(2) -> Linear (no bias) -> BatchNorm -> tanh``. The hidden
    Linear weights are drawn as ``randn * gain / sqrt(fan_in)`` (Kaiming for tanh with the
    default gain 5/3; the lecture's part-5 code uses gain 1, which BatchNorm makes equivalent
    in the forward pass but not in the effective learning rate); the last layer is the same with
    gain 1, scaled by 0.1 so the first predictions are nearly uniform, and its bias is zero.

    Args:
        vocab_size: number of tokens (27 for '.' + a-z).
        n_embd: embedding size per character.
        n_hidden: width of every hidden level.
        block_size: context length; a power of two, at least 2.
        bn_momentum: momentum of the BatchNorm running statistics.
        gain: scale of the hidden Linear weights relative to 1/sqrt(fan_in).

    Raises:
        LmlabError: if ``block_size`` is not a power of two >= 2.

    >>> model = CharWaveNet(vocab_size=5, n_embd=2, n_hidden=4, block_size=4)
    >>> model.n_levels, [type(m).__name__ for m in model.levels[:4]]
    (2, ['FlattenConsecutive', 'Linear', 'BatchNorm', 'Tanh'])
    >>> model.eval()(torch.zeros(1, 4, dtype=torch.long)).shape
    torch.Size([1, 5])
    """

    def __init__(self, vocab_size: int, n_embd: int = 24, n_hidden: int = 128,
                 block_size: int = 8, bn_momentum: float = 0.001,
                 gain: float = TANH_GAIN) -> None:
        super().__init__()
        if block_size < 2 or block_size & (block_size - 1):
            raise LmlabError(f"CharWaveNet needs block_size to be a power of 2 >= 2 (got "
                             f"{block_size}); use 2, 4, 8, 16, ...")
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.n_levels = block_size.bit_length() - 1  # log2(block_size)
        self.wte = nn.Embedding(vocab_size, n_embd)
        layers: list[nn.Module] = []
        fan_in = n_embd
        for _ in range(self.n_levels):
            layers += [FlattenConsecutive(2), nn.Linear(2 * fan_in, n_hidden, bias=False),
                       BatchNorm(n_hidden, eps=1e-5, momentum=bn_momentum), nn.Tanh()]
            fan_in = n_hidden
        self.levels = nn.Sequential(*layers)
        self.lm_head = nn.Linear(n_hidden, vocab_size)
        with torch.no_grad():
            nn.init.normal_(self.wte.weight)  # randn, as torch's default
            for layer in self.levels:
                if isinstance(layer, nn.Linear):
                    layer.weight.normal_(0.0, gain / layer.in_features**0.5)
            self.lm_head.weight.normal_(0.0, 0.1 / n_hidden**0.5)  # less confident at first
            self.lm_head.bias.zero_()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits of the next character for every context.

        Args:
            idx: (B, block_size) int64 character indices.

        Returns:
            (B, vocab_size) logits.
        """
        if idx.ndim != 2 or idx.shape[1] != self.block_size:
            raise LmlabError(f"CharWaveNet expects contexts of shape (B, {self.block_size}), "
                             f"got {tuple(idx.shape)}")
        x = self.wte(idx)  # (B, T, n_embd)
        x = self.levels(x)  # (B, n_hidden): T halves at each level until it is dropped
        return self.lm_head(x)  # (B, vocab_size)
