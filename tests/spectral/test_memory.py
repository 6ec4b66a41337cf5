"""Large matrices are read block by block: the Gram matrix equals the full one to rounding, the
spectrum and its checks agree with the whole-matrix route, and peak memory stays bounded."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from lmlab.spectral import analyze, blocks
from lmlab.spectral.blocks import SafetensorsTensor, TensorBlocks, blocks_of, file_blocks
from lmlab.spectral.esd import gram_of_blocks, spectrum_of, spectrum_of_gram


def _random(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("shape", [(300, 40), (40, 300)])
@pytest.mark.parametrize("scale", [1.0, 0.5**0.5])
def test_blocked_gram_equals_the_full_float64_gram(shape, scale) -> None:
    W = _random(shape)
    tall = W if shape[0] >= shape[1] else W.T
    full = (tall.astype(np.float64) * scale).T @ (tall.astype(np.float64) * scale)
    parts = TensorBlocks(W, block_bytes=7 * 40 * 8)  # 7 rows of T per block, a short last one
    assert parts.n_blocks == 43
    G = gram_of_blocks(parts, scale=scale)
    assert G.dtype == np.float64 and G.shape == (40, 40)
    np.testing.assert_allclose(G, full, rtol=1e-13, atol=1e-12 * np.abs(full).max())


def test_blocked_float32_mode_accumulates_in_float32() -> None:
    W = _random((200, 30))
    G = gram_of_blocks(TensorBlocks(W, block_bytes=16 * 30 * 8), precision="float32")
    assert G.dtype == np.float32
    full = W.T.astype(np.float64) @ W
    np.testing.assert_allclose(G, full, rtol=1e-5, atol=1e-5 * np.abs(full).max())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("shape", [(50, 12), (12, 50)])
def test_file_blocks_decode_exactly_as_torch(tmp_path: Path, dtype, shape) -> None:
    t = torch.randn(*shape).to(dtype)
    save_file({"pad": torch.zeros(3), "w": t}, str(tmp_path / "m.safetensors"))
    parts = file_blocks(str(tmp_path / "m.safetensors"), "w", block_bytes=5 * 12 * 8)
    assert parts is not None and parts.n_blocks == 10
    stacked = np.vstack(list(parts.tall_blocks()))
    want = t.float().numpy()
    np.testing.assert_array_equal(stacked, want if shape[0] > shape[1] else want.T)
    parts.close()


def test_a_tensor_that_is_not_a_real_matrix_is_handed_back_whole(tmp_path: Path) -> None:
    save_file({"c": torch.zeros(2, 3, 4)}, str(tmp_path / "m.safetensors"))
    parts, tensor = blocks_of(SafetensorsTensor(str(tmp_path / "m.safetensors"), "c"))
    assert parts is None and tuple(tensor.shape) == (2, 3, 4)
    parts, tensor = blocks_of(lambda: torch.zeros(3, 2, dtype=torch.complex64))
    assert parts is None and tensor.is_complex()


def _spectra(W: np.ndarray, block_rows: int) -> tuple:
    M = min(W.shape)
    parts = TensorBlocks(W, block_bytes=block_rows * M * 8)
    assert parts.n_blocks > 1
    return spectrum_of_gram(gram_of_blocks(parts), parts), spectrum_of([W])


def test_blocked_spectrum_equals_the_whole_matrix_route() -> None:
    blocked, whole = _spectra(_random((400, 60)), 64)
    np.testing.assert_allclose(blocked.evals, whole.evals, rtol=1e-12)
    assert blocked.rank_loss == whole.rank_loss == 0
    assert blocked.sv_min == pytest.approx(whole.sv_min, rel=1e-12)


def test_blocked_rank_loss_takes_the_svd_of_r_and_counts_as_the_svd_does() -> None:
    W = _random((300, 50), seed=1)
    W[:, 30:] = W[:, :20]  # 20 columns repeated exactly: rank 30 of 50
    blocked, whole = _spectra(W, 40)
    assert blocked.rank_loss == whole.rank_loss == 20
    sv = np.linalg.svd(W.astype(np.float64), compute_uv=False)
    assert blocked.sv_max == pytest.approx(sv[0], rel=1e-12)
    np.testing.assert_allclose(blocked.evals[-30:], whole.evals[-30:], rtol=1e-10)


def test_blocked_refinement_keeps_sv_min_as_accurate_as_the_svd() -> None:
    rng = np.random.default_rng(2)
    U, _ = np.linalg.qr(rng.standard_normal((500, 40)))
    V, _ = np.linalg.qr(rng.standard_normal((40, 40)))
    sv = np.geomspace(1.0, 5e-6, 40)  # κ = 2e5: inside the refinement band of the Gram route
    W = ((U * sv) @ V.T).astype(np.float32)
    exact = np.linalg.svd(W.astype(np.float64), compute_uv=False)[-1]
    blocked, _ = _spectra(W, 64)
    assert blocked.sv_min == pytest.approx(exact, rel=1e-8)


def _save_big(path: Path, W: torch.Tensor) -> Path:
    save_file({"big.weight": W, "small.weight": torch.randn(30, 20)}, str(path))
    return path


def test_analyze_blocked_equals_whole(tmp_path: Path, monkeypatch) -> None:
    torch.manual_seed(0)
    f = _save_big(tmp_path / "m.safetensors", torch.randn(600, 80).to(torch.bfloat16))
    whole = analyze(f, progress=False)
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 100 * 80 * 8)  # six blocks of 100 rows
    blocked = analyze(f, progress=False)
    memory = analyze({"big.weight": _bf16(f)}, progress=False)
    assert blocked["status"].tolist() == whole["status"].tolist() == ["success", "success"]
    num = ["alpha", "xmin", "D", "lambda_max", "norm", "sv_max", "sv_min", "stable_rank",
           "entropy", "log_alpha_norm"]
    np.testing.assert_allclose(blocked[num].astype(float).values,
                               whole[num].astype(float).values, rtol=1e-10)
    for col in ("num_evals", "rank_loss", "matrix_rank", "num_pl_spikes"):
        assert blocked[col].tolist() == whole[col].tolist()
    # a module's tensor in memory takes the same blocks as the file: identical numbers
    big = blocked[blocked["longname"] == "big"]
    pd.testing.assert_frame_equal(memory.iloc[:, 2:].reset_index(drop=True),
                                  big.iloc[:, 2:].reset_index(drop=True))


def _bf16(f: Path) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(f), framework="pt") as h:
        return h.get_tensor("big.weight")


def test_nan_in_a_later_block_fails_the_layer(tmp_path: Path, monkeypatch) -> None:
    W = torch.randn(600, 80)
    W[550, 3] = float("nan")
    W[590, 7] = float("inf")
    f = _save_big(tmp_path / "m.safetensors", W)
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 100 * 80 * 8)
    df = analyze(f, progress=False)
    row = df[df["longname"] == "big"].iloc[0]
    assert row["status"] == "failed" and row["reason"] == "weights contain 2 NaN/Inf values"
    zero = _save_big(tmp_path / "z.safetensors", torch.zeros(600, 80))
    row = analyze(zero, progress=False).iloc[0]
    assert row["status"] == "failed" and row["reason"] == "all-zero weight matrix"


_CHILD = textwrap.dedent("""
    import resource, sys
    from lmlab.spectral import analyze
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    df = analyze(sys.argv[1], progress=False, threads=1)
    assert df["status"].tolist() == ["success", "success"], df[["status", "reason"]]
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) / 1024)
""")


def test_peak_memory_of_a_large_bf16_matrix_stays_below_its_float64_copy(tmp_path) -> None:
    """16000×1000 bf16 (32 MB on disk): the whole-matrix route held a float32 copy (64 MB) and
    a float64 copy (128 MB) at once; blocks need the 8 MB Gram matrix, its buffer and one
    32 MiB block (with its float32 and bf16 forms)."""
    torch.manual_seed(0)
    f = _save_big(tmp_path / "m.safetensors", torch.randn(16000, 1000).to(torch.bfloat16))
    out = subprocess.run([sys.executable, "-c", _CHILD, str(f)], capture_output=True,
                         text=True, check=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1",
                              "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    grew_mb = float(out.stdout.strip().splitlines()[-1])
    assert grew_mb < 128, f"analysis grew the peak RSS by {grew_mb:.0f} MB"


def test_layers_of_a_safetensors_file_are_read_from_the_file(tmp_path: Path) -> None:
    from lmlab.spectral.blocks import FileBlocks, location_of
    from lmlab.spectral.sources import iter_layers

    f = _save_big(tmp_path / "m.safetensors", torch.randn(60, 8))
    ref = next(r for r in iter_layers(f) if r.longname == "big")
    assert location_of(ref.load) == SafetensorsTensor(str(f), "big.weight")
    parts, _ = blocks_of(ref.load)
    assert isinstance(parts, FileBlocks)
    parts.close()
    assert location_of(next(iter_layers(torch.nn.Linear(3, 2))).load) is None
