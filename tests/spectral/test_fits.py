"""weightwatcher's per-layer fit options (lmlab.spectral.fits): parity with weightwatcher 0.7.7
where it works (xmax=-k, clip_xmax), known answers where it fails (xmin_peak, TPL, E_TPL),
and its refusals."""

from __future__ import annotations

import contextlib
import io
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import integrate, special

from lmlab.errors import LmlabError
from lmlab.spectral.analyze import layer_spectra
from lmlab.spectral.fits import (
    _tpl_stats,
    extra_columns,
    fit_layer,
    fit_truncated_power_law,
    validate_fit_options,
    xmin_peak_range,
)
from lmlab.spectral.powerlaw import fit_power_law
from tests.conftest import tiny_model

PARITY_COLUMNS = ("alpha", "xmin", "xmax", "D", "sigma", "num_pl_spikes")


def assert_parity(model: torch.nn.Module, ww_analyze, **options) -> int:
    """Every layer weightwatcher fits agrees within 1e-9; returns the total num_fingers."""
    df = ww_analyze(model, **options)
    esds = layer_spectra(model, [int(i) for i in df["layer_id"]])
    cols = PARITY_COLUMNS + extra_columns(options.get("fit", "PL"), options.get("fix_fingers"))
    fingers = 0
    for _, row in df.iterrows():
        assert row["status"] == "success", (row["name"], options)
        fit = fit_layer(esds[int(row["layer_id"])], **options)
        assert fit.ok, fit.reason
        for col in cols:
            assert getattr(fit, col) == pytest.approx(float(row[col]), rel=1e-9, abs=1e-12), (
                row["name"], col, options)
        fingers += fit.num_fingers
    return fingers


def gaussian_linear(shape: tuple[int, int], seed: int) -> torch.nn.Module:
    """A Linear layer with i.i.d. Gaussian weights: its Marchenko–Pastur top edge is compressed
    (Tracy–Widom), so the unclipped fit picks a short, steep tail — fingers."""
    W = np.random.default_rng(seed).standard_normal(shape) / np.sqrt(shape[1])
    lin = torch.nn.Linear(shape[1], shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W))
    return torch.nn.Sequential(lin)


# ----------------------------------------------------------------------------- PL, xmax


def test_default_is_fit_power_law() -> None:
    rng = np.random.default_rng(0)
    evals = np.sort(np.concatenate([rng.uniform(0, 1, 500), rng.pareto(2.0, 300) + 1.0]))
    fit, ref = fit_layer(evals), fit_power_law(evals)
    assert (fit.alpha, fit.xmin, fit.xmax, fit.D, fit.sigma) == (
        ref.alpha, ref.xmin, ref.xmax, ref.D, ref.sigma)
    assert fit.num_pl_spikes == np.count_nonzero(evals >= ref.xmin)
    assert math.isnan(fit.Lambda) and math.isnan(fit.raw_alpha) and fit.num_fingers == 0
    assert fit_layer(evals, xmax="force") == fit  # xmax = λ_max is where every fit ends


@pytest.mark.parametrize("options", [dict(xmax=-2), dict(xmax=3), dict(fix_fingers="clip_xmax"),
                                     dict(fix_fingers="clip_xmax", finger_thresh=0.3)])
def test_parity_with_weightwatcher(family: str, ww_analyze, options: dict) -> None:
    assert_parity(tiny_model(family), ww_analyze, **options)


def test_clip_xmax_finds_fingers_like_weightwatcher(ww_analyze) -> None:
    """Gaussian layers (and the tiny models) have fingers: num_fingers > 0 is exercised."""
    found = [assert_parity(gaussian_linear((128, 512), seed), ww_analyze,
                           fix_fingers="clip_xmax") for seed in (0, 1, 2)]
    assert found == [1, 7, 3]
    assert assert_parity(tiny_model("gpt2"), ww_analyze, fix_fingers="clip_xmax") > 0


def test_clip_xmax_max_fingers_reset(ww_analyze) -> None:
    """weightwatcher resets max_fingers < n/2 to 10 and keeps it otherwise: 3 acts as 10 on a
    64-eigenvalue layer, 40 (≥ 32) clips further; both as weightwatcher."""
    model = tiny_model("gpt2")
    esd = layer_spectra(model, [2])[2]
    assert fit_layer(esd, fix_fingers="clip_xmax", max_fingers=3) == fit_layer(
        esd, fix_fingers="clip_xmax")
    assert assert_parity(model, ww_analyze, fix_fingers="clip_xmax", max_fingers=40) > \
        assert_parity(model, ww_analyze, fix_fingers="clip_xmax")


