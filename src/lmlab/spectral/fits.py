"""The per-layer fit options of weightwatcher 0.7.7's ``analyze()``, behind one dispatcher.

:func:`fit_layer` takes a layer's sorted eigenvalues and weightwatcher's options:

* ``fit="PL"`` (default): :func:`~lmlab.spectral.powerlaw.fit_power_law`, weightwatcher's own
  estimator number for number.
* ``xmax=-k`` (or ``+k``: weightwatcher ignores the sign): the top k eigenvalues are dropped
  first; ``num_pl_spikes`` counts the kept ones. k > n/2 fails the layer (weightwatcher logs
  "stopping", then fits anyway with k read as an eigenvalue cut-off: a bug, not reproduced).
  ``xmax="force"`` sets xmax = λ_max, where every lmlab fit ends anyway: the default fit.
* ``fix_fingers="clip_xmax"``: weightwatcher's loop exactly: clip the top 2, 3, …,
  ``max_fingers - 1`` eigenvalues and refit; stop at the first α more than ``finger_thresh``
  below the unclipped α (kept; ``num_fingers`` = clipped − 1, weightwatcher's count) or at
  α ≤ 2 (not kept). ``max_fingers`` < n/2 is reset to 10, as weightwatcher does.
  ``raw_alpha`` is the unclipped α. Where weightwatcher crashes (a clip leaving < 2 points,
  ``max_fingers`` ≤ 2, or its three "checking final alpha" refits — they only log — on a tiny
  layer) lmlab stops clipping and reports the best fit so far.
* ``fix_fingers="xmin_peak"``: xmin searched in [0.95, 1.5]·peak (or up to ``xmin_max``), peak
  = left edge of the fullest of 100 log10-bins (:func:`xmin_peak_range`). weightwatcher 0.7.7
  fails every layer here (a (log10, linear) tuple reaches its own estimator; with
  ``pl_package="powerlaw"``, powerlaw 2.0 rejects its ``distribution=`` keyword).
* ``fit="TPL"``: p(x) ∝ x^-α e^(-Λx), x ≥ xmin; xmin by the power-law KS distance (the powerlaw
  package's default ``xmin_distribution``), then the exact maximum-likelihood (α, Λ ≥ 0)
  (:func:`fit_truncated_power_law`). ``D`` and ``sigma`` are the power law's at that xmin, as
  weightwatcher reports them. ``fit="E_TPL"`` = TPL + ``fix_fingers="xmin_peak"``, as in
  weightwatcher, which refuses TPL with ``pl_package="ww"`` and fails every layer with
  ``"powerlaw"`` (powerlaw 2.0: "Fit.__init__() got an unexpected keyword argument
  'distribution'").
* ``pl_package`` picks weightwatcher's estimator; lmlab has one per fit: both are accepted.

Failed fits have NaN values (never weightwatcher's -1) and a ``reason``.

>>> import numpy as np
>>> evals = np.sort(np.random.default_rng(0).pareto(2.0, 2000) + 1.0)   # density ∝ x^-3
>>> clipped = fit_layer(evals, xmax=-3)
>>> kept = evals[:-3]
>>> bool(clipped.xmax == kept[-1]), clipped.num_pl_spikes == int(np.sum(kept >= clipped.xmin))
(True, True)
>>> abs(fit_layer(evals, fit="TPL").alpha - 3.0) < 0.3
True
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from lmlab.errors import LmlabError
from lmlab.spectral.powerlaw import EVALS_THRESH, PowerLawFit, fit_power_law

__all__ = ["LayerFit", "fit_layer", "validate_fit_options", "xmin_peak_range",
           "fit_truncated_power_law", "extra_columns", "FIT_TYPES", "FIX_FINGERS"]

#: weightwatcher's fit names (``power_law``/``truncated_power_law`` are its internal aliases).
FIT_TYPES: tuple[str, ...] = ("PL", "TPL", "E_TPL", "power_law", "truncated_power_law")
FIX_FINGERS: tuple[str, ...] = ("xmin_peak", "clip_xmax")
PL_PACKAGES: tuple[str, ...] = ("ww", "powerlaw")
DEFAULT_MAX_FINGERS = 10
MIN_FINGER_ALPHA = 2.0  # the clipping loop stops once alpha <= 2 (weightwatcher's min_alpha)
_TPL_NAMES = ("TPL", "E_TPL", "truncated_power_law")


@dataclass(frozen=True)
class LayerFit:
    """One layer's fit, with weightwatcher's fit columns.

    Attributes:
        alpha: power-law exponent (TPL: the truncated power law's α, which may be < 1).
        Lambda: TPL exponential cut-off Λ (NaN for power-law fits).
        xmin, xmax: ends of the fitted tail (xmax: the largest eigenvalue kept).
        D, sigma: KS distance and standard error (α−1)/√n of the power law at xmin.
        num_pl_spikes: eigenvalues ≥ xmin (after ``xmax=-k`` clipping; including the
            clipped fingers for ``clip_xmax``, as weightwatcher); None when failed.
        num_fingers: weightwatcher's finger count for ``clip_xmax`` (0 otherwise).
        raw_alpha: α before clipping fingers (``clip_xmax`` only; NaN otherwise).
        status: ``"success"`` or ``"failed"``; reason: why it failed (a bare reason: the
            caller adds its own context, e.g. "power-law fit failed: ").
        small_n: the small-sample power-law estimator was used (< 20 points).
    """

    alpha: float
    Lambda: float
    xmin: float
    xmax: float
    D: float
    sigma: float
    num_pl_spikes: int | None
    num_fingers: int = 0
    raw_alpha: float = math.nan
    status: str = "success"
    reason: str = ""
    small_n: bool = False

    @property
    def ok(self) -> bool:
        """True when the fit succeeded."""
        return self.status == "success"


def _failed(reason: str, num_fingers: int = 0, raw_alpha: float = math.nan,
            small_n: bool = False) -> LayerFit:
    nan = math.nan
    return LayerFit(nan, nan, nan, nan, nan, nan, None, num_fingers, raw_alpha, "failed",
                    reason, small_n)


# ----------------------------------------------------------------------------- options


def _as_int(x: object) -> int | None:
    """x as an int when it is a whole number (bools excluded), else None."""
    return int(x) if isinstance(x, numbers.Integral) and not isinstance(x, bool) else None


def _as_float(x: object) -> float | None:
    """x as a float when it is a finite real number (bools excluded), else None."""
    ok = isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))
    return float(x) if ok else None  # type: ignore[arg-type]


def validate_fit_options(*, fit: object = "PL", fix_fingers: object = None, xmax: object = None,
                         xmin_max: object = None, max_fingers: object = DEFAULT_MAX_FINGERS,
                         finger_thresh: object = 1.0, pl_package: object = "ww") -> None:
    """Refuse option values and combinations that weightwatcher refuses, or that are errors.

    Accepted beyond weightwatcher: numpy integers for ``xmax``, and ``fit="TPL"``/``"E_TPL"``
    or ``xmax="force"`` with either ``pl_package`` (lmlab has one estimator for each).

    Raises:
        LmlabError: one line naming the bad option and what to use instead.

    >>> validate_fit_options(fit="E_TPL", xmax=-2)
    >>> try:
    ...     validate_fit_options(fix_fingers="clip_xmax", xmax=-2)
    ... except LmlabError as e:
    ...     print(str(e)[:63])
    fix_fingers='clip_xmax' cannot be combined with an integer xmax
    """
    k, thresh, top = _as_int(xmax), _as_float(finger_thresh), _as_float(xmin_max)
    if not isinstance(fit, str) or fit not in FIT_TYPES:
        raise LmlabError(f"fit={fit!r} is not a fit type; use 'PL' (power law), 'TPL' (truncated "
                         "power law) or 'E_TPL' (TPL with xmin near the ESD peak)")
    if fix_fingers not in (None, False, "") and fix_fingers not in FIX_FINGERS:
        raise LmlabError(f"fix_fingers={fix_fingers!r} is unknown; use None, 'xmin_peak' or "
                         "'clip_xmax'")
    if not isinstance(pl_package, str) or pl_package not in PL_PACKAGES:
        raise LmlabError(f"pl_package={pl_package!r} is unknown; use 'ww' (default) or "
                         "'powerlaw' (lmlab runs its own estimators for both)")
    if xmax is False or k == 0:
        raise LmlabError(f"xmax={xmax!r} is refused (as by weightwatcher); use xmax=None to keep "
                         "every eigenvalue, or xmax=-k to drop the top k")
    if xmax is not None and k is None and not (isinstance(xmax, str) and xmax == "force"):
        raise LmlabError(f"xmax={xmax!r} must be None, 'force' or a whole number of top "
                         "eigenvalues to drop, e.g. xmax=-2")
    if fix_fingers and k is not None:
        raise LmlabError(f"fix_fingers={fix_fingers!r} cannot be combined with an integer "
                         f"xmax={k} (weightwatcher refuses it too); drop one of them")
    if fit == "E_TPL" and fix_fingers == "clip_xmax":
        raise LmlabError("fit='E_TPL' already means fix_fingers='xmin_peak' and cannot take "
                         "fix_fingers='clip_xmax'; use fit='TPL' with clip_xmax, or E_TPL alone")
    n_fingers = _as_int(max_fingers)
    if fix_fingers and max_fingers is not None and (n_fingers is None or n_fingers < 1):
        raise LmlabError(f"max_fingers={max_fingers!r} must be a whole number >= 1; use the "
                         f"default {DEFAULT_MAX_FINGERS}")
    if thresh is None or thresh < 0:
        raise LmlabError(f"finger_thresh={finger_thresh!r} must be a number >= 0 (the drop in "
                         "alpha that marks fingers); use the default 1.0")
    if xmin_max is not None and (top is None or top <= 0):
        raise LmlabError(f"xmin_max={xmin_max!r} must be a positive eigenvalue (the largest "
                         "xmin to try) or None for 1.5 x the ESD peak")


def extra_columns(fit: str = "PL", fix_fingers: str | bool | None = None) -> tuple[str, ...]:
    """The columns weightwatcher adds to its table for these options (its names).

    >>> extra_columns("E_TPL"), extra_columns("PL", "clip_xmax")
    (('Lambda',), ('num_fingers', 'raw_alpha'))
    """
    cols: tuple[str, ...] = ("Lambda",) if fit in _TPL_NAMES else ()
    return cols + (("num_fingers", "raw_alpha") if fix_fingers == "clip_xmax" else ())


# ----------------------------------------------------------------------------- xmin ranges


def xmin_peak_range(evals: np.ndarray, xmin_max: float | None = None, *,
                    thresh: float = EVALS_THRESH) -> tuple[float, float] | None:
    """weightwatcher's ``xmin_peak`` search range: [0.95·peak, ``xmin_max`` or 1.5·peak].

    peak = 10 ** (left edge of the fullest bin of a 100-bin histogram of log10(evals > thresh)).
    None when fewer than 2 eigenvalues exceed ``thresh``.

    >>> lo, hi = xmin_peak_range(np.array([1.0, 10.0, 10.0, 10.0, 100.0]))
    >>> round(lo, 3), round(hi, 3)
    (9.5, 15.0)
    """
    x = np.asarray(evals, dtype=np.float64)
    nz = x[x > thresh]
    if nz.size < 2:
        return None
    counts, edges = np.histogram(np.log10(nz), bins=100)
    peak = float(10.0 ** edges[int(np.argmax(counts))])
    return 0.95 * peak, (1.5 * peak if xmin_max is None else float(xmin_max))


# ----------------------------------------------------------------------------- truncated PL

_GL_X, _GL_W = np.polynomial.legendre.leggauss(12)
_TAIL = 50.0  # integrate where the integrand is within e^-50 of its maximum


def _quadrature(alpha: float, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes s and weights of ∫_0^∞ exp(-(α-1)s - t·e^s) ds (t > 0), Gauss–Legendre panels.

    Panels are equal steps of w(s) = (|α-1| + 1/2)·s + t·e^s, which bounds how fast the
    log-integrand changes, so each 12-point panel sees a change of at most ~3.
    """
    a1 = alpha - 1.0
    if a1 < 0:
        # maximum at s* = ln(-a1/t) (or 0); mass lies within 1 + 50/|a1| below it
        te_peak = max(-a1, t)
        s_peak = math.log(te_peak / t)
        lo = max(0.0, s_peak - 1.0 - _TAIL / -a1)
        hi = math.log((_TAIL + te_peak) / t)
        for _ in range(8):
            hi = math.log((_TAIL + te_peak - a1 * (hi - s_peak)) / t)
    else:
        lo = 0.0
        hi = math.log1p(_TAIL / t)
        if a1 > 0:
            hi = min(hi, _TAIL / a1)
    c = abs(a1) + 0.5
    w_lo, w_hi = c * lo + t * math.exp(lo), c * hi + t * math.exp(hi)
    n_panels = int(min(4000, max(4, math.ceil((w_hi - w_lo) / 3.0))))
    target = np.linspace(w_lo, w_hi, n_panels + 1)
    # invert w (convex, increasing) by Newton from the right: monotone convergence
    s = np.minimum(target / c, np.log(target / t))
    for _ in range(60):
        ets = t * np.exp(s)
        step = (c * s + ets - target) / (c + ets)
        s -= step
        if np.max(np.abs(step)) < 1e-14:
            break
    s[0], s[-1] = lo, hi
    half = 0.5 * np.diff(s)
    mid = 0.5 * (s[1:] + s[:-1])
    nodes = (mid[:, None] + half[:, None] * _GL_X[None, :]).ravel()
    weights = (half[:, None] * _GL_W[None, :]).ravel()
    return nodes, weights


def _tpl_stats(alpha: float, t: float) -> tuple[float, np.ndarray, np.ndarray]:
    """ln E, the means of (ln u, u) and their covariance under q(u) ∝ u^-α e^(-t·u), u ≥ 1.

    E = E_α(t) = ∫_1^∞ u^-α e^(-tu) du = t^(α-1) Γ(1-α, t) is the normalisation (the
    generalised exponential integral); computed in s = ln u by quadrature (scipy's upper
    incomplete gamma only covers 1-α > 0).
    """
    s, w = _quadrature(alpha, t)
    h = -(alpha - 1.0) * s - t * np.exp(s)
    h_max = float(h.max())
    p = w * np.exp(h - h_max)
    z = float(p.sum())
    p /= z
    u = np.exp(s)
    mean = np.array([p @ s, p @ u])
    ds, du = s - mean[0], u - mean[1]
    cov = np.array([[p @ (ds * ds), p @ (ds * du)], [p @ (ds * du), p @ (du * du)]])
    return h_max + math.log(z), mean, cov


def _alpha_given_t(t: float, m1: float, alpha: float
                   ) -> tuple[float, np.ndarray, np.ndarray]:
    """The α ≥ 0 of largest likelihood at fixed t (model mean of ln u = m1, or α = 0 when even
    α = 0 has a smaller mean), by safeguarded Newton from ``alpha``; with the stats there."""
    lo, hi = 0.0, math.inf
    for _ in range(100):
        _, mean, cov = _tpl_stats(alpha, t)
        h = mean[0] - m1  # d loglik / d alpha, decreasing in alpha (slope -Var ln u)
        if h <= 0 and alpha == 0.0:
            break
        lo, hi = (alpha, hi) if h > 0 else (lo, alpha)
        new = alpha + h / cov[0, 0]
        if new <= 0 < alpha:
            new = 0.0  # try the face α = 0 itself
        elif not lo <= new <= hi:
            new = 0.5 * (lo + hi)
        if abs(new - alpha) <= 1e-13 * (1.0 + alpha):
            break
        alpha = new
    return alpha, mean, cov


def fit_truncated_power_law(data: np.ndarray, xmin: float) -> tuple[float, float]:
    """Maximum-likelihood (α, Λ) of p(x) ∝ x^-α e^(-Λx) on x ≥ ``xmin``, with α ≥ 0, Λ ≥ 0.

    The model is an exponential family in (ln x, x): the log-likelihood is concave, and its
    maximum is where the model's means of ln(x/xmin) and x/xmin equal the data's. For each
    t = Λ·xmin the best α solves the first equation (1-D Newton); the profile over t is concave
    with slope mean(x/xmin) − data mean, found by safeguarded Newton on a bracket. Λ = 0 (the
    power law, α = 1 + n/Σ ln(x/xmin)) when the pure power law's mean of x/xmin is already no
    larger than the data's. α ≥ 0 is the powerlaw package's domain for this law (a negative α
    is a bump, not a tail); α = 0 is an exponential.

    Args:
        data: samples; those below ``xmin`` are ignored.
        xmin: lower end of the tail (> 0).

    Returns:
        ``(alpha, Lambda)``; NaN, NaN when the tail has fewer than 2 distinct values or the
        iteration does not converge.

    >>> x = np.random.default_rng(1).gamma(0.5, 1.0, 100_000)   # density ∝ x^-0.5 e^-x
    >>> a, lam = fit_truncated_power_law(x, 0.1)
    >>> abs(a - 0.5) < 0.05, abs(lam - 1.0) < 0.05
    (True, True)
    """
    x = np.asarray(data, dtype=np.float64)
    u = x[x >= xmin] / xmin
    if u.size < 2 or not np.all(np.isfinite(u)) or np.ptp(u) <= 0:
        return math.nan, math.nan
    m1, m2 = float(np.mean(np.log(u))), float(np.mean(u))
    alpha = 1.0 + 1.0 / m1
    if alpha > 2.0 and (alpha - 1.0) / (alpha - 2.0) <= m2:
        return alpha, 0.0
    t, t_lo, t_hi = 1.0 / m2, 0.0, math.inf  # profile slope > 0 on t_lo, < 0 on t_hi
    for _ in range(200):
        alpha, mean, cov = _alpha_given_t(t, m1, alpha)
        slope = mean[1] - m2
        t_lo, t_hi = (t, t_hi) if slope > 0 else (t_lo, t)
        curvature = cov[1, 1] - (cov[0, 1] ** 2 / cov[0, 0] if alpha > 0 else 0.0)
        new = t + slope / curvature
        if not t_lo < new < t_hi:
            new = 4.0 * t if t_hi == math.inf else 0.25 * t if t_lo == 0 else math.sqrt(
                t_lo * t_hi)
        if abs(new - t) <= 1e-13 * t:
            return float(alpha), float(t / xmin)
        t = new
    return math.nan, math.nan


# ----------------------------------------------------------------------------- dispatcher


def _clip_fingers(nz: np.ndarray, n_evals: int, max_fingers: int | None, finger_thresh: float
                  ) -> tuple[PowerLawFit, int, int, PowerLawFit]:
    """weightwatcher's ``clip_xmax`` loop: (best fit, num_fingers, eigenvalues clipped, raw)."""
    if max_fingers is None or max_fingers < 0 or max_fingers < n_evals / 2:
        max_fingers = DEFAULT_MAX_FINGERS  # weightwatcher's reset, reproduced as is
    first = fit_power_law(nz)
    if not first.ok:
        return first, 0, 0, first
    for clip in range(2, max_fingers):
        if nz.size - clip < 2:
            break  # weightwatcher crashes here (fit on < 2 points); lmlab keeps the best so far
        fit = fit_power_law(nz[:-clip])
        if not fit.ok:
            break  # only alpha <= 1 fails here, which weightwatcher's alpha <= 2 stop also ends
        if fit.alpha + finger_thresh < first.alpha:
            return fit, clip - 1, clip, first
        if fit.alpha <= MIN_FINGER_ALPHA:
            break
    return first, 0, 0, first


def fit_layer(
    evals: np.ndarray,
    *,
    fit: str = "PL",
    fix_fingers: str | bool | None = None,
    xmax: int | str | None = None,
    xmin_max: float | None = None,
    max_fingers: int | None = DEFAULT_MAX_FINGERS,
    finger_thresh: float = 1.0,
) -> LayerFit:
    """Fit one layer's ESD with weightwatcher's ``analyze()`` fit options (see module doc).

    Args:
        evals: all eigenvalues of the layer, sorted ascending (as weightwatcher's
            ``apply_powerlaw`` receives them; values ≤ 1e-5 are ignored by the fits).
        fit: ``"PL"``, ``"TPL"`` or ``"E_TPL"``.
        fix_fingers: None, ``"xmin_peak"`` or ``"clip_xmax"``.
        xmax: None, ``"force"`` (same as None here) or ±k: drop the top k eigenvalues.
        xmin_max: upper end of the ``xmin_peak`` range (default 1.5·peak).
        max_fingers, finger_thresh: the ``clip_xmax`` loop's settings.

    Returns:
        A :class:`LayerFit`; failed fits have NaN values and a ``reason``.

    Raises:
        LmlabError: refused options (see :func:`validate_fit_options`).

    >>> fit_layer(np.array([0.5, 1.0]), xmax=-2).reason
    'xmax=-2 would drop more than half of the 2 eigenvalues'
    """
    validate_fit_options(fit=fit, fix_fingers=fix_fingers, xmax=xmax, xmin_max=xmin_max,
                         max_fingers=max_fingers, finger_thresh=finger_thresh)
    tpl = fit in _TPL_NAMES
    if fit == "E_TPL":
        fix_fingers = "xmin_peak"
    x = np.sort(np.asarray(evals, dtype=np.float64).ravel())
    k = _as_int(xmax)
    if k is not None:
        k = abs(k)
        if k > x.size / 2:
            return _failed(f"xmax={xmax} would drop more than half of the {x.size} eigenvalues")
        x = x[:-k]
    nz = x[x > EVALS_THRESH]
    num_fingers, clipped, raw_alpha = 0, 0, math.nan
    if fix_fingers == "clip_xmax":
        pl, num_fingers, clipped, raw = _clip_fingers(nz, x.size, max_fingers,
                                                      float(finger_thresh))
        raw_alpha = raw.alpha
    elif fix_fingers == "xmin_peak":
        rng = xmin_peak_range(x, xmin_max)
        if rng is not None and rng[1] < rng[0]:
            return _failed(f"xmin_max={xmin_max:g} is below 0.95 x the ESD peak ({rng[0]:.4g}); "
                           "raise it or leave it None")
        pl = fit_power_law(nz, xmin_range=rng)
    else:
        pl = fit_power_law(nz)
    if not pl.ok:
        return _failed(pl.reason, num_fingers, raw_alpha, pl.small_n)
    alpha, lam = pl.alpha, math.nan
    if tpl:
        alpha, lam = fit_truncated_power_law(nz[: nz.size - clipped], pl.xmin)
        if not math.isfinite(alpha):
            return _failed("truncated power-law fit did not converge", num_fingers, raw_alpha,
                           pl.small_n)
    return LayerFit(
        alpha=float(alpha), Lambda=float(lam), xmin=pl.xmin, xmax=pl.xmax, D=pl.D,
        sigma=pl.sigma, num_pl_spikes=int(np.count_nonzero(x >= pl.xmin)),
        num_fingers=num_fingers, raw_alpha=float(raw_alpha), small_n=pl.small_n,
    )
