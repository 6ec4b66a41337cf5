"""The 2-layer rotary attention-only transformer of Song, Xu, Zhong (PNAS 2025), key for key.

Token embedding (no position embedding), ``num_layers`` pre-LayerNorm blocks
``x + Dropout(Attn(LN_1(x)))`` with causal single-head attention whose queries and keys are
rotated LLaMA-style (consecutive coordinate pairs as complex numbers times
``exp(i·pos·θ_i)``, θ_i = theta^(−2i/d_head)), and an untied linear read-out. The MLP sub-block
is off by default, but ``ln_2`` and the final ``ln_f`` are instantiated (and ``ln_f`` is not
applied), as in the authors' code, so the state-dict keys are theirs:
``embed.embed.weight``, ``h.{i}.ln_1.*``, ``h.{i}.mha.W_{q,k,v,o}.*``, ``h.{i}.ln_2.*``,
``ln_f.*``, ``fc.*``. The rotary cos/sin tables are non-persistent buffers (not in the state
dict). With the defaults (V = d = T = 64, 2 layers) the model has 42,176 parameters:

>>> model = TFModel(RotaryConfig())
>>> sum(p.numel() for p in model.parameters())
42176
>>> model(torch.zeros(2, 64, dtype=torch.long)).shape
torch.Size([2, 64, 64])
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lmlab.errors import LmlabError

__all__ = [
    "Embedding",
    "MultiHeadAttention",
    "RotaryConfig",
    "TFBlock",
    "TFModel",
    "apply_rotary",
    "load_checkpoint",
    "load_state",
    "rotary_tables",
]


@dataclass(frozen=True)
class RotaryConfig:
    """The architecture (the authors' config keys and defaults of the runs).

    Attributes:
        vocab_size: V, tokens (64 in the runs).
        d_model: d, width of the residual stream.
        num_layers: blocks.
        num_heads: heads per block (d_head = d_model / num_heads).
        max_seq_len: n_ctx, the longest input and the size of the rotary tables.
        dropout: dropout on each block's attention output (training only).
        mlp: add the ReLU MLP sub-block ``x + Dropout(MLP(LN_2(x)))`` (off in the runs).
        ff_dim: the MLP width.
        rotary_theta: the rotary base (10000).

    >>> RotaryConfig().d_head
    64
    """

    vocab_size: int = 64
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 1
    max_seq_len: int = 64
    dropout: float = 0.1
    mlp: bool = False
    ff_dim: int = 256
    rotary_theta: float = 10000.0

    @property
    def d_head(self) -> int:
        """Width of one head."""
        return self.d_model // self.num_heads

    def validate(self) -> None:
        """Raise LmlabError naming the field that is out of range."""
        for name in ("vocab_size", "d_model", "num_layers", "num_heads", "max_seq_len",
                     "ff_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LmlabError(f"model.{name} must be a positive integer (got {value!r})")
        if self.d_model % self.num_heads or self.d_head % 2:
            raise LmlabError(f"model.d_model={self.d_model} must be num_heads={self.num_heads} "
                             "times an even head width (rotary pairs coordinates)")
        if not 0.0 <= self.dropout < 1.0:
            raise LmlabError(f"model.dropout must be in [0, 1) (got {self.dropout})")
        if not self.rotary_theta > 0:
            raise LmlabError(f"model.rotary_theta must be positive (got {self.rotary_theta})")

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any]) -> RotaryConfig:
        """The architecture of a run from its ``config.json`` (authors' or lmlab's).

        Unknown keys are ignored; a missing ``rotary_theta`` (older runs) means 10000.

        >>> RotaryConfig.from_run_config({"vocab_size": 64, "num_layers": 1, "lr": 1e-3})
        ... # doctest: +ELLIPSIS
        RotaryConfig(vocab_size=64, d_model=64, num_layers=1, ...)
        """
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in config.items() if k in names and v is not None}
        return cls(**kwargs)


def rotary_tables(d_head: int, n_ctx: int, theta: float = 10000.0,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of ``pos · θ_i`` for pos = 0..n_ctx−1 and θ_i = theta^(−2i/d_head).

    Args:
        d_head: The (even) width of the rotated vectors.
        n_ctx: The number of positions.
        theta: The rotary base.

    Returns:
        ``(cos, sin)``, each float32 of shape (n_ctx, d_head / 2).

    >>> cos, sin = rotary_tables(4, 3)
    >>> cos.shape, float(sin[1, 0])  # position 1, θ_0 = 1 rad
    (torch.Size([3, 2]), 0.8414709568023682)
    """
    inv = theta ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)  # (d_head/2,)
    angles = torch.arange(n_ctx, dtype=torch.float64)[:, None] * inv[None, :]  # (T, d_head/2)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs (x_2i, x_2i+1) of every position by its angle.

    As complex numbers, ``(x_2i + i·x_2i+1) · exp(i·pos·θ_i)``; so the dot product of a rotated
    query at position m with a rotated key at position n depends on n − m only.

    Args:
        x: (..., T, d_head).
        cos: (T, d_head / 2) from :func:`rotary_tables` (first T rows).
        sin: (T, d_head / 2).

    Returns:
        The rotated tensor, same shape as ``x``.

    >>> cos, sin = rotary_tables(2, 2)
    >>> apply_rotary(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), cos, sin)  # position 1: by 1 rad
    tensor([[1.0000, 0.0000],
            [0.5403, 0.8415]])
    """
    x_even, x_odd = x[..., 0::2], x[..., 1::2]  # (..., T, d_head/2)
    out_even = x_even * cos - x_odd * sin
    out_odd = x_even * sin + x_odd * cos
    return torch.stack([out_even, out_odd], dim=-1).flatten(-2)  # (..., T, d_head)


class Embedding(nn.Module):
    """Token embedding, wrapped so that its key is ``embed.embed.weight`` (N(0, 1) init)."""

    def __init__(self, vocab_size: int, d_model: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embed(tokens)  # (B, T, d)


class MultiHeadAttention(nn.Module):
    """Causal multi-head attention with rotary queries and keys; all four maps with bias."""

    def __init__(self, cfg: RotaryConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.num_heads = cfg.num_heads
        self.d_head = cfg.d_head
        self.W_q = nn.Linear(d, d)
        self.W_k = nn.Linear(d, d)
        self.W_v = nn.Linear(d, d)
        self.W_o = nn.Linear(d, d)
        cos, sin = rotary_tables(cfg.d_head, cfg.max_seq_len, cfg.rotary_theta)
        self.rotary_cos: torch.Tensor
        self.rotary_sin: torch.Tensor
        self.register_buffer("rotary_cos", cos, persistent=False)
        self.register_buffer("rotary_sin", sin, persistent=False)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rotated queries and keys and the values, each (B, H, T, d_head)."""
        B, T, _ = x.shape
        q = self.W_q(x).view(B, T, self.num_heads, self.d_head).transpose(1, 2)  # (B, H, T, dh)
        k = self.W_k(x).view(B, T, self.num_heads, self.d_head).transpose(1, 2)  # (B, H, T, dh)
        v = self.W_v(x).view(B, T, self.num_heads, self.d_head).transpose(1, 2)  # (B, H, T, dh)
        cos, sin = self.rotary_cos[:T], self.rotary_sin[:T]
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-softmax causal scores ``Rot(q)·Rot(k) / sqrt(d_head)`` (masked with −inf).

        Args:
            x: (B, T, d) the (normalised) residual stream.

        Returns:
            (B, num_heads, T_query, T_key).
        """
        T = x.shape[1]
        q, k, _ = self._qkv(x)
        att = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)  # (B, H, T, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        return att.masked_fill(~causal, float("-inf"))

    def pattern(self, x: torch.Tensor) -> torch.Tensor:
        """The attention pattern softmax(scores), (B, num_heads, T_query, T_key)."""
        return F.softmax(self.scores(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self._qkv(x)
        # Same as softmax(self.scores(x)) @ v, fused (about 10% faster per training step).
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, dh)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, d): heads side by side
        return self.W_o(y)  # (B, T, d)


class TFBlock(nn.Module):
    """``x + Dropout(Attn(LN_1(x)))``, then (if ``mlp``) ``x + Dropout(MLP(LN_2(x)))``."""

    def __init__(self, cfg: RotaryConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.ln_1 = nn.LayerNorm(d)
        self.mha = MultiHeadAttention(cfg)
        self.ln_2 = nn.LayerNorm(d)  # in the state dict even without the MLP
        self.feed_forward: nn.Module | None = (
            nn.Sequential(nn.Linear(d, cfg.ff_dim), nn.ReLU(), nn.Linear(cfg.ff_dim, d))
            if cfg.mlp else None
        )
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.mha(self.ln_1(x)))  # (B, T, d)
        if self.feed_forward is not None:
            x = x + self.dropout(self.feed_forward(self.ln_2(x)))  # (B, T, d)
        return x


class TFModel(nn.Module):
    """The rotary transformer: ``fc(blocks(embed(tokens)))`` (``ln_f`` exists, unused).

    Args:
        cfg: The architecture.

    Raises:
        LmlabError: If the configuration is invalid.

    >>> model = TFModel(RotaryConfig(num_layers=1)).eval()
    >>> logits = model(torch.tensor([[1, 2, 3]]))
    >>> logits.shape
    torch.Size([1, 3, 64])
    """

    def __init__(self, cfg: RotaryConfig | None = None) -> None:
        super().__init__()
        cfg = RotaryConfig() if cfg is None else cfg
        cfg.validate()
        self.cfg = cfg
        self.embed = Embedding(cfg.vocab_size, cfg.d_model)
        self.h = nn.ModuleList(TFBlock(cfg) for _ in range(cfg.num_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)  # not applied (output_norm=False)
        self.fc = nn.Linear(cfg.d_model, cfg.vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits at every position.

        Args:
            tokens: (B, T) int64 token ids, T <= max_seq_len.

        Returns:
            (B, T, vocab_size) logits; position t depends only on ``tokens[:, :t+1]``.
        """
        T = tokens.shape[1]
        if T > self.cfg.max_seq_len:
            raise LmlabError(f"sequence of length {T} is longer than max_seq_len="
                             f"{self.cfg.max_seq_len}; build the model with a larger one")
        x = self.embed(tokens)  # (B, T, d)
        for block in self.h:
            x = block(x)  # (B, T, d)
        return self.fc(x)  # (B, T, V)