def test_clip_xmax_loop_by_hand() -> None:
    """Known answer of the loop from fits on clipped data: stop at the first α more than
    finger_thresh below the unclipped one; xmax is then the largest kept eigenvalue, and
    num_pl_spikes still counts the clipped ones."""
    rng = np.random.default_rng(2)
    W = rng.standard_normal((128, 512)) / np.sqrt(512)
    evals = np.linalg.eigvalsh(W @ W.T)
    raw = fit_power_law(evals)
    clip = next(k for k in range(2, 10) if fit_power_law(evals[:-k]).alpha + 1.0 < raw.alpha)
    best = fit_power_law(evals[:-clip])
    fit = fit_layer(evals, fix_fingers="clip_xmax")
    assert (fit.num_fingers, fit.raw_alpha, fit.alpha, fit.xmax) == (
        clip - 1, raw.alpha, best.alpha, evals[-clip - 1])
    assert fit.num_pl_spikes == np.count_nonzero(evals >= best.xmin)


def test_clip_xmax_where_weightwatcher_crashes() -> None:
    """max_fingers ≥ n/2 on a tiny layer clips down to nothing in weightwatcher (crash →
    failed); lmlab stops clipping at 2 points left and reports the best fit so far."""
    rng = np.random.default_rng(0)
    evals = np.sort(rng.pareto(3.0, 24) + 1.0)
    fit = fit_layer(evals, fix_fingers="clip_xmax", max_fingers=30)
    assert fit.ok and np.isfinite(fit.alpha)


def test_xmax_too_large(ww_analyze) -> None:
    """More than half dropped: lmlab fails the layer; weightwatcher logs "stopping" yet reports
    the unclipped fit as a success (it reads k as an eigenvalue cut-off above λ_max)."""
    model = tiny_model("gpt2")
    ww_big, ww_default = ww_analyze(model, xmax=-40), ww_analyze(model)
    assert np.allclose(ww_big["alpha"], ww_default["alpha"])
    assert (ww_big["status"] == "success").all()
    fit = fit_layer(layer_spectra(model, [2])[2], xmax=-40)
    assert not fit.ok and math.isnan(fit.alpha) and fit.num_pl_spikes is None
    assert fit.reason == "xmax=-40 would drop more than half of the 64 eigenvalues"


# ----------------------------------------------------------------------------- xmin_peak


def peaked_esd(seed: int = 0) -> tuple[np.ndarray, float]:
    """log10-range [0, 2] (100 bins of 0.02) with a cluster in the bin starting at 0.5, a bulk
    below and a Pareto tail (α = 3) above: the peak is 10**0.5 by construction."""
    rng = np.random.default_rng(seed)
    cluster = 10 ** rng.uniform(0.502, 0.518, 400)
    bulk = 10 ** rng.uniform(0.0, 0.5, 300)
    tail = 3.3 * (rng.pareto(2.0, 600) + 1.0)
    evals = np.concatenate([[1.0, 100.0], cluster, bulk, tail[tail < 99.0]])
    return np.sort(evals), 10**0.5


def brute_force_fit(evals: np.ndarray, lo: float, hi: float) -> tuple[float, float, float]:
    """(alpha, xmin, D) of the KS-best candidate xmin in [lo, hi], by a plain loop."""
    best = (np.inf, np.nan, np.nan)
    for i in range(len(evals) - 1):
        if not lo <= evals[i] <= hi:
            continue
        tail = evals[i:]
        n = len(tail)
        alpha = 1 + n / np.sum(np.log(tail / evals[i]))
        D = np.max(np.abs(1 - (tail / evals[i]) ** (1 - alpha) - np.arange(n) / n))
        if D < best[0]:
            best = (D, alpha, evals[i])
    return best[1], best[2], best[0]


@pytest.mark.parametrize("xmin_max", [None, 3.6])
def test_xmin_peak_known_answer(xmin_max: float | None) -> None:
    evals, peak = peaked_esd()
    lo, hi = xmin_peak_range(evals, xmin_max)
    assert lo == pytest.approx(0.95 * peak, rel=1e-12)
    assert hi == pytest.approx(1.5 * peak if xmin_max is None else xmin_max, rel=1e-12)
    alpha, xmin, D = brute_force_fit(evals, 0.95 * peak, hi)
    fit = fit_layer(evals, fix_fingers="xmin_peak", xmin_max=xmin_max)
    assert fit.xmin == xmin and lo <= fit.xmin <= hi
    assert fit.alpha == pytest.approx(alpha, rel=1e-12)
    assert fit.D == pytest.approx(D, rel=1e-10)
    assert fit.num_pl_spikes == np.count_nonzero(evals >= xmin)


