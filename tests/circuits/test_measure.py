"""load_run / measure_run / circuit_matrices on fake run directories with the exact keys."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lmlab.circuits import (
    MeasureConfig,
    checkpoint_shapes,
    circuit_matrices,
    load_run,
    measure_run,
    measure_runs,
    rotary_R,
    screenot_rank,
    subspace_matching,
)
from lmlab.errors import LmlabError

D = V = 64
FAST = MeasureConfig(ranks=(1, 2, 5, 10), baseline_draws=100)
RELS = (0, 1, 5)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path / "cache"))


def random_state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) for k, s in checkpoint_shapes(V, D, 2).items()}


def planted_state() -> dict[str, torch.Tensor]:
    """W_qk ∝ W_ov = diag(descending), E diagonal: perfect matching, a perfect token matcher."""
    sd = {k: torch.zeros(s) for k, s in checkpoint_shapes(V, D, 2).items()}
    s = torch.linspace(2.0, 1.0, D)
    sd["embed.embed.weight"] = torch.diag(torch.linspace(3.0, 1.0, D))
    sd["h.1.mha.W_q.weight"] = torch.diag(s.sqrt())
    sd["h.1.mha.W_k.weight"] = torch.diag(s.sqrt())
    sd["h.0.mha.W_v.weight"] = torch.diag(s)
    sd["h.0.mha.W_o.weight"] = torch.eye(D)
    for i in (0, 1):
        sd[f"h.{i}.ln_1.weight"] = torch.ones(D)
    return sd


def make_run(root: Path, steps: list[int], *, config: bool = True, err: bool = True,
             num_epoch: int = 1000) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, k in enumerate(steps):
        torch.save(random_state(i), root / f"ckpt_{k}.pt")
    if config:
        (root / "config.json").write_text(json.dumps(
            {"d_model": D, "vocab_size": V, "num_layers": 2, "rotary_theta": 10000.0,
             "max_seq_len": 64, "num_epoch": num_epoch, "n_save": num_epoch // 200}))
    if err:
        rows = [{"epoch": e, "loss_train": 1.0, "err_train": 0.5, "loss_test": 2.0,
                 "err_test": e / 1000, "loss_ood": 3.0, "err_ood": 0.9} for e in range(num_epoch)]
        # a full evaluation at checkpoint epochs, written after the cheap one: it wins
        rows += [{"epoch": k - 1, "loss_train": 1.0, "err_train": 0.5, "loss_test": 2.0,
                  "err_test": 0.25, "loss_ood": 3.0, "err_ood": 0.125, "full": True}
                 for k in steps if k > 0]
        (root / "err_arr.json").write_text(json.dumps(rows))
    return root


def test_one_row_per_checkpoint_and_option_missing_listed(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", [800, 0, 200, 1000, 600])   # 400 missing
    w = load_run(run)
    assert w.steps.tolist() == [0, 200, 600, 800, 1000]
    assert w.params["h.0.mha.W_q.weight"].shape == (5, D, D)
    assert w.missing == ["ckpt_400.pt"]
    df = measure_run(run, FAST, methods=("largest", "mean"), rel_dists=RELS)
    assert len(df) == 5 * 2 * 3
    assert df.columns[:3].tolist() == ["step", "method", "rel_dist"]
    first = df[(df.method == "largest") & (df.rel_dist == 0)]
    assert first["step"].tolist() == [0, 200, 600, 800, 1000]
    assert df.attrs["missing"] == ["ckpt_400.pt"]
    for col in ("match_r5", "outer_match_r10", "baseline_r1", "emb_ov_match_r2", "zscore",
                "mismatch", "rank_qk_k5", "rank_ov_k10", "rank_E_k20", "rank_Enorm_k5",
                "rank_Wq0_k10", "rank_Wk0_k20", "pos_match_q_r5", "pos_match_k_r20",
                "tok_frac_q_r10", "sv_q0_1", "sv_k0_5", "err_test", "err_ood"):
        assert col in df, col
    assert not any(c.endswith("_rd0") for c in df)        # rel_dist is a column now
    assert df.columns[-1] == "err_ood_nofloor"
    assert df[[c for c in df if c.startswith("match_r")]].apply(
        lambda c: c.between(0, 1 + 1e-12)).all().all()
    # errors at epoch = step − 1, the full entry preferred; none for step 0
    assert math.isnan(first.iloc[0]["err_test"])
    assert first["err_test"].tolist()[1:] == [0.25] * 4
    assert first["err_ood"].tolist()[1:] == [0.125] * 4
    # the conventions are in the output
    assert df["r_sign"].unique().tolist() == [1]
    assert df["argmax_axis"].unique().tolist() == ["row"]
    assert df["layernorm"].unique().tolist() == ["ignore"]
    assert df.attrs["measure_config"]["rel_dists"] == [0, 1, 5]
    assert df.attrs["measure_config"]["methods"] == ["largest", "mean"]


def test_batched_equals_one_checkpoint_by_hand(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", [0, 200, 400])
    df = measure_run(run, FAST).set_index("step")
    sd = torch.load(run / "ckpt_200.pt", weights_only=True)
    Wq, Wk = sd["h.1.mha.W_q.weight"].double().numpy(), sd["h.1.mha.W_k.weight"].double().numpy()
    Wv, Wo = sd["h.0.mha.W_v.weight"].double().numpy(), sd["h.0.mha.W_o.weight"].double().numpy()
    E = sd["embed.embed.weight"].double().numpy()
    W_qk = Wq.T @ rotary_R(D, 1) @ Wk / 8.0
    W_ov = Wo @ Wv
    U_qk, _, Vh_qk = np.linalg.svd(W_qk)
    U_ov, _, Vh_ov = np.linalg.svd(W_ov)
    row = df.loc[200]
    for r in (1, 5, 10):
        assert row[f"match_r{r}"] == pytest.approx(float(subspace_matching(Vh_qk.T, U_ov, r)))
        assert row[f"outer_match_r{r}"] == pytest.approx(
            float(subspace_matching(Vh_ov.T, U_qk, r)))
    W = W_qk @ W_ov
    assert row["zscore"] == pytest.approx((np.diag(W).mean() - W.mean()) / W.std())
    M = E @ W @ E.T
    assert row["mismatch"] == pytest.approx(np.mean(M.argmax(1) != np.arange(V)))
    # ScreeNOT ranks, one matrix at a time
    Wq0 = sd["h.0.mha.W_q.weight"].double().numpy()
    Enorm = E / np.linalg.norm(E, axis=1, keepdims=True)
    for k in FAST.screenot_k:
        for name, X in (("qk", W_qk), ("ov", W_ov), ("E", E), ("Enorm", Enorm), ("Wq0", Wq0)):
            assert row[f"rank_{name}_k{k}"] == int(screenot_rank(X, k)[1]), (name, k)


def test_planted_circuit_matches_perfectly(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    torch.save(planted_state(), run / "ckpt_0.pt")
    torch.save(random_state(1), run / "ckpt_200.pt")
    df = measure_run(run, MeasureConfig(ranks=(1, 5, 10), baseline_draws=100),
                     rel_dists=(0, 10))
    at0, at10 = df[df.rel_dist == 0].set_index("step"), df[df.rel_dist == 10].set_index("step")
    planted, rand = at0.loc[0], at0.loc[200]
    for r in (1, 5, 10):
        assert planted[f"match_r{r}"] == pytest.approx(1.0)
        assert planted[f"emb_ov_match_r{r}"] == pytest.approx(1.0)
        assert rand[f"match_r{r}"] < 0.99
    assert planted["zscore"] > 7 > rand["zscore"]
    assert planted["mismatch"] == 0.0 and rand["mismatch"] > 0.8
    # at relative distance 10 the rotation spoils the first blocks only: still a good matcher
    assert at10.loc[0, "zscore"] > 3 > abs(at10.loc[200, "zscore"])


def test_layernorm_fold_and_conventions(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", [0, 200])
    ignore = measure_run(run, FAST, rel_dists=(0, 1)).set_index(["rel_dist", "step"])
    folded = measure_run(run, MeasureConfig(**{**FAST.__dict__, "layernorm": "fold"}),
                         rel_dists=(0, 1)).set_index(["rel_dist", "step"])
    assert folded["layernorm"].unique().tolist() == ["fold"]
    for col in ("match_r5", "tok_frac_q_r5", "sv_k0_1"):                  # random γ ≠ 1
        assert not np.allclose(ignore[col], folded[col]), col
    minus = measure_run(run, MeasureConfig(**{**FAST.__dict__, "r_sign": -1,
                                             "argmax_axis": "col"}),
                        rel_dists=(0, 1)).set_index(["rel_dist", "step"])
    assert minus["r_sign"].unique().tolist() == [-1]
    np.testing.assert_allclose(minus.loc[0, "zscore"], ignore.loc[0, "zscore"])   # R(0) = I
    assert not np.allclose(minus.loc[1, "zscore"], ignore.loc[1, "zscore"])


def test_wrong_key_is_named(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", [0, 200])
    sd = random_state(5)
    sd["h.1.mha.W_query.weight"] = sd.pop("h.1.mha.W_q.weight")
    torch.save(sd, run / "ckpt_400.pt")
    with pytest.raises(LmlabError, match=r"ckpt_400\.pt.*h\.1\.mha\.W_q\.weight.*W_query"):
        load_run(run)


def test_truncated_run_lists_the_tail(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", [0, 200, 400], num_epoch=1000)
    assert load_run(run).missing == ["ckpt_600.pt", "ckpt_800.pt", "ckpt_1000.pt"]


def test_missing_err_arr_and_config_measured_anyway(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", [0, 200, 400], config=False, err=False)
    df = measure_run(run, FAST)
    assert len(df) == 3
    assert df.attrs["missing"] == ["config.json", "err_arr.json"]
    assert df["err_test"].isna().all() and df["err_ood"].isna().all()
    assert df["rotary_theta"].unique().tolist() == [10000.0]


def test_empty_directory_and_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(LmlabError, match="no checkpoints"):
        load_run(tmp_path)
    with pytest.raises(LmlabError, match="no such run directory"):
        load_run(tmp_path / "nope")
    (tmp_path / "ckpt_0.pt").write_text("not a checkpoint")
    with pytest.raises(LmlabError, match="cannot read checkpoint"):
        load_run(tmp_path)
    with pytest.raises(LmlabError, match="r_sign"):
        MeasureConfig(r_sign=2)  # type: ignore[arg-type]
    run = make_run(tmp_path / "run", [0])
    with pytest.raises(LmlabError, match=r"\[0, 31\]"):
        measure_run(run, MeasureConfig(ranks=(1,), screenot_k=(40,), baseline_draws=10))
    with pytest.raises(LmlabError, match="methods must be"):
        measure_runs({"a": run}, FAST, methods=("median",))
    with pytest.raises(LmlabError, match="rel_dists must be"):
        measure_runs({"a": run}, FAST, rel_dists=(-1,))
    with pytest.raises(LmlabError, match="position_ranks"):
        MeasureConfig(position_ranks=(0,))


def test_measure_runs_adds_setting(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", [0, 200], num_epoch=200)
    b = make_run(tmp_path / "b", [0, 400], err=False, num_epoch=400)
    df = measure_runs({"small": a, "large": b}, FAST, methods="mean", rel_dists=5)
    assert df["setting"].tolist() == ["small", "small", "large", "large"]
    assert df.columns[0] == "setting"
    assert df["method"].unique().tolist() == ["mean"] and df["rel_dist"].unique().tolist() == [5]
    assert df.attrs["missing"] == {"small": [], "large": ["ckpt_200.pt", "err_arr.json"]}
    assert [p.split(":")[0] for p in df.attrs["problems"]] == ["large", "large"]


def test_circuit_matrices_at_the_nearest_checkpoint(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", [0, 200, 400, 600])
    (run / "ckpt_600.pt").write_text("corrupt")                      # passed over
    got = circuit_matrices(run, [190, 210, 590, 1000], rel_dist=5)
    assert sorted(got) == [200, 400]                                 # 590 and 1000 → 400
    sd = torch.load(run / "ckpt_200.pt", weights_only=True)
    g = {k: v.double().numpy() for k, v in sd.items()}
    W_qk = g["h.1.mha.W_q.weight"].T @ rotary_R(D, 5) @ g["h.1.mha.W_k.weight"] / np.sqrt(D)
    W_ov = g["h.0.mha.W_o.weight"] @ g["h.0.mha.W_v.weight"]
    E = g["embed.embed.weight"]
    np.testing.assert_allclose(got[200]["W_qkov"], W_qk @ W_ov, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got[200]["QK0"], E @ W_qk @ W_ov @ E.T, rtol=1e-10, atol=1e-8)
    assert got[200]["QK0"].shape == (V, V) and got[200]["W_qk"].shape == (D, D)
    # rel_dist 0 is R = I
    same = circuit_matrices(run, [200], rel_dist=0)[200]["W_qk"]
    np.testing.assert_allclose(same, g["h.1.mha.W_q.weight"].T @ g["h.1.mha.W_k.weight"] / 8)
    with pytest.raises(LmlabError, match="no checkpoints"):
        circuit_matrices(tmp_path, [0])
