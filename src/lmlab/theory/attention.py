"""Asymptotic theory of the tied rank-1 attention model with two tokens.

Cui, Behrens, Krzakala, Zdeborová, "A phase transition between positional and semantic learning
in a solvable model of dot-product attention" (NeurIPS 2024, arXiv:2402.03902). The equations are
those of ``/work/shared/specs/attention-phase.md`` (sections 1–4), reconstructed from the authors'
``theory/theory.ipynb``; the implementation here is independent.

The model: tokens ``z_ℓ ~ N(0, σ² I_d)``, student input ``x_ℓ = z_ℓ + p_ℓ`` (``p_1 = −p_2 =
1_d/√d``), teacher ``y = [(1−ω) softmax(h* h*ᵀ) + ω A] z`` with ``h*_ℓ = z_ℓ·Q*/√d``, student
``softmax(h hᵀ) x`` with ``h_ℓ = x_ℓ·Q/√d``, ridge ``λ/2 ‖Q‖²``, ``n = α d`` samples, ``d → ∞``.
The order parameters ``(q, m, θ, V)`` and their conjugates solve a saddle-point system with two
stable solutions: the *semantic* branch (``θ > 0``, Q aligned with Q*) and the *positional* one
(``θ = 0``, ``m > 0``: Q aligned with the positional encoding). The global minimum is the branch
with the lower training loss ``ε_t = −Φ``; ``α_c`` is where the two losses are equal, ``α_l``
where the global minimum's test error equals that of the best 2×2 linear map of the tokens.

Branches. Both are invariant subspaces of the equations and are held there exactly: semantic
``m = m̂ = 0`` (flipping every sign of the fields maps the prox to its negative) and positional
``θ = θ̂ = 0`` (``t`` is even in η). The authors start the semantic branch at m = 0.0002 and their
iteration drives m to ≈1e-8; at ω = 0.3 and α ≲ 0.8 the m = 0 solution is unstable under the
iteration, so without the constraint the semantic start drifts to the positional solution.

Numerics (see ``_prox`` and ``_quadrature``): product Gauss–Hermite rules over ``(ξ1, ξ2, η1,
η2)`` with ``order⁴`` nodes (halved by the branch's sign symmetry); the non-convex 2-d prox is
solved for all nodes at once by Newton descent from ``w`` and the two exact-fit points, keeping
the lowest objective; ``E f``, ``E f·ξ`` and ``E f·η`` are computed by Gaussian integration by
parts as averages of the (continuous) Moreau envelope, which removes a bias of the direct
averages of the (jumping) prox residual on the symmetric grid; ``E‖f‖²`` is averaged directly.
The fixed point is found by damped iteration ``x ← damping·x + (1 − damping)·x_new`` from the
authors' initial conditions. Accuracy at the default order 10 (against orders 12–16 and a Monte
Carlo solution): ε_t to ≈0.2 %, ε_g to ≈1 %, α_c and α_l to ≈0.01.

Spinodals (:func:`spinodal`): a branch ceases to exist where, followed by continuation in α
from α_c, its iteration stops converging, its own overlap collapses onto the agnostic
solution, or a small step off its invariant subspace grows (:func:`transverse_multiplier`
> 1). α_c lies between the semantic spinodal (below) and the positional one (above).

The published lines are reproduced where the crossing lies at larger α: α_c within 0.03 for
ω ≥ 0.15 but 0.05–0.08 larger here at ω ≤ 0.1, α_l 0.02–0.045 larger here for every ω. The
authors' tabulated fixed points drift at small α (one map iteration of these equations moves
them by up to 30 % in θ at α = 0.35), and their ε_lin (0.0019905) is 1 % above the exact value.

>>> eps_lin, B = linear_baseline(TheoryParams(omega=0.3))
>>> round(eps_lin, 5), B.round(2).tolist()
(0.00197, [[0.57, 0.43], [0.43, 0.57]])
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import brentq

from lmlab.errors import LmlabError, first_line
from lmlab.runs.io import atomic_write_json

from ._quadrature import channel, linear_error
from ._solver import BRANCHES, FixedPoint, TheoryParams, _check_alpha, _check_branch, solve_branch

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["BRANCHES", "TheoryParams", "FixedPoint", "solve_branch", "solve_curve", "alpha_c",
           "linear_baseline", "alpha_l", "PUBLISHED_ALPHA_C", "PUBLISHED_ALPHA_L",
           "branch_exists", "spinodal", "transverse_multiplier"]

#: The published α_c(ω) (σ = 0.5, λ = 0.01, A = [[.6, .4], [.4, .6]]): the ``'spinodal'`` entry
#: of the authors' plotting notebook, which is the equal-training-loss line, not a spinodal.
PUBLISHED_ALPHA_C: dict[float, float] = {
    0.0: 0.548, 0.1: 0.707, 0.15: 0.818, 0.2: 0.928, 0.25: 1.06, 0.3: 1.241, 0.35: 1.454,
    0.4: 1.751, 0.425: 1.939}
#: The published α_l(ω), the ``'att-linear'`` entry, same parameters.
PUBLISHED_ALPHA_L: dict[float, float] = {
    0.0: 0.7225, 0.05: 0.7653, 0.075: 0.8076, 0.1: 0.8506, 0.15: 0.9415, 0.2: 1.0714,
    0.25: 1.2254, 0.275: 1.3271, 0.3: 1.4506, 0.325: 1.5844, 0.35: 1.7495, 0.38: 1.9932}

_DEFAULT = TheoryParams()                      # frozen, so a shared default is safe

# ---------------------------------------------------------------------------------------------
# Curves over α, with an optional disk cache


def _cache_file(cache_dir: str | os.PathLike[str], params: TheoryParams) -> Path:
    key = json.dumps(asdict(params), sort_keys=True)
    return Path(cache_dir) / f"attention_theory_{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"


def _nan_if_null(value: Any) -> Any:
    """JSON's null back to NaN: lmlab writes a non-finite number as null (its NaN policy)."""
    return math.nan if value is None else value


