"""weightwatcher's ``analyze(randomize=True)`` columns: known answers (Gaussian matrices, planted
correlation traps, planted low-rank structure) and weightwatcher's statistics over shuffles.

weightwatcher shuffles with NumPy's global state and lmlab with a seeded Generator, so single
values cannot agree; the tests compare means over repeated shuffles within a few standard errors
(weightwatcher is seeded here through ``np.random.seed``, which makes every test deterministic),
and the parts that do not depend on the shuffle exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from lmlab.spectral.esd import matrices_of, spectrum_of
from lmlab.spectral.mp import fit_mp, mp_edges
from lmlab.spectral.randomize import (
    RANDOMIZE_COLUMNS,
    jensen_shannon_distance,
    random_esd,
    randomize_columns,
    randomized_evals_of_layer,
    replicas_for,
    shuffled_spectra,
)
from lmlab.spectral.sources import iter_layers
from tests.conftest import tiny_model

_Z_MAX = 4.0  # |difference of means| / its standard error


def _lmlab_runs(model: torch.nn.Module, layer_ids: list[int], runs: int) -> pd.DataFrame:
    rows = []
    for ref in iter_layers(model):
        if ref.layer_id not in layer_ids:
            continue
        W = ref.load().detach().float().numpy()
        mats, N, M, rf = matrices_of(W, ref.layer_type)
        scale = math.sqrt(0.5) if ref.layer_type == "conv2d" else 1.0
        evals = spectrum_of(mats, N=N, scale=scale).evals
        for seed in range(runs):
            r = random_esd(mats, N, M, rf, scale, evals, np.random.default_rng(seed))
            rows.append({"layer_id": ref.layer_id, **r.columns, "n_rand": r.rand_evals.size,
                         "sum_rand": float(r.rand_evals.sum()),
                         "W_scale": fit_mp(evals, N, M).W_scale})
    return pd.DataFrame(rows)


def _ww_runs(ww_module, ww_analyze, monkeypatch: pytest.MonkeyPatch, model: torch.nn.Module,
             layer_ids: list[int], runs: int) -> pd.DataFrame:
    """weightwatcher's table over ``runs`` shuffles, with the size and sum of the pooled
    randomized ESD it fitted (read from its layer objects)."""
    pooled: list[np.ndarray] = []
    original = ww_module.WeightWatcher.apply_random_esd

    def recording(self, ww_layer, params=None):
        out = original(self, ww_layer, params)
        pooled.append(np.asarray(ww_layer.rand_evals))
        return out

    monkeypatch.setattr(ww_module.WeightWatcher, "apply_random_esd", recording)
    tables = []
    for seed in range(runs):
        np.random.seed(1000 + seed)  # weightwatcher shuffles with NumPy's global state
        tables.append(ww_analyze(model, randomize=True, layers=layer_ids))
    np.random.seed(None)
    table = pd.concat(tables, ignore_index=True)
    assert len(pooled) == len(table)
    table["n_rand"] = [e.size for e in pooled]
    table["sum_rand"] = [float(e.sum()) for e in pooled]
    return table


def _assert_same_statistics(ww: pd.DataFrame, lm: pd.DataFrame, layer_ids: list[int]) -> None:
    assert set(RANDOMIZE_COLUMNS) <= set(ww.columns)
    for lid in layer_ids:
        a, b = ww[ww["layer_id"] == lid], lm[lm["layer_id"] == lid]
        assert len(a) and len(a) == len(b)
        # deterministic: shuffling keeps Σλ = ‖W‖², so the rescaling is the real ESD's
        np.testing.assert_allclose(a["rand_W_scale"].astype(float), b["W_scale"], rtol=1e-12)
        np.testing.assert_allclose(b["rand_W_scale"], b["W_scale"], rtol=1e-12)
        assert (b["num_traps"] == b["rand_num_spikes"]).all()
        # the same number of pooled shuffles, of the same (scaled) entries
        assert set(a["n_rand"]) == set(b["n_rand"]) and len(set(a["n_rand"])) == 1
        np.testing.assert_allclose(a["sum_rand"], b["sum_rand"], rtol=1e-9)
        for c in RANDOMIZE_COLUMNS:
            if c == "rand_W_scale":  # exact above (its spread is rounding, ~1e-16)
                continue
            x, y = a[c].astype(float), b[c].astype(float)
            se = math.sqrt(x.var() / len(x) + y.var() / len(y))
            if se == 0.0:
                assert x.mean() == pytest.approx(y.mean(), rel=1e-9, abs=1e-12), (lid, c)
            else:
                assert abs(x.mean() - y.mean()) < _Z_MAX * se, (lid, c, x.mean(), y.mean(), se)


def test_randomize_matches_weightwatcher_statistics_small_layer(ww_module, ww_analyze,
                                                                monkeypatch) -> None:
    """A 64×192 layer: M < 100, so 5 shuffles are pooled (weightwatcher's rule)."""
    model = tiny_model("gpt2")
    ids = [9]
    ww = _ww_runs(ww_module, ww_analyze, monkeypatch, model, ids, 6)
    _assert_same_statistics(ww, _lmlab_runs(model, ids, 6), ids)


def test_randomize_matches_weightwatcher_statistics_one_shuffle(ww_module, ww_analyze,
                                                                monkeypatch) -> None:
    """A 300×100 layer: one shuffle (M ≥ 100)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(100, 300))
    ids = [1]
    ww = _ww_runs(ww_module, ww_analyze, monkeypatch, model, ids, 6)
    _assert_same_statistics(ww, _lmlab_runs(model, ids, 6), ids)


@pytest.mark.slow
def test_randomize_matches_weightwatcher_statistics_everywhere(
        family: str, ww_module, ww_analyze, monkeypatch) -> None:
    model = tiny_model(family)
    ids = {"gpt2": [2, 3, 16], "llama": [6, 7, 13], "bert": [2, 12, 24]}[family]
    ww = _ww_runs(ww_module, ww_analyze, monkeypatch, model, ids, 12)
    _assert_same_statistics(ww, _lmlab_runs(model, ids, 12), ids)


@pytest.mark.slow
def test_randomize_matches_weightwatcher_statistics_conv2d(ww_module, ww_analyze,
                                                           monkeypatch) -> None:
    """Conv2d kernels: shuffles of each √½-scaled 3×3 slice, pooled (5× when M·rf < 100)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3), torch.nn.Conv2d(8, 8, 3))
    ids = [1, 2]
    ww = _ww_runs(ww_module, ww_analyze, monkeypatch, model, ids, 12)
    _assert_same_statistics(ww, _lmlab_runs(model, ids, 12), ids)


