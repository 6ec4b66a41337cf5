"""The per-node proximal problem of the rank-1 attention channel, solved for all nodes at once.

For L = 2 tokens, row ℓ of the student's attention is ``(a_ℓ, 1 − a_ℓ)`` with
``a_ℓ = sigmoid(h_ℓ (h_1 − h_2))``; row ℓ of the teacher's is ``(t_ℓ, 1 − t_ℓ)``. The loss of one
sample is ``ℓ(h) = σ² [(t_1 − a_1)² + (t_2 − a_2)²]`` and the proximal problem at a node is

    min_h  F(h) = ‖h − w‖² / (2V) + ℓ(h)        (h ∈ R², non-convex)

:func:`prox` solves it for arrays of nodes with a damped Newton method from several starting
points (``w`` and the two exact-fit points ``h±`` where ``ℓ = 0``) and keeps, node by node, the
lowest objective. No per-node Python loop and no ``scipy.optimize``.

>>> import numpy as np
>>> w = np.array([0.3]), np.array([-0.2])
>>> t = np.array([0.7]), np.array([0.4])
>>> h1, h2, f = prox(*w, *t, V=10.0, sigma2=0.25)
>>> bool(f[0] <= objective(*w, *w, *t, 10.0, 0.25)[0])
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["sigmoid", "objective", "exact_fit_points", "prox"]

Array = np.ndarray

_MAX_START = 8.0  # exact-fit starts farther than this from the origin are pulled in


def sigmoid(x: Array) -> Array:
    """The logistic function, written with tanh so that it never overflows."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def loss(h1: Array, h2: Array, t1: Array, t2: Array, sigma2: float) -> Array:
    """``ℓ(h) = σ² Σ_ℓ (t_ℓ − a_ℓ(h))²``, the per-sample loss (no prox term)."""
    u = h1 - h2
    return sigma2 * ((t1 - sigmoid(h1 * u)) ** 2 + (t2 - sigmoid(h2 * u)) ** 2)


def objective(h1: Array, h2: Array, w1: Array, w2: Array, t1: Array, t2: Array,
              V: float, sigma2: float) -> Array:
    """``F(h) = ‖h − w‖²/(2V) + ℓ(h)``, elementwise over nodes."""
    return ((h1 - w1) ** 2 + (h2 - w2) ** 2) / (2.0 * V) + loss(h1, h2, t1, t2, sigma2)


def _grad_hess(h1: Array, h2: Array, w1: Array, w2: Array, t1: Array, t2: Array,
               V: float, sigma2: float) -> tuple[Array, Array, Array, Array, Array]:
    """Gradient (g1, g2) and Hessian (H11, H12, H22) of F. ``z_ℓ = h_ℓ (h_1 − h_2)``."""
    u = h1 - h2
    a1, a2 = sigmoid(h1 * u), sigmoid(h2 * u)
    s1, s2 = a1 * (1.0 - a1), a2 * (1.0 - a2)
    e1, e2 = a1 - t1, a2 - t2
    d1, d2 = 2.0 * sigma2 * e1 * s1, 2.0 * sigma2 * e2 * s2        # dℓ/dz_ℓ
    k1 = 2.0 * sigma2 * s1 * (s1 + e1 * (1.0 - 2.0 * a1))          # d²ℓ/dz_ℓ²
    k2 = 2.0 * sigma2 * s2 * (s2 + e2 * (1.0 - 2.0 * a2))
    z1a, z1b = h1 + u, -h1                                          # ∇z_1
    z2a, z2b = h2, u - h2                                           # ∇z_2
    g1 = (h1 - w1) / V + d1 * z1a + d2 * z2a
    g2 = (h2 - w2) / V + d1 * z1b + d2 * z2b
    H11 = 1.0 / V + k1 * z1a * z1a + k2 * z2a * z2a + 2.0 * d1       # ∇²z_1 = [[2,-1],[-1,0]]
    H12 = k1 * z1a * z1b + k2 * z2a * z2b - d1 + d2                 # ∇²z_2 = [[0,1],[1,-2]]
    H22 = 1.0 / V + k1 * z1b * z1b + k2 * z2b * z2b - 2.0 * d2
    return g1, g2, H11, H12, H22


