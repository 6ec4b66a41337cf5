"""Subspace matching, random baseline, rotary R, diagonal z-score and token mismatch."""

from __future__ import annotations

import numpy as np
import pytest

from lmlab.circuits import subspace
from lmlab.circuits.subspace import (
    diagonal_zscore,
    matching_curve,
    random_baseline,
    rotary_R,
    subspace_matching,
    token_mismatch,
)
from lmlab.errors import LmlabError


def _orth(d: int, n: int, seed: int = 0) -> np.ndarray:
    return np.linalg.qr(np.random.default_rng(seed).normal(size=(n, d, d)))[0]


def test_identical_subspaces_match_one_and_orthogonal_zero() -> None:
    Q = _orth(16, 5)                                          # (5, 16, 16)
    for method in ("largest", "mean"):
        same = subspace_matching(Q, Q, 4, method)
        assert same.shape == (5,)
        np.testing.assert_allclose(same, 1.0, atol=1e-12)
        orth = subspace_matching(Q[..., :4], Q[..., 4:8], 4, method)
        np.testing.assert_allclose(orth, 0.0, atol=1e-12)


def test_matching_partial_overlap_largest_vs_mean() -> None:
    eye = np.eye(6)
    A, B = eye[:, [0, 1, 2]], eye[:, [0, 3, 4]]                # share one direction of three
    assert subspace_matching(A, B, 3) == pytest.approx(1.0)
    assert subspace_matching(A, B, 3, "mean") == pytest.approx(np.sqrt(1 / 3))
    # a rotation by a known angle in the shared plane: cosine of that angle
    c, s = np.cos(0.3), np.sin(0.3)
    B2 = np.stack([c * eye[:, 0] + s * eye[:, 5]], axis=1)
    assert subspace_matching(A[:, :1], B2, 1) == pytest.approx(c)


def test_matching_curve_agrees_with_subspace_matching() -> None:
    A, B = _orth(12, 3, seed=1), _orth(12, 3, seed=2)
    C = np.swapaxes(A, -1, -2) @ B
    curve = matching_curve(C, [1, 3, 7])
    for i, r in enumerate((1, 3, 7)):
        np.testing.assert_allclose(curve[:, i], subspace_matching(A, B, r), atol=1e-12)
        sv = np.linalg.svd(C[:, :r, :r], compute_uv=False)
        np.testing.assert_allclose(curve[:, i], sv[:, 0], atol=1e-12)


def test_matching_rejects_bad_rank() -> None:
    with pytest.raises(LmlabError, match=r"\[1, 4\]"):
        subspace_matching(np.eye(4), np.eye(4), 5)


def test_random_baseline_values_for_d64_and_disk_cache(tmp_path) -> None:
    ranks = [1, 5, 10, 20]
    b = random_baseline(64, ranks, draws=1000, seed=0, cache_dir=tmp_path)
    np.testing.assert_allclose(b, [0.10, 0.45, 0.67, 0.90], atol=0.02)
    files = list((tmp_path / "circuits").glob("subspace_baseline_d64_draws1000_seed0.npy"))
    assert len(files) == 1
    subspace._BASELINE_CACHE.clear()                          # force a read from disk
    again = random_baseline(64, [20, 1], draws=1000, seed=0, cache_dir=tmp_path)
    np.testing.assert_array_equal(again, b[[3, 0]])
    table = np.load(files[0])
    assert np.isnan(table[31]) and table[0] == b[0]



def test_random_baseline_defaults_to_the_lmlab_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path / "c"))
    subspace._BASELINE_CACHE.clear()
    random_baseline(8, [1], draws=10, seed=3)
    assert (tmp_path / "c" / "circuits" / "subspace_baseline_d8_draws10_seed3.npy").is_file()
    assert not [p for p in (tmp_path / "c" / "circuits").iterdir() if p.suffix == ".tmp"]