def test_jensen_shannon_distance_matches_weightwatcher(ww_module) -> None:
    from weightwatcher.RMT_Util import jensen_shannon_distance as ww_js

    rng = np.random.default_rng(0)
    p = np.sort(rng.gamma(1.5, size=300))
    q = np.sort(rng.permutation(p) * rng.uniform(0.5, 1.5, size=300))
    q *= p.sum() / q.sum()  # equal sums, as for a spectrum and its shuffle (Σλ = ‖W‖²)
    assert jensen_shannon_distance(p, q) == pytest.approx(float(ww_js(p, q)), rel=1e-12)
    assert jensen_shannon_distance(p, p) == 0.0
    assert jensen_shannon_distance(np.array([2.0, 0.0]), np.array([0.0, 5.0])) == \
        pytest.approx(math.sqrt(math.log(2)))
    with pytest.raises(ValueError, match="different lengths"):
        jensen_shannon_distance(p, p[1:])


def _gaussian(N: int, M: int, seed: int, sigma: float = 0.05) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((N, M)) * sigma).astype(np.float32)


def test_randomized_gaussian_matrix_fills_the_mp_bulk() -> None:
    N, M = 1000, 250
    W = _gaussian(N, M, 0)
    evals = spectrum_of([W]).evals
    r = random_esd([W], N, M, 1, 1.0, evals, np.random.default_rng(1))
    lo, hi = mp_edges(N, M, float(np.var(W.astype(np.float64))))
    assert r.reason == ""
    assert r.rand_evals.size == M
    assert r.rand_evals[-1] == pytest.approx(hi, rel=0.04)
    assert r.rand_evals[0] == pytest.approx(lo, rel=0.06)
    c = r.columns
    assert c["num_traps"] == 0 and c["rand_num_spikes"] == 0
    assert c["max_rand_eval"] == r.rand_evals[-1]
    assert c["rand_bulk_max"] == pytest.approx(hi, rel=0.04)
    assert c["rand_sigma_mp"] == pytest.approx(1.0, abs=0.02)
    assert c["ww_softrank"] == pytest.approx(1.0, abs=0.05)  # nothing for shuffling to destroy
    assert c["ww_maxdist"] == pytest.approx(evals[-1] - r.rand_evals[-1])
    assert c["rand_distance"] < 0.01


def test_planted_correlation_trap_survives_the_shuffle() -> None:
    N, M = 1000, 250
    W = _gaussian(N, M, 0)
    W[3, 7] = 5.0  # 100σ: one entry alone carries λ ≈ 25, far above the bulk edge ≈ 5.6
    evals = spectrum_of([W]).evals
    c = randomize_columns([W], N, M, 1, 1.0, evals, np.random.default_rng(1))
    assert c["num_traps"] == 1
    assert c["max_rand_eval"] > 25.0
    assert c["rand_mp_softrank"] < 0.3
    assert c["ww_softrank"] == pytest.approx(1.0, abs=0.01)  # the real spike is the trap


