"""The published theory notebook's numerical scheme, re-implemented to audit its numbers.

:mod:`lmlab.theory.attention` solves the saddle-point equations accurately (a 10⁴-node product
rule, a global multi-start prox). The authors' notebook solves the same equations with a much
coarser scheme, and its outputs are the published curves. This module reproduces that scheme
step by step so that a published number can be traced to its method:

* the channel averages over ξ and over η each use the 12-point, degree-7 rule of Stroud and
  Secrest (1963, scheme VI) for the weight ``exp(−‖x‖²)`` on R², i.e. 144 nodes;
* the prox at every node is a *local* minimisation: BFGS with a finite-difference gradient
  from ``h = (0, 0)`` (``scipy.optimize.minimize`` with its defaults), not the global minimum;
* the iteration starts from the authors' fixed initial point at every α (no continuation),
  damping 0.8, and stops when ``max(|Δq|, |Δm|, |Δθ|) < 1e-4`` (at most 300 iterations),
  returning the iterate before the last update;
* Φ (so ε_t = −Φ) uses the 28-point, degree-11 rule of Rabinowitz and Richter (1969) in each
  of ξ and η;
* ε_g is assembled from three separately integrated terms (teacher², student², cross term)
  with the same degree-11 rule, and the linear baseline's error from its matrix ``B*`` (taken
  with the degree-7 rule) and degree-11 averages.

At ω = 0.3, α = 2 this reproduces the authors' tabulated fixed points and Φ to the digits they
print (a test). It is slow (scipy per node: 10–30 s per branch and α) and meant for audits, not
for sweeps.

>>> rule = stroud_secrest_6()
>>> round(float(rule.weights @ rule.nodes[:, 0] ** 4), 12)   # E x⁴ = 3 for x ~ N(0, 1)
3.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from lmlab.errors import LmlabError

from ._quadrature import teacher_rows
from ._solver import BRANCHES, FixedPoint, TheoryParams

__all__ = ["GaussRule", "stroud_secrest_6", "rabinowitz_richter_2",
           "notebook_fixed_point", "notebook_delta_eps_t", "notebook_alpha_c",
           "notebook_eps_g", "notebook_linear_error", "notebook_alpha_l", "NOTEBOOK_INITS"]

_DEFAULT = TheoryParams()

#: The notebook's initial (q, m, V, θ) per branch (``get_curves``), used at every α.
NOTEBOOK_INITS = {"semantic": (0.906838209589, 0.0002, 14.575, 0.3472),
                  "positional": (0.0206838209589, 0.2, 14.575, 0.0)}


@dataclass(frozen=True)
class GaussRule:
    """Nodes (k × 2) and weights (k, summing to 1) for expectations over ``x ~ N(0, I₂)``."""

    name: str
    degree: int
    nodes: np.ndarray
    weights: np.ndarray


def _rule(name: str, degree: int, orbits: list[tuple[float, list[tuple[float, float]]]]
          ) -> GaussRule:
    """Nodes given for the weight exp(−‖x‖²) (weights summing to π), mapped to N(0, I₂)."""
    pts = np.array([p for _, ps in orbits for p in ps], dtype=np.float64)
    wts = np.array([w for w, ps in orbits for _ in ps], dtype=np.float64) / math.pi
    return GaussRule(name, degree, pts * math.sqrt(2.0), wts)


def _axes(a: float) -> list[tuple[float, float]]:
    return [(a, 0.0), (-a, 0.0), (0.0, a), (0.0, -a)]


def _diagonals(a: float) -> list[tuple[float, float]]:
    return [(a, a), (-a, a), (a, -a), (-a, -a)]


def _pairs(a: float, b: float) -> list[tuple[float, float]]:
    return [(sx * x, sy * y) for x, y in ((a, b), (b, a)) for sx in (1, -1) for sy in (1, -1)]


def stroud_secrest_6() -> GaussRule:
    """Stroud and Secrest's degree-7 rule with 12 nodes (Math. Comp. 17, 1963, scheme VI)."""
    s5 = math.sqrt(5.0)
    r1, r2 = math.sqrt((9 - 3 * s5) / 8), math.sqrt((9 + 3 * s5) / 8)
    w1, w2 = (5 + 2 * s5) / 45, (5 - 2 * s5) / 45
    return _rule("Stroud-Secrest VI", 7, [(math.pi / 36, _axes(math.sqrt(3.0))),
                                          (math.pi * w1, _diagonals(r1)),
                                          (math.pi * w2, _diagonals(r2))])


