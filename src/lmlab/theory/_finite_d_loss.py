"""The exact finite-d training loss of the rank-1 attention model in per-sample 2×2 Gram form.

For two tokens, row ℓ of the student's attention is ``(a_ℓ, 1 − a_ℓ)`` with
``a_ℓ = sigmoid(h_ℓ (h_1 − h_2))`` and ``h_ℓ = x_ℓ·Q/√d``; the output ``S x`` enters
``‖y − S x‖²`` only through ``‖y‖²``, ``y_ℓ·x_k`` and ``x_k·x_k'``, which are precomputed per
sample. One evaluation of the loss and its analytic gradient is then two products with the
(2n, d) token matrix: O(n d).

Branch subspaces (held by projection): ``positional`` θ = 0 (Q ⟂ Q*), ``semantic`` m = 0
(Q ⟂ 1_d), ``agnostic`` m = θ = 0 (Q ⟂ both); ``free`` has no constraint.

>>> prob = draw_problem(omega=0.0, alpha=1.0, d=20, seed=0)
>>> Q = prob.project(prob.Q_star, "positional")
>>> abs(float(prob.Q_star @ Q)) < 1e-9, prob.n
(True, 20)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lmlab.data.attention_teacher import (
    AttentionTask,
    GroupData,
    positional_encodings,
    sample_group,
    teacher_attention,
)
from lmlab.errors import LmlabError

__all__ = ["FD_BRANCHES", "GramProblem", "problem_from_data", "draw_problem"]

#: The branch subspaces of the finite-d minimisation (``free``: unconstrained).
FD_BRANCHES = ("positional", "semantic", "agnostic", "free")

Array = np.ndarray


def _sigmoid(x: Array) -> Array:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass(frozen=True, eq=False)
class GramProblem:
    """One training set of the model, reduced to what the loss needs.

    Attributes:
        X: (n, 2, d) student inputs ``x_ℓ = z_ℓ + p_ℓ``.
        yy: (n,) ``‖y‖² = Tr(T Czz Tᵀ)``.
        yx: (n, 2, 2) ``yx[μ, ℓ, k] = y_ℓ·x_k``.
        cxx: (n, 3) ``x_1·x_1, x_1·x_2, x_2·x_2``.
        Q_star: (d,) the teacher's query.
        sigma, lam, omega: token scale σ, ridge λ, teacher mixing ω.
    """

    X: Array
    yy: Array
    yx: Array
    cxx: Array
    Q_star: Array
    sigma: float
    lam: float
    omega: float

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.X.shape[0])

    @property
    def d(self) -> int:
        """Embedding dimension."""
        return int(self.X.shape[2])

    def removed(self, branch: str) -> Array:
        """(k, d) orthonormal directions that ``branch`` projects out (k = 0, 1 or 2)."""
        if branch not in FD_BRANCHES:
            raise LmlabError(f"branch must be one of {FD_BRANCHES}, got {branch!r}")
        ones = np.full(self.d, 1.0 / math.sqrt(self.d))
        star = self.Q_star / np.linalg.norm(self.Q_star)
        if branch == "free":
            return np.zeros((0, self.d))
        if branch == "positional":
            return star[None]
        if branch == "semantic":
            return ones[None]
        star = star - (ones @ star) * ones                 # Gram–Schmidt: both directions
        return np.stack([ones, star / np.linalg.norm(star)])

    def project(self, Q: Array, branch: str) -> Array:
        """``Q`` with the directions of :meth:`removed` taken out (applied twice for rounding)."""
        U = self.removed(branch)
        out = np.asarray(Q, dtype=np.float64).copy()
        for _ in range(2):
            out -= U.T @ (U @ out)
        return out

    def preactivations(self, Q: Array) -> Array:
        """(n, 2): ``h_ℓ = x_ℓ·Q/√d``."""
        return (self.X.reshape(-1, self.d) @ Q).reshape(self.n, 2) / math.sqrt(self.d)

    def sample_losses(self, Q: Array) -> Array:
        """(n,): ``‖y − S x‖²_F`` per sample."""
        return self._losses(self.preactivations(Q))[0]

    def _losses(self, H: Array) -> tuple[Array, Array, Array]:
        u = H[:, 0] - H[:, 1]
        a = _sigmoid(H * u[:, None])                                    # (n, 2)
        b = 1.0 - a
        c00, c01, c11 = self.cxx[:, 0:1], self.cxx[:, 1:2], self.cxx[:, 2:3]
        yx = (a * self.yx[:, :, 0] + b * self.yx[:, :, 1]).sum(1)
        xx = (a * a * c00 + 2.0 * a * b * c01 + b * b * c11).sum(1)
        # dℓ/da_ℓ = −2 (y_ℓ·x_1 − y_ℓ·x_2) + 2 (a_ℓ x_1 + b_ℓ x_2)·(x_1 − x_2)
        dl_da = (-2.0 * (self.yx[:, :, 0] - self.yx[:, :, 1])
                 + 2.0 * (a * (c00 - c01) + b * (c01 - c11)))
        return self.yy - 2.0 * yx + xx, a, dl_da

    def energy(self, Q: Array) -> float:
        """``ε_t = ℒ(Q)/d`` with ``ℒ = Σ_μ ‖y − S x‖²/(2d) + λ/2 ‖Q‖²`` (the RS energy −Φ)."""
        return self.energy_and_grad(Q)[0]

    def energy_and_grad(self, Q: Array) -> tuple[float, Array]:
        """``(ε_t, ∇_Q ε_t)``, the gradient written out by hand (O(n d))."""
        d = self.d
        H = self.preactivations(Q)
        losses, a, dl_da = self._losses(H)
        s = a * (1.0 - a) * dl_da                                       # dℓ/dz_ℓ, z_ℓ = h_ℓ u
        h1, h2 = H[:, 0], H[:, 1]
        # z_1 = h1² − h1 h2, z_2 = h1 h2 − h2²
        g = np.stack([s[:, 0] * (2.0 * h1 - h2) + s[:, 1] * h2,
                      -s[:, 0] * h1 + s[:, 1] * (h1 - 2.0 * h2)], axis=1)   # (n, 2) dℓ/dh
        grad_fit = (g.reshape(-1) @ self.X.reshape(-1, d)) / math.sqrt(d)
        energy = (losses.sum() / (2.0 * d) + 0.5 * self.lam * float(Q @ Q)) / d
        grad = (grad_fit / (2.0 * d) + self.lam * Q) / d
        return float(energy), grad

    def fit_energy(self, Q: Array) -> float:
        """The data-fit part of ``ε_t``: ``Σ_μ ‖y − S x‖²/(2d²)``."""
        return float(self.sample_losses(Q).sum() / (2.0 * self.d ** 2))

    def order_parameters(self, Q: Array) -> dict[str, float]:
        """``q = σ²‖Q‖²/d``, ``m = |1_d·Q|/d``, ``θ = σ² |Q*·Q|/d`` and ``θ/σ²``."""
        s2, d = self.sigma ** 2, self.d
        theta = s2 * abs(float(self.Q_star @ Q)) / d
        return {"q": s2 * float(Q @ Q) / d, "m": abs(float(Q.sum())) / d, "theta": theta,
                "theta_over_sigma2": theta / s2}


def problem_from_data(data: GroupData, omega: float, lam: float = 0.01, *,
                      n: int | None = None, normalise_teacher: bool = True) -> GramProblem:
    """The Gram form of the first ``n`` training samples of ``data`` (all by default).

    With ``normalise_teacher`` the teacher is rescaled to ``‖Q*‖² = d`` exactly (ρ = σ², as in
    the theory) and its attention recomputed; otherwise ``data``'s own teacher is used, which
    is the loss that :func:`lmlab.models.attention_student.train_students` minimises.
    """
    task = data.task
    if task.rank != 1 or task.convention != "paper":
        raise LmlabError("the finite-d branches need task.rank = 1 and the paper convention")
    if not 0.0 <= omega <= 1.0:
        raise LmlabError(f"omega must lie in [0, 1], got {omega}")
    if lam < 0:
        raise LmlabError(f"lam must be >= 0, got {lam}")
    n_pool = data.train.x.shape[0]
    n = n_pool if n is None else int(n)
    if not 1 <= n <= n_pool:
        raise LmlabError(f"n must lie in [1, {n_pool}], got {n}")
    d = task.d
    x = data.train.x[:n].to(torch.float64)                              # (n, 2, d)
    z = x - positional_encodings(task)
    Q_star = data.Q_star[:, 0].to(torch.float64)
    if normalise_teacher:
        Q_star = Q_star * (math.sqrt(d) / Q_star.norm())
        T_sem = teacher_attention((z @ Q_star)[..., None] * task.scale, 0.0,
                                  task.A_tensor())
    else:
        T_sem = data.train.T_sem[:n].to(torch.float64)
    T = (1.0 - omega) * T_sem + omega * task.A_tensor()                 # (n, 2, 2)
    Czz = z @ z.transpose(-1, -2)
    Czx = z @ x.transpose(-1, -2)
    Cxx = x @ x.transpose(-1, -2)
    yy = ((T @ Czz) * T).sum((-1, -2))
    yx = T @ Czx                                                        # y_ℓ·x_k
    cxx = torch.stack([Cxx[:, 0, 0], Cxx[:, 0, 1], Cxx[:, 1, 1]], dim=1)
    return GramProblem(X=np.ascontiguousarray(x.numpy()), yy=yy.numpy(), yx=yx.numpy(),
                       cxx=cxx.numpy(), Q_star=Q_star.numpy().copy(), sigma=task.sigma,
                       lam=float(lam), omega=float(omega))


def draw_problem(omega: float, alpha: float, d: int, seed: int, *, sigma: float = 0.5,
                 lam: float = 0.01, A: tuple[float, float, float, float] = (0.6, 0.4, 0.4, 0.6),
                 normalise_teacher: bool = True) -> GramProblem:
    """A teacher and ``n = round(α d)`` samples from ``seed`` (the study's data generator)."""
    if not (isinstance(d, int) and d >= 2):
        raise LmlabError(f"d must be an integer >= 2, got {d!r}")
    if not (math.isfinite(alpha) and alpha > 0):
        raise LmlabError(f"alpha must be > 0, got {alpha!r}")
    n = max(1, round(alpha * d))
    task = AttentionTask(d=d, sigma=sigma, A=A)
    data = sample_group(task, n=n, n_test=1, seed=seed, dtype=torch.float64)
    return problem_from_data(data, omega, lam, normalise_teacher=normalise_teacher)
