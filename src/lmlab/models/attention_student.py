"""The student of the solvable attention model: a tied low-rank dot-product attention layer
``f_Q(x) = softmax_row(h hᵀ) x`` with ``h_ℓ = x_ℓ·Q/√d`` (in both conventions:
:func:`student_output`) — and a trainer that fits many students at once.

Objective (a SUM over samples, as in the authors' code):
``ℒ(Q) = Σ_μ ‖y^μ − f_Q(x^μ)‖²_F / (2d) + (λ/2)‖Q‖²``; training error ``ε_t = ℒ/d``, test error
``ε_g = E‖y − f_Q(x)‖²_F / (2d)`` on fresh samples.

:func:`train_students` trains M students that share one teacher and one pool of samples: student
m uses the first ``n_m`` samples (α_m = n_m/d), its own ω_m, initialisation and (optionally)
ridge λ_m, and may be scored on the next ``n_val`` samples of the pool (held out from its
training: a validation error for choosing λ). Because the
output ``S x`` only enters the loss through the per-sample token Gram matrices, each step is one
matrix product ``X Q`` (all students at once) forward and its transpose backward; the rest is
O(n·L²) per student. Full-batch gradient descent, or heavy-ball momentum as an accelerator that
reaches the same minimum (tested against plain GD).

:func:`reference_loss` is the direct formula on the d-dimensional tokens, the one-model-at-a-time
way, used to test the Gram form and as the benchmark's baseline.

>>> from lmlab.data.attention_teacher import AttentionTask, sample_group
>>> data = sample_group(AttentionTask(d=40), n=60, n_test=200, seed=0)
>>> specs = [StudentSpec(n=60, omega=0.3, init=i) for i in ("semantic", "positional")]
>>> res = train_students(data, specs, GDConfig(steps=50, momentum=0.9))
>>> res.table[["init", "eps_t", "eps_g"]].shape
(2, 3)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch
from torch import Tensor

from lmlab.config import check_ranges, ranged
from lmlab.data.attention_teacher import GroupData, Split, positional_encodings
from lmlab.errors import LmlabError

#: Steps between the trainer's checks for a NaN/Inf gradient (each reads one flag back).
_CHECK_EVERY = 100

__all__ = ["GDConfig", "StudentSpec", "TrainedStudents", "initial_query", "reference_loss",
           "student_output", "train_students"]


@dataclass(frozen=True)
class StudentSpec:
    """One student: how many of the pool's samples it trains on, the teacher's ω, its start;
    its ridge λ (None: ``GDConfig.lam``) and how many of the following samples of the pool it
    is validated on (0: none)."""

    n: int
    omega: float
    init: Literal["semantic", "positional", "random"]
    lam: float | None = None
    n_val: int = 0


@dataclass(frozen=True)
class GDConfig:
    """Full-batch gradient descent (the authors': lr 0.15, λ 0.01, 5,000 steps).

    Attributes:
        lr: learning rate.
        lam: ridge λ (``torch.optim.SGD``'s weight_decay in the authors' code).
        steps: gradient steps.
        momentum: heavy-ball momentum (0: plain GD; 0.9 with 500 steps reproduces 5,000 plain
            steps).
        average_last: the reported training loss is the mean over this many last steps (all
            of them when there are fewer).
        random_scale: the standard deviation of a ``random`` initialisation.
    """

    lr: float = ranged(0.15, 0, open_lo=True)
    lam: float = ranged(0.01, 0)
    steps: int = ranged(5000, 1, 10**6, why="the loss of every step of every student is kept")
    momentum: float = ranged(0.0, 0, 1, open_hi=True)
    average_last: int = ranged(5, 1)
    random_scale: float = ranged(0.1, 0)

    def validate(self) -> None:
        """Every value in its declared range."""
        check_ranges(self, "gd.")


@dataclass
class TrainedStudents:
    """Final queries (d, M·r) and one table row per student."""

    Q: Tensor
    table: pd.DataFrame
    seconds: float


def initial_query(data: GroupData, init: str, gen: torch.Generator | None = None,
                  random_scale: float = 0.1) -> Tensor:
    """(d, r): ``semantic`` Q0 = Q*, ``positional`` Q0 = 1_d/√d (1_d in the assignment's
    convention), ``random`` Q0 ~ N(0, random_scale²)."""
    task = data.task
    if init == "semantic":
        return data.Q_star.clone()
    if init == "positional":
        p = positional_encodings(task)[0]
        return p[:, None].expand(task.d, task.rank).clone()
    if init == "random":
        return torch.randn((task.d, task.rank), generator=gen, dtype=torch.float64) * random_scale
    raise LmlabError(f"unknown init {init!r}; use semantic, positional or random")


def _student_attention(H: Tensor) -> Tensor:
    """softmax_row(h hᵀ) for preactivations (..., L, r)."""
    return torch.softmax(H @ H.transpose(-1, -2), dim=-1)


def _first_column(H: Tensor) -> Tensor:
    """For two tokens, row ℓ of softmax_row(h hᵀ) is (a_ℓ, 1 − a_ℓ) with
    a_ℓ = sigmoid(h_ℓ·(h_1 − h_2)). H is (n, 2, M, r) (the layout of X @ Q); returns a
    (n, 2, M)."""
    diff = H[:, 0] - H[:, 1]                                            # (n, M, r)
    return torch.sigmoid((H * diff.unsqueeze(1)).sum(-1))               # (n, 2, M)


@dataclass
class _Targets:
    """What the loss needs of the targets y = T z, per sample and student (students last, the
    layout of X @ Q), for two tokens: ‖y‖² = Tr(T Czz Tᵀ), y_ℓ·x_k, and x_k·x_k'."""

    yy: Tensor      # (n, M)
    yx0: Tensor     # (n, 2, M): y_ℓ·x_1
    yx1: Tensor     # (n, 2, M): y_ℓ·x_2
    c00: Tensor     # (n, 1, 1): x_1·x_1
    c01: Tensor     # (n, 1, 1): x_1·x_2
    c11: Tensor     # (n, 1, 1): x_2·x_2

    @classmethod
    def of(cls, T: Tensor, split: Split, n: int, dtype: torch.dtype) -> _Targets:
        """From the teachers' attention T (M, n, 2, 2) and the Gram matrices of ``split``."""
        Czz, Czx, Cxx = (c[:n].to(T.device, dtype) for c in (split.Czz, split.Czx, split.Cxx))
        TCzx = (T @ Czx).permute(1, 2, 3, 0)                            # (n, ℓ, k, M)
        yy = ((T @ Czz) * T).sum((-1, -2)).T                            # (n, M)
        return cls(yy.contiguous(), TCzx[:, :, 0].contiguous(), TCzx[:, :, 1].contiguous(),
                   Cxx[:, 0, 0, None, None], Cxx[:, 0, 1, None, None], Cxx[:, 1, 1, None, None])

    def losses(self, a: Tensor) -> Tensor:
        """‖y − S x‖²_F per sample and student, (n, M), from the first columns a (n, 2, M):
        ‖y‖² − 2 Σ_ℓ (a_ℓ y_ℓ·x_1 + b_ℓ y_ℓ·x_2) + Σ_ℓ ‖a_ℓ x_1 + b_ℓ x_2‖², b = 1 − a."""
        b = 1 - a
        yx = (a * self.yx0 + b * self.yx1).sum(1)
        xx = (a * a * self.c00 + 2 * a * b * self.c01 + b * b * self.c11).sum(1)
        return self.yy - 2 * yx + xx


def student_output(Q: Tensor, x: Tensor, scale: float) -> Tensor:
    """The student's output ``softmax_row(h hᵀ) x`` with ``h = x Q · scale`` on tokens
    (..., L, d); ``scale`` is ``AttentionTask.student_scale`` (1/√d in both conventions).

    >>> x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])          # two orthogonal tokens
    >>> student_output(torch.zeros(2, 1), x, 1.0).tolist()   # h = 0: uniform attention
    [[[0.5, 0.5], [0.5, 0.5]]]
    """
    H = (x @ Q) * scale                                     # (..., L, r)
    return _student_attention(H) @ x                        # (..., L, d)


def reference_loss(Q: Tensor, x: Tensor, y: Tensor, lam: float, scale: float) -> Tensor:
    """ℒ(Q) computed directly on the tokens: Σ‖y − S(h) x‖²/(2d) + λ/2‖Q‖² (one student)."""
    d = x.shape[-1]
    out = student_output(Q, x, scale)                       # (n, L, d)
    return ((y - out) ** 2).sum() / (2 * d) + lam / 2 * (Q ** 2).sum()


def train_students(data: GroupData, specs: list[StudentSpec], gd: GDConfig, *,
                   seed: int = 0, dtype: torch.dtype = torch.float32,
                   device: torch.device | str = "cpu") -> TrainedStudents:
    """Train every student in ``specs`` on ``data`` at once; evaluate on the test set.

    The samples and the starts are drawn on the CPU (the same numbers on every device) and
    moved to ``device``, where the training and the evaluation run; the loop reads nothing back
    from the device but a finiteness check every ``_CHECK_EVERY`` steps.

    Table columns: n, alpha, omega, init, lam, eps_t (mean of the last ``average_last``
    values of ℒ/d), eps_g, eps_val (the mean of ‖y − f(x)‖²/(2d) over the ``n_val`` held-out
    samples; NaN without), m (p₁·Q/√d), theta_emp (|Q*·Q|/d, the authors' "theta"), theta
    (σ²·theta_emp), q (σ²‖Q‖²/d), grad_norm (of the last step), steps, momentum.
    """
    gd.validate()
    task = data.task
    d, L, r, M = task.d, task.L, task.rank, len(specs)
    n_pool = data.train.x.shape[0]
    if not specs:
        raise LmlabError("no students to train")
    for s in specs:
        if not 1 <= s.n <= n_pool - s.n_val or s.n_val < 0:
            raise LmlabError(f"a student needs 1 ≤ n ≤ {n_pool} − n_val samples (got n={s.n}, "
                             f"n_val={s.n_val}); every α of the grid must give at least one "
                             "sample")
        if not 0 <= s.omega <= 1:
            raise LmlabError(f"omega must be in [0, 1] (got {s.omega})")
        if s.lam is not None and not s.lam >= 0:
            raise LmlabError(f"a student's lam must be ≥ 0 (got {s.lam})")
    n_max = max(s.n + s.n_val for s in specs)
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    Q = torch.cat([initial_query(data, s.init, gen, gd.random_scale) for s in specs], dim=1)
    Q = Q.to(dev, dtype).requires_grad_(True)                           # (d, M·r)
    X = data.train.x[:n_max].reshape(n_max * L, d).to(dev, dtype)       # (n·L, d)
    omegas = torch.tensor([s.omega for s in specs], dtype=dtype, device=dev)
    T = teacher_mix(data.train.T_sem[:n_max].to(dev, dtype), omegas,
                    task.A_tensor(dtype).to(dev))
    targets = _Targets.of(T, data.train, n_max, dtype)
    del T
    mask = (torch.arange(n_max)[:, None] < torch.tensor([s.n for s in specs])[None, :]
            ).to(dev, dtype)                                            # (n, M)
    lams = torch.tensor([gd.lam if s.lam is None else s.lam for s in specs], dtype=dtype,
                        device=dev)
    velocity = torch.zeros_like(Q)
    history = torch.empty((gd.steps, M), dtype=torch.float64, device=dev)
    finite = torch.ones(gd.steps, dtype=torch.bool, device=dev)         # grad finite per step
    start = time.perf_counter()
    for step in range(gd.steps):
        H = (X @ Q).mul(task.student_scale).view(n_max, L, M, r)        # (n, L, M, r)
        per_sample = targets.losses(_first_column(H))                   # (n, M)
        Qm = Q.view(d, M, r)
        losses = (per_sample * mask).sum(0) / (2 * d) + lams / 2 * (Qm ** 2).sum((0, 2))
        grad, = torch.autograd.grad(losses.sum(), Q)
        history[step] = losses.detach().double()
        with torch.no_grad():
            finite[step] = torch.isfinite(grad).all()
            if (step + 1) % _CHECK_EVERY == 0 or step + 1 == gd.steps:
                _check_finite_steps(finite, step + 1, gd.lr)
            if gd.momentum:
                velocity.mul_(gd.momentum).add_(grad)
                Q -= gd.lr * velocity
            else:
                Q -= gd.lr * grad
    seconds = time.perf_counter() - start
    Qf = Q.detach()
    table = _evaluate(data, specs, Qf, grad, history, gd)
    table.insert(4, "lam", [gd.lam if s.lam is None else s.lam for s in specs])
    table.insert(7, "eps_val", _validation_errors(X, targets, specs, Qf, task.student_scale))
    return TrainedStudents(Qf, table, seconds)


@torch.no_grad()
def _check_finite_steps(finite: Tensor, done: int, lr: float) -> None:
    """Raise at the first of the ``done`` steps whose gradient was NaN/Inf (one host read).

    >>> _check_finite_steps(torch.tensor([True, False, False]), 3, 0.1)
    Traceback (most recent call last):
    ...
    lmlab.errors.LmlabError: the gradient became NaN/Inf at step 1; lower gd.lr (got 0.1)
    """
    if bool(finite[:done].all()):
        return
    step = int((~finite[:done]).nonzero()[0, 0])
    raise LmlabError(f"the gradient became NaN/Inf at step {step}; lower gd.lr (got {lr})")


def _validation_errors(X: Tensor, targets: _Targets, specs: list[StudentSpec], Q: Tensor,
                       scale: float) -> list[float]:
    """Per student, the mean ‖y − f(x)‖²/(2d) over pool samples n..n+n_val−1 (NaN if none)."""
    n_max, d = targets.yy.shape[0], X.shape[1]
    if not any(s.n_val for s in specs):
        return [float("nan")] * len(specs)
    H = (X @ Q).mul(scale).view(n_max, 2, len(specs), -1)
    per_sample = targets.losses(_first_column(H)).double()              # (n, M)
    out = []
    for m, s in enumerate(specs):
        part = per_sample[s.n:s.n + s.n_val, m]
        out.append(float(part.mean()) / (2 * d) if s.n_val else float("nan"))
    return out


def teacher_mix(T_sem: Tensor, omegas: Tensor, A: Tensor) -> Tensor:
    """(M, n, L, L): ``(1 − ω_m) T_sem + ω_m A`` for every student."""
    w = omegas.view(-1, 1, 1, 1)
    return (1 - w) * T_sem.unsqueeze(0) + w * A


@torch.no_grad()
def _evaluate(data: GroupData, specs: list[StudentSpec], Q: Tensor, grad: Tensor,
              history: Tensor, gd: GDConfig, chunk: int = 5000) -> pd.DataFrame:
    task = data.task
    d, L, r, M = task.d, task.L, task.rank, len(specs)
    dev = Q.device
    omegas = torch.tensor([s.omega for s in specs], dtype=Q.dtype, device=dev)
    A = task.A_tensor(Q.dtype).to(dev)
    n_test = data.test.x.shape[0]
    total = torch.zeros(M, dtype=torch.float64, device=dev)
    for i in range(0, n_test, chunk):
        part = Split(*(t[i:i + chunk] for t in (data.test.x, data.test.T_sem, data.test.Cxx,
                                                 data.test.Czx, data.test.Czz)))
        k = part.x.shape[0]
        H = (part.x.reshape(k * L, d).to(dev, Q.dtype) @ Q).mul(task.student_scale)
        T = teacher_mix(part.T_sem.to(dev, Q.dtype), omegas, A)
        total += _Targets.of(T, part, k, Q.dtype).losses(_first_column(H.view(k, L, M, r))
                                                         ).double().sum(0)
    eps_g = total / n_test / (2 * d)
    Qd = Q.double().view(d, M, r)
    m = Qd.sum(0).abs() / d                                             # |1_d·Q|/d, (M, r)
    overlap = torch.einsum("dr,dmr->m", data.Q_star.to(dev), Qd).abs() / d
    sq = task.sigma ** 2
    gnorm = grad.double().view(d, M, r).pow(2).sum((0, 2)).sqrt()
    eps_t = history[-gd.average_last:].mean(0) / d
    return pd.DataFrame({
        "n": [s.n for s in specs], "alpha": [s.n / d for s in specs],
        "omega": [s.omega for s in specs], "init": [s.init for s in specs],
        "eps_t": eps_t.tolist(), "eps_g": eps_g.tolist(),
        "m": m.norm(dim=1).tolist() if r > 1 else m[:, 0].tolist(),
        "theta_emp": overlap.tolist(), "theta": (sq * overlap).tolist(),
        "q": (sq * Qd.pow(2).sum((0, 2)) / d).tolist(), "grad_norm": gnorm.tolist(),
        "steps": gd.steps, "momentum": gd.momentum})
