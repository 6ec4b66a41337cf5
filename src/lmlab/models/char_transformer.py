"""A small causal transformer over whole words, character by character (makemore's default).

The input is ``'.' + word`` padded with 0 and the target ``word + '.'`` padded with -1 (see
:func:`lmlab.data.names.word_sequences`); every position predicts the next character from the
characters before it. Pre-LayerNorm blocks (causal self-attention, then a 4x GELU MLP, each
added to the residual stream), learned positional embeddings, a final LayerNorm and a linear
read-out. With makemore's default ``n_layer=4, n_head=4, n_embd=64`` and ``block_size=16`` over
27 characters the model has 204,544 parameters:

>>> model = CharTransformer(vocab_size=27, block_size=16)
>>> sum(p.numel() for p in model.parameters())
204544
>>> model(torch.zeros(2, 16, dtype=torch.long)).shape
torch.Size([2, 16, 27])
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lmlab.errors import LmlabError

__all__ = ["Block", "CausalSelfAttention", "CharTransformer", "MLP", "sequence_loss"]


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t sees only positions <= t.

    Args:
        n_embd: width of the residual stream.
        n_head: number of heads; must divide ``n_embd``.
    """

    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        if n_embd % n_head:
            raise LmlabError(f"n_embd={n_embd} is not a multiple of n_head={n_head}; pick "
                             "n_head among the divisors of n_embd")
        self.n_head = n_head
        self.W_Q = nn.Linear(n_embd, n_embd)
        self.W_K = nn.Linear(n_embd, n_embd)
        self.W_V = nn.Linear(n_embd, n_embd)
        self.W_O = nn.Linear(n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        d_head = C // self.n_head
        q = self.W_Q(x).view(B, T, self.n_head, d_head).transpose(1, 2)  # (B, nh, T, hs)
        k = self.W_K(x).view(B, T, self.n_head, d_head).transpose(1, 2)  # (B, nh, T, hs)
        v = self.W_V(x).view(B, T, self.n_head, d_head).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side
        return self.W_O(y)  # (B, T, C)


class MLP(nn.Module):
    """Position-wise ``Linear(C, 4C) -> GELU -> Linear(4C, C)``."""

    def __init__(self, n_embd: int) -> None:
        super().__init__()
        self.W_in = nn.Linear(n_embd, 4 * n_embd)
        self.act = nn.GELU(approximate="tanh")
        self.W_out = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.W_out(self.act(self.W_in(x)))  # (B, T, C)


class Block(nn.Module):
    """A pre-LN transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))  # (B, T, C)
        return x + self.mlp(self.ln_2(x))  # (B, T, C)


class CharTransformer(nn.Module):
    """A causal character transformer: token + position embeddings, blocks, LayerNorm, read-out.

    Initialisation as in GPT-2 / nanoGPT: Linear and Embedding weights N(0, 0.02), biases zero,
    the two projections back into the residual stream (``attn.W_O``, ``mlp.W_out``) scaled by
    1/sqrt(2 n_layer); so the first predictions are nearly uniform (loss ~ ln(vocab_size)).

    Args:
        vocab_size: number of tokens (27 for '.' + a-z).
        block_size: the longest input sequence (longest word + 1 for names).
        n_layer: number of blocks.
        n_head: attention heads per block.
        n_embd: width of the residual stream.

    >>> model = CharTransformer(vocab_size=5, block_size=4, n_layer=1, n_head=2, n_embd=8)
    >>> model(torch.tensor([[0, 1, 2]])).shape
    torch.Size([1, 3, 5])
    """

    def __init__(self, vocab_size: int, block_size: int, n_layer: int = 4, n_head: int = 4,
                 n_embd: int = 64) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Linear | nn.Embedding):
                    module.weight.normal_(0.0, 0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    module.bias.zero_()
            for name, param in self.named_parameters():
                if name.endswith(("attn.W_O.weight", "mlp.W_out.weight")):
                    param.normal_(0.0, 0.02 / (2 * n_layer) ** 0.5)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Next-character logits at every position.

        Args:
            idx: (B, T) int64 character indices, T <= block_size.

        Returns:
            (B, T, vocab_size) logits; position t depends only on ``idx[:, :t+1]``.
        """
        B, T = idx.shape
        if T > self.block_size:
            raise LmlabError(f"sequence of length {T} is longer than block_size="
                             f"{self.block_size}; build the model with a larger block_size")
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, C)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        x = self.ln_f(x)  # (B, T, C)
        return self.lm_head(x)  # (B, T, vocab_size)


def sequence_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions whose target is not -1 (padding).

    Args:
        logits: (B, T, vocab_size).
        targets: (B, T) int64, -1 where there is nothing to predict.

    Returns:
        A scalar: the mean over the counted positions (NaN if there are none).

    >>> logits = torch.zeros(1, 3, 4)
    >>> round(sequence_loss(logits, torch.tensor([[2, 0, -1]])).item(), 4)  # ln(4)
    1.3863
    """
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-1)