def test_an_unwritable_baseline_cache_is_a_one_line_error(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    subspace._BASELINE_CACHE.clear()
    with pytest.raises(LmlabError, match=r"^cannot create directory .*; pass another cache_dir "
                                         r"or set LMLAB_CACHE to a writable directory$"):
        random_baseline(8, [1], draws=10, seed=4, cache_dir=blocker)


def _rotate(x: np.ndarray, pos: int, theta: float) -> np.ndarray:
    """Rotary on consecutive pairs, written out: (x_2i + i x_2i+1) * exp(i pos θ_i)."""
    d = x.shape[-1]
    z = x[0::2] + 1j * x[1::2]
    z = z * np.exp(1j * pos * theta ** (-2.0 * np.arange(d // 2) / d))
    out = np.empty_like(x)
    out[0::2], out[1::2] = z.real, z.imag
    return out


@pytest.mark.parametrize("t", [0, 1, 5, 17])
def test_rotary_R_identity(t: int) -> None:
    rng = np.random.default_rng(t)
    d, theta = 64, 10000.0
    q, k = rng.normal(size=d), rng.normal(size=d)
    for m in (0, 3, 40):
        lhs = _rotate(q, m, theta) @ _rotate(k, m + t, theta)
        assert lhs == pytest.approx(q @ rotary_R(d, t, theta) @ k, rel=1e-10, abs=1e-10)
        if m - t >= 0:                     # sign −1: the key t positions before the query
            lhs = _rotate(q, m, theta) @ _rotate(k, m - t, theta)
            assert lhs == pytest.approx(q @ rotary_R(d, t, theta, sign=-1) @ k, abs=1e-10)
    R = rotary_R(d, t, theta)
    np.testing.assert_allclose(R @ R.T, np.eye(d), atol=1e-12)


def test_rotary_R_matches_the_model_rotary() -> None:
    """Same convention as lmlab's rotary transformer (query at m, key at n: R(n − m))."""
    rt = pytest.importorskip("lmlab.models.rotary_tf")
    import torch

    d, T = 8, 12
    cos, sin = rt.rotary_tables(d, T)
    x = torch.randn(T, d, dtype=torch.float64)
    rot = rt.apply_rotary(x, cos.double(), sin.double()).numpy()
    m, n = 9, 4
    expected = x[m].numpy() @ rotary_R(d, m - n, sign=-1) @ x[n].numpy()
    assert rot[m] @ rot[n] == pytest.approx(expected, abs=1e-5)


def test_diagonal_zscore() -> None:
    d = 64
    z = diagonal_zscore(np.eye(d))
    assert z == pytest.approx((1 - 1 / d) / np.sqrt(1 / d - 1 / d**2))
    assert z > 7
    rng = np.random.default_rng(0)
    W = rng.normal(size=(3, d, d))
    W[0] += 5 * np.eye(d)                                     # identity plus noise: large z
    zs = diagonal_zscore(W)
    flat = W[1].ravel()
    assert zs[1] == pytest.approx((np.diag(W[1]).mean() - flat.mean()) / np.std(flat))
    assert zs[0] > 4 and abs(zs[1]) < 1 and abs(zs[2]) < 1


def test_token_mismatch_perfect_random_and_axis() -> None:
    rng = np.random.default_rng(0)
    V, d = 64, 64
    E = rng.normal(size=(V, d))
    Einv = np.linalg.inv(E)
    # E W_qk W_ov Eᵀ = diag(3) + small noise: a perfect token matcher
    M = 3 * np.eye(V) + 0.1 * rng.normal(size=(V, V))
    W_qk, W_ov = Einv @ M, Einv.T
    assert token_mismatch(E, W_qk, W_ov) == 0.0
    assert token_mismatch(E, W_qk, W_ov, "col") == 0.0
    rand = token_mismatch(E, rng.normal(size=(d, d)), rng.normal(size=(d, d)))
    assert rand > 0.8
    # rows and columns differ: token 0 is every row's best key, rows keep their own diagonal
    M2 = np.eye(4) * 2.0
    M2[:, 0] = 3.0
    eye = np.eye(4)
    assert token_mismatch(eye, M2, eye, "row") == pytest.approx(3 / 4)
    assert token_mismatch(eye, M2, eye, "col") == pytest.approx(0.0)
    batched = token_mismatch(np.stack([eye, eye]), np.stack([M2, eye]), eye)
    np.testing.assert_allclose(batched, [0.75, 0.0])
