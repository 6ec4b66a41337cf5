"""The replica-symmetric fixed point of the agnostic (memorising) branch, m = θ = 0.

With m = θ = 0 the fields are ``w_ℓ = √q ξ_ℓ`` and ``h*_ℓ = √ρ η_ℓ``: the student carries no
information on the teacher or the positions and fits each sample from its noise directions
only. Only ``(q, V)`` and ``(q̂, V̂)`` move; the iteration is that of
:func:`lmlab.theory.solve_branch` restricted to this subspace (the same channel averages, the
same ridge prior, the same stopping rule).

>>> from lmlab.theory import TheoryParams
>>> fp = solve_agnostic(2.0, TheoryParams(order=4, max_iter=2))
>>> fp.branch, fp.m, fp.theta, fp.iterations
('agnostic', 0.0, 0.0, 2)
"""

from __future__ import annotations

import math
from functools import lru_cache

from ._quadrature import channel, student_error
from ._solver import FixedPoint, TheoryParams, _check_alpha

__all__ = ["solve_agnostic"]


def solve_agnostic(alpha: float, params: TheoryParams | None = None) -> FixedPoint:
    """The RS fixed point with ``m = m̂ = θ = θ̂ = 0`` (an invariant subspace of the equations).

    Starts from the positional branch's ``(q, V)`` of ``params``, then from the semantic
    branch's and from ``(0.1, 10)`` while the iteration leaves its domain or does not converge
    (from ``q = 0.0207`` it does at ω = 0.3, α = 2); ``eps_t = −Φ``.
    """
    return _agnostic_cached(_check_alpha(alpha), params or TheoryParams())


@lru_cache(maxsize=256)
def _agnostic_cached(alpha: float, p: TheoryParams) -> FixedPoint:
    starts = [(p.init_positional[0], p.init_positional[3]),
              (p.init_semantic[0], p.init_semantic[3]), (0.1, 10.0)]
    fp = _iterate(alpha, p, *starts[0])
    for q, V in starts[1:]:
        if fp.converged:
            break
        fp = _iterate(alpha, p, q, V)
    return fp


def _iterate(alpha: float, p: TheoryParams, q: float, V: float) -> FixedPoint:
    s2 = p.sigma ** 2
    kw = dict(sigma2=s2, omega=p.omega, A=p.A, order=p.order, prox_iter=p.prox_iter,
              symmetry="all")
    warm = None
    cold, converged, it = True, False, 0

    def update(q: float, ch_f_sq: float, ch_f_xi: float) -> tuple[float, float, float, float]:
        qhat = alpha * ch_f_sq
        Vhat = -alpha * ch_f_xi / math.sqrt(q)
        den = p.lam + Vhat * s2
        return qhat, Vhat, s2 * qhat * s2 / den ** 2, s2 / den

    while True:
        ch = channel(q, 0.0, 0.0, V, warm=warm, cold=cold, **kw)  # type: ignore[arg-type]
        qhat, Vhat, q_new, V_new = update(q, ch.f_sq, ch.f_xi)
        if not (p.lam + Vhat * s2 > 0 and math.isfinite(q_new) and math.isfinite(V_new)
                and q_new > 0):
            break
        res = max(abs(q_new - q), abs(V_new - V) / V)
        warm = (ch.h1, ch.h2)
        if res < p.tol and cold:
            converged = True
            break
        if res < p.tol:
            cold = True
            continue
        if it >= p.max_iter:
            break
        it += 1
        q = p.damping * q + (1 - p.damping) * q_new
        V = p.damping * V + (1 - p.damping) * V_new
        cold = it % p.refresh == 0
    if not cold:
        ch = channel(q, 0.0, 0.0, V, warm=warm, cold=True, **kw)  # type: ignore[arg-type]
        qhat, Vhat, _, _ = update(q, ch.f_sq, ch.f_xi)
    den = p.lam + Vhat * s2
    phi = 0.5 * (Vhat * q - qhat * V) + 0.5 * qhat * s2 / den - alpha * ch.envelope
    eps_g = student_error(q, 0.0, 0.0, sigma2=s2, omega=p.omega, A=p.A, order=p.order_eg)
    return FixedPoint(alpha=alpha, branch="agnostic", q=float(q), m=0.0, theta=0.0, V=float(V),
                      qhat=float(qhat), mhat=0.0, thetahat=0.0, Vhat=float(Vhat),
                      eps_t=float(-phi), eps_g=float(eps_g), converged=converged,
                      iterations=it)