def test_xmin_max_below_peak_fails() -> None:
    fit = fit_layer(peaked_esd()[0], fix_fingers="xmin_peak", xmin_max=1.0)
    assert not fit.ok and "below 0.95 x the ESD peak" in fit.reason


def test_weightwatcher_fails_where_lmlab_fits(ww_analyze) -> None:
    """Evidence for the deliberate differences: weightwatcher 0.7.7 (powerlaw 2.0 installed)
    fails every layer with xmin_peak, TPL/E_TPL (pl_package='powerlaw') or pl_package='powerlaw',
    and refuses TPL with its default pl_package."""
    model = tiny_model("gpt2")
    for options in [dict(fix_fingers="xmin_peak"), dict(fit="TPL", pl_package="powerlaw"),
                    dict(fit="E_TPL", pl_package="powerlaw"), dict(pl_package="powerlaw")]:
        df = ww_analyze(model, **options)
        assert (df["status"] == "failed").all() and (df["alpha"] == -1).all(), options
    with pytest.raises(Exception, match="params not valid"):
        ww_analyze(model, fit="TPL")
    esds = layer_spectra(model, [int(i) for i in df["layer_id"]])
    for evals in esds.values():
        for options in [dict(fix_fingers="xmin_peak"), dict(fit="E_TPL")]:
            assert fit_layer(evals, **options).ok


# ----------------------------------------------------------------------------- TPL


@pytest.mark.parametrize("alpha", [-2.5, 0.3, 0.999, 1.0, 1.7, 2.0, 3.0, 6.4])
@pytest.mark.parametrize("t", [1e-8, 1e-3, 0.4, 3.0, 60.0])
def test_tpl_normaliser(alpha: float, t: float) -> None:
    """ln ∫_1^∞ u^-α e^(-tu) du and the mean of u against scipy: the upper incomplete gamma for
    α < 1, E_n for integer α, adaptive quadrature otherwise; the mean of u is E_(α-1)/E_α."""

    def exact(a: float) -> float:
        if a < 1:
            return (a - 1) * math.log(t) + special.gammaln(1 - a) + math.log(
                special.gammaincc(1 - a, t))
        if a == int(a):
            return math.log(special.expn(int(a), t))
        def integrand(s: float) -> float:
            return math.exp(-(a - 1) * s - t * math.expm1(s)) if s < 700 else 0.0

        value = integrate.quad(integrand, 0, np.inf, epsabs=0, epsrel=1e-13, limit=500)[0]
        return math.log(value) - t

    log_e, mean, _ = _tpl_stats(alpha, t)
    assert log_e == pytest.approx(exact(alpha), rel=1e-10, abs=1e-10)
    if alpha - 1 < 1 or alpha == int(alpha):
        assert mean[1] == pytest.approx(math.exp(exact(alpha - 1) - exact(alpha)), rel=1e-9)


def test_tpl_small_lambda_limit() -> None:
    """Λ → 0 with α > 1: the normalisation tends to the power law's 1/(α-1)."""
    for alpha in (1.5, 2.5, 4.0):
        assert _tpl_stats(alpha, 1e-30)[0] == pytest.approx(-math.log(alpha - 1), abs=1e-9)


