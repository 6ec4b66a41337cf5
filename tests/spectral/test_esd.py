"""Eigenvalue routes: Gram matrix vs SVD, float32 mode, conv2d pooling, rank deficiency."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmlab.spectral.esd import matrices_of, spectrum_of
from lmlab.spectral.esd_torch import spectrum_of_torch


@pytest.fixture
def W() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((200, 80)).astype(np.float32)


def test_eigenvalues_are_squared_singular_values(W: np.ndarray) -> None:
    sv = np.linalg.svd(W.astype(np.float64), compute_uv=False)
    for method in ("eigh", "svd"):
        spec = spectrum_of([W], method=method)
        np.testing.assert_allclose(spec.evals, np.sort(sv**2), rtol=1e-10)
        assert spec.sv_max == pytest.approx(sv.max(), rel=1e-12)
        assert spec.sv_min == pytest.approx(sv.min(), rel=1e-8)
        assert spec.rank_loss == 0


def test_orientation_does_not_matter(W: np.ndarray) -> None:
    np.testing.assert_allclose(spectrum_of([W]).evals, spectrum_of([W.T]).evals, rtol=1e-12)


def test_float32_mode_is_close(W: np.ndarray) -> None:
    exact = spectrum_of([W]).evals
    fast = spectrum_of([W], precision="float32").evals
    np.testing.assert_allclose(fast, exact, rtol=1e-4)


def test_rank_deficient_matrix_falls_back_to_svd() -> None:
    rng = np.random.default_rng(1)
    # integer factors: the rank-5 product is exact in float32
    low = (rng.integers(-3, 4, (100, 5)) @ rng.integers(-3, 4, (5, 40))).astype(np.float32)
    eig, svd = spectrum_of([low], method="eigh"), spectrum_of([low], method="svd")
    assert svd.rank_loss == 35
    assert eig.rank_loss == svd.rank_loss
    np.testing.assert_allclose(eig.evals[-5:], svd.evals[-5:], rtol=1e-10)


def test_conv2d_slices_are_pooled() -> None:
    kernel = np.random.default_rng(2).standard_normal((16, 8, 3, 3)).astype(np.float32)
    mats, N, M, rf = matrices_of(kernel, "conv2d")
    assert (len(mats), N, M, rf) == (9, 16, 8, 9)
    spec = spectrum_of(mats, scale=np.sqrt(0.5))
    expected = np.sort(np.concatenate(
        [np.linalg.svd(kernel[:, :, i, j].astype(np.float64) * np.sqrt(0.5), compute_uv=False) ** 2
         for i in range(3) for j in range(3)]))
    np.testing.assert_allclose(spec.evals, expected, rtol=1e-10)


def test_torch_route_matches_numpy(W: np.ndarray) -> None:
    a = spectrum_of([W])
    b = spectrum_of_torch([W], device=torch.device("cpu"))
    np.testing.assert_allclose(b.evals, a.evals, rtol=1e-10)
    assert b.rank_loss == a.rank_loss and b.sv_max == pytest.approx(a.sv_max)


@pytest.mark.parametrize(("N", "smallest"), [(120, 1e-5), (120, 3e-7), (300, 1e-5)])
def test_near_singular_matrix_keeps_an_accurate_sv_min(N: int, smallest: float) -> None:
    """σmin² far below eps·λmax⁰·⁵: the Gram route alone would lose its digits."""
    rng = np.random.default_rng(N)
    M = 120
    U = np.linalg.qr(rng.standard_normal((N, M)))[0]
    V = np.linalg.qr(rng.standard_normal((M, M)))[0]
    s = np.geomspace(1.0, smallest, M)
    W = ((U * s) @ V.T).astype(np.float32)
    exact = np.linalg.svd(W.astype(np.float64), compute_uv=False)
    spec = spectrum_of([W])
    assert spec.sv_min == pytest.approx(exact.min(), rel=1e-8)
    assert spec.rank_loss == spectrum_of([W], method="svd").rank_loss


# ---------------------------------------------------------------------------- complex weights


def _complex_with_singular_values(sv: np.ndarray, N: int, seed: int = 0) -> np.ndarray:
    """U diag(sv) Vᴴ with random unitary U (N×M) and V (M×M): singular values exactly ``sv``."""
    rng = np.random.default_rng(seed)
    M = len(sv)
    U, _ = np.linalg.qr(rng.standard_normal((N, M)) + 1j * rng.standard_normal((N, M)))
    V, _ = np.linalg.qr(rng.standard_normal((M, M)) + 1j * rng.standard_normal((M, M)))
    return ((U * sv) @ V.conj().T).astype(np.complex64)


@pytest.mark.parametrize("method", ["eigh", "svd"])
def test_complex_weights_use_the_hermitian_gram_matrix(method: str) -> None:
    """Known answer: the ESD of U diag(s) Vᴴ is s², real and ≥ 0; the imaginary part counts."""
    sv = np.linspace(1.0, 3.0, 12)
    W = _complex_with_singular_values(sv, N=30)
    assert np.abs(W.imag).max() > 0.1
    spec = spectrum_of([W], method=method)
    assert spec.evals.dtype == np.float64
    np.testing.assert_allclose(spec.evals, np.sort(sv**2), rtol=1e-5)
    assert spec.sv_max == pytest.approx(3.0, rel=1e-5) and spec.sv_min == pytest.approx(1.0,
                                                                                         rel=1e-5)
    dropped = spectrum_of([W.real], method=method).evals  # what casting to real would give
    assert not np.allclose(dropped, spec.evals, rtol=1e-2)
    torch_spec = spectrum_of_torch([W], device=torch.device("cpu"))
    np.testing.assert_allclose(torch_spec.evals, spec.evals, rtol=1e-8)


def test_rank_deficient_complex_matrix_counts_its_rank_loss() -> None:
    rng = np.random.default_rng(3)
    # integer complex factors: the rank-4 product is exact in complex64

    def ints(*shape: int) -> np.ndarray:
        return rng.integers(-3, 4, shape) + 1j * rng.integers(-3, 4, shape)

    W = (ints(20, 4) @ ints(4, 6)).astype(np.complex64)
    sv = np.linalg.svd(W.astype(np.complex128), compute_uv=False)
    spec = spectrum_of([W])
    assert spec.rank_loss == 2 and spec.evals.min() >= 0
    np.testing.assert_allclose(spec.evals[2:], np.sort(sv**2)[2:], rtol=1e-10)
