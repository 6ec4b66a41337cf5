"""The torch route (GPUs) gives the NumPy route's numbers: checked on the CPU in float64.

Both routes follow one rule (``gram_check``) for the SVD fallback and the σmin refinement,
so on the CPU in float64 they differ only by the rounding of two LAPACK builds: the largest
eigenvalue to ~1e-12 relative, the same α, xmin and σmin. float32 is the fast mode: its
eigenvalues are compared with float64 within the tolerances ``docs/gpu.md`` states.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from lmlab.spectral import analyze, esd_torch, layer
from lmlab.spectral.esd import gram_check, spectrum_of
from lmlab.spectral.esd_torch import spectrum_of_torch

CPU = torch.device("cpu")


def _with_singular_values(s: np.ndarray, N: int, seed: int) -> np.ndarray:
    """U diag(s) Vᵀ (N×M, float32) with random orthonormal U, V: singular values ≈ ``s``."""
    rng = np.random.default_rng(seed)
    M = len(s)
    U = np.linalg.qr(rng.standard_normal((N, M)))[0]
    V = np.linalg.qr(rng.standard_normal((M, M)))[0]
    return ((U * s) @ V.T).astype(np.float32)


def _matrices() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    # integer factors: the rank-5 product is exact in float32
    low = (rng.integers(-3, 4, (100, 5)) @ rng.integers(-3, 4, (5, 40))).astype(np.float32)
    return {
        "tall": rng.standard_t(3, (200, 80)).astype(np.float32),  # heavy-tailed: a real fit
        "wide": rng.standard_t(4, (60, 150)).astype(np.float32),
        "rank_deficient": low,
        # σmin² = 1e-10·σmax², inside gram_check's "refine" band (tall and square)
        "refine_tall": _with_singular_values(np.geomspace(1.0, 1e-5, 60), 150, seed=1),
        "refine_square": _with_singular_values(np.geomspace(1.0, 1e-5, 70), 70, seed=2),
        # σmin² = 9e-14·σmax², just under the floor: the SVD fallback
        "svd_fallback": _with_singular_values(np.geomspace(1.0, 3e-7, 60), 150, seed=3),
    }


MATRICES = _matrices()


def test_the_cases_exercise_each_branch_of_the_shared_rule() -> None:
    """Known answers: each matrix lands in the band it was built for."""
    def check(name: str) -> str:
        W = MATRICES[name].astype(np.float64)
        ev = np.linalg.eigvalsh(W.T @ W if W.shape[0] >= W.shape[1] else W @ W.T)
        return gram_check(ev[0], ev[-1])

    assert [check(n) for n in ("tall", "wide", "refine_tall", "refine_square")] == \
        ["sqrt", "sqrt", "refine", "refine"]
    assert check("rank_deficient") == check("svd_fallback") == "svd"


@pytest.mark.parametrize("method", ["eigh", "svd"])
@pytest.mark.parametrize("name", sorted(MATRICES))
def test_torch_route_equals_numpy_route_in_float64(name: str, method: str) -> None:
    W = MATRICES[name]
    a = spectrum_of([W], method=method)
    b = spectrum_of_torch([W], method=method, device=CPU)
    assert b.evals.dtype == np.float64 and b.evals.shape == a.evals.shape
    assert b.evals[-1] == pytest.approx(a.evals[-1], rel=1e-12)
    np.testing.assert_allclose(b.evals, a.evals, rtol=0, atol=1e-12 * a.evals[-1])
    assert b.sv_max == pytest.approx(a.sv_max, rel=1e-12)
    assert b.rank_loss == a.rank_loss
    if name == "rank_deficient":  # σmin is rounding noise: equal only at the noise level
        assert a.rank_loss == 35
        assert b.sv_min == pytest.approx(a.sv_min, abs=1e-12 * a.sv_max)
    else:
        assert b.sv_min == pytest.approx(a.sv_min, rel=1e-9)


@pytest.mark.parametrize("name", ["refine_tall", "refine_square", "svd_fallback"])
def test_torch_route_sv_min_is_the_true_one(name: str) -> None:
    """Known answer: σmin of U diag(s) Vᵀ (from an SVD of the float32 matrix in float64)."""
    W = MATRICES[name]
    exact = np.linalg.svd(W.astype(np.float64), compute_uv=False).min()
    assert spectrum_of_torch([W], device=CPU).sv_min == pytest.approx(exact, rel=1e-8)


def test_conv2d_slices_are_checked_one_by_one() -> None:
    """A batch of slices where one needs the SVD fallback: the others keep the Gram route,
    as in the NumPy route, and the pooled numbers agree."""
    rng = np.random.default_rng(4)
    slices = [rng.standard_normal((150, 60)).astype(np.float32) for _ in range(3)]
    slices.append(MATRICES["svd_fallback"])
    a = spectrum_of(slices, scale=np.sqrt(0.5))
    b = spectrum_of_torch(slices, scale=np.sqrt(0.5), device=CPU)
    np.testing.assert_allclose(b.evals, a.evals, rtol=0, atol=1e-12 * a.evals[-1])
    assert b.sv_min == pytest.approx(a.sv_min, rel=1e-12) and b.rank_loss == a.rank_loss


@pytest.mark.parametrize("method", ["eigh", "svd"])
def test_float32_mode_is_within_its_documented_tolerance(method: str) -> None:
    """float32 (the fast mode) against float64: each eigenvalue to 1e-5·λmax, the largest to
    1e-5 relative; no check on the smallest ones."""
    for name in ("tall", "wide", "refine_tall"):
        W = MATRICES[name]
        exact = spectrum_of([W], method=method)
        fast = spectrum_of_torch([W], method=method, precision="float32", device=CPU)
        assert fast.evals[-1] == pytest.approx(exact.evals[-1], rel=1e-5)
        np.testing.assert_allclose(fast.evals, exact.evals, rtol=0, atol=1e-5 * exact.evals[-1])


def test_torch_tensors_of_any_float_dtype_are_widened_through_float32() -> None:
    W = torch.from_numpy(MATRICES["tall"]).to(torch.bfloat16)
    a = spectrum_of([W.float().numpy()])
    b = spectrum_of_torch([W], device=CPU)
    np.testing.assert_allclose(b.evals, a.evals, rtol=0, atol=1e-12 * a.evals[-1])


# -------------------------------------------------------------- through analyze(device="cpu")


def _model(dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """One Linear layer per test matrix, and a conv2d layer (pooled slices)."""
    layers: list[torch.nn.Module] = []
    for W in MATRICES.values():
        lin = torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W))
        layers.append(lin)
    torch.manual_seed(0)
    layers.append(torch.nn.Conv2d(24, 48, 3))
    return torch.nn.Sequential(*layers).to(dtype)


COMPARED = ["alpha", "xmin", "D", "sv_max", "lambda_max", "log_norm", "num_pl_spikes"]


def _both_routes(monkeypatch: pytest.MonkeyPatch, model: torch.nn.Module, **kw: Any
                 ) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    calls: list[int] = []
    original = esd_torch.spectrum_of_torch

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    numpy_df = analyze(model, progress=False, workers=1, **kw)
    monkeypatch.setattr(esd_torch, "spectrum_of_torch", spy)
    with layer.torch_route_on_cpu():
        torch_df = analyze(model, device="cpu", progress=False, workers=1, **kw)
    return numpy_df, torch_df, len(calls)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("method", ["eigh", "svd"])
def test_analyze_on_the_torch_route_gives_the_numpy_table(
        monkeypatch: pytest.MonkeyPatch, method: str, dtype: torch.dtype) -> None:
    numpy_df, torch_df, calls = _both_routes(monkeypatch, _model(dtype), method=method)
    assert calls == len(MATRICES) + 1  # every layer went through torch
    assert (torch_df["status"] == numpy_df["status"]).all()
    assert (numpy_df["status"] == "success").sum() >= len(MATRICES)
    assert torch_df["rank_loss"].tolist() == numpy_df["rank_loss"].tolist()
    ok = numpy_df["status"] == "success"
    for col in COMPARED:
        np.testing.assert_allclose(torch_df.loc[ok, col].astype(float),
                                   numpy_df.loc[ok, col].astype(float), rtol=1e-9, err_msg=col)
    full_rank = numpy_df["rank_loss"] == 0
    np.testing.assert_allclose(torch_df.loc[full_rank, "sv_min"].astype(float),
                               numpy_df.loc[full_rank, "sv_min"].astype(float), rtol=1e-9)


def test_analyze_float32_on_the_torch_route_is_close_to_float64(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast mode against float64 where the tail lies well above float32's noise
    (xmin > 1e-3·λmax, full rank: the heavy-tailed and conv2d layers): xmin and α to 1e-4.
    A rank-deficient layer is not compared: float32's noise eigenvalues (~1e-7·λmax, where
    float64 has ~1e-16·λmax) become part of the fitted tail."""
    model = _model()
    exact = analyze(model, progress=False, workers=1)
    with layer.torch_route_on_cpu():
        fast = analyze(model, device="cpu", precision="float32", progress=False, workers=1)
    ok = ((exact["status"] == "success") & (exact["rank_loss"] == 0)
          & (exact["xmin"] > 1e-3 * exact["lambda_max"]))
    assert ok.sum() == 3
    np.testing.assert_allclose(fast.loc[ok, "xmin"], exact.loc[ok, "xmin"], rtol=1e-4)
    np.testing.assert_allclose(fast.loc[ok, "alpha"], exact.loc[ok, "alpha"], rtol=1e-4)
