"""The teacher of the solvable attention model (Cui, Behrens, Krzakala, Zdeborová 2024) and its
data, with the per-sample 2×2 token Gram matrices that make training cost O(n·d) per step.

Tokens ``z_ℓ ~ N(0, σ² I_d)`` (ℓ = 1..L); the teacher mixes a semantic attention on its own
preactivations ``h*_ℓ = z_ℓ·Q*/√d`` with a fixed row-stochastic matrix A:
``T = (1 − ω) softmax_row(h* h*ᵀ) + ω A`` and the target is ``y = T z``. The student sees
``x_ℓ = z_ℓ + p_ℓ`` with positional encodings ``p_1 = −p_2 = 1_d/√d``.

``convention="assignment"`` reproduces the course assignment's scalings instead: p = ±1_d, and
teacher scores ``x·W_QᵀW_Q·x/√d_k`` with ``d_k = 1`` (no 1/√d, which saturates the teacher's
softmax), while the student keeps ``h_ℓ = x_ℓ·Q/√d`` — an option for comparison, not the default.
:func:`teacher_dataset` returns one teacher's data set ``(X, T, W_Q)``, the assignment's first
task.

>>> import torch
>>> task = AttentionTask(d=50)
>>> data = sample_group(task, n=20, n_test=10, seed=0)
>>> data.T_sem.shape, bool((data.T_sem.sum(-1) - 1).abs().max() < 1e-12)
(torch.Size([20, 2, 2]), True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from lmlab.config import check_ranges, ranged
from lmlab.errors import LmlabError

__all__ = ["AttentionTask", "GroupData", "Split", "positional_encodings", "sample_group",
           "teacher_attention", "teacher_dataset"]


@dataclass(frozen=True)
class AttentionTask:
    """Everything that defines the data of one teacher.

    Attributes:
        d: embedding dimension.
        sigma: token standard deviation σ.
        A: the teacher's fixed positional attention, 2 × 2 and row-stochastic, given row by row
            (``--set task.A=0.3,0.7,0.8,0.2`` is the appendix's alternative).
        rank: rank r of the teacher's (and student's) query matrix (the paper: 1).
        convention: ``paper`` (the authors' scalings) or ``assignment`` (see the module doc).
    """

    d: int = ranged(1000, 2, 10_000, why="every sample holds two d-vectors and a cell holds "
                    "n_test of them")
    sigma: float = ranged(0.5, 0, open_lo=True)
    A: tuple[float, float, float, float] = ranged((0.6, 0.4, 0.4, 0.6), 0, 1)
    rank: int = ranged(1, 1)
    convention: Literal["paper", "assignment"] = "paper"

    def validate(self) -> None:
        """A row-stochastic; every value in its declared range; rank ≤ d."""
        if len(self.A) != 4:
            raise LmlabError(f"task.A must be a 2 × 2 matrix given as 4 numbers row by row "
                             f"(the model has two tokens); got {self.A}")
        for row in (self.A[:2], self.A[2:]):
            if min(row) < 0 or abs(sum(row) - 1) > 1e-9:
                raise LmlabError(f"task.A must be row-stochastic (non-negative rows summing to "
                                 f"1); row {row} sums to {sum(row):g}")
        check_ranges(self, "task.")
        if self.rank > self.d:
            raise LmlabError(f"task.rank={self.rank} must not exceed task.d={self.d}")
        if self.convention not in ("paper", "assignment"):
            raise LmlabError(f"task.convention must be paper or assignment "
                             f"(got {self.convention!r})")

    @property
    def L(self) -> int:
        """Tokens per sample."""
        return 2

    @property
    def scale(self) -> float:
        """The teacher's preactivation scale: 1/√d (paper) or 1 (assignment: its scores
        ``x·W_QᵀW_Q·x/√d_k`` use d_k = 1)."""
        return 1 / math.sqrt(self.d) if self.convention == "paper" else 1.0

    @property
    def student_scale(self) -> float:
        """The student's preactivation scale ``h_ℓ = x_ℓ·Q·student_scale``: 1/√d in both
        conventions (the assignment keeps the 1/√d on the student)."""
        return 1 / math.sqrt(self.d)

    def A_tensor(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """A as a tensor."""
        return torch.tensor(self.A, dtype=dtype).reshape(2, 2)


def positional_encodings(task: AttentionTask, dtype: torch.dtype = torch.float64) -> Tensor:
    """(L, d): ``p_1 = −p_2 = 1_d/√d`` (paper; norm 1) or ``±1_d`` (assignment)."""
    ones = torch.ones(task.d, dtype=dtype)
    if task.convention == "paper":
        ones = ones / math.sqrt(task.d)
    return torch.stack([ones, -ones])


def teacher_attention(h_star: Tensor, omega: float | Tensor, A: Tensor) -> Tensor:
    """``T = (1 − ω) softmax_row(h* h*ᵀ) + ω A`` for preactivations (..., L, r).

    ``omega`` may be a tensor broadcasting against the leading dimensions.
    """
    S = torch.softmax(h_star @ h_star.transpose(-1, -2), dim=-1)
    w = torch.as_tensor(omega, dtype=S.dtype)
    if w.dim():
        w = w.reshape(*w.shape, *([1] * (S.dim() - w.dim())))
    return (1 - w) * S + w * A.to(S.dtype)


@dataclass
class Split:
    """Tokens and Gram matrices of n samples (float64 Grams, tokens in the working dtype).

    Attributes:
        x: (n, L, d) student inputs z + p.
        T_sem: (n, L, L) the teacher's semantic attention softmax(h* h*ᵀ).
        Cxx, Czx, Czz: (n, L, L) token Gram matrices, e.g. ``Czx[μ, ℓ, k] = z_ℓ·x_k``.
    """

    x: Tensor
    T_sem: Tensor
    Cxx: Tensor
    Czx: Tensor
    Czz: Tensor


@dataclass
class GroupData:
    """One teacher and its data: a training pool (the first n samples train a model with
    α = n/d) and a fresh test set."""

    task: AttentionTask
    Q_star: Tensor
    train: Split
    test: Split

    @property
    def T_sem(self) -> Tensor:
        """The training pool's semantic attention."""
        return self.train.T_sem