def rabinowitz_richter_2() -> GaussRule:
    """Rabinowitz and Richter's degree-11 rule with 28 nodes (Math. Comp. 23, 1969)."""
    return _rule("Rabinowitz-Richter 2", 11, [
        (0.8176645817675417e-3, _axes(2.757816396257008)),
        (0.4363323129985824e-1, _axes(1.732050807568877)),
        (0.5373255214498174e0, _axes(0.6280515301597559)),
        (0.3636102608321520e-2, _pairs(1.224744871391589, 2.121320343559643)),
        (0.9817477042468103e-1, _pairs(0.7071067811865475, 1.224744871391589))])


def _sigmoid(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * x))


class _Channel:
    """Node-by-node local proxes for one (q, m, V, θ) on a ξ rule × η rule."""

    def __init__(self, p: TheoryParams, q: float, m: float, V: float, theta: float,
                 rule: GaussRule) -> None:
        from scipy import optimize

        s2 = p.sigma ** 2
        sq, c = math.sqrt(q), theta / math.sqrt(q)
        vs = math.sqrt(max(s2 - theta * theta / q, 0.0))
        rows = []
        for (x1, x2), wx in zip(rule.nodes, rule.weights, strict=True):
            for (e1, e2), we in zip(rule.nodes, rule.weights, strict=True):
                w1, w2 = sq * x1 + m, sq * x2 - m
                g1, g2 = c * x1 + vs * e1, c * x2 + vs * e2
                t1, t2 = (float(t) for t in teacher_rows(g1, g2, p.omega, p.A))
                res = optimize.minimize(_envelope(w1, w2, t1, t2, V, s2), [0.0, 0.0])
                rows.append((wx * we, x1, x2, e1, e2, w1, w2, *res.x, res.fun))
        (self.w, self.x1, self.x2, self.e1, self.e2, self.w1, self.w2, h1, h2,
         self.envelope2) = np.array(rows).T
        self.f1, self.f2 = (h1 - self.w1) / V, (h2 - self.w2) / V


def _envelope(w1: float, w2: float, t1: float, t2: float, V: float,
              s2: float) -> Callable[[np.ndarray], float]:
    """Twice the prox objective, ``‖h − w‖²/V + 2σ² Σ_ℓ (a_ℓ(h) − t_ℓ)²`` (the notebook's)."""
    def fun(h: np.ndarray) -> float:
        x, y = float(h[0]), float(h[1])
        u = x - y
        a1, a2 = _sigmoid(x * u), _sigmoid(y * u)
        return (((x - w1) ** 2 + (y - w2) ** 2) / V
                + 2.0 * s2 * ((a1 - t1) ** 2 + (a2 - t2) ** 2))
    return fun


