"""Gauss–Hermite product rules and the channel expectations of the rank-1 attention model.

Every expectation is over independent standard normals ``(ξ1, ξ2, η1, η2)``; the local fields are

    w_ℓ  = m_ℓ + √q ξ_ℓ                 (student, m_1 = m, m_2 = −m)
    h*_ℓ = (θ/√q) ξ_ℓ + V* η_ℓ          (teacher, V* = √(ρ − θ²/q))

and the integrals use the tensor product of one probabilists' Gauss–Hermite rule per variable.

>>> nodes, weights = product_rule(order=3, dim=2)
>>> round(float(weights.sum()), 12), nodes.shape
(1.0, (2, 9))
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._prox import prox, sigmoid

__all__ = ["product_rule", "teacher_rows", "Channel", "channel", "student_error",
           "linear_error"]

Array = np.ndarray


@lru_cache(maxsize=32)
def product_rule(order: int, dim: int, fold: int = 0) -> tuple[Array, Array]:
    """Nodes ``(dim, order**dim)`` and weights of the product Gauss–Hermite rule for N(0, I).

    With ``fold = k > 0``, nodes that differ only by the sign of their last ``k`` coordinates are
    merged (one kept, weight doubled): exact for integrands even under that sign flip, at half
    the cost. The arrays are cached and read-only.
    """
    x, w = np.polynomial.hermite_e.hermegauss(order)   # weight exp(−x²/2)
    w = w / w.sum()
    grids = np.meshgrid(*([x] * dim), indexing="ij")
    wgrids = np.meshgrid(*([w] * dim), indexing="ij")
    nodes = np.stack([g.ravel() for g in grids])
    weights = np.prod(np.stack([g.ravel() for g in wgrids]), axis=0)
    if fold:
        tail = np.arange(nodes.shape[1]) % order ** fold   # index of the last `fold` coordinates
        mirror = order ** fold - 1 - tail                   # −x_k = x_{n−1−k}: the flipped index
        keep = tail <= mirror
        weights = np.where(tail < mirror, 2.0, 1.0)[keep] * weights[keep]
        nodes = nodes[:, keep]
    nodes.setflags(write=False)
    weights.setflags(write=False)
    return nodes, weights


def teacher_rows(hs1: Array, hs2: Array, omega: float,
                 A: tuple[tuple[float, float], tuple[float, float]]) -> tuple[Array, Array]:
    """First-column entries ``(t_1, t_2)`` of ``T = (1−ω) softmax_row(h* h*ᵀ) + ω A``."""
    g = hs1 - hs2
    return ((1.0 - omega) * sigmoid(hs1 * g) + omega * A[0][0],
            (1.0 - omega) * sigmoid(hs2 * g) + omega * A[1][0])


def _fields(q: float, m: float, theta: float, rho: float, xi1: Array, xi2: Array,
            eta1: Array, eta2: Array) -> tuple[Array, Array, Array, Array, float, float]:
    sq = np.sqrt(q)
    c = theta / sq
    s = float(np.sqrt(max(rho - theta * theta / q, 1e-300)))
    return m + sq * xi1, -m + sq * xi2, c * xi1 + s * eta1, c * xi2 + s * eta2, c, s


@dataclass(frozen=True)
class Channel:
    """Channel averages at one point ``(q, m, θ, V)``, with ``f = (ĥ − w)/V``."""

    f_diff: float     # E[f1 − f2]
    f_sq: float       # E[f1² + f2²]
    f_eta: float      # E[f·η]
    f_xi: float       # E[f·ξ]
    envelope: float   # E[M_V], the Moreau envelope
    h1: Array         # the prox at every node (a warm start for the next call)
    h2: Array


def channel(q: float, m: float, theta: float, V: float, *, sigma2: float, omega: float,
            A: tuple[tuple[float, float], tuple[float, float]], order: int,
            prox_iter: int = 30, warm: tuple[Array, Array] | None = None,
            cold: bool = True, symmetry: str = "none") -> Channel:
    """Averages of the proximal residual over the ``order⁴`` product rule.

    Only ``E‖f‖²`` is averaged directly. The other three are written, by Gaussian integration by
    parts, as averages of the Moreau envelope ``M`` times low-degree polynomials: ``M`` is
    continuous where the prox jumps, so the product rule converges much faster for them. With
    ``D = ∂_ξ − (c/s) ∂_η`` (``c = θ/√q``, ``s = V*``) one has ``√q ∂_w M = D M`` and
    ``f = −∂_w M``, hence ``E f = −E[(ξ − (c/s) η) M]/√q`` and so on.

    ``symmetry`` halves the nodes when the integrand has a sign symmetry, and sets the
    averages that are odd under it to exactly 0: ``"eta"`` (θ = 0: ``t`` and hence ``M`` are
    even in η) or ``"all"`` (m = 0: flipping every sign maps ĥ to −ĥ). ``warm`` is an extra prox
    start, ``cold=False`` skips the default starts (see :func:`lmlab.theory._prox.prox`).
    """
    if symmetry not in ("none", "eta", "all"):
        raise ValueError(f"unknown symmetry {symmetry!r}")
    fold = {"none": 0, "eta": 2, "all": 4}[symmetry]
    (xi1, xi2, eta1, eta2), wt = product_rule(order, 4, fold)
    w1, w2, hs1, hs2, c, s = _fields(q, m, theta, sigma2, xi1, xi2, eta1, eta2)
    t1, t2 = teacher_rows(hs1, hs2, omega, A)
    extra = [warm] if warm is not None else []
    h1, h2, env = prox(w1, w2, t1, t2, V, sigma2, extra_starts=extra, cold=cold,
                       max_iter=prox_iter)
    f1, f2 = (h1 - w1) / V, (h2 - w2) / V
    r, sq = c / s, np.sqrt(q)

    def avg(x: Array) -> float:
        return float(wt @ x)

    e_m = avg(env)
    xm1 = xm2 = em1 = em2 = xem = 0.0
    if symmetry != "all":
        xm1, xm2 = avg(xi1 * env), avg(xi2 * env)
    if symmetry == "none":
        em1, em2 = avg(eta1 * env), avg(eta2 * env)
    if symmetry != "eta":
        xem = avg((xi1 * eta1 + xi2 * eta2) * env)
    xxm = avg((xi1 * xi1 + xi2 * xi2) * env) - 2.0 * e_m
    eem = avg((eta1 * eta1 + eta2 * eta2) * env) - 2.0 * e_m
    return Channel(f_diff=-((xm1 - r * em1) - (xm2 - r * em2)) / sq,
                   f_sq=avg(f1 * f1 + f2 * f2),
                   f_eta=-(xem - r * eem) / sq,
                   f_xi=-(xxm - r * xem) / sq,
                   envelope=e_m, h1=h1, h2=h2)


def student_error(q: float, m: float, theta: float, *, sigma2: float, omega: float,
                  A: tuple[tuple[float, float], tuple[float, float]], order: int) -> float:
    """``ε_g = σ² E Σ_ℓ (t_ℓ(h*) − a_ℓ(w))²`` (no prox: a smooth integrand)."""
    (xi1, xi2, eta1, eta2), wt = product_rule(order, 4)
    w1, w2, hs1, hs2, _, _ = _fields(q, m, theta, sigma2, xi1, xi2, eta1, eta2)
    t1, t2 = teacher_rows(hs1, hs2, omega, A)
    u = w1 - w2
    return sigma2 * float(wt @ ((t1 - sigmoid(w1 * u)) ** 2 + (t2 - sigmoid(w2 * u)) ** 2))


def linear_error(*, sigma2: float, omega: float,
                 A: tuple[tuple[float, float], tuple[float, float]],
                 order: int) -> tuple[float, Array]:
    """``(ε_lin, B*)`` with ``B* = E T(h*)``, ``h* ~ N(0, ρ I₂)``, ``ε_lin = σ² Σ_ℓ Var t_ℓ``."""
    (e1, e2), wt = product_rule(order, 2)
    s = np.sqrt(sigma2)
    t1, t2 = teacher_rows(s * e1, s * e2, omega, A)
    m1, m2 = float(wt @ t1), float(wt @ t2)
    var = float(wt @ ((t1 - m1) ** 2 + (t2 - m2) ** 2))
    return sigma2 * var, np.array([[m1, 1.0 - m1], [m2, 1.0 - m2]])
