"""Eigenvector localisation (analyze(vectors=True), analyze_vectors, vector_metrics): known
answers, and parity with weightwatcher 0.7.7 run side by side."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch

from lmlab.errors import LmlabError
from lmlab.spectral.esd import Method, matrices_of, spectrum_of
from lmlab.spectral.powerlaw import PowerLawFit, fit_power_law
from lmlab.spectral.sources import iter_layers
from lmlab.spectral.vectors import (
    VECTOR_COLUMNS,
    discrete_entropy,
    eigenvector_metrics,
    localization_ratio,
    participation_ratio,
    vector_columns,
    vector_metrics,
)
from tests.conftest import tiny_model

RTOL = 1e-9


def conv_model() -> torch.nn.Module:
    """Two conv2d layers (odd kernels: weightwatcher's N/M bookkeeping is right for them) and a
    dense one."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.Conv2d(16, 32, 3),
                               torch.nn.Flatten(), torch.nn.Linear(64, 48))


LayerInputs = tuple[pd.Series, list[np.ndarray], float, np.ndarray, PowerLawFit]


def layer_inputs(model: torch.nn.Module, ref: pd.DataFrame, *, conv2d_scale: float = 0.5**0.5,
                 method: Method = "eigh") -> Iterator[LayerInputs]:
    """What analyze()'s per-layer loop holds for each layer weightwatcher analysed:
    (ww's row, mats, scale, evals, fit), computed with lmlab's own primitives."""
    refs = {r.layer_id: r for r in iter_layers(model)}
    for _, row in ref.iterrows():
        layer = refs[int(row["layer_id"])]
        W = layer.load().detach().float().numpy()
        mats, N, _, _ = matrices_of(W, layer.layer_type)
        scale = conv2d_scale if layer.layer_type == "conv2d" else 1.0
        evals = spectrum_of(mats, N=N, scale=scale, method=method).evals
        yield row, mats, scale, evals, fit_power_law(evals)


def ww_tail_size(mats: list[np.ndarray], scale: float, xmin: float) -> int:
    """How many eigenvectors weightwatcher puts in the tail: its own route (scipy's general
    ``eig`` of the Gram matrix of the smaller side) compared with its SVD-based xmin."""
    count = 0
    for W in mats:
        Wd = W.astype(np.float64) * scale
        X = Wd @ Wd.T if Wd.shape[0] <= Wd.shape[1] else Wd.T @ Wd
        count += int(np.count_nonzero(scipy.linalg.eig(X)[0] >= xmin))
    return count


def as_array(cols: dict[str, float]) -> np.ndarray:
    return np.array([cols[c] for c in VECTOR_COLUMNS])


# ----------------------------------------------------------------------------- known answers


def test_flat_and_basis_vectors_have_the_textbook_ratios() -> None:
    n = 64
    flat = scipy.linalg.hadamard(n)[[1, 5]] / math.sqrt(n)  # |v_i| = 1/√n, signs mixed
    basis = np.eye(n)[[3]]
    np.testing.assert_allclose(localization_ratio(flat), [n, n], rtol=1e-13)
    np.testing.assert_allclose(participation_ratio(flat), [n**0.25] * 2, rtol=1e-13)
    assert localization_ratio(basis)[0] == participation_ratio(basis)[0] == 1.0
    # all magnitudes in one bin: only the 1e-10 floors of the 99 empty bins contribute
    assert 0 < discrete_entropy(flat)[0] < 1e-7
    # a basis vector: two occupied bins holding n-1 and 1 entries
    p = np.array([n - 1, 1]) / n
    assert discrete_entropy(basis)[0] == pytest.approx(-np.sum(p * np.log(p)), rel=1e-6)


def test_discrete_entropy_bins_like_numpy_histogram() -> None:
    rng = np.random.default_rng(3)
    V = np.vstack([rng.standard_normal((50, 300)),
                   rng.integers(-5, 6, (20, 300)) * 0.25,  # many values exactly on edges
                   np.arange(300.0) % 101 - 50, np.linspace(-1.0, 1.0, 300)])
    for v, mine in zip(V, discrete_entropy(V), strict=True):
        h = np.histogram(np.abs(v) - np.abs(v).mean(), bins=100, density=True)[0] + 1e-10
        p = h / h.sum()
        assert mine == pytest.approx(-np.sum(p * np.log(p)), rel=1e-12, abs=1e-15)


