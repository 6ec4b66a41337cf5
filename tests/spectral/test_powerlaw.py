"""Power-law fits: known exponents from Pareto samples, and exact agreement with the
reference estimator (a plain per-candidate loop written from the formulas, and weightwatcher)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from lmlab.spectral.powerlaw import fit_power_law


def naive_ww_fit(evals: np.ndarray, thresh: float = 1e-5) -> tuple[float, float, float]:
    """weightwatcher's standard estimator as a loop over xmin candidates (the oracle)."""
    data = np.sort(evals[evals > thresh])
    best = (np.inf, np.nan, np.nan)
    for i in range(len(data) - 1):
        tail = data[i:]
        n = len(tail)
        alpha = 1 + n / np.sum(np.log(tail / data[i]))
        D = 1.0
        if alpha > 1:
            D = np.max(np.abs(1 - (tail / data[i]) ** (1 - alpha) - np.arange(n) / n))
        if D < best[0]:
            best = (D, alpha, data[i])
    return best[1], best[2], best[0]


@pytest.mark.parametrize("alpha_true", [1.8, 2.5, 3.5, 5.0])
def test_recovers_pareto_exponent(alpha_true: float) -> None:
    rng = np.random.default_rng(int(alpha_true * 10))
    x = (rng.pareto(alpha_true - 1, 6_000) + 1.0) * 0.3  # density ∝ x^-alpha_true, x ≥ 0.3
    fit = fit_power_law(x)
    assert fit.ok
    assert abs(fit.alpha - alpha_true) < 4 * fit.sigma + 0.05
    assert fit.sigma == pytest.approx((fit.alpha - 1) / np.sqrt(fit.n_tail))


def test_tail_exponent_with_a_bulk_below() -> None:
    """A Pareto tail above an exponential bulk: xmin lands near the junction, α is recovered."""
    rng = np.random.default_rng(1)
    bulk = rng.uniform(0.01, 1.0, 4000)
    tail = rng.pareto(2.0, 2000) + 1.0  # α = 3 above 1
    fit = fit_power_law(np.concatenate([bulk, tail]))
    assert 0.8 < fit.xmin < 1.6
    assert abs(fit.alpha - 3.0) < 0.2


@pytest.mark.parametrize("seed", range(5))
def test_matches_naive_loop_exactly(seed: int) -> None:
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((300, 120)) * rng.uniform(0.5, 2.0, 120)
    evals = np.linalg.svd(W, compute_uv=False) ** 2
    alpha, xmin, D = naive_ww_fit(evals)
    fit = fit_power_law(evals)
    assert fit.xmin == xmin
    assert fit.alpha == pytest.approx(alpha, rel=1e-12)
    assert fit.D == pytest.approx(D, rel=1e-10)


@pytest.mark.parametrize("n", [5, 12, 19, 20, 64, 700])
def test_matches_weightwatcher_fit(n: int, ww_analyze) -> None:  # noqa: ARG001 - clean import
    from weightwatcher.WW_powerlaw import WWFit

    rng = np.random.default_rng(n)
    x = np.sort(rng.pareto(2.5, n) + 1.0)
    with contextlib.redirect_stdout(io.StringIO()):
        ref = WWFit(x)
    fit = fit_power_law(x)
    assert fit.small_n == (n < 20)
    assert fit.xmin == ref.xmin
    assert fit.alpha == pytest.approx(ref.alpha, rel=1e-12, abs=1e-12)
    assert fit.D == pytest.approx(ref.D, rel=1e-10)
    if n >= 8:
        assert fit.sigma == pytest.approx(ref.sigma, rel=1e-10)
    else:
        # With fewer than 8 points weightwatcher computes σ before its whole-sample fallback
        # sets α, so it reports σ = -1/√n; lmlab reports the consistent (α-1)/√n.
        assert ref.sigma == pytest.approx(-1 / np.sqrt(n))
        assert fit.sigma == pytest.approx((fit.alpha - 1) / np.sqrt(n))


def test_failures_are_reported_not_minus_one() -> None:
    assert fit_power_law(np.array([1.0])).status == "failed"
    assert np.isnan(fit_power_law(np.zeros(50)).alpha)
    bad = fit_power_law(np.array([1.0, np.nan, 3.0]))
    assert bad.status == "failed" and "NaN" in bad.reason


def test_xmin_range_restricts_candidates() -> None:
    rng = np.random.default_rng(3)
    x = rng.pareto(2.0, 5000) + 1.0
    fit = fit_power_law(x, xmin_range=(2.0, 3.0))
    assert 2.0 <= fit.xmin <= 3.0
    assert fit_power_law(x, xmin_range=(1e6, 2e6)).status == "failed"


@pytest.mark.parametrize("seed", range(12))
def test_pruned_search_equals_exhaustive_search(seed: int) -> None:
    """Skipping candidates by their lower bound never changes the chosen fit."""
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(25, 3000))
    shape = rng.uniform(0.5, 4.0)
    x = np.concatenate([rng.uniform(0.01, 1.0, n), rng.pareto(shape, n // 3) + 1.0])
    if seed % 3 == 0:  # repeated values make exact ties in D
        x = np.round(x, 2)
    fast, full = fit_power_law(x), fit_power_law(x, all_distances=True)
    assert (fast.xmin, fast.alpha, fast.D) == (full.xmin, full.alpha, full.D)
    assert not np.isnan(full.Ds).any()
    seen = ~np.isnan(fast.Ds)
    np.testing.assert_array_equal(fast.Ds[seen], full.Ds[seen])
    assert np.all(full.Ds[~seen] >= full.D)