def _load_cache(path: Path) -> dict[str, FixedPoint]:
    """The solutions kept in ``path`` (JSON: nothing in it can run code); none if it is absent.

    A file that is there but cannot be used is named in a warning; its points are solved again.
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        names = {f.name for f in fields(FixedPoint)}
        return {k: FixedPoint(**{n: _nan_if_null(v[n]) for n in names})
                for k, v in raw["points"].items()}
    except FileNotFoundError:
        return {}
    except OSError as exc:
        reason = first_line(exc)
    except (ValueError, KeyError, TypeError, AttributeError):  # not UTF-8, JSON or our layout
        reason = "it is not a JSON file of solutions"
    warnings.warn(f"ignored the cache file {path} ({reason}); solving those points again",
                  stacklevel=3)  # _load_cache <- solve_curve <- its caller
    return {}


def _save_cache(path: Path, params: TheoryParams, points: dict[str, FixedPoint]) -> None:
    atomic_write_json(path, {"params": asdict(params),
                             "points": {k: asdict(v) for k, v in sorted(points.items())}})


def solve_curve(alphas: Sequence[float], params: TheoryParams = _DEFAULT,
                branches: Sequence[str] = BRANCHES,
                cache_dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Both branches over a grid of α, each from its own initial condition (as the authors do).

    Args:
        alphas: sample ratios (each > 0).
        params: model and numerical settings.
        branches: which branches to solve.
        cache_dir: if given, solutions are read from and added to a JSON file there (one file
            per ``params``), so that repeated runs do not recompute.

    Returns:
        One row per (alpha, branch) with every :class:`FixedPoint` field, plus ``global_min``:
        per α, True on the converged branch with the lowest ``eps_t``.

    >>> df = solve_curve([2.0], TheoryParams(order=4, max_iter=2))
    >>> df[["branch", "converged", "global_min"]].values.tolist()
    [['semantic', False, False], ['positional', False, False]]
    """
    import pandas as pd

    if not isinstance(params, TheoryParams):
        raise LmlabError(f"params must be a TheoryParams, got {type(params).__name__}")
    grid = [_check_alpha(a) for a in alphas]
    names = [_check_branch(b) for b in branches]
    path = None if cache_dir is None else _cache_file(cache_dir, params)
    stored = {} if path is None else _load_cache(path)
    n_stored = len(stored)
    rows = []
    for a in grid:
        for b in names:
            key = f"{a!r}|{b}"
            if key not in stored:
                stored[key] = solve_branch(a, b, params)
            rows.append(asdict(stored[key]))
    if path is not None and len(stored) > n_stored:
        _save_cache(path, params, stored)
    df = pd.DataFrame(rows, columns=[f.name for f in fields(FixedPoint)])
    df["global_min"] = False
    ok = df[df["converged"].astype(bool) & df["eps_t"].notna()]
    if len(ok):
        df.loc[ok.groupby("alpha", sort=False)["eps_t"].idxmin().to_numpy(), "global_min"] = True
    return df


