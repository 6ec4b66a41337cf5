"""Position matching of layer 0's W_q and W_k: known answers and a plain re-computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lmlab.circuits import MeasureConfig, checkpoint_shapes, measure_runs, position_matching
from lmlab.errors import LmlabError

rng = np.random.default_rng(7)


def test_reading_only_the_embedding_subspace_is_all_token() -> None:
    E = rng.normal(size=(24, 16))
    Vt_E = np.linalg.svd(E)[2]
    W = rng.normal(size=(16, 3)) @ Vt_E[:3]                  # reads E's top-3 directions only
    for method in ("largest", "mean"):
        out = position_matching(W, W, E, ranks=[1, 3, 6], method=method)
        for w in "qk":
            assert out[f"tok_frac_{w}_r3"] == pytest.approx(1.0)
            assert out[f"tok_frac_{w}_r6"] == pytest.approx(1.0)
            assert out[f"tok_frac_{w}_r1"] < 0.999
            assert out[f"tok_match_{w}_r3"] == pytest.approx(1.0)
    # a W that reads what E does not vary along: token fraction 0
    W_off = rng.normal(size=(16, 13)) @ Vt_E[3:]
    out = position_matching(W_off, W_off, E, ranks=[3])
    assert out["tok_frac_q_r3"] == pytest.approx(0.0, abs=1e-12)
    assert out["tok_match_q_r3"] == pytest.approx(0.0, abs=1e-6)


def test_writing_only_the_fast_rotary_pairs_is_all_position() -> None:
    E = rng.normal(size=(24, 16))
    fast = np.zeros((16, 16))
    fast[:4] = rng.normal(size=(4, 16))                     # head coordinates 0..3 = 2 pairs
    slow = np.zeros((16, 16))
    slow[8:] = rng.normal(size=(8, 16))
    out = position_matching(fast, slow, E, ranks=[4, 8], n_singular=16)
    assert out["pos_frac_q_r4"] == pytest.approx(1.0)
    assert out["pos_match_q_r4"] == pytest.approx(1.0)
    assert out["pos_frac_k_r8"] == pytest.approx(0.0, abs=1e-12)
    assert out["pos_match_k_r4"] == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose([out[f"sv_q0_{i}"] for i in range(1, 17)],
                               np.linalg.svd(fast, compute_uv=False), atol=1e-12)
    assert out["sv_q0_5"] == pytest.approx(0.0, abs=1e-12)


def test_against_a_plain_loop() -> None:
    E = rng.normal(size=(20, 12))
    Wq, Wk = rng.normal(size=(3, 12, 12)), rng.normal(size=(3, 12, 12))
    out = position_matching(Wq, Wk, E, ranks=[2, 5], method="mean", n_singular=3)
    Vt_E = np.linalg.svd(E)[2]
    for n in range(3):
        for w, W in (("q", Wq[n]), ("k", Wk[n])):
            total = sum(W[i, j] ** 2 for i in range(12) for j in range(12))
            U, S, Vt = np.linalg.svd(W)
            for r in (2, 5):
                tok = sum(np.dot(W[i], Vt_E[j]) ** 2 for i in range(12) for j in range(r))
                pos = sum(W[i, j] ** 2 for i in range(r) for j in range(12))
                assert out[f"tok_frac_{w}_r{r}"][n] == pytest.approx(tok / total)
                assert out[f"pos_frac_{w}_r{r}"][n] == pytest.approx(pos / total)
                cos_tok = np.linalg.svd(Vt[:r] @ Vt_E[:r].T, compute_uv=False)
                cos_pos = np.linalg.svd(U[:r, :r], compute_uv=False)
                assert out[f"tok_match_{w}_r{r}"][n] == pytest.approx(
                    np.sqrt(np.mean(cos_tok ** 2)))
                assert out[f"pos_match_{w}_r{r}"][n] == pytest.approx(
                    np.sqrt(np.mean(cos_pos ** 2)))
            for i in range(3):
                assert out[f"sv_{w}0_{i + 1}"][n] == pytest.approx(S[i])


def test_random_weights_give_r_over_d() -> None:
    E = rng.normal(size=(64, 32))
    W = rng.normal(size=(400, 32, 32))
    out = position_matching(W, W, E, ranks=[4, 16])
    for r in (4, 16):
        assert out[f"pos_frac_q_r{r}"].mean() == pytest.approx(r / 32, abs=0.01)
        assert out[f"tok_frac_q_r{r}"].mean() == pytest.approx(r / 32, abs=0.01)


@pytest.mark.parametrize("args, message", [
    ((np.eye(4), np.eye(3), np.eye(4)), "shape"),
    ((np.eye(4), np.eye(4), np.eye(5)), "shape"),
    ((np.eye(4), np.eye(4), np.eye(4), [5]), r"\[1, 4\]"),
])
def test_bad_shapes_and_ranks(args: tuple, message: str) -> None:
    with pytest.raises(LmlabError, match=message):
        position_matching(*args)


def test_in_the_measurement_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer-0 W_q planted on E's top-2 directions and on the fastest rotary pair."""
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path / "cache"))
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(s, generator=g) for k, s in checkpoint_shapes(16, 16).items()}
    Vt_E = torch.linalg.svd(sd["embed.embed.weight"].double())[2]
    W = torch.zeros(16, 16, dtype=torch.float64)
    W[0], W[1] = 3 * Vt_E[0], Vt_E[1]                       # rows = head coords 0, 1
    sd["h.0.mha.W_q.weight"] = W.float()
    torch.save(sd, tmp_path / "ckpt_0.pt")
    df = measure_runs({"x": tmp_path}, MeasureConfig(ranks=(2,), position_ranks=(2, 4),
                                                     screenot_k=(3,), baseline_draws=20),
                      methods=("largest", "mean"), rel_dists=(0, 3))
    assert len(df) == 4
    for col, want in (("tok_frac_q_r2", 1.0), ("pos_frac_q_r2", 1.0), ("tok_match_q_r2", 1.0),
                      ("pos_match_q_r2", 1.0), ("sv_q0_1", 3.0), ("sv_q0_2", 1.0),
                      ("sv_q0_3", 0.0)):
        np.testing.assert_allclose(df[col], want, atol=1e-5, err_msg=col)
    assert (df["tok_frac_k_r2"] < 0.9).all()               # the random W_k is not planted
    assert (df["rank_Wq0_k3"] == 2).all()                   # two non-zero singular values
