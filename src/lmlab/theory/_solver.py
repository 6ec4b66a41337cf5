"""The saddle-point solver of the tied rank-1 attention model: parameters, one branch at one α.

Public names are re-exported by :mod:`lmlab.theory.attention`, which documents the model.

>>> fp = solve_branch(2.0, "positional", TheoryParams(order=4, max_iter=2))
>>> fp.branch, fp.theta, fp.converged, fp.iterations
('positional', 0.0, False, 2)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from lmlab.errors import LmlabError

from ._quadrature import Channel, channel, student_error

__all__ = ["BRANCHES", "TheoryParams", "FixedPoint", "solve_branch"]

BRANCHES = ("semantic", "positional")
Matrix2 = tuple[tuple[float, float], tuple[float, float]]
Init = tuple[float, float, float, float]


@dataclass(frozen=True)
class TheoryParams:
    """Model parameters and numerical settings (hashable: solutions are cached on it).

    Attributes:
        omega: teacher mixing ω ∈ [0, 1] (weight of the fixed matrix ``A``).
        sigma: token standard deviation σ > 0.
        lam: ridge λ ≥ 0.
        A: the teacher's positional matrix, 2×2 row-stochastic.
        order: Gauss–Hermite points per variable for the channel averages (``order⁴`` nodes).
        order_eg: points per variable for ε_g (a smooth 4-d integrand).
        order_lin: points per variable for the 2-d linear-baseline integrals.
        damping: weight of the old iterate in the damped fixed-point iteration.
        tol: stop when ``max(|Δq|, |Δm|, |Δθ|, |ΔV|/V) < tol`` (Δ = undamped update − iterate;
            the authors omit V, which can then still drift by 1–3 % on the positional branch).
        max_iter: at most this many iterations; otherwise ``converged=False``.
        prox_iter: Newton iterations per start in the prox.
        refresh: a full multi-start prox every ``refresh`` iterations (and always before
            declaring convergence); in between, the prox is warm-started from the previous one.
        init_semantic, init_positional: initial ``(q, m, θ, V)`` of each branch: the authors'
            values, except m = 0 on the semantic branch (they start at m = 0.0002, which their
            iteration drives to ≈1e-8; here the branch is held on its invariant subspace m = 0).
    """

    omega: float = 0.3
    sigma: float = 0.5
    lam: float = 0.01
    A: Matrix2 = ((0.6, 0.4), (0.4, 0.6))
    order: int = 10
    order_eg: int = 16
    order_lin: int = 60
    damping: float = 0.8
    tol: float = 1e-4
    max_iter: int = 300
    prox_iter: int = 30
    refresh: int = 10
    init_semantic: Init = (0.9068, 0.0, 0.3472, 14.575)
    init_positional: Init = (0.0207, 0.2, 0.0, 14.575)

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> LmlabError:
            return LmlabError(f"TheoryParams.{name} {why}")

        for name in ("omega", "sigma", "lam", "damping", "tol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise bad(name, f"must be a number, got {value!r}")
            if not math.isfinite(float(value)):
                raise bad(name, f"must be finite, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not 0.0 <= self.omega <= 1.0:
            raise bad("omega", f"must lie in [0, 1], got {self.omega}")
        if self.sigma <= 0.0:
            raise bad("sigma", f"must be > 0, got {self.sigma}")
        if self.lam < 0.0:
            raise bad("lam", f"must be >= 0, got {self.lam}")
        if not 0.0 <= self.damping < 1.0:
            raise bad("damping", f"must lie in [0, 1), got {self.damping}")
        if self.tol <= 0.0:
            raise bad("tol", f"must be > 0, got {self.tol}")
        for name, low in (("order", 2), ("order_eg", 2), ("order_lin", 2), ("max_iter", 1),
                          ("prox_iter", 1), ("refresh", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise bad(name, f"must be an integer >= {low}, got {value!r}")
            object.__setattr__(self, name, int(value))
        try:
            A = np.asarray(self.A, dtype=np.float64)
        except (TypeError, ValueError):
            raise bad("A", f"must be a 2x2 matrix, got {self.A!r}") from None
        if A.shape != (2, 2) or not np.isfinite(A).all():
            raise bad("A", f"must be a finite 2x2 matrix, got {self.A!r}")
        if (A < 0).any() or not np.allclose(A.sum(axis=1), 1.0, atol=1e-9):
            raise bad("A", f"must be row-stochastic (rows >= 0 summing to 1), got {A.tolist()}")
        object.__setattr__(self, "A", ((float(A[0, 0]), float(A[0, 1])),
                                       (float(A[1, 0]), float(A[1, 1]))))
        for name in ("init_semantic", "init_positional"):
            object.__setattr__(self, name, _check_init(getattr(self, name), self.sigma ** 2,
                                                       f"TheoryParams.{name}"))

    def with_(self, **changes: Any) -> TheoryParams:
        """A copy with some fields changed (validated again)."""
        return type(self)(**{**asdict(self), **changes})


@dataclass(frozen=True)
class FixedPoint:
    """One branch of the saddle-point equations at one α (``eps_t = −Φ``, regulariser included)."""

    alpha: float
    branch: str
    q: float
    m: float
    theta: float
    V: float
    qhat: float
    mhat: float
    thetahat: float
    Vhat: float
    eps_t: float
    eps_g: float
    converged: bool
    iterations: int


def _check_init(init: Any, rho: float, name: str) -> Init:
    try:
        q, m, theta, V = (float(x) for x in init)
    except (TypeError, ValueError):
        raise LmlabError(f"{name} must be four numbers (q, m, theta, V), got {init!r}") from None
    if not (q > 0 and V > 0 and theta * theta < rho * q and math.isfinite(m)):
        raise LmlabError(f"{name} needs q > 0, V > 0 and theta^2 < sigma^2 q, got {init!r}")
    return q, m, theta, V


def _check_alpha(alpha: Any) -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise LmlabError(f"alpha must be a number, got {alpha!r}") from None
    if not (math.isfinite(a) and a > 0):
        raise LmlabError(f"alpha must be > 0, got {alpha!r}")
    return a


def _check_branch(branch: Any) -> str:
    if branch not in BRANCHES:
        raise LmlabError(f"branch must be one of {BRANCHES}, got {branch!r}")
    return str(branch)


def solve_branch(alpha: float, branch: str, params: TheoryParams = TheoryParams(),
                 init: Init | FixedPoint | None = None) -> FixedPoint:
    """Iterate the saddle-point equations of one branch at sample ratio ``alpha = n/d``.

    Args:
        alpha: sample ratio α > 0.
        branch: ``"semantic"`` (held exactly on its invariant subspace m = m̂ = 0) or
            ``"positional"`` (held on θ = θ̂ = 0).
        params: model and numerical settings.
        init: starting ``(q, m, θ, V)`` (or a :class:`FixedPoint`); default: the branch's
            initial condition in ``params``. Results are cached per ``(alpha, branch, params,
            init)``.

    Returns:
        The fixed point; ``converged=False`` if ``params.max_iter`` iterations did not reach
        ``params.tol`` (the last iterate is reported).
    """
    a, b = _check_alpha(alpha), _check_branch(branch)
    if not isinstance(params, TheoryParams):
        raise LmlabError(f"params must be a TheoryParams, got {type(params).__name__}")
    if isinstance(init, FixedPoint):
        init = (init.q, init.m, init.theta, init.V)
    start = None if init is None else _check_init(init, params.sigma ** 2, "init")
    return _solve_cached(a, b, params, start)


@lru_cache(maxsize=4096)
def _solve_cached(alpha: float, branch: str, p: TheoryParams, init: Init | None) -> FixedPoint:
    return _solve(alpha, branch, p, init)


def _solve(alpha: float, branch: str, p: TheoryParams, init: Init | None) -> FixedPoint:
    s2 = p.sigma ** 2
    rho = s2                                   # σ² ‖Q*‖²/d
    positional = branch == "positional"
    q, m, theta, V = init if init is not None else (
        p.init_positional if positional else p.init_semantic)
    if positional:
        theta = 0.0                            # invariant subspaces: θ = θ̂ = 0 (positional),
    else:                                      # m = m̂ = 0 (semantic)
        m = 0.0
    kw: dict[str, Any] = dict(sigma2=s2, omega=p.omega, A=p.A, order=p.order,
                              prox_iter=p.prox_iter, symmetry="eta" if positional else "all")
    warm = None
    cold = True
    converged = False
    it = 0

    def update(ch: Channel) -> tuple[tuple[float, float, float, float], Init]:
        vstar = math.sqrt(max(rho - theta * theta / q, 1e-300))
        mhat = alpha * ch.f_diff if positional else 0.0
        qhat = alpha * ch.f_sq
        thetahat = 0.0 if positional else alpha * ch.f_eta / vstar
        Vhat = -alpha * ch.f_xi / math.sqrt(q) + theta * thetahat / q
        den = p.lam + Vhat * s2                # ridge prior with Σ = σ² I
        new = (s2 * (qhat * s2 + mhat ** 2 + thetahat ** 2 * s2 * rho) / den ** 2,
               mhat / den, s2 * rho * thetahat / den, s2 / den)
        return (qhat, mhat, thetahat, Vhat), new

    while True:
        ch = channel(q, m, theta, V, warm=warm, cold=cold, **kw)
        hats, new = update(ch)
        if not (p.lam + hats[3] * s2 > 0 and all(math.isfinite(x) for x in new)
                and new[0] > 0 and new[2] ** 2 < rho * new[0]):
            break                              # left the domain: report as not converged
        res = max(abs(new[0] - q), abs(new[1] - m), abs(new[2] - theta), abs(new[3] - V) / V)
        warm = (ch.h1, ch.h2)
        if res < p.tol and cold:
            converged = True
            break
        if res < p.tol:                        # confirm with a full multi-start prox
            cold = True
            continue
        if it >= p.max_iter:
            break
        it += 1
        d = p.damping
        q, m, theta, V = (d * old + (1 - d) * x
                          for old, x in zip((q, m, theta, V), new, strict=True))
        cold = it % p.refresh == 0
    if not cold:                               # report a full-prox evaluation
        ch = channel(q, m, theta, V, warm=warm, cold=True, **kw)
        hats, _ = update(ch)
    qhat, mhat, thetahat, Vhat = hats
    den = p.lam + Vhat * s2
    phi = (0.5 * (Vhat * q - qhat * V) - m * mhat - theta * thetahat
           + 0.5 * (qhat * s2 + mhat ** 2 + thetahat ** 2 * rho * s2) / den
           - alpha * ch.envelope)
    eps_g = student_error(q, m, theta, sigma2=s2, omega=p.omega, A=p.A, order=p.order_eg)
    return FixedPoint(alpha=alpha, branch=branch, q=float(q), m=float(m), theta=float(theta),
                      V=float(V), qhat=float(qhat), mhat=float(mhat), thetahat=float(thetahat),
                      Vhat=float(Vhat), eps_t=float(-phi), eps_g=float(eps_g),
                      converged=converged, iterations=it)
