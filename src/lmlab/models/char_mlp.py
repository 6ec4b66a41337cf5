"""The character-level MLP with BatchNorm (Bengio et al. 2003; the makemore lecture, part 3), as
a readable autograd module and as a fused ensemble that trains several variants at once.

Model: embedding ``C`` (vocab_size × n_embd) → concatenate the block → ``W1`` (no bias: BatchNorm
removes it) → BatchNorm (batch statistics in training; running mean and std, momentum 0.001,
for evaluation) → tanh → ``W2, b2``; optionally Bengio's direct connections
``logits += emb_cat @ W_skip``.

:class:`CharMLPEnsemble` holds K variants of one shape as stacked tensors ``(K, ...)`` and takes a
training step for all of them with a hand-written forward and backward pass (a dozen batched
matrix products and in-place SGD updates, no autograd graph). The mathematics is the module's:
the gradients equal autograd's (tested) and a member fed the same minibatches follows the same
trajectory as :class:`CharMLP` trained alone. Most of a step's cost on a CPU is per-operation
overhead, so K members cost little more than one.

>>> shape = MLPShape(vocab_size=27, block_size=3, n_embd=10, n_hidden=200)
>>> ens = CharMLPEnsemble(shape, [MLPVariant("e01"), MLPVariant("zero", init="zero")])
>>> X = torch.zeros((32, 3), dtype=torch.long); Y = torch.arange(32) % 27
>>> loss = ens.step(X, Y, lr=0.1)            # one SGD step of both members
>>> round(float(loss[1]), 4)                  # the zero-initialised member: ln 27
3.2958
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from lmlab.errors import LmlabError

__all__ = ["BN_EPS", "BN_MOMENTUM", "CharMLP", "CharMLPEnsemble", "MLPShape", "MLPVariant",
           "init_mlp_params"]

BN_MOMENTUM = 0.001
"""Running statistics: ``running = (1 - m) * running + m * batch``."""
BN_EPS = 1e-5
"""Added to the batch variance before the square root."""
TANH_GAIN = 5 / 3
"""Kaiming gain for tanh."""


@dataclass(frozen=True)
class MLPShape:
    """Sizes shared by every member of an ensemble."""

    vocab_size: int = 27
    block_size: int = 3
    n_embd: int = 10
    n_hidden: int = 200

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_embd", "n_hidden"):
            if getattr(self, name) < 1:
                raise LmlabError(f"{name} must be at least 1 (got {getattr(self, name)})")


@dataclass(frozen=True)
class MLPVariant:
    """One configuration of the MLP.

    Attributes:
        name: a label for tables and figures.
        init: ``kaiming`` (W1 · (5/3)/√fan_in), ``gaussian`` (W1 ~ N(0, 1), saturates tanh)
            or ``zero`` (every weight zero: the symmetry is never broken).
        last_layer_scale: W2 is multiplied by this at init (0.01: logits start near 0 and the
            initial loss is ln(vocab_size); 1: the "hockey stick").
        direct: Bengio's direct connections from the embeddings to the logits (start at 0).
        batchnorm: False: no BatchNorm, the first layer is ``emb @ W1 + b1`` (b1 · 0.01 at
            init) and the initialisation alone decides whether tanh saturates.
    """

    name: str
    init: Literal["kaiming", "gaussian", "zero"] = "kaiming"
    last_layer_scale: float = 0.01
    direct: bool = False
    batchnorm: bool = True

    def __post_init__(self) -> None:
        if self.init not in ("kaiming", "gaussian", "zero"):
            raise LmlabError(f"unknown init {self.init!r}; use kaiming, gaussian or zero")


def _tanh_(x: Tensor) -> Tensor:
    """tanh in place as 2·sigmoid(2x) − 1: the same function (to float round-off, ~1e-7),
    and several times faster than ``torch.tanh`` on CPUs where tanh is not vectorised."""
    return x.mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0)


PARAM_NAMES = ("C", "W1", "b1", "gain", "beta", "W2", "b2", "W_skip")


def init_mlp_params(shape: MLPShape, variant: MLPVariant, generator: torch.Generator
                    ) -> dict[str, Tensor]:
    """Initial parameters, drawn in the lecture's order (C, W1, b1, W2, b2) from ``generator``.

    b1 (· 0.01) is used only without BatchNorm, which would cancel it.
    """
    V, E, H = shape.vocab_size, shape.n_embd, shape.n_hidden
    D = shape.block_size * E
    C = torch.randn((V, E), generator=generator)
    W1 = torch.randn((D, H), generator=generator)
    b1 = torch.randn((H,), generator=generator) * 0.01
    W2 = torch.randn((H, V), generator=generator)
    torch.randn((V,), generator=generator)  # b2 · 0
    if variant.init == "kaiming":
        W1 = W1 * (TANH_GAIN / math.sqrt(D))
    if variant.init == "zero":
        C, W1, W2 = torch.zeros_like(C), torch.zeros_like(W1), torch.zeros_like(W2)
        b1 = torch.zeros_like(b1)
    return {"C": C, "W1": W1, "b1": b1, "gain": torch.ones(H), "beta": torch.zeros(H),
            "W2": W2 * variant.last_layer_scale, "b2": torch.zeros(V),
            "W_skip": torch.zeros((D, V))}


class CharMLP(torch.nn.Module):
    """One MLP with BatchNorm, trained by autograd (the readable reference).

    >>> g = torch.Generator().manual_seed(0)
    >>> m = CharMLP(MLPShape(), MLPVariant("e01"), generator=g)
    >>> m(torch.zeros((4, 3), dtype=torch.long)).shape
    torch.Size([4, 27])
    """

    C: torch.nn.Parameter
    W1: torch.nn.Parameter
    b1: torch.nn.Parameter
    gain: torch.nn.Parameter
    beta: torch.nn.Parameter
    W2: torch.nn.Parameter
    b2: torch.nn.Parameter
    W_skip: torch.nn.Parameter
    running_mean: Tensor
    running_std: Tensor

    def __init__(self, shape: MLPShape, variant: MLPVariant,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.shape, self.variant = shape, variant
        params = init_mlp_params(shape, variant, generator or torch.Generator().manual_seed(0))
        for name in PARAM_NAMES:
            if (name == "W_skip" and not variant.direct) or (
                    name == "b1" and variant.batchnorm) or (
                    name in ("gain", "beta") and not variant.batchnorm):
                continue
            setattr(self, name, torch.nn.Parameter(params[name]))
        self.register_buffer("running_mean", torch.zeros(shape.n_hidden))
        self.register_buffer("running_std", torch.ones(shape.n_hidden))

    def forward(self, X: Tensor) -> Tensor:
        """Logits (B, vocab_size) for contexts X (B, block_size)."""
        emb = self.C[X].flatten(1)                                 # (B, block_size · n_embd)
        hpre = emb @ self.W1                                       # (B, n_hidden)
        if not self.variant.batchnorm:
            return self._head(torch.tanh(hpre + self.b1), emb)
        if self.training:
            mean = hpre.mean(0)
            std = (hpre.var(0) + BN_EPS).sqrt()
            with torch.no_grad():
                self.running_mean.lerp_(mean, BN_MOMENTUM)
                self.running_std.lerp_(std, BN_MOMENTUM)
        else:
            mean, std = self.running_mean, self.running_std
        h = torch.tanh(self.gain * (hpre - mean) / std + self.beta)  # (B, n_hidden)
        return self._head(h, emb)

    def _head(self, h: Tensor, emb: Tensor) -> Tensor:
        logits = h @ self.W2 + self.b2                               # (B, vocab_size)
        if self.variant.direct:
            logits = logits + emb @ self.W_skip
        return logits


class CharMLPEnsemble:
    """K variants of one :class:`MLPShape`, stacked, with a fused SGD step.

    Every member starts from the parameters :func:`init_mlp_params` draws from a generator
    seeded with ``seed`` (the same draws for every member, shaped by its variant), so members
    differ only where their variants do. ``batch_generator`` continues that stream and is the
    one the lecture draws its minibatches from.

    Attributes:
        params: name -> (K, ...) tensor, updated in place by :meth:`step`.
        running_mean, running_std: (K, 1, n_hidden) BatchNorm running statistics.
    """

    def __init__(self, shape: MLPShape, variants: list[MLPVariant], *, seed: int = 2147483647,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> None:
        if not variants:
            raise LmlabError("an ensemble needs at least one variant")
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise LmlabError(f"variant names must be unique (got {names})")
        self.shape, self.variants = shape, list(variants)
        self.device, self.dtype = torch.device(device), dtype
        members = []
        gen = torch.Generator().manual_seed(seed)
        for v in variants:
            gen = torch.Generator().manual_seed(seed)
            members.append(init_mlp_params(shape, v, gen))
        self.batch_generator = gen
        self.params: dict[str, Tensor] = {
            n: torch.stack([m[n] for m in members]).to(device=device, dtype=dtype)
            for n in PARAM_NAMES}
        for n in ("b1", "gain", "beta", "b2"):
            self.params[n] = self.params[n].unsqueeze(1)              # (K, 1, ·)
        K, H = len(variants), shape.n_hidden
        self.running_mean = torch.zeros((K, 1, H), device=device, dtype=dtype)
        self.running_std = torch.ones((K, 1, H), device=device, dtype=dtype)
        self._skip_mask = torch.tensor([float(v.direct) for v in variants], device=device,
                                       dtype=dtype).view(K, 1, 1)
        self.any_direct = any(v.direct for v in variants)
        self._bn = torch.tensor([v.batchnorm for v in variants], device=device).view(K, 1, 1)
        self._bnf = self._bn.to(dtype)  # 1: BatchNorm, 0: plain (a blend is cheaper than where)
        flags = [v.batchnorm for v in variants]
        tail = flags.index(False) if False in flags else None
        # the members without BatchNorm form the tail: slices instead of blends
        self._plain_tail = tail if tail is not None and not any(flags[tail:]) else None
        self.any_plain = not all(v.batchnorm for v in variants)
        self.grads: dict[str, Tensor] = {}
        self.last_h: Tensor | None = None
        self.last_hpre: Tensor | None = None

    @property
    def names(self) -> list[str]:
        """The members' names, in order."""
        return [v.name for v in self.variants]

    def num_params(self, k: int) -> int:
        """Trainable parameters of member ``k`` (W_skip, b1 and the BatchNorm gain and bias
        counted only when the member uses them)."""
        v = self.variants[k]
        unused = {"W_skip"} if not v.direct else set()
        unused |= {"b1"} if v.batchnorm else {"gain", "beta"}
        return sum(p[k].numel() for n, p in self.params.items() if n not in unused)

    def step(self, X: Tensor, Y: Tensor, lr: float) -> Tensor:
        """One SGD step of every member on the minibatch (X, Y); returns the losses (K,)."""
        p = self.params
        K, B = len(self.variants), X.shape[0]
        T, E = self.shape.block_size, self.shape.n_embd
        # forward
        emb = p["C"].index_select(1, X.reshape(-1)).view(K, B, T * E)  # (K, B, D)
        hpre = torch.bmm(emb, p["W1"])                                  # (K, B, H)
        mean = hpre.mean(1, keepdim=True)                               # (K, 1, H)
        diff = hpre - mean
        var = diff.square().sum(1, keepdim=True).div_(B - 1)           # unbiased, (K, 1, H)
        istd = var.add_(BN_EPS).rsqrt_()
        xhat = diff.mul_(istd)                                          # (K, B, H)
        hbn = torch.addcmul(p["beta"], p["gain"], xhat)
        k0 = self._plain_tail
        if k0 is not None:                              # members without BN, the last ones
            torch.add(hpre[k0:], p["b1"][k0:], out=hbn[k0:])
        elif self.any_plain:                            # members without BN, anywhere
            hbn = torch.lerp(hpre + p["b1"], hbn, self._bnf)
        h = _tanh_(hbn)                                                 # (K, B, H)
        logits = torch.baddbmm(p["b2"], h, p["W2"])                     # (K, B, V)
        if self.any_direct:
            logits.baddbmm_(emb, p["W_skip"])
        logp = logits.log_softmax(-1)
        rows = torch.arange(B, device=X.device)
        loss = logp[:, rows, Y].mean(1).neg_()                          # (K,)
        # backward: d(mean cross-entropy)/d logits = (softmax - onehot) / B
        dlogits = logp.exp_()
        dlogits[:, rows, Y] -= 1.0
        dlogits.div_(B)
        g = {"W2": torch.bmm(h.transpose(1, 2), dlogits),
             "b2": dlogits.sum(1, keepdim=True)}
        dh = torch.bmm(dlogits, p["W2"].transpose(1, 2))                # (K, B, H)
        dhbn = dh.mul_(1.0 - h * h)                                     # through tanh
        dplain = (dhbn[k0:] if k0 is not None else dhbn).clone() if self.any_plain else dhbn
        g["gain"] = (dhbn * xhat).sum(1, keepdim=True)
        g["beta"] = dhbn.sum(1, keepdim=True)
        # through BatchNorm (unbiased variance):
        # dhpre = gain·istd·(dhbn − mean(dhbn) − xhat·Σ(dhbn·xhat)/(B−1))
        dhpre = torch.addcmul(dhbn.sub_(g["beta"] / B), xhat, g["gain"], value=-1.0 / (B - 1))
        dhpre.mul_(p["gain"] * istd)
        if k0 is not None:
            dhpre[k0:] = dplain
            g["b1"] = torch.zeros_like(p["b1"])
            g["b1"][k0:] = dplain.sum(1, keepdim=True)
            g["gain"][k0:] = 0.0
            g["beta"][k0:] = 0.0
        elif self.any_plain:
            dhpre = torch.lerp(dplain, dhpre, self._bnf)
            g["b1"] = dplain.sum(1, keepdim=True).mul_(~self._bn)
            g["gain"].mul_(self._bn)
            g["beta"].mul_(self._bn)
        g["W1"] = torch.bmm(emb.transpose(1, 2), dhpre)
        demb = torch.bmm(dhpre, p["W1"].transpose(1, 2))                # (K, B, D)
        if self.any_direct:
            g["W_skip"] = torch.bmm(emb.transpose(1, 2), dlogits).mul_(self._skip_mask)
            demb.baddbmm_(dlogits, p["W_skip"].transpose(1, 2))
        g["C"] = torch.zeros_like(p["C"]).index_add_(1, X.reshape(-1), demb.view(K, B * T, E))
        # update
        names = list(g)
        torch._foreach_add_([p[n] for n in names], [g[n] for n in names], alpha=-lr)
        self.running_mean.lerp_(mean, BN_MOMENTUM)
        self.running_std.lerp_(istd.reciprocal_(), BN_MOMENTUM)
        self.grads, self.last_h, self.last_hpre = g, h, hpre
        return loss

    @torch.no_grad()
    def preactivation(self, X: Tensor, *, folded: bool = False, batch_stats: bool = False
                      ) -> Tensor:
        """The BatchNorm layer's output (K, N, n_hidden), before tanh.

        Evaluation mode uses the running statistics, ``folded`` the folded layer
        (:meth:`folded_layer`; equal up to round-off), ``batch_stats`` the statistics of X itself
        (training mode, as at a training step).
        """
        p = self.params
        emb = p["C"].index_select(1, X.reshape(-1)).view(len(self.variants), X.shape[0], -1)
        if folded:
            W, b = self.folded_layer()
            return torch.baddbmm(b, emb, W)
        hpre = torch.bmm(emb, p["W1"])
        plain = hpre + p["b1"] if self.any_plain else hpre
        if batch_stats:
            mean, var = hpre.mean(1, keepdim=True), hpre.var(1, keepdim=True)
            hpre = hpre.sub_(mean).div_(var.add_(BN_EPS).sqrt_())
        else:
            hpre = hpre.sub_(self.running_mean).div_(self.running_std)
        out = torch.addcmul(p["beta"], p["gain"], hpre)
        return torch.where(self._bn, out, plain) if self.any_plain else out

    @torch.no_grad()
    def hidden(self, X: Tensor, *, batch_stats: bool = False) -> Tensor:
        """tanh activations (K, N, n_hidden); see :meth:`preactivation`."""
        return _tanh_(self.preactivation(X, batch_stats=batch_stats))

    @torch.no_grad()
    def logits(self, X: Tensor, *, folded: bool = False, batch_stats: bool = False) -> Tensor:
        """Logits (K, N, V); evaluation mode unless ``batch_stats`` (see :meth:`preactivation`)."""
        p = self.params
        h = _tanh_(self.preactivation(X, folded=folded, batch_stats=batch_stats))
        logits = torch.baddbmm(p["b2"], h, p["W2"])
        if self.any_direct:
            emb = p["C"].index_select(1, X.reshape(-1)).view(len(self.variants), X.shape[0], -1)
            logits.baddbmm_(emb, p["W_skip"] * self._skip_mask)
        return logits

    @torch.no_grad()
    def loss(self, X: Tensor, Y: Tensor, *, chunk: int = 32768, batch_stats: bool = False
             ) -> Tensor:
        """Mean cross-entropy (K,) of every member on (X, Y), in evaluation mode (or with the
        statistics of each chunk: ``batch_stats``, the initial-loss check)."""
        total = torch.zeros(len(self.variants), dtype=torch.float64, device=self.device)
        for i in range(0, X.shape[0], chunk):
            logp = self.logits(X[i:i + chunk], batch_stats=batch_stats).log_softmax(-1)
            y = Y[i:i + chunk]
            total -= logp[:, torch.arange(y.shape[0], device=y.device), y].double().sum(1)
        return (total / max(X.shape[0], 1)).to(self.dtype)

    @torch.no_grad()
    def diagnostics(self, step: int, lr: float) -> list[dict[str, float | int | str]]:
        """One row per member about the last step: tanh saturation (share of |h| > 0.97),
        activation std, and per weight matrix the gradient std and the update-to-data ratio
        log10(std(lr·grad) / std(weight)) (NaN while a weight is all zero)."""
        if self.last_h is None:
            return []
        h = self.last_h
        sat = (h.abs() > 0.97).float().mean((1, 2)).tolist()
        hstd = h.std((1, 2)).tolist()
        rows: list[dict[str, float | int | str]] = [
            {"step": step, "member": v.name, "tanh_saturation": sat[k], "tanh_std": hstd[k]}
            for k, v in enumerate(self.variants)]
        for name in ("C", "W1", "W2"):
            gstd = self.grads[name].flatten(1).std(1)
            pstd = self.params[name].flatten(1).std(1)
            ud = torch.where(pstd > 0, (lr * gstd / pstd).log10(), torch.nan).tolist()
            for k, row in enumerate(rows):
                row[f"grad_std_{name}"] = float(gstd[k])
                row[f"ud_log10_{name}"] = ud[k]
        return rows

    @torch.no_grad()
    def folded_layer(self) -> tuple[Tensor, Tensor]:
        """BatchNorm folded into the first layer: W' = γ·W1/σ, b' = β − γ·μ/σ, each (K, ...)
        (members without BatchNorm: W1 and b1 as they are)."""
        p = self.params
        scale = p["gain"] / self.running_std                           # (K, 1, H)
        W, b = p["W1"] * scale, p["beta"] - scale * self.running_mean
        if self.any_plain:
            W, b = torch.where(self._bn, W, p["W1"]), torch.where(self._bn, b, p["b1"])
        return W, b

    @torch.no_grad()
    def sample(self, k: int, n: int, generator: torch.Generator) -> list[list[int]]:
        """``n`` index sequences drawn from member ``k`` (each ends before its boundary token)."""
        out: list[list[int]] = []
        T = self.shape.block_size
        for _ in range(n):
            context, word = [0] * T, []
            for _ in range(64):
                x = torch.tensor([context], device=self.device)
                probs = self.logits(x)[k, 0].softmax(-1).cpu()
                ix = int(torch.multinomial(probs, 1, generator=generator))
                if ix == 0:
                    break
                word.append(ix)
                context = context[1:] + [ix]
            out.append(word)
        return out