def sample_tpl(alpha: float, lam: float, xmin: float, n: int, seed: int) -> np.ndarray:
    """Exact draws from p(x) ∝ x^-α e^(-λx), x ≥ xmin, by rejection: from a Pareto accepted
    with probability e^(-λ(x-xmin)) (α > 1), or from a shifted exponential accepted with
    probability (x/xmin)^-α (0 ≤ α ≤ 1)."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while sum(len(o) for o in out) < n:
        if alpha > 1:
            x = xmin * (1 - rng.random(4 * n)) ** (-1 / (alpha - 1))
            keep = rng.random(4 * n) < np.exp(-lam * (x - xmin))
        else:
            x = xmin + rng.exponential(1 / lam, 4 * n)
            keep = rng.random(4 * n) < (x / xmin) ** -alpha
        out.append(x[keep])
    return np.concatenate(out)[:n]


@pytest.mark.parametrize("alpha, lam, xmin, tol_a, tol_l", [
    (2.5, 0.5, 1.0, 0.08, 0.04),
    (1.5, 2.0, 0.3, 0.08, 0.08),
    (0.5, 1.0, 1.0, 0.1, 0.04),
    (1.0, 0.2, 1.0, 0.04, 0.008),
])
def test_tpl_recovers_known_parameters(alpha, lam, xmin, tol_a, tol_l) -> None:
    """Means over 6 seeds of n = 20k (tolerances ≈ 3 standard errors of the mean)."""
    fits = np.array([fit_truncated_power_law(sample_tpl(alpha, lam, xmin, 20_000, seed), xmin)
                     for seed in range(6)])
    assert np.all(fits[:, 1] >= 0)
    assert abs(fits[:, 0].mean() - alpha) < tol_a
    assert abs(fits[:, 1].mean() - lam) < tol_l


def tpl_loglik(u: np.ndarray, alpha: float, t: float) -> float:
    """Mean log-likelihood of u = x/xmin ≥ 1 under u^-α e^(-tu), normalised by scipy quad."""
    z = integrate.quad(lambda s: math.exp(-(alpha - 1) * s - t * math.expm1(s)) if s < 700
                       else 0.0, 0, np.inf, epsabs=0, epsrel=1e-13, limit=500)[0]
    return float(np.mean(-alpha * np.log(u) - t * (u - 1))) - math.log(z)


@pytest.mark.parametrize("seed", range(8))
def test_tpl_power_law_boundary(seed: int) -> None:
    """Pareto samples (α = 3, Λ = 0): when the pure power law's mean of x/xmin (α0-1)/(α0-2)
    is no larger than the data's, Λ = 0 exactly and α = α0 = 1 + n/Σ ln(x/xmin); otherwise
    Λ > 0, with a likelihood above the power law's (scipy-normalised)."""
    u = np.random.default_rng(seed).pareto(2.0, 5000) + 1.0
    alpha0 = 1 + u.size / np.sum(np.log(u))
    alpha, lam = fit_truncated_power_law(0.5 * u, 0.5)
    if (alpha0 - 1) / (alpha0 - 2) <= u.mean():
        assert lam == 0.0 and alpha == pytest.approx(alpha0, rel=1e-14)
    else:
        assert lam > 0
        assert tpl_loglik(u, alpha, lam * 0.5) > tpl_loglik(u, alpha0, 0.0)


@pytest.mark.parametrize("shape", [0.3, 0.8])
def test_tpl_gamma_tail(shape: float) -> None:
    """Above any xmin, a Gamma(k, 1) density is a truncated power law with α = 1 - k, Λ = 1."""
    x = np.random.default_rng(5).gamma(shape, 1.0, 100_000)
    alpha, lam = fit_truncated_power_law(x, 0.05)
    assert alpha == pytest.approx(1 - shape, abs=0.03)
    assert lam == pytest.approx(1.0, abs=0.03)


def test_tpl_exponential_face() -> None:
    """A Marchenko–Pastur top edge is a bump, not a tail: the likelihood wants α < 0, so α = 0
    and the exponential's MLE Λ = 1/(mean(x) - xmin)."""
    W = np.random.default_rng(0).standard_normal((128, 512)) / np.sqrt(512)
    evals = np.linalg.eigvalsh(W @ W.T)
    fit = fit_layer(evals, fit="TPL")
    tail = evals[evals >= fit.xmin]
    assert fit.alpha == 0.0
    assert fit.Lambda == pytest.approx(1 / (tail.mean() - fit.xmin), rel=1e-12)


def test_tpl_matches_powerlaw_package() -> None:
    """The powerlaw package (2.0) as an independent oracle, with xmin given: same (α, Λ) within
    its optimiser's tolerance, and lmlab's maximum is at least as likely by its likelihood."""
    powerlaw = pytest.importorskip("powerlaw")
    x = sample_tpl(2.2, 0.8, 1.0, 4000, seed=11)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = powerlaw.Fit(x, xmin=1.0, verbose=False).truncated_power_law
        alpha, lam = fit_truncated_power_law(x, 1.0)
        mine = powerlaw.Truncated_Power_Law(xmin=1.0, parameters=[alpha, lam], verbose=0)
        ll_mine = float(np.sum(mine.loglikelihoods(x)))
    assert alpha == pytest.approx(ref.alpha, rel=1e-3)
    assert lam == pytest.approx(ref.Lambda, rel=1e-3)
    assert ll_mine >= ref.loglikelihood - 1e-6