# ---------------------------------------------------------------------------------------------
# The crossings α_c (equal training loss) and α_l (attention = linear baseline)


def _check_bracket(bracket: Sequence[float], n_scan: int) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in bracket)
    except (TypeError, ValueError):
        raise LmlabError(f"bracket must be two numbers (lo, hi), got {bracket!r}") from None
    if not (0 < lo < hi and math.isfinite(hi)):
        raise LmlabError(f"bracket must satisfy 0 < lo < hi, got {bracket!r}")
    if isinstance(n_scan, bool) or not isinstance(n_scan, int) or n_scan < 2:
        raise LmlabError(f"n_scan must be an integer >= 2, got {n_scan!r}")
    return lo, hi


class _Scan:
    """Both branches, each from its own initial condition, on a grid of α."""

    def __init__(self, params: TheoryParams, bracket: Sequence[float], n_scan: int) -> None:
        lo, hi = _check_bracket(bracket, n_scan)
        self.params = params
        self.alphas = [float(a) for a in np.linspace(lo, hi, n_scan)]
        self.sem = [solve_branch(a, "semantic", params) for a in self.alphas]
        self.pos = [solve_branch(a, "positional", params) for a in self.alphas]

    def diff(self, i: int) -> float:
        """``ε_t^sem − ε_t^pos`` at grid point i, NaN unless both branches converged."""
        s, p = self.sem[i], self.pos[i]
        return s.eps_t - p.eps_t if s.converged and p.converged else math.nan

    def best(self, i: int) -> FixedPoint | None:
        """The global minimum at grid point i: the converged branch with the lower ε_t."""
        ok = [fp for fp in (self.sem[i], self.pos[i]) if fp.converged]
        return min(ok, key=lambda fp: fp.eps_t) if ok else None


def _sign_changes(values: Sequence[float]) -> list[tuple[int, int]]:
    """Consecutive finite entries ``(i, j)`` (NaNs skipped) whose signs differ or touch zero."""
    idx = [i for i, v in enumerate(values) if math.isfinite(v)]
    return [(i, j) for i, j in zip(idx, idx[1:], strict=False) if values[i] * values[j] <= 0]


def _root(fun: Callable[[float], float], a: float, b: float, xtol: float) -> float:
    return float(brentq(fun, a, b, xtol=xtol))  # type: ignore[arg-type]


def _near(x: float, a: float, fa: FixedPoint, b: float, fb: FixedPoint) -> FixedPoint:
    return fa if abs(x - a) <= abs(x - b) else fb


def _crossing(scan: _Scan, i: int, j: int, xtol: float) -> float:
    """Root of ``ε_t^sem − ε_t^pos`` between grid points i and j (solves start from the nearer
    grid point's solutions). Near a branch's end the iteration slows down, so brentq may use a
    point that has not reached the tolerance; the root itself must be a converged point."""
    a, b, p = scan.alphas[i], scan.alphas[j], scan.params

    def pair(x: float) -> tuple[FixedPoint, FixedPoint]:
        return (solve_branch(x, "semantic", p, init=_near(x, a, scan.sem[i], b, scan.sem[j])),
                solve_branch(x, "positional", p, init=_near(x, a, scan.pos[i], b, scan.pos[j])))

    def fun(x: float) -> float:
        s, q = pair(x)
        if not (math.isfinite(s.eps_t) and math.isfinite(q.eps_t)):
            raise LmlabError(f"the saddle-point iteration diverged at alpha={x:.4g}")
        return s.eps_t - q.eps_t

    root = a if scan.diff(i) == 0 else b if scan.diff(j) == 0 else _root(fun, a, b, xtol)
    for fp in pair(root):
        if not fp.converged:
            raise LmlabError(f"the {fp.branch} branch did not converge at alpha={root:.4g} "
                             "(the crossing); raise TheoryParams.max_iter")
    return root