def test_haar_like_eigenvectors_have_participation_ratio_of_n_over_3() -> None:
    # eigenvectors of a Gaussian Wishart matrix are Haar: Σ v⁴ ≈ 3/n, so ‖v‖₂/‖v‖₄ ≈ (n/3)^¼
    n = 300
    W = np.random.default_rng(0).standard_normal((600, n))
    table = eigenvector_metrics([W])
    assert len(table) == n and table["eval"].is_monotonic_increasing
    assert table["part_ratio"].mean() == pytest.approx((n / 3) ** 0.25, rel=0.02)
    np.testing.assert_allclose(table["eval"], spectrum_of([W]).evals, rtol=1e-10)


def test_a_planted_localised_singular_vector_is_found_in_the_tail() -> None:
    rng = np.random.default_rng(1)
    N, M, j = 400, 200, 17
    u = rng.standard_normal(N)
    W = rng.standard_normal((N, M)) / math.sqrt(N) + 5.0 * np.outer(u, np.eye(M)[j])
    evals = spectrum_of([W]).evals
    cols, reason = vector_columns([W], evals, xmin=evals[-1])  # tail = the spike alone
    assert reason == ""
    assert cols["tail_mean_loc_ratio"] < 1.2 and cols["tail_mean_part_ratio"] < 1.05
    assert cols["tail_var_loc_ratio"] == 0.0
    assert cols["bulk_mean_loc_ratio"] > 50 and cols["bulk_mean_part_ratio"] > 2.5
    # inverse ESD: the tail is the eigenvectors of smallest λ; plant a tiny localised one
    W2 = rng.standard_normal((N, M)) / math.sqrt(N)
    W2[:, j] = 1e-5 * rng.standard_normal(N)
    inv = np.sort(1.0 / spectrum_of([W2]).evals)
    cols, _ = vector_columns([W2], inv, xmin=inv[-1], inverse=True)
    assert cols["tail_mean_loc_ratio"] < 1.01


def test_complex_weights_keep_their_phase() -> None:
    W = np.diag(np.array([1.0, 2j, -3.0, 4 + 4j])).astype(np.complex64)
    table = eigenvector_metrics([W])
    np.testing.assert_allclose(table["eval"], [1.0, 4.0, 9.0, 32.0], rtol=1e-12)
    assert table["loc_ratio"].tolist() == [1.0] * 4


def test_undefined_splits_are_nan_with_a_reason() -> None:
    W = np.random.default_rng(2).standard_normal((40, 20))
    evals = spectrum_of([W]).evals
    cols, reason = vector_columns([W], evals, xmin=math.nan)
    assert all(math.isnan(v) for v in cols.values()) and "no power-law" in reason
    cols, reason = vector_columns([W], evals, xmin=evals[0])  # every vector in the tail
    assert math.isnan(cols["bulk_mean_loc_ratio"]) and "empty bulk" in reason
    assert math.isfinite(cols["tail_mean_loc_ratio"])
    assert list(cols) == list(VECTOR_COLUMNS)


def test_bad_vectors_are_refused() -> None:
    with pytest.raises(LmlabError, match="vectors must be"):
        vector_metrics("not a vector")
    with pytest.raises(LmlabError, match="2-D"):
        eigenvector_metrics([np.zeros((2, 2, 2))])


# ----------------------------------------------------------------------------- weightwatcher


def test_vector_columns_match_weightwatcher(family: str, ww_analyze) -> None:
    model = tiny_model(family)
    ref = ww_analyze(model, vectors=True)
    assert [c for c in ref.columns if c in VECTOR_COLUMNS] == list(VECTOR_COLUMNS)  # ww's order
    boundary = 0
    for row, mats, scale, evals, fit in layer_inputs(model, ref):
        assert fit.xmin == pytest.approx(float(row["xmin"]), rel=1e-12)
        n_tail = int(np.count_nonzero(evals >= fit.xmin))
        xmin = fit.xmin
        if ww_tail_size(mats, scale, float(row["xmin"])) == n_tail - 1:
            # weightwatcher's eig eigenvalue at xmin rounded below its SVD xmin: it filed that
            # eigenvector in the bulk. Same split, same numbers:
            boundary += 1
            xmin = float(np.nextafter(fit.xmin, np.inf))
        cols, _ = vector_columns(mats, evals, xmin, scale=scale)
        expected = row[list(VECTOR_COLUMNS)].to_numpy(dtype=float)
        np.testing.assert_allclose(as_array(cols), expected, rtol=RTOL,
                                   err_msg=str(row["longname"]))
    assert boundary < len(ref)  # most layers match with lmlab's own split, unchanged