def _newton(h1: Array, h2: Array, w1: Array, w2: Array, t1: Array, t2: Array, V: float,
            sigma2: float, max_iter: int, tol: float) -> tuple[Array, Array, Array]:
    """Descent from (h1, h2): Newton steps on a Hessian shifted to be positive definite, halved
    (at most 12 times) until F decreases. A node leaves the active set once ``V |∇F| < tol``
    (a displacement scale) or when no halved step decreases F by more than 1e-15."""
    h1, h2 = h1.astype(np.float64, copy=True), h2.astype(np.float64, copy=True)
    f = objective(h1, h2, w1, w2, t1, t2, V, sigma2)
    act = np.arange(h1.size)
    floor = 0.5 / V
    for _ in range(max_iter):
        x1, x2, y1, y2, u1, u2 = h1[act], h2[act], w1[act], w2[act], t1[act], t2[act]
        g1, g2, A, B, D = _grad_hess(x1, x2, y1, y2, u1, u2, V, sigma2)
        keep = V * np.sqrt(g1 * g1 + g2 * g2) > tol
        if not keep.all():
            act = act[keep]
            x1, x2, y1, y2, u1, u2 = x1[keep], x2[keep], y1[keep], y2[keep], u1[keep], u2[keep]
            g1, g2, A, B, D = g1[keep], g2[keep], A[keep], B[keep], D[keep]
        if act.size == 0:
            break
        lmin = 0.5 * (A + D - np.sqrt((A - D) ** 2 + 4.0 * B * B))
        mu = np.where(lmin > 1e-3 * floor, 0.0, floor - lmin)   # pure Newton where convex
        A, D = A + mu, D + mu
        det = A * D - B * B
        p1, p2 = -(D * g1 - B * g2) / det, -(A * g2 - B * g1) / det
        f0 = f[act]
        step = np.ones_like(f0)
        fn = objective(x1 + p1, x2 + p2, y1, y2, u1, u2, V, sigma2)
        bad = ~(fn < f0)
        for _ in range(12):                      # backtracking on the failing nodes only
            if not bad.any():
                break
            j = np.flatnonzero(bad)
            step[j] *= 0.5
            fn[j] = objective(x1[j] + step[j] * p1[j], x2[j] + step[j] * p2[j],
                              y1[j], y2[j], u1[j], u2[j], V, sigma2)
            bad[j] = ~(fn[j] < f0[j])
        good = ~bad & (f0 - fn > 1e-15 * (1.0 + f0))   # drop nodes that no longer improve
        idx = act[good]
        h1[idx] = x1[good] + step[good] * p1[good]
        h2[idx] = x2[good] + step[good] * p2[good]
        f[idx] = fn[good]
        act = idx
    return h1, h2, f


def exact_fit_points(t1: Array, t2: Array) -> tuple[Array, Array]:
    """The point ``h+`` with ``a(h+) = t`` (``h− = −h+`` fits too); pulled towards 0 when far.

    ``h_ℓ (h_1 − h_2) = logit t_ℓ`` gives ``u² = logit t_1 − logit t_2`` and ``h_ℓ = logit t_ℓ / u``
    (when ``t_1 < t_2`` no exact fit exists; the start is then only a heuristic).
    """
    eps = 1e-12
    l1 = np.log(np.clip(t1, eps, 1 - eps) / np.clip(1 - t1, eps, 1))
    l2 = np.log(np.clip(t2, eps, 1 - eps) / np.clip(1 - t2, eps, 1))
    u = np.sqrt(np.maximum(l1 - l2, 1e-3))
    p1, p2 = l1 / u, l2 / u
    scale = np.minimum(1.0, _MAX_START / np.maximum(np.hypot(p1, p2), 1e-300))
    return p1 * scale, p2 * scale


def prox(w1: Array, w2: Array, t1: Array, t2: Array, V: float, sigma2: float,
         extra_starts: Sequence[tuple[Array, Array]] = (), cold: bool = True,
         max_iter: int = 30, tol: float = 1e-9) -> tuple[Array, Array, Array]:
    """Global-minimum estimate of ``F`` at every node: ``(ĥ1, ĥ2, F(ĥ))`` (the Moreau envelope).

    Starts: ``w``, ``h+``, ``h−`` (the "cold" starts, skipped when ``cold=False``) and any
    ``extra_starts`` (e.g. the previous solution); each is descended with a damped Newton
    method and the lowest objective is kept node by node.
    """
    starts = list(extra_starts)
    if cold or not starts:
        p1, p2 = exact_fit_points(t1, t2)
        starts = [(w1, w2), (p1, p2), (-p1, -p2), *starts]
    best1 = best2 = bestf = np.empty(0)
    for k, (s1, s2) in enumerate(starts):
        h1, h2, f = _newton(np.broadcast_to(s1, w1.shape), np.broadcast_to(s2, w1.shape),
                            w1, w2, t1, t2, V, sigma2, max_iter, tol)
        if k == 0:
            best1, best2, bestf = h1, h2, f
            continue
        better = f < bestf
        best1 = np.where(better, h1, best1)
        best2 = np.where(better, h2, best2)
        bestf = np.where(better, f, bestf)
    return best1, best2, bestf