def notebook_fixed_point(alpha: float, branch: str, params: TheoryParams = _DEFAULT,
                         max_iter: int = 300, tol: float = 1e-4,
                         damping: float = 0.8) -> FixedPoint:
    """The notebook's damped iteration, its Φ (``eps_t = −Φ``) and its ε_g, for one branch at
    one α, as a :class:`~lmlab.theory.FixedPoint`.

    >>> fp = notebook_fixed_point(2.0, "positional", max_iter=1)   # one step from the start
    >>> fp.branch, fp.converged, abs(fp.theta) < 1e-12
    ('positional', False, True)
    """
    if branch not in BRANCHES:
        raise LmlabError(f"branch must be one of {BRANCHES}, got {branch!r}")
    if not alpha > 0:
        raise LmlabError(f"alpha must be > 0, got {alpha!r}")
    s2 = params.sigma ** 2
    rho = s2
    inner = stroud_secrest_6()
    q, m, V, theta = NOTEBOOK_INITS[branch]
    converged, iterations = False, max_iter
    hats = (0.0, 0.0, 0.0, 0.0)
    for step in range(max_iter):
        ch = _Channel(params, q, m, V, theta, inner)
        vs = math.sqrt(max(rho - theta * theta / q, 1e-300))
        qhat = alpha * float(ch.w @ (ch.f1 ** 2 + ch.f2 ** 2))
        mhat = alpha * float(ch.w @ (ch.f1 - ch.f2))
        thetahat = alpha * float(ch.w @ (ch.f1 * ch.e1 + ch.f2 * ch.e2)) / vs
        Vhat = (-alpha * float(ch.w @ (ch.f1 * ch.x1 + ch.f2 * ch.x2)) / math.sqrt(q)
                + theta * thetahat / q)
        hats = (qhat, mhat, Vhat, thetahat)
        den = params.lam + Vhat * s2
        new = (s2 * (qhat * s2 + mhat ** 2 + thetahat ** 2 * s2 * rho) / den ** 2,
               mhat / den, s2 / den, s2 * rho * thetahat / den)
        if max(abs(new[0] - q), abs(new[1] - m), abs(new[3] - theta)) < tol:
            converged, iterations = True, step
            break
        q, m, V, theta = (damping * old + (1 - damping) * x
                          for old, x in zip((q, m, V, theta), new, strict=True))
    qhat, mhat, Vhat, thetahat = hats
    outer = _Channel(params, q, m, V, theta, rabinowitz_richter_2())
    den = params.lam + Vhat * s2
    phi = (0.5 * (Vhat * q - qhat * V) - m * mhat - theta * thetahat
           + 0.5 * (qhat * s2 + mhat ** 2 + thetahat ** 2 * rho * s2) / den
           - alpha * float(outer.w @ outer.envelope2) / 2.0)
    return FixedPoint(alpha=float(alpha), branch=branch, q=q, m=m, theta=theta, V=V,
                      qhat=qhat, mhat=mhat, thetahat=thetahat, Vhat=Vhat, eps_t=-phi,
                      eps_g=notebook_eps_g(q, m, theta, params), converged=converged,
                      iterations=iterations)


@lru_cache(maxsize=256)
def notebook_delta_eps_t(alpha: float, params: TheoryParams = _DEFAULT) -> float:
    """``ε_t^sem − ε_t^pos`` of the notebook's two fixed points at one α (cached)."""
    sem = notebook_fixed_point(alpha, "semantic", params)
    pos = notebook_fixed_point(alpha, "positional", params)
    return sem.eps_t - pos.eps_t


def notebook_alpha_c(params: TheoryParams, bracket: tuple[float, float],
                     xtol: float = 2e-3) -> float:
    """The notebook's α_c(ω): the root of :func:`notebook_delta_eps_t` inside ``bracket``
    (Δε_t must change sign there). Several minutes per ω."""
    from scipy.optimize import brentq

    lo, hi = bracket
    f_lo, f_hi = notebook_delta_eps_t(lo, params), notebook_delta_eps_t(hi, params)
    if f_lo * f_hi > 0:
        raise LmlabError(f"Δε_t has the same sign at α = {lo} and {hi} "
                         f"({f_lo:+.2e}, {f_hi:+.2e}); widen the bracket")
    return float(brentq(lambda a: notebook_delta_eps_t(a, params), lo, hi, xtol=xtol))


def _sq_rows(a1: np.ndarray, a2: np.ndarray) -> np.ndarray:
    return a1 ** 2 + (1 - a1) ** 2 + a2 ** 2 + (1 - a2) ** 2


