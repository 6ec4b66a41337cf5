"""Marchenko–Pastur edges and density against Gaussian random matrices."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad

from lmlab.spectral.esd import spectrum_of
from lmlab.spectral.mp import mp_edges, mp_pdf, mp_split


@pytest.mark.parametrize(
    ("N", "M", "sigma"), [(2000, 500, 1.0), (1500, 1000, 0.05), (3000, 300, 2.0)])
def test_gaussian_spectrum_fills_the_mp_bulk(N: int, M: int, sigma: float) -> None:
    W = np.random.default_rng(N + M).standard_normal((N, M)) * sigma
    evals = spectrum_of([W]).evals
    lo, hi = mp_edges(N, M, sigma**2)
    # finite-size edge fluctuations are O(N^-2/3) relative; 3% is ample at these sizes
    assert evals.max() == pytest.approx(hi, rel=0.03)
    assert evals.min() == pytest.approx(lo, rel=0.05)
    split = mp_split(evals, N, M)
    assert split.num_spikes == 0
    assert split.sigma2 == pytest.approx(sigma**2, rel=0.01)


def test_mp_density_integrates_to_one_and_matches_histogram() -> None:
    N, M = 4000, 1000
    lo, hi = mp_edges(N, M)
    total = quad(lambda t: mp_pdf(np.array([t]), N, M)[0], lo, hi, limit=200)[0]
    assert total == pytest.approx(1.0, abs=1e-6)
    evals = spectrum_of([np.random.default_rng(0).standard_normal((N, M))]).evals
    hist, edges = np.histogram(evals, bins=20, range=(lo, hi), density=True)
    centres = (edges[1:] + edges[:-1]) / 2
    inner = slice(2, -2)  # the density is steep at the edges; compare the interior
    np.testing.assert_allclose(hist[inner], mp_pdf(centres, N, M)[inner], rtol=0.15)


def test_planted_spikes_are_found() -> None:
    rng = np.random.default_rng(3)
    N, M = 2000, 400
    W = rng.standard_normal((N, M))
    u, v = rng.standard_normal((N, 3)), rng.standard_normal((3, M))
    W += 0.2 * u @ v  # rank-3 signal far above the bulk edge
    split = mp_split(spectrum_of([W]).evals, N, M, sigma2=1.0)
    assert split.num_spikes == 3