def test_planted_low_rank_structure_is_destroyed_by_the_shuffle() -> None:
    N, M = 1000, 250
    rng = np.random.default_rng(2)
    W = _gaussian(N, M, 0) + (0.004 * rng.standard_normal((N, 3)) @ rng.standard_normal(
        (3, M))).astype(np.float32)
    evals = spectrum_of([W]).evals
    assert fit_mp(evals, N, M).num_spikes == 3
    c = randomize_columns([W], N, M, 1, 1.0, evals, np.random.default_rng(1))
    assert c["num_traps"] == 0  # structure, not large entries: no trap
    assert c["ww_softrank"] < 0.8
    assert c["ww_maxdist"] > 2.0
    iid = _gaussian(N, M, 0)
    c_iid = randomize_columns([iid], N, M, 1, 1.0, spectrum_of([iid]).evals,
                              np.random.default_rng(1))
    assert c["rand_distance"] > 3 * c_iid["rand_distance"]


def test_small_and_conv_layers_pool_shuffles_of_scaled_slices() -> None:
    assert (replicas_for(99), replicas_for(100), replicas_for(12, rf=9)) == (5, 1, 1)
    W = np.random.default_rng(0).standard_normal((24, 12, 3, 3)).astype(np.float32)
    mats, N, M, rf = matrices_of(W, "conv2d")
    scale = math.sqrt(0.5)
    evals = spectrum_of(mats, N=N, scale=scale).evals
    r = random_esd(mats, N, M, rf, scale, evals, np.random.default_rng(0))
    assert r.rand_evals.size == M * rf  # 108 ≥ 100: one shuffle of each of the 9 slices
    total = 0.5 * float(np.sum(W.astype(np.float64) ** 2))
    assert r.rand_evals.sum() == pytest.approx(total, rel=1e-10)
    assert r.columns["rand_W_scale"] == pytest.approx(fit_mp(evals, N, M).W_scale, rel=1e-12)
    small = _gaussian(120, 40, 3)
    rs = random_esd([small], 120, 40, 1, 1.0, spectrum_of([small]).evals,
                    np.random.default_rng(0))
    assert rs.rand_evals.size == 5 * 40


def test_shuffles_are_reproducible_and_keep_the_entries() -> None:
    W = _gaussian(200, 120, 4)
    evals = spectrum_of([W]).evals
    a = randomize_columns([W], 200, 120, 1, 1.0, evals, np.random.default_rng(7))
    b = randomize_columns([W], 200, 120, 1, 1.0, evals, np.random.default_rng(7))
    c = randomize_columns([W], 200, 120, 1, 1.0, evals, np.random.default_rng(8))
    assert a == b and a != c
    assert tuple(a) == RANDOMIZE_COLUMNS
    Z = (W[:100, :60] + 1j * W[100:, 60:]).astype(np.complex64)  # complex: kept complex
    (ev,) = shuffled_spectra([Z], np.random.default_rng(0))
    assert ev.min() >= 0.0
    assert ev.sum() == pytest.approx(float(np.vdot(Z, Z).real), rel=1e-6)


def test_all_zero_layer_gives_nan_with_a_reason() -> None:
    W = np.zeros((300, 100), np.float32)
    r = random_esd([W], 300, 100, 1, 1.0, np.zeros(100), np.random.default_rng(0))
    assert "mp fit" in r.reason and "randomize" in r.reason
    assert r.columns["max_rand_eval"] == 0.0
    assert all(math.isnan(r.columns[c]) for c in RANDOMIZE_COLUMNS if c != "max_rand_eval")


@pytest.mark.parametrize(("n_in", "n_out"), [(40, 120), (150, 100)])
def test_randomized_esd_of_a_layer_matches_weightwatcher_get_esd(ww_module, n_in: int,
                                                                 n_out: int) -> None:
    import contextlib
    import io

    from lmlab.spectral.options import AnalyzeOptions

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(n_in, n_out))
    with contextlib.redirect_stdout(io.StringIO()):
        ref_evals = np.asarray(ww_module.WeightWatcher(model=model).get_ESD(layer=1, random=True))
    (ref,) = iter_layers(model)
    ours = randomized_evals_of_layer(ref, AnalyzeOptions())
    assert ours.size == ref_evals.size == replicas_for(min(n_in, n_out)) * min(n_in, n_out)
    assert ours.sum() == pytest.approx(ref_evals.sum(), rel=1e-9)  # Σλ = shuffles · ‖W‖²
    assert np.all(np.diff(ours) >= 0)