def alpha_c(params: TheoryParams = _DEFAULT, bracket: Sequence[float] = (0.3, 2.0),
            n_scan: int = 5, xtol: float = 1e-3) -> float:
    """The first-order transition: the α where ``ε_t^sem = ε_t^pos``.

    Both branches are solved from their own initial conditions on ``n_scan`` equally spaced
    points of ``bracket`` (points where a branch does not converge are skipped); in the first
    interval where ``ε_t^sem − ε_t^pos`` changes sign, ``brentq`` refines the root to ``xtol``.

    Returns:
        α_c, or NaN if the difference does not change sign on the scan.
    """
    scan = _Scan(params, bracket, n_scan)
    changes = _sign_changes([scan.diff(i) for i in range(n_scan)])
    return _crossing(scan, *changes[0], xtol) if changes else math.nan


def linear_baseline(params: TheoryParams = _DEFAULT) -> tuple[float, np.ndarray]:
    """The best 2×2 linear map of the raw tokens, ``ŷ = B z`` (population optimum, λ → 0).

    Returns:
        ``(ε_lin, B*)`` with ``B* = E T(h*)``, ``h* ~ N(0, σ² I₂)`` and
        ``ε_lin = σ² (Var t_1 + Var t_2)``; it does not depend on α.
    """
    if not isinstance(params, TheoryParams):
        raise LmlabError(f"params must be a TheoryParams, got {type(params).__name__}")
    return linear_error(sigma2=params.sigma ** 2, omega=params.omega, A=params.A,
                        order=params.order_lin)


def alpha_l(params: TheoryParams = _DEFAULT, bracket: Sequence[float] = (0.3, 2.0),
            n_scan: int = 5, xtol: float = 1e-3) -> float:
    """The α where the global minimum's test error equals the linear baseline's, ``ε_lin``.

    Uses the scan of :func:`alpha_c`. In the first interval where ``ε_g(global min) − ε_lin``
    changes sign, the root is refined on the branch that is the global minimum there; if the
    global minimum switches branch inside the interval, the interval is first split at α_c, and
    α_c itself is returned when it is the jump there that crosses ``ε_lin``.

    Returns:
        α_l, or NaN if there is no sign change on the scan.
    """
    eps_lin = linear_baseline(params)[0]
    scan = _Scan(params, bracket, n_scan)
    best = [scan.best(i) for i in range(n_scan)]
    gap = [math.nan if fp is None else fp.eps_g - eps_lin for fp in best]

    def refine(a: float, fa: FixedPoint, b: float, fb: FixedPoint) -> float:
        def fun(x: float) -> float:
            fp = solve_branch(x, fa.branch, params, init=_near(x, a, fa, b, fb))
            if not math.isfinite(fp.eps_g):
                raise LmlabError(f"the saddle-point iteration diverged at alpha={x:.4g}")
            return fp.eps_g - eps_lin

        if fa.eps_g == eps_lin:
            return a
        return b if fb.eps_g == eps_lin else _root(fun, a, b, xtol)

    for i, j in _sign_changes(gap):
        left, right = best[i], best[j]
        assert left is not None and right is not None
        a, b = scan.alphas[i], scan.alphas[j]
        if left.branch == right.branch:
            return refine(a, left, b, right)
        d = (scan.diff(i), scan.diff(j))
        if not (math.isfinite(d[0]) and math.isfinite(d[1]) and d[0] * d[1] <= 0):
            continue                           # the switch cannot be located on this scan
        ac = _crossing(scan, i, j, xtol)
        at_left = solve_branch(ac, left.branch, params, init=left)
        at_right = solve_branch(ac, right.branch, params, init=right)
        if (at_left.eps_g - eps_lin) * gap[i] <= 0:
            return refine(a, left, ac, at_left)
        if (at_right.eps_g - eps_lin) * gap[j] <= 0:
            return refine(ac, at_right, b, right)
        return ac
    return math.nan


# ---------------------------------------------------------------------------------------------
# Spinodals: where a branch ceases to exist