def _split(task: AttentionTask, Q_star: Tensor, n: int, gen: torch.Generator,
           dtype: torch.dtype) -> Split:
    z = torch.randn((n, task.L, task.d), generator=gen, dtype=torch.float64) * task.sigma
    x = z + positional_encodings(task)
    h_star = (z @ Q_star) * task.scale                                  # (n, L, r)
    T_sem = torch.softmax(h_star @ h_star.transpose(-1, -2), dim=-1)    # (n, L, L)

    def gram(a: Tensor, b: Tensor) -> Tensor:
        return a @ b.transpose(-1, -2)                                  # (n, L, L)

    return Split(x.to(dtype), T_sem, gram(x, x), gram(z, x), gram(z, z))


def sample_group(task: AttentionTask, n: int, n_test: int, seed: int,
                 dtype: torch.dtype = torch.float32) -> GroupData:
    """A teacher ``Q* ~ N(0, I)`` (d × r), ``n`` training samples and ``n_test`` test samples,
    all drawn from ``seed`` (the same seed gives the same teacher and data whatever ω is)."""
    task.validate()
    if n < 1 or n_test < 1:
        raise LmlabError(f"need at least one training and one test sample (n={n}, "
                         f"n_test={n_test}); check the α grid and n_test")
    gen = torch.Generator().manual_seed(int(seed))
    Q_star = torch.randn((task.d, task.rank), generator=gen, dtype=torch.float64)
    train = _split(task, Q_star, n, gen, dtype)
    test = _split(task, Q_star, n_test, gen, dtype)
    return GroupData(task, Q_star, train, test)


def teacher_dataset(task: AttentionTask, n: int, omega: float, seed: int
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """One teacher's data set, the assignment's first task: ``(X, T, W_Q)``.

    ``W_Q = Q*`` (d × r) is drawn first from ``seed``, then the raw tokens ``X`` (n × L × d,
    ``N(0, σ² I)``) in the same order as :func:`sample_group`, so the same seed gives the same
    teacher and the same first n samples as a study cell (``X = train.x − p``). ``T`` is the
    teacher's output on X, ``T[μ] = [(1 − ω) softmax_row(h* h*ᵀ) + ω A] X[μ]`` with
    ``h* = X[μ] W_Q · task.scale``. The student's input is ``X + positional_encodings(task)``.
    float64 throughout.

    >>> X, T, W_Q = teacher_dataset(AttentionTask(d=8), n=5, omega=0.3, seed=0)
    >>> tuple(X.shape), tuple(T.shape), tuple(W_Q.shape)
    ((5, 2, 8), (5, 2, 8), (8, 1))
    """
    task.validate()
    if n < 1:
        raise LmlabError(f"need at least one sample (n={n})")
    if not 0 <= omega <= 1:
        raise LmlabError(f"omega must be in [0, 1] (got {omega})")
    gen = torch.Generator().manual_seed(int(seed))
    W_Q = torch.randn((task.d, task.rank), generator=gen, dtype=torch.float64)
    X = torch.randn((n, task.L, task.d), generator=gen, dtype=torch.float64) * task.sigma
    h_star = (X @ W_Q) * task.scale                                     # (n, L, r)
    T = teacher_attention(h_star, omega, task.A_tensor()) @ X           # (n, L, d)
    return X, T, W_Q
