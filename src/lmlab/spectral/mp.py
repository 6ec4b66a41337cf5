"""Marchenko–Pastur law: the spectrum of a random (structure-free) weight matrix.

For an N×M matrix W (N ≥ M) with i.i.d. entries of variance σ², the eigenvalues of WᵀW
(unnormalised, as everywhere in :mod:`lmlab.spectral`) fill, as N, M → ∞ with Q = N/M fixed,
the interval

    λ± = N σ² (1 ± 1/√Q)²

with density ``p(λ) = Q / (2π σ² N λ) · √((λ+ − λ)(λ − λ−))`` (normalised over that interval).
Eigenvalues above λ+ are "spikes": structure a random matrix would not have.

:func:`fit_mp` is weightwatcher 0.7.7's ``analyze(mp_fit=True)``: it fits the scale σ of this law
to a layer's ESD and counts the spikes above the fitted bulk (:data:`MP_FIT_COLUMNS`).

>>> lo, hi = mp_edges(N=400, M=100, sigma2=1.0)
>>> round(lo, 6), round(hi, 6)
(100.0, 900.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["mp_edges", "mp_pdf", "MPSplit", "mp_split", "MPFit", "fit_mp", "mp_fit_columns",
           "MP_FIT_COLUMNS"]

#: weightwatcher 0.7.7's ``analyze(mp_fit=True)`` columns, in the order of its table
#: (alphabetical, like every column of weightwatcher's table after ``layer_id, name``).
MP_FIT_COLUMNS: tuple[str, ...] = (
    "W_scale", "bulk_max", "bulk_min", "mp_softrank", "num_spikes", "sigma_mp")


def mp_edges(N: int, M: int, sigma2: float = 1.0) -> tuple[float, float]:
    """Bulk edges (λ−, λ+) of the eigenvalues of WᵀW for an N×M i.i.d. matrix.

    Args:
        N, M: matrix dimensions (either order; the larger is used as N).
        sigma2: variance of the entries.
    """
    N, M = max(N, M), min(N, M)
    q = M / N
    return float(N * sigma2 * (1 - np.sqrt(q)) ** 2), float(N * sigma2 * (1 + np.sqrt(q)) ** 2)


def mp_pdf(x: np.ndarray, N: int, M: int, sigma2: float = 1.0) -> np.ndarray:
    """Marchenko–Pastur density of the eigenvalues of WᵀW at ``x`` (0 outside the bulk).

    >>> import numpy as np
    >>> from scipy.integrate import quad
    >>> lo, hi = mp_edges(400, 100)
    >>> round(quad(lambda t: mp_pdf(np.array([t]), 400, 100)[0], lo, hi)[0], 6)
    1.0
    """
    N, M = max(N, M), min(N, M)
    lo, hi = mp_edges(N, M, sigma2)
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(x)
    inside = (x > lo) & (x < hi)
    xi = x[inside]
    q = M / N
    out[inside] = np.sqrt((hi - xi) * (xi - lo)) / (2 * np.pi * q * sigma2 * N * xi)
    return out


@dataclass(frozen=True)
class MPSplit:
    """A spectrum split into a Marchenko–Pastur bulk and the spikes above it.

    Attributes:
        sigma2: the entry variance used (estimated or given).
        lambda_minus, lambda_plus: the bulk edges.
        num_spikes: eigenvalues above ``lambda_plus``.
        bulk_fraction: share of eigenvalues inside the bulk edges.
    """

    sigma2: float
    lambda_minus: float
    lambda_plus: float
    num_spikes: int
    bulk_fraction: float


def mp_split(evals: np.ndarray, N: int, M: int, sigma2: float | None = None) -> MPSplit:
    """Split eigenvalues of WᵀW into the MP bulk and spikes.

    ``sigma2`` defaults to the moment estimate mean(λ)/N, exact in expectation for an i.i.d.
    matrix (E tr WᵀW = N M σ²).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> W = rng.standard_normal((2000, 500))
    >>> s = mp_split(np.linalg.eigvalsh(W.T @ W), 2000, 500)
    >>> s.num_spikes, round(s.sigma2, 2)
    (0, 1.0)
    """
    N, M = max(N, M), min(N, M)
    ev = np.asarray(evals, dtype=np.float64)
    s2 = float(np.mean(ev) / N) if sigma2 is None else float(sigma2)
    lo, hi = mp_edges(N, M, s2)
    # allow the finite-size Tracy–Widom fluctuation of the edge: ~ N^(-2/3) relative
    margin = hi * 4.0 * N ** (-2.0 / 3.0)
    spikes = int(np.count_nonzero(ev > hi + margin))
    inside = float(np.mean((ev >= lo - margin) & (ev <= hi + margin))) if ev.size else 0.0
    return MPSplit(s2, float(lo), float(hi), spikes, inside)


# ----------------------------------------------------------------------------- MP fit
#
# weightwatcher's fit, step by step (weightwatcher 0.7.7, ``WeightWatcher.mp_fit``):
#  1. rescale the ESD to mean 1: x = s²·λ with s = √(n / Σλ)  (``W_scale``);
#  2. estimate the density of x (of √x when N = M: the quarter-circle law of singular values)
#     by a linear-kernel KDE of bandwidth 0.1 on 1000 points of [0, max + 0.5], keeping the
#     points where it exceeds 0.01;
#  3. choose σ minimising Σ (law(σ) − KDE)² over those points: first on the grid
#     σ = σ₀·(0.05, 0.06, …, 1.99) with σ₀ the σ that puts λ+ at max(x), then polished by
#     Nelder–Mead (SciPy's ``brute`` + ``fmin``); an MP σ whose λ+ lies below the KDE's peak
#     or beyond the grid, or whose λ− lies above the peak, is penalised;
#  4. bulk edges λ± = σ²(1 ± 1/√Q)², spikes = eigenvalues above λ+ + √(Q^-½ λ+^⅔ M^-⅔)
#     (a Tracy–Widom margin), mp_softrank = λ+ / max(x); edges reported back in λ's units.
# The KDE does not depend on σ, so it is computed once (weightwatcher refits it per σ).

_KDE_BANDWIDTH = 0.1
_KDE_POINTS = 1000
_KDE_FLOOR = 0.01
_PENALTY = 1000.0


@dataclass(frozen=True)
class MPFit:
    """A Marchenko–Pastur (or quarter-circle) fit of one ESD, weightwatcher's ``mp_fit``.

    Attributes:
        sigma_mp: fitted σ of the ESD rescaled to mean 1 (≈ 1 for a random matrix).
        bulk_min, bulk_max: fitted bulk edges λ± in the units of the eigenvalues given.
        num_spikes: eigenvalues above the bulk edge plus a Tracy–Widom margin.
        mp_softrank: λ+ / λmax (≈ 1 for a random matrix, small for strong structure).
        W_scale: the factor s with s²·λ of mean 1.
        law: ``"MP"`` (N > M) or ``"QC"`` (quarter circle, N = M).
        reason: why the fit is undefined (then every number is NaN); empty when it succeeded.
    """

    sigma_mp: float
    bulk_min: float
    bulk_max: float
    num_spikes: float
    mp_softrank: float
    W_scale: float
    law: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason

    def columns(self, prefix: str = "") -> dict[str, Any]:
        """The fit as weightwatcher's columns, each name prefixed (``"rand_"`` for the
        randomized ESD)."""
        spikes: Any = int(self.num_spikes) if self.ok else math.nan
        return {f"{prefix}W_scale": self.W_scale, f"{prefix}bulk_max": self.bulk_max,
                f"{prefix}bulk_min": self.bulk_min, f"{prefix}mp_softrank": self.mp_softrank,
                f"{prefix}num_spikes": spikes, f"{prefix}sigma_mp": self.sigma_mp}


def _failed_fit(law: str, reason: str) -> MPFit:
    nan = math.nan
    return MPFit(nan, nan, nan, nan, nan, nan, law, reason)


def _linear_kde(data: np.ndarray, grid: np.ndarray, h: float) -> np.ndarray:
    """Density of sorted ``data`` at ``grid`` with the kernel (1 − |t|/h)₊ / h.

    Exact sums over the points within h of each grid point (no binning, no prefix sums).
    """
    lo = np.searchsorted(data, grid - h, side="right")
    hi = np.searchsorted(data, grid + h, side="left")
    counts = hi - lo
    row = np.repeat(np.arange(grid.size), counts)  # (pairs,) grid index of each pair
    first = np.cumsum(counts) - counts
    col = np.arange(row.size) - first[row] + lo[row]  # (pairs,) data index of each pair
    weight = np.maximum(1.0 - np.abs(grid[row] - data[col]) / h, 0.0)
    return np.bincount(row, weights=weight, minlength=grid.size) / (data.size * h)


def _law(x: np.ndarray, sigma: np.ndarray, Q: float) -> np.ndarray:
    """Densities (len(sigma), len(x)) of weightwatcher's laws for the rescaled ESD.

    MP: √((λ+ − x)(x − λ−)) / (2π σ² x / Q), 0 outside the bulk. Quarter circle (Q = 1, x
    the singular values): √(4 − x²) / (π σ²), 0 beyond 2 — weightwatcher's form, in which σ
    scales the height only.
    """
    s = sigma[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        if Q == 1.0:
            val = np.sqrt(4.0 - x**2) / (np.pi * s * s)
        else:
            lam_p, lam_m = (s * (1 + np.sqrt(1 / Q))) ** 2, (s * (1 - np.sqrt(1 / Q))) ** 2
            val = np.sqrt((lam_p - x) * (x - lam_m)) / (2 * np.pi * s * s * x / Q)
    return np.where(np.isfinite(val), val, 0.0)


def _loss(sigma: np.ndarray, x: np.ndarray, dens: np.ndarray, Q: float) -> np.ndarray:
    """Squared misfit of the law to the KDE for each σ (the MP penalty as weightwatcher's)."""
    sq = (_law(x, sigma, Q) - dens) ** 2
    loss = np.sum(sq, axis=1)
    if Q != 1.0:
        peak, right = x[int(np.argmax(dens))], float(np.max(x))
        lam_p = (sigma * (1 + np.sqrt(1 / Q))) ** 2
        lam_m = (sigma * (1 - np.sqrt(1 / Q))) ** 2
        bad = (lam_p < peak) | (lam_p > right) | (lam_m > peak)
        loss = np.where(bad, _PENALTY**2 * x.size, loss)
    return loss


def _fit_sigma(x: np.ndarray, Q: float) -> float:
    """σ by grid search then Nelder–Mead, as weightwatcher's ``fit_density_with_range``."""
    from scipy import optimize

    sigma0 = math.sqrt(float(np.max(x)) / (1 + 1 / math.sqrt(Q)) ** 2)
    data = np.sqrt(x) if Q == 1.0 else x  # sorted, as x is
    grid_x = np.linspace(0.0, float(np.max(data)) + 0.5, _KDE_POINTS)
    dens = _linear_kde(data, grid_x, _KDE_BANDWIDTH)
    keep = dens > _KDE_FLOOR
    gx, gd = grid_x[keep], dens[keep]
    sigmas = np.mgrid[slice(0.05 * sigma0, 2.0 * sigma0, 0.01 * sigma0)]
    start = float(sigmas[int(np.argmin(_loss(sigmas, gx, gd, Q)))])

    def loss(p: np.ndarray) -> float:
        return float(_loss(np.asarray(p, dtype=np.float64).reshape(1), gx, gd, Q)[0])

    best = optimize.fmin(loss, start, full_output=True, disp=False)[0]
    return float(best[0])


def fit_mp(evals: np.ndarray, N: int, M: int) -> MPFit:
    """Fit the Marchenko–Pastur law to an ESD: weightwatcher's ``mp_fit`` (exact parity).

    Args:
        evals: eigenvalues of WᵀW (not divided by N), pooled over conv slices or replicas.
        N, M: the matrix dimensions, N ≥ M (Q = N/M; N = M fits the quarter-circle law).

    Returns:
        An :class:`MPFit`; NaNs and a ``reason`` when the ESD has no positive mass.

    >>> rng = np.random.default_rng(0)
    >>> W = rng.standard_normal((1000, 250))
    >>> fit = fit_mp(np.linalg.eigvalsh(W.T @ W), 1000, 250)
    >>> fit.num_spikes, round(fit.sigma_mp, 1), round(fit.bulk_max / mp_edges(1000, 250)[1], 1)
    (0, 1.0, 1.0)
    """
    N, M = max(N, M), min(N, M)
    law = "QC" if N == M else "MP"
    ev = np.sort(np.asarray(evals, dtype=np.float64))
    if ev.size == 0 or M < 1:
        return _failed_fit(law, "mp fit: no eigenvalues")
    total = float(np.sum(ev))
    if not (math.isfinite(total) and total > 0.0) or ev[0] < 0.0:
        return _failed_fit(law, "mp fit: eigenvalues not finite and ≥ 0 with positive sum")
    Q = N / M
    w_scale = math.sqrt(ev.size) / math.sqrt(total)
    x = (w_scale * w_scale) * ev  # rescaled ESD, mean 1
    sigma = _fit_sigma(x, Q)
    bulk_max = (sigma * (1 + 1 / math.sqrt(Q))) ** 2
    bulk_min = (sigma * (1 - 1 / math.sqrt(Q))) ** 2
    tracy_widom = 1 / math.sqrt(Q) * bulk_max ** (2 / 3) * M ** (-2 / 3)
    spikes = int(np.count_nonzero(x > bulk_max + math.sqrt(tracy_widom)))
    return MPFit(sigma_mp=sigma, bulk_min=bulk_min / w_scale**2,
                 bulk_max=bulk_max / w_scale**2, num_spikes=spikes,
                 mp_softrank=bulk_max / float(x[-1]), W_scale=w_scale, law=law)


def mp_fit_columns(evals: np.ndarray, N: int, M: int, rf: int = 1) -> dict[str, Any]:
    """weightwatcher's ``analyze(mp_fit=True)`` columns (:data:`MP_FIT_COLUMNS`) for a layer.

    ``rf`` is accepted for symmetry with the other per-layer calls; weightwatcher's fit uses
    only N, M and the number of eigenvalues (M·rf). A failed fit gives NaNs (see
    :func:`fit_mp` for the reason), never weightwatcher's -1.

    >>> sorted(mp_fit_columns(np.linspace(1.0, 2.0, 50), 200, 50)) == sorted(MP_FIT_COLUMNS)
    True
    """
    del rf  # weightwatcher's fit does not use it
    return fit_mp(evals, N, M).columns()