def transverse_multiplier(fp: FixedPoint, params: TheoryParams = _DEFAULT,
                          eps: float = 1e-3) -> float:
    """How one undamped iteration scales a small step off the branch's invariant subspace.

    The positional branch lives on θ = 0 and the semantic one on m = 0; both are exact
    symmetries (θ → −θ, m → −m), so at a fixed point the Jacobian of the iteration is block
    diagonal and the step ``eps`` in θ (positional) or m (semantic) comes back multiplied by
    this number. Below 1 the branch is a stable fixed point; above 1 the iteration leaves it
    (towards the other mechanism): the branch has ceased to exist.
    """
    s2 = params.sigma ** 2
    kw: dict[str, Any] = dict(sigma2=s2, omega=params.omega, A=params.A, order=params.order,
                              prox_iter=params.prox_iter)
    den = params.lam + fp.Vhat * s2
    if fp.branch == "positional":
        ch = channel(fp.q, fp.m, eps, fp.V, **kw)
        thetahat = fp.alpha * ch.f_eta / math.sqrt(max(s2 - eps * eps / fp.q, 1e-300))
        return float(s2 * s2 * thetahat / den / eps)          # θ_new = σ²ρθ̂/(λ + V̂σ²)
    ch = channel(fp.q, eps, fp.theta, fp.V, **kw)
    return float(fp.alpha * ch.f_diff / den / eps)            # m_new = m̂/(λ + V̂σ²)


def branch_exists(alpha: float, branch: str, params: TheoryParams = _DEFAULT,
                  init: FixedPoint | None = None, floor: float = 1e-3
                  ) -> tuple[bool, FixedPoint]:
    """Whether ``branch`` exists at ``alpha``: its iteration (from ``init``) converges, its own
    overlap has not collapsed onto the agnostic solution (``m`` positional, ``θ/σ²``
    semantic, above ``floor``) and it is stable off its subspace
    (:func:`transverse_multiplier` < 1). Returns the answer and the fixed point."""
    fp = solve_branch(alpha, branch, params, init=init)
    overlap = fp.m if branch == "positional" else fp.theta / params.sigma ** 2
    ok = bool(fp.converged and abs(overlap) > floor
              and transverse_multiplier(fp, params) < 1.0)
    return ok, fp


def spinodal(params: TheoryParams = _DEFAULT, branch: str = "positional",
             start: float | None = None, bracket: Sequence[float] = (0.05, 10.0),
             ratio: float = 1.1, xtol: float = 2e-3) -> float:
    """The α where ``branch`` ceases to exist (:func:`branch_exists`), by continuation in α.

    Both branches exist at α_c, so the walk starts there (``start``, default
    :func:`alpha_c`): the positional branch is followed upwards, the semantic one downwards,
    in geometric steps (``ratio``) within ``bracket``, each solve starting from the previous
    fixed point; the first step where the branch no longer exists is bisected to ``xtol``.
    (The published ``'spinodal'`` list is α_c, the equal-loss line; these are the spinodals.)

    Returns:
        The spinodal, or NaN if the branch exists on the whole bracket or not at ``start``.

    >>> p = TheoryParams(order=4, max_iter=2)
    >>> math.isnan(spinodal(p, "semantic", start=1.5))   # no converged branch at the start
    True
    """
    lo, hi = _check_bracket(bracket, 2)
    b = _check_branch(branch)
    if not ratio > 1:
        raise LmlabError(f"ratio must be > 1, got {ratio!r}")
    up = b == "positional"
    good = alpha_c(params) if start is None else _check_alpha(start)
    if not lo <= good <= hi:
        return math.nan
    ok, fp = branch_exists(good, b, params)
    if not ok:
        return math.nan
    while True:
        nxt = min(good * ratio, hi) if up else max(good / ratio, lo)
        if nxt == good:
            return math.nan                    # exists on the whole bracket
        ok, new = branch_exists(nxt, b, params, init=fp)
        if not ok:
            break
        good, fp = nxt, new
    bad = nxt
    while abs(bad - good) > xtol:
        mid = 0.5 * (good + bad)
        ok, new = branch_exists(mid, b, params, init=fp)
        if ok:
            good, fp = mid, new
        else:
            bad = mid
    return 0.5 * (good + bad)
