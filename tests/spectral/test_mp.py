"""Marchenko–Pastur edges, density and weightwatcher's ``mp_fit`` columns: Gaussian random
matrices (known answers) and weightwatcher run side by side (parity)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.integrate import quad

from lmlab.spectral.esd import matrices_of, spectrum_of
from lmlab.spectral.mp import (
    MP_FIT_COLUMNS,
    _linear_kde,
    fit_mp,
    mp_edges,
    mp_fit_columns,
    mp_pdf,
    mp_split,
)
from lmlab.spectral.sources import iter_layers
from tests.conftest import tiny_model


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


# ----------------------------------------------------------------------------- mp_fit


def _layer_spectra(model: torch.nn.Module) -> dict[int, tuple[np.ndarray, int, int, int]]:
    """lmlab's per-layer eigenvalues (what analyze() hands to mp_fit_columns), by layer_id."""
    out = {}
    for ref in iter_layers(model):
        W = ref.load().detach().float().numpy()
        mats, N, M, rf = matrices_of(W, ref.layer_type)
        scale = math.sqrt(0.5) if ref.layer_type == "conv2d" else 1.0
        out[ref.layer_id] = (spectrum_of(mats, N=N, scale=scale).evals, N, M, rf)
    return out


def _assert_mp_parity(model: torch.nn.Module, ww_table: pd.DataFrame) -> None:
    spectra = _layer_spectra(model)
    assert len(ww_table) > 0
    for _, row in ww_table.iterrows():
        evals, N, M, rf = spectra[int(row["layer_id"])]
        cols = mp_fit_columns(evals, N, M, rf)
        assert list(cols) == list(MP_FIT_COLUMNS)
        assert cols["num_spikes"] == row["num_spikes"], row["layer_id"]
        for c in MP_FIT_COLUMNS:
            assert cols[c] == pytest.approx(float(row[c]), rel=1e-9, abs=1e-300), (
                row["layer_id"], c)


# a square (quarter-circle), a tall and a wide layer of each family
_PARITY_LAYERS = {"gpt2": [3, 9, 16, 33], "llama": [6, 7, 13], "bert": [2, 12, 24]}


def test_mp_fit_matches_weightwatcher(family: str, ww_analyze) -> None:
    model = tiny_model(family)
    table = ww_analyze(model, mp_fit=True, layers=_PARITY_LAYERS[family])
    assert set(MP_FIT_COLUMNS) <= set(table.columns)
    _assert_mp_parity(model, table)


@pytest.mark.slow
def test_mp_fit_matches_weightwatcher_everywhere(family: str, ww_analyze) -> None:
    model = tiny_model(family)
    _assert_mp_parity(model, ww_analyze(model, mp_fit=True))


@pytest.mark.slow
def test_mp_fit_matches_weightwatcher_on_conv_and_heavy_tails(ww_analyze) -> None:
    rng = np.random.default_rng(1)
    torch.manual_seed(0)
    layers = [torch.nn.Conv2d(16, 32, 3), torch.nn.Conv2d(8, 8, 3), torch.nn.Linear(200, 500),
              torch.nn.Linear(300, 90), torch.nn.Linear(120, 400), torch.nn.Linear(400, 128),
              torch.nn.Linear(256, 256)]
    heavy = [rng.standard_t(2.5, size=(90, 300)),
             rng.standard_normal((400, 120)) + 0.3 * np.outer(rng.standard_normal(400),
                                                                rng.standard_normal(120)),
             rng.standard_cauchy((128, 400)), rng.standard_t(1.5, size=(256, 256))]
    with torch.no_grad():
        for layer, W in zip(layers[3:], heavy, strict=True):
            layer.weight.copy_(torch.tensor(W))
    model = torch.nn.ModuleList(layers)
    table = ww_analyze(model, mp_fit=True)
    assert (table["num_spikes"] > 0).sum() >= 3  # the heavy-tailed layers do have spikes
    _assert_mp_parity(model, table)


def test_linear_kde_matches_scikit_learn() -> None:
    from sklearn.neighbors import KernelDensity

    data = np.sort(np.random.default_rng(0).gamma(2.0, 0.5, size=700))
    grid = np.linspace(0.0, data[-1] + 0.5, 1000)
    ref = np.exp(KernelDensity(kernel="linear", bandwidth=0.1).fit(data[:, None])
                 .score_samples(grid[:, None]))
    np.testing.assert_allclose(_linear_kde(data, grid, 0.1), ref, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize(("N", "M", "sigma"), [(2000, 500, 0.05), (1200, 400, 3.0)])
def test_mp_fit_of_a_gaussian_matrix_recovers_the_mp_law(N: int, M: int, sigma: float) -> None:
    W = np.random.default_rng(N).standard_normal((N, M)) * sigma
    fit = fit_mp(spectrum_of([W]).evals, N, M)
    lo, hi = mp_edges(N, M, sigma**2)
    assert fit.ok and fit.law == "MP"
    assert fit.num_spikes == 0
    assert fit.sigma_mp == pytest.approx(1.0, abs=0.02)  # mean-1 rescaled ESD
    assert fit.bulk_max == pytest.approx(hi, rel=0.03)
    assert fit.bulk_min == pytest.approx(lo, rel=0.05)
    assert fit.mp_softrank == pytest.approx(1.0, abs=0.05)
    assert fit.W_scale == pytest.approx(1 / (sigma * math.sqrt(N)), rel=0.01)


def test_mp_fit_of_a_square_gaussian_matrix_is_a_quarter_circle() -> None:
    N = 600
    W = np.random.default_rng(5).standard_normal((N, N)) * 0.1
    fit = fit_mp(spectrum_of([W]).evals, N, N)
    assert fit.law == "QC" and fit.num_spikes == 0
    assert fit.sigma_mp == pytest.approx(1.0, abs=0.03)
    assert fit.bulk_min == 0.0
    assert fit.bulk_max == pytest.approx(mp_edges(N, N, 0.01)[1], rel=0.05)  # 4Nσ²


def test_mp_fit_counts_planted_spikes() -> None:
    rng = np.random.default_rng(3)
    N, M = 2000, 400
    W = rng.standard_normal((N, M)) + 0.2 * rng.standard_normal((N, 3)) @ rng.standard_normal(
        (3, M))
    fit = fit_mp(spectrum_of([W]).evals, N, M)
    assert fit.num_spikes == 3
    assert fit.mp_softrank < 0.5


@pytest.mark.parametrize("evals", [np.array([]), np.zeros(50), np.array([1.0, np.nan, 2.0])])
def test_mp_fit_of_a_degenerate_spectrum_is_nan_with_a_reason(evals: np.ndarray) -> None:
    fit = fit_mp(evals, 100, 50)
    assert not fit.ok and "mp fit" in fit.reason
    cols = mp_fit_columns(evals, 100, 50)
    assert all(math.isnan(v) for v in cols.values())
