"""Marchenko–Pastur law: the spectrum of a random (structure-free) weight matrix.

For an N×M matrix W (N ≥ M) with i.i.d. entries of variance σ², the eigenvalues of WᵀW
(unnormalised, as everywhere in :mod:`lmlab.spectral`) fill, as N, M → ∞ with Q = N/M fixed,
the interval

    λ± = N σ² (1 ± 1/√Q)²

with density ``p(λ) = Q / (2π σ² N λ) · √((λ+ − λ)(λ − λ−))`` (normalised over that interval).
Eigenvalues above λ+ are "spikes": structure a random matrix would not have.

>>> lo, hi = mp_edges(N=400, M=100, sigma2=1.0)
>>> round(lo, 6), round(hi, 6)
(100.0, 900.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["mp_edges", "mp_pdf", "MPSplit", "mp_split"]


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
