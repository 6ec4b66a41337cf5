"""Measuring a run folder in the source's exact layout through the command line.

A tiny model is trained with lmlab's trainer, then written out as the authors' trainer writes a
run (spec §4: their config.json keys, ``ckpt_<k>.pt`` state dicts with their keys, a dense
``err_arr.json`` of one record per step and nothing else). ``python -m lmlab.cli run induction
--set checkpoints=...`` measures it; the z-score, both subspace matchings and the token mismatch
of ``measures.csv`` are checked against the source's formulas (spec §6), recomputed here with
plain NumPy loops, for R = I and the rotary R, ``largest`` and ``mean``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lmlab.studies.induction_train import TrainSetting, train_setting

#: spec §4: every key of the authors' config.json.
AUTHOR_CONFIG_KEYS = """seed vocab_size d_model ff_dim num_heads num_layers linear_attn residual
mlp dropout norm output_norm pos rotary_theta max_seq_len sample_size sample_size_test regime
distr rep_l rep_h ood_len_pattern pool_size sig device fancy_opt use_wd schedule fresh_sample
label_smoothing lr wd batch_size num_epoch wandb_log plot_attn_every_epoch print_output n_save
up_to_first_save ignore_segment ignore_burning out_dir""".split()

#: spec §1: the authors' state-dict keys of the 2-layer model.
AUTHOR_STATE_KEYS = (["embed.embed.weight"]
                     + [f"h.{i}.mha.W_{w}.{p}" for i in (0, 1) for w in "qkvo"
                        for p in ("weight", "bias")]
                     + [f"h.{i}.ln_{n}.{p}" for i in (0, 1) for n in (1, 2)
                        for p in ("weight", "bias")]
                     + ["ln_f.weight", "ln_f.bias", "fc.weight", "fc.bias"])
ERR_KEYS = ["epoch", "loss_train", "err_train", "loss_test", "err_test", "loss_ood", "err_ood"]
STEPS, SAVE = 40, 20
RANKS = (1, 5, 10, 20)


def write_source_run(lmlab_run: Path, out: Path, *, pool_size: int | None = None) -> Path:
    """Rewrite an lmlab training run as the authors' ``train.py`` writes one."""
    out.mkdir(parents=True)
    lm_cfg = json.loads((lmlab_run / "config.json").read_text())
    config = {k: lm_cfg.get(k) for k in AUTHOR_CONFIG_KEYS}
    config.update(sample_size=None, sig=None, fancy_opt=False, use_wd=True, wandb_log=False,
                  plot_attn_every_epoch=100, print_output=False, device="cuda",
                  pool_size=pool_size, out_dir=str(out), n_save=STEPS // SAVE)
    assert set(config) == set(AUTHOR_CONFIG_KEYS)
    (out / "config.json").write_text(json.dumps(config))
    for k in (0, SAVE, STEPS):
        state = torch.load(lmlab_run / f"ckpt_{k}.pt", weights_only=True)
        assert sorted(state) == sorted(AUTHOR_STATE_KEYS)
        torch.save(state, out / f"ckpt_{k}.pt")
    shutil.copy(out / f"ckpt_{STEPS}.pt", out / "ckpt.pt")
    entries = json.loads((lmlab_run / "err_arr.json").read_text())
    dense = [{k: e[k] for k in ERR_KEYS} for e in entries if e["epoch"] >= 0]
    assert [e["epoch"] for e in dense] == list(range(STEPS))      # one record per step
    (out / "err_arr.json").write_text(json.dumps(dense))
    for name in ("test.pth", "test_ood.pth"):
        shutil.copy(lmlab_run / name, out / name)
    return out


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the source-layout folder, the run directory that measured it from the CLI)."""
    tmp = tmp_path_factory.mktemp("source")
    setting = TrainSetting("tiny", pool_size=None, steps=STEPS, save_every=SAVE, eval_every=1,
                           eval_cheap=20, eval_full=40)
    train_setting(setting, tmp / "lmlab")
    runs = write_source_run(tmp / "lmlab", tmp / "authors" / "infinite_pool_size")
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lmlab.cli", "run", "induction",
           "--set", f"checkpoints={runs.parent}", "--set", "method=largest,mean",
           "--set", "rel_dist=0,1", "--set", "ranks_plotted=5,10",
           "--out", str(tmp / "out")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp / "out" / "induction").iterdir()
    return runs, run_dir


# ---------------------------------------------------------------- the source's formulas (§6)

def rotary_R(d: int, t: int, theta: float = 10000.0) -> np.ndarray:
    """R[t]: 2×2 blocks [[cos tθ_i, −sin tθ_i], [sin tθ_i, cos tθ_i]], θ_i = θ^(−2i/d)."""
    R = np.zeros((d, d))
    for i in range(d // 2):
        a = t * theta ** (-2.0 * i / d)
        R[2 * i, 2 * i], R[2 * i, 2 * i + 1] = math.cos(a), -math.sin(a)
        R[2 * i + 1, 2 * i], R[2 * i + 1, 2 * i + 1] = math.sin(a), math.cos(a)
    return R


def source_measures(ckpt: Path, t: int, method: str) -> dict[str, float]:
    sd = {k: v.double().numpy() for k, v in torch.load(ckpt, weights_only=True).items()}
    E = sd["embed.embed.weight"]
    d = E.shape[1]
    W_qk = sd["h.1.mha.W_q.weight"].T @ rotary_R(d, t) @ sd["h.1.mha.W_k.weight"] / math.sqrt(d)
    W_ov = sd["h.0.mha.W_o.weight"] @ sd["h.0.mha.W_v.weight"]
    W = W_qk @ W_ov
    out = {"zscore": (np.mean(np.diag(W)) - np.mean(W)) / np.std(W)}
    _, _, Vt_qk = np.linalg.svd(W_qk)
    U_ov, _, _ = np.linalg.svd(W_ov)
    _, _, Vt_E = np.linalg.svd(E)
    for name, left, right in (("match", Vt_qk.T, U_ov), ("emb_ov_match", Vt_E.T, U_ov)):
        for r in RANKS:
            cosines = np.linalg.svd(left[:, :r].T @ right[:, :r], compute_uv=False)
            out[f"{name}_r{r}"] = (cosines.max() if method == "largest"
                                   else math.sqrt(np.mean(cosines ** 2)))
    M = E @ W @ E.T
    wrong = sum(int(np.argmax(M[i]) != i) for i in range(M.shape[0]))
    out["mismatch"] = wrong / M.shape[0]
    return out


# ------------------------------------------------------------------------------------ tests

def test_measures_match_the_source_formulas(measured: tuple[Path, Path]) -> None:
    runs, run_dir = measured
    m = pd.read_csv(run_dir / "measures.csv")
    assert len(m) == 3 * 2 * 2                   # steps × methods × distances
    assert set(zip(m["method"], m["rel_dist"], strict=True)) == {
        ("largest", 0), ("largest", 1), ("mean", 0), ("mean", 1)}
    for row in m.itertuples():
        want = source_measures(runs / f"ckpt_{row.step}.pt", int(row.rel_dist), row.method)
        for key, value in want.items():
            assert getattr(row, key) == pytest.approx(value, rel=1e-5, abs=1e-9), \
                (row.step, row.method, row.rel_dist, key)
    # R = I and the rotary R give different circuits; largest >= mean (RMS) matching
    a = m[(m["method"] == "largest") & (m["rel_dist"] == 0)].set_index("step")
    b = m[(m["method"] == "largest") & (m["rel_dist"] == 1)].set_index("step")
    c = m[(m["method"] == "mean") & (m["rel_dist"] == 0)].set_index("step")
    assert not np.allclose(a["zscore"], b["zscore"])
    assert (a["match_r5"] >= c["match_r5"] - 1e-12).all()
    assert (c["baseline_r5"] < a["baseline_r5"]).all()


def test_errors_of_the_dense_err_arr_are_aligned(measured: tuple[Path, Path]) -> None:
    runs, run_dir = measured
    dense = json.loads((runs / "err_arr.json").read_text())
    m = pd.read_csv(run_dir / "measures.csv")
    for row in m[m["step"] > 0].itertuples():
        entry = dense[row.step - 1]                         # ckpt_k.pt <-> epoch k − 1
        assert entry["epoch"] == row.step - 1
        assert row.err_ood == pytest.approx(entry["err_ood"])
        assert row.err_test == pytest.approx(entry["err_test"])
    assert m.loc[m["step"] == 0, "err_ood"].isna().all()    # no entry before the first step
    s = json.loads((run_dir / "summary.json").read_text())
    info = s["settings"]["infinite_pool_size"]
    assert info["final_err_ood"] == pytest.approx(dense[-1]["err_ood"])
    assert info["pool"] is None and info["seed"] == 2026 and info["checkpoints"] == 3


def test_the_run_directory_is_that_of_a_trained_run(measured: tuple[Path, Path]) -> None:
    runs, run_dir = measured
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["source"] == str(runs.parent) and s["problems"] == []
    assert s["steps"] == STEPS and s["seed"] is None and s["num_layers"] is None
    assert s["conventions"]["method"] == ["largest", "mean"]
    assert s["conventions"]["rel_dist"] == [0, 1]
    assert s["conventions"]["primary"] == "largest, rel_dist 0"
    assert not (run_dir / "settings").exists()                  # nothing was trained
    figures = sorted(p.stem for p in (run_dir / "figures").glob("*.png"))
    assert figures == ["circuits", "distance_infinite_pool_size", "matrices", "overlay",
                       "setting_infinite_pool_size_largest", "setting_infinite_pool_size_mean"]
    md = (run_dir / "report.md").read_text()
    assert "Checkpoints measured without training" in md and str(runs.parent) in md
    assert all(f"figures/{f}.png" in md for f in figures)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "finished" and str(runs.parent) in meta["data_source"]