def notebook_eps_g(q: float, m: float, theta: float, params: TheoryParams = _DEFAULT
                   ) -> float:
    """The notebook's ε_g (its ``mse`` / 2) at overlaps ``(q, m, θ)``.

    >>> round(notebook_eps_g(0.11415, 0.0, 0.15856, TheoryParams(omega=0.3)), 6)
    0.001396
    """
    s2 = params.sigma ** 2
    rho, w, A = s2, params.omega, params.A
    rule = rabinowitz_richter_2()
    x1, x2, wt = rule.nodes[:, 0], rule.nodes[:, 1], rule.weights
    t1, t2 = teacher_rows(math.sqrt(rho) * x1, math.sqrt(rho) * x2, w, A)
    term1 = s2 * float(wt @ _sq_rows(t1, t2))
    a1, a2 = teacher_rows(math.sqrt(q) * x1 + m, math.sqrt(q) * x2 - m, 0.0, A)  # student
    term2 = s2 * float(wt @ _sq_rows(a1, a2))
    c, vs = theta / math.sqrt(q), math.sqrt(max(rho - theta * theta / q, 0.0))
    # cross term: outer variable U (student and teacher), inner W (teacher only)
    T1, T2 = teacher_rows(c * x1[:, None] + vs * x1[None, :],
                          c * x2[:, None] + vs * x2[None, :], w, A)
    A1, A2 = a1[:, None], a2[:, None]
    cross = T1 * A1 + (1 - T1) * (1 - A1) + T2 * A2 + (1 - T2) * (1 - A2)
    term3 = -2.0 * s2 * float(wt @ cross @ wt)
    return 0.5 * (term1 + term2 + term3)


def notebook_linear_error(params: TheoryParams = _DEFAULT) -> float:
    """The notebook's ε_lin (its ``mse_lin`` / 2): ``B*`` from the degree-7 rule, the averages
    from the degree-11 rule.

    >>> round(notebook_linear_error(TheoryParams(omega=0.3)), 6)
    0.00199
    """
    s2 = params.sigma ** 2
    w = params.omega

    def teacher(rule: GaussRule) -> tuple[np.ndarray, np.ndarray]:
        return teacher_rows(math.sqrt(s2) * rule.nodes[:, 0], math.sqrt(s2) * rule.nodes[:, 1],
                            w, params.A)

    b1, b2 = (float(stroud_secrest_6().weights @ t) for t in teacher(stroud_secrest_6()))
    B = np.array([[b1, 1 - b1], [b2, 1 - b2]])
    rule = rabinowitz_richter_2()
    t1, t2 = teacher(rule)
    term1 = s2 * float(rule.weights @ _sq_rows(t1, t2))
    term2 = s2 * float(rule.weights @ (B[0, 0] * t1 + B[0, 1] * (1 - t1)
                                       + B[1, 0] * t2 + B[1, 1] * (1 - t2)))
    term3 = s2 * float(np.trace(B @ B))
    return 0.5 * (term3 + term1 - 2.0 * term2)


def notebook_alpha_l(params: TheoryParams, bracket: tuple[float, float],
                     xtol: float = 2e-3) -> float:
    """The notebook's α_l(ω): where ε_g of the branch with the lower ε_t equals its ε_lin."""
    from scipy.optimize import brentq

    lin = notebook_linear_error(params)

    def gap(alpha: float) -> float:
        branch = "semantic" if notebook_delta_eps_t(alpha, params) < 0 else "positional"
        return notebook_fixed_point(alpha, branch, params).eps_g - lin

    lo, hi = bracket
    g_lo, g_hi = gap(lo), gap(hi)
    if g_lo * g_hi > 0:
        raise LmlabError(f"ε_g − ε_lin has the same sign at α = {lo} and {hi} "
                         f"({g_lo:+.2e}, {g_hi:+.2e}); widen the bracket")
    return float(brentq(gap, lo, hi, xtol=xtol))