def _describe(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_state(model: TFModel, state_dict: Mapping[str, Any]) -> TFModel:
    """Load a state dict strictly, with a one-line error naming the keys that do not fit.

    Args:
        model: The model to fill.
        state_dict: Parameter name -> tensor (e.g. the content of ``ckpt_k.pt``).

    Returns:
        The model.

    Raises:
        LmlabError: Naming the missing, unexpected or mis-shaped keys.

    >>> model = TFModel(RotaryConfig(num_layers=1))
    >>> load_state(model, TFModel(RotaryConfig(num_layers=1)).state_dict()) is model
    True
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    misshaped = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(getattr(state_dict[k], "shape", ())) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped: {_describe(misshaped)}")
    if problems:
        raise LmlabError(
            f"the checkpoint does not fit the model (num_layers={model.cfg.num_layers}, "
            f"d_model={model.cfg.d_model}, vocab_size={model.cfg.vocab_size}, "
            f"mlp={model.cfg.mlp}): {'; '.join(problems)}; build the model from the run's "
            "config.json"
        )
    model.load_state_dict(dict(state_dict))
    return model


def load_checkpoint(path: str | os.PathLike[str], cfg: RotaryConfig | None = None) -> TFModel:
    """Build a model and load a ``ckpt_k.pt`` into it (on the CPU, in eval mode).

    Args:
        path: A file holding a state dict (the authors' and lmlab's ``ckpt_k.pt``).
        cfg: The architecture (default: the runs' defaults).

    Returns:
        The model in eval mode.

    Raises:
        LmlabError: If the file is missing, unreadable, not a state dict, or of another
            architecture (naming the keys).

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "ckpt_0.pt"
    ...     torch.save(TFModel().state_dict(), path)
    ...     load_checkpoint(path).training
    False
    """
    from lmlab.train.checkpoint import read_torch

    if not os.path.isfile(path):
        raise LmlabError(f"no checkpoint at {path}; check the path")
    # tensors and plain values only: nothing in the file can run code
    state = read_torch(path, advice="save the weights with torch.save(model.state_dict(), "
                                    "path) and load that file")
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise LmlabError(f"{path} does not hold a state dict (name -> tensor)")
    try:
        return load_state(TFModel(cfg), state).eval()
    except LmlabError as exc:
        raise LmlabError(f"{path}: {exc}") from None
