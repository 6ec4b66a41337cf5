"""A folder of settings in the authors' exact layout, measured and checked against the source's
formulas re-computed here one checkpoint at a time in plain numpy (issue 17, Build items 1–3)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lmlab.circuits import MeasureConfig, find_settings, measure_runs
from lmlab.models.rotary_tf import apply_rotary, rotary_tables
from tests.circuits._layout import D, V, err_record, write_source_run

RANKS = (1, 3, 5, 8)
RELS = (0, 1, 5)
CFG = MeasureConfig(ranks=RANKS, position_ranks=(2, 4), screenot_k=(3, 5), baseline_draws=200)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("out_phase_progress_long")
    write_source_run(root / "infinite_pool_size", seed=1)
    write_source_run(root / "small_pool_size", seed=2, theta=False)  # an older run folder
    return root


def R_from_the_model(t: int) -> np.ndarray:
    """R[j, k] = ⟨Rot(0) e_j, Rot(t) e_k⟩ rotated by the model's own rotary code (the authors'
    way of building calc_rotary_R_mat: rotate basis vectors, take inner products), in float64
    with the model's angles (checked against its float32 tables)."""
    inv = 10000.0 ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    angles = torch.arange(t + 1, dtype=torch.float64)[:, None] * inv[None, :]    # (t+1, D/2)
    cos32, sin32 = rotary_tables(D, t + 1)
    assert torch.allclose(angles.cos().float(), cos32) and torch.allclose(angles.sin().float(),
                                                                          sin32)
    basis = torch.eye(D, dtype=torch.float64)[:, None, :].expand(D, t + 1, D)    # (D, T, D)
    rotated = apply_rotary(basis, angles.cos(), angles.sin())                    # (D, T, D)
    return (rotated[:, 0] @ rotated[:, t].T).numpy()


def top_cosines(A_rows: np.ndarray, B_cols: np.ndarray, r: int) -> np.ndarray:
    """Singular values of A_rows[:r] @ B_cols[:, :r], as the authors' plots_maker computes."""
    return np.linalg.svd(A_rows[:r, :] @ B_cols[:, :r], compute_uv=False)