@pytest.mark.parametrize("fit", ["TPL", "E_TPL"])
def test_fit_layer_tpl(fit: str) -> None:
    """TPL keeps the power law's xmin, D and sigma (what weightwatcher reports) and fits (α, Λ)
    on the tail above xmin; E_TPL takes xmin from the peak range."""
    evals, _ = peaked_esd(1)
    pl = fit_layer(evals, fix_fingers="xmin_peak" if fit == "E_TPL" else None)
    tpl = fit_layer(evals, fit=fit)
    assert (tpl.xmin, tpl.xmax, tpl.D, tpl.sigma, tpl.num_pl_spikes) == (
        pl.xmin, pl.xmax, pl.D, pl.sigma, pl.num_pl_spikes)
    assert (tpl.alpha, tpl.Lambda) == fit_truncated_power_law(evals, pl.xmin)
    assert tpl.Lambda >= 0 and math.isnan(pl.Lambda)


def test_tpl_with_clip_xmax_fits_the_clipped_tail() -> None:
    W = gaussian_linear((128, 512), 1)[0].weight.detach().double().numpy()
    evals = np.linalg.eigvalsh(W @ W.T)
    pl = fit_layer(evals, fix_fingers="clip_xmax")
    tpl = fit_layer(evals, fit="TPL", fix_fingers="clip_xmax")
    kept = evals[: evals.size - pl.num_fingers - 1]
    assert pl.num_fingers > 0 and tpl.xmax == kept[-1] == pl.xmax
    assert (tpl.alpha, tpl.Lambda) == fit_truncated_power_law(kept, pl.xmin)


# ----------------------------------------------------------------------------- options


def ww_params(options: dict) -> dict:
    """analyze() keyword arguments as weightwatcher's params dict names them."""
    return {("MAX_FINGERS" if k == "max_fingers" else k): v for k, v in options.items()}


@pytest.mark.parametrize("options, ww_refuses", [
    (dict(fit="bogus"), True),
    (dict(fix_fingers="bogus"), True),
    (dict(fix_fingers=True), True),
    (dict(pl_package="bogus"), True),
    (dict(xmax=0), True),
    (dict(xmax=False), True),
    (dict(xmax=-2.0), True),
    (dict(xmax="auto"), True),
    (dict(fix_fingers="clip_xmax", xmax=-2), True),
    (dict(fix_fingers="xmin_peak", xmax=3), True),
    (dict(fit="E_TPL", fix_fingers="clip_xmax", pl_package="powerlaw"), True),
    (dict(fix_fingers="clip_xmax", max_fingers=0), True),
    (dict(finger_thresh=float("nan")), False),
    (dict(finger_thresh=-1.0), False),
    (dict(xmin_max=-1.0), False),
])
def test_refused_options(ww_module, options: dict, ww_refuses: bool) -> None:
    from weightwatcher.constants import DEFAULT_PARAMS

    with pytest.raises(LmlabError) as err:
        validate_fit_options(**options)
    assert "\n" not in str(err.value)
    if set(options) != {"pl_package"}:
        with pytest.raises(LmlabError):
            fit_layer(np.arange(1.0, 50.0),
                      **{k: v for k, v in options.items() if k != "pl_package"})
    if ww_refuses:
        assert not ww_module.WeightWatcher.valid_params({**DEFAULT_PARAMS, **ww_params(options)})


@pytest.mark.parametrize("options", [
    dict(fit="TPL"), dict(fit="E_TPL"), dict(xmax="force"), dict(xmax=np.int64(-2)),
])
def test_accepted_beyond_weightwatcher(ww_module, options: dict) -> None:
    """weightwatcher refuses these (TPL and 'force' need its pl_package='powerlaw'; numpy ints
    are not ints to it); lmlab has one estimator per fit and accepts them."""
    from weightwatcher.constants import DEFAULT_PARAMS

    validate_fit_options(**options)
    assert fit_layer(peaked_esd()[0], **options).ok
    assert not ww_module.WeightWatcher.valid_params({**DEFAULT_PARAMS, **ww_params(options)})


def test_pl_package_powerlaw_accepted() -> None:
    validate_fit_options(pl_package="powerlaw", fit="TPL", xmax="force")


@pytest.mark.parametrize("options", [dict(fix_fingers="clip_xmax"),
                                     dict(fit="TPL", pl_package="powerlaw")])
def test_extra_columns_are_weightwatchers(ww_analyze, options: dict) -> None:
    model = tiny_model("gpt2")
    added = set(ww_analyze(model, **options).columns) - set(ww_analyze(model).columns)
    assert added == set(extra_columns(options.get("fit", "PL"), options.get("fix_fingers")))