def test_vector_columns_match_weightwatcher_on_conv2d(ww_analyze) -> None:
    model = conv_model()
    ref = ww_analyze(model, vectors=True)
    for row, mats, scale, evals, fit in layer_inputs(model, ref):
        xmin = fit.xmin
        n_tail = int(np.count_nonzero(evals >= xmin))
        if ww_tail_size(mats, scale, float(row["xmin"])) == n_tail - 1:  # as above
            xmin = float(np.nextafter(xmin, np.inf))
        cols, _ = vector_columns(mats, evals, xmin, scale=scale)
        # atol: M = 3 vectors of length 3 all have entropy ln 3, so its variance is rounding
        np.testing.assert_allclose(as_array(cols), row[list(VECTOR_COLUMNS)].to_numpy(float),
                                   rtol=RTOL, atol=1e-15, err_msg=str(row["longname"]))


def test_vector_metrics_match_weightwatcher(ww_module) -> None:
    rng = np.random.default_rng(4)
    V = rng.standard_normal((5, 120))
    watcher = ww_module.WeightWatcher()
    ref = watcher.vector_metrics(V)
    mine = vector_metrics(V)
    for col in ("length", "entropy", "localization_ratio", "participation_ratio"):
        np.testing.assert_allclose(mine[col], ref[col].astype(float), rtol=1e-12, err_msg=col)
    # weightwatcher files the discrete entropy under a misspelt column
    np.testing.assert_allclose(mine["discrete_entropy"], ref["discete_entropy"].astype(float),
                               rtol=1e-12)
    assert ref["discrete_entropy"].isna().all()
    ragged = [rng.standard_normal(10), rng.standard_normal(30)]
    assert vector_metrics(ragged)["length"].tolist() == [10.0, 30.0]


def test_analyze_vectors_of_weightwatcher_crashes_and_ours_tabulates(ww_module) -> None:
    import contextlib
    import io

    model = tiny_model("gpt2")
    watcher = ww_module.WeightWatcher(model=model)
    with pytest.raises(AttributeError, match="frameword_layer"), \
            contextlib.redirect_stdout(io.StringIO()):
        watcher.analyze_vectors(plot=False)
    weight = model.transformer.h[0].mlp.c_fc.weight.detach().numpy()  # (64, 256) Conv1D
    table = eigenvector_metrics([weight])
    assert list(table.columns) == ["eval", "vec_entropy", "loc_ratio", "part_ratio"]
    assert len(table) == 64
    np.testing.assert_allclose(table["eval"], spectrum_of([weight]).evals, rtol=1e-10)


def test_a_precomputed_table_gives_the_same_columns() -> None:
    W = np.random.default_rng(6).standard_normal((90, 40))
    evals = spectrum_of([W]).evals
    xmin = float(evals[-5])
    table = eigenvector_metrics([W])
    assert vector_columns([], evals, xmin, table=table) == vector_columns([W], evals, xmin)


def test_a_square_matrix_uses_its_left_singular_vectors() -> None:
    # weightwatcher takes W Wᵀ for a square W: the planted localised *left* vector shows
    rng = np.random.default_rng(7)
    n, j = 150, 4
    W = 0.005 * rng.standard_normal((n, n)) + np.outer(np.eye(n)[j], rng.standard_normal(n))
    assert eigenvector_metrics([W])["loc_ratio"].iloc[-1] < 1.1
    assert eigenvector_metrics([W.T])["loc_ratio"].iloc[-1] > 20


@pytest.mark.slow
def test_real_minilm_vectors_match_weightwatcher(minilm_path, ww_analyze) -> None:
    import transformers

    model = transformers.AutoModel.from_pretrained(str(minilm_path)).eval()
    ref = ww_analyze(model, vectors=True)
    for row, mats, scale, evals, fit in layer_inputs(model, ref):
        n_tail = int(np.count_nonzero(evals >= fit.xmin))
        xmin = fit.xmin
        if ww_tail_size(mats, scale, float(row["xmin"])) == n_tail - 1:  # see above
            xmin = float(np.nextafter(xmin, np.inf))
        cols, _ = vector_columns(mats, evals, xmin, scale=scale)
        np.testing.assert_allclose(as_array(cols), row[list(VECTOR_COLUMNS)].to_numpy(float),
                                   rtol=RTOL, err_msg=str(row["longname"]))