def by_hand(path: Path, t: int) -> dict[str, float]:
    """Every statistic of one checkpoint from the source's formulas, written out anew."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    g = {k: v.double().numpy() for k, v in sd.items()}
    E = g["embed.embed.weight"]
    Wq, Wk = g["h.1.mha.W_q.weight"], g["h.1.mha.W_k.weight"]
    Wv, Wo = g["h.0.mha.W_v.weight"], g["h.0.mha.W_o.weight"]
    R = np.eye(D) if t == 0 else R_from_the_model(t)
    W_qk = Wq.T @ R @ Wk / np.sqrt(D)
    W_ov = Wo @ Wv
    U_qk, _, Vt_qk = np.linalg.svd(W_qk)
    U_ov, _, Vt_ov = np.linalg.svd(W_ov)
    _, _, Vt_E = np.linalg.svd(E)
    out: dict[str, float] = {}
    for r in RANKS:
        for name, (A, B) in {"match": (Vt_qk, U_ov), "outer_match": (Vt_ov, U_qk),
                             "emb_ov_match": (Vt_E, U_ov)}.items():
            s = top_cosines(A, B, r)
            out[f"largest/{name}_r{r}"] = s[0]
            out[f"mean/{name}_r{r}"] = math.sqrt(np.mean(s ** 2))
    W = W_qk @ W_ov
    out["zscore"] = (np.mean(np.diag(W)) - np.mean(W)) / np.std(W)
    M = E @ W @ E.T
    out["mismatch"] = float(np.mean([np.argmax(M[i]) != i for i in range(V)]))
    return out


def test_found_and_measured_like_the_source(source: Path) -> None:
    found = find_settings(source)
    assert sorted(found.settings) == ["infinite_pool_size", "small_pool_size"]
    assert found.problems == []          # nothing missing; ckpt.pt, test.pth, figures/ ignored
    df = measure_runs(found, CFG, methods=("largest", "mean"), rel_dists=RELS)
    assert len(df) == 2 * 5 * 2 * 3      # settings × checkpoints × methods × rel_dists
    assert df.attrs["problems"] == []
    assert df.groupby("setting")["rotary_theta"].unique().map(list).tolist() == [[1e4], [1e4]]
    checked = 0
    for setting, folder in found.settings.items():
        for step in (0, 20, 40):
            for t in RELS:
                want = by_hand(folder / f"ckpt_{step}.pt", t)
                for method in ("largest", "mean"):
                    row = df[(df.setting == setting) & (df.step == step) & (df.method == method)
                             & (df.rel_dist == t)]
                    assert len(row) == 1
                    row = row.iloc[0]
                    for key, value in want.items():
                        if "/" in key:
                            m, col = key.split("/")
                            if m != method:
                                continue
                        else:
                            col = key
                        assert row[col] == pytest.approx(value, rel=1e-9, abs=1e-9), \
                            (setting, step, method, t, col)
                        checked += 1
    assert checked == 2 * 3 * 3 * 2 * (3 * len(RANKS) + 2)


def test_errors_come_from_the_dense_err_arr(source: Path) -> None:
    df = measure_runs(find_settings(source), CFG, rel_dists=(1,))
    rows = df[df.setting == "infinite_pool_size"].set_index("step")
    assert math.isnan(rows.loc[0, "err_test"])          # no entry for the initial weights
    for step in (10, 20, 30, 40):                        # ckpt_k ↔ epoch k − 1
        want = err_record(step - 1)
        for col in ("loss_train", "err_train", "loss_test", "err_test", "loss_ood", "err_ood"):
            assert rows.loc[step, col] == pytest.approx(want[col])
    assert rows["err_test_nofloor"].isna().all()         # the authors' runs have none


def test_rotary_distance_and_method_change_what_they_should(source: Path) -> None:
    df = measure_runs(find_settings(source), CFG, methods=("largest", "mean"), rel_dists=RELS)
    one = df[df.setting == "infinite_pool_size"]
    key = ["step"]
    lg0 = one[(one.method == "largest") & (one.rel_dist == 0)].set_index(key)
    lg5 = one[(one.method == "largest") & (one.rel_dist == 5)].set_index(key)
    mn0 = one[(one.method == "mean") & (one.rel_dist == 0)].set_index(key)
    # R changes W_qk: z, matching and mismatch; not W_ov, E, nor anything of layer 0
    assert not np.allclose(lg0["zscore"], lg5["zscore"])
    for col in ("emb_ov_match_r3", "rank_ov_k3", "rank_E_k3", "rank_Enorm_k5",
                "pos_frac_q_r2", "tok_match_k_r4", "sv_q0_1"):
        np.testing.assert_array_equal(lg0[col], lg5[col])
    # the method changes matchings and the baseline, not z or mismatch
    np.testing.assert_array_equal(lg0["zscore"], mn0["zscore"])
    np.testing.assert_array_equal(lg0["mismatch"], mn0["mismatch"])
    assert (mn0["match_r5"] <= lg0["match_r5"] + 1e-12).all()      # RMS <= max
    assert (mn0["baseline_r5"] < lg0["baseline_r5"]).all()
    # r = 1: one cosine, both methods agree
    np.testing.assert_allclose(mn0["match_r1"], lg0["match_r1"], atol=1e-12)


def test_baselines_follow_the_method(source: Path) -> None:
    """The baseline against an independent Monte Carlo of Haar subspaces."""
    df = measure_runs(find_settings(source), CFG, methods=("largest", "mean"), rel_dists=(0,))
    rng = np.random.default_rng(123)
    draws = [np.linalg.qr(rng.standard_normal((D, D)))[0] for _ in range(400)]
    for r in (1, 3, 5):
        s = [np.linalg.svd(Q[:r, :r], compute_uv=False) for Q in draws]
        for method, stat in (("largest", lambda x: x[0]),
                             ("mean", lambda x: math.sqrt(np.mean(x ** 2)))):
            got = df.loc[df.method == method, f"baseline_r{r}"].unique()
            assert len(got) == 1
            assert got[0] == pytest.approx(np.mean([stat(x) for x in s]), abs=0.03)
