"""The finite-d branch minima of the rank-1 attention model (``lmlab.theory.finite_d``).

Known answers: the direct loss on the (n, L, d) tensors, finite differences, plain gradient
descent of the study's trainer (an independent implementation), the exact subspace constraints,
and the RS energies quoted in ``/work/shared/specs/attention-phase.md`` (ω = 0, α = 0.6:
positional 1.7838e-3, semantic 1.7925e-3, agnostic 1.8017e-3).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from lmlab.data.attention_teacher import AttentionTask, positional_encodings, sample_group
from lmlab.errors import LmlabError
from lmlab.models.attention_student import GDConfig, StudentSpec, train_students
from lmlab.theory import finite_d
from lmlab.theory.finite_d import (
    draw_problem,
    minimise_branch,
    problem_from_data,
    rs_reference,
)


def _data(d: int = 24, n: int = 30, seed: int = 3):
    return sample_group(AttentionTask(d=d), n=n, n_test=1, seed=seed, dtype=torch.float64)


def _direct_energy(data, Q: np.ndarray, Q_star: torch.Tensor, omega: float, lam: float) -> float:
    """ℒ/d from the full (n, L, d) tensors: y = T z, S = softmax(h hᵀ), Σ‖y − S x‖²/(2d)."""
    d = data.task.d
    x = data.train.x.double()
    z = x - positional_encodings(data.task)
    hs = z @ Q_star / math.sqrt(d)                                      # (n, L)
    T = (1 - omega) * torch.softmax(hs[:, :, None] * hs[:, None, :], -1) \
        + omega * data.task.A_tensor()
    y = T @ z
    h = x @ torch.as_tensor(Q) / math.sqrt(d)
    S = torch.softmax(h[:, :, None] * h[:, None, :], -1)
    L = ((y - S @ x) ** 2).sum() / (2 * d) + lam / 2 * float(Q @ Q)
    return float(L) / d


@pytest.mark.parametrize("normalise", [False, True])
def test_gram_form_equals_direct_loss(normalise: bool) -> None:
    data = _data()
    prob = problem_from_data(data, omega=0.3, lam=0.02, normalise_teacher=normalise)
    Q_star = data.Q_star[:, 0].double()
    if normalise:
        Q_star = Q_star * math.sqrt(data.task.d) / Q_star.norm()
        assert float(prob.Q_star @ prob.Q_star) == pytest.approx(data.task.d, rel=1e-12)
    Q = np.random.default_rng(0).normal(size=data.task.d)
    assert prob.energy(Q) == pytest.approx(_direct_energy(data, Q, Q_star, 0.3, 0.02),
                                           rel=1e-12)


def test_gradient_matches_finite_differences() -> None:
    prob = problem_from_data(_data(), omega=0.1, lam=0.01)
    rng = np.random.default_rng(1)
    Q = rng.normal(size=prob.d)
    _, g = prob.energy_and_grad(Q)
    eps = 1e-6
    fd = np.array([(prob.energy(Q + eps * e) - prob.energy(Q - eps * e)) / (2 * eps)
                   for e in np.eye(prob.d)])
    assert np.abs(fd - g).max() < 1e-6 * np.abs(g).max()


def test_minimiser_beats_plain_gradient_descent_from_the_same_start() -> None:
    data = _data(d=30, n=24, seed=5)
    prob = problem_from_data(data, omega=0.2, normalise_teacher=False)   # the trainer's loss
    gd = train_students(data, [StudentSpec(n=24, omega=0.2, init="positional")],
                        GDConfig(steps=400), dtype=torch.float64)
    e_gd = prob.energy(gd.Q[:, 0].numpy())
    assert e_gd == pytest.approx(gd.table["eps_t"].iloc[0], rel=1e-3)  # same objective
    start = np.full(prob.d, 1 / math.sqrt(prob.d))                       # the positional init
    res = minimise_branch(prob, "free", starts=[start])
    assert res.eps_t <= e_gd + 1e-14
    assert res.grad_norm < 1e-4 * prob.d ** 2 * np.abs(prob.energy_and_grad(start)[1]).max()


@pytest.mark.parametrize("branch", ["positional", "semantic", "agnostic"])
def test_projection_holds_the_branch_constraint(branch: str) -> None:
    prob = draw_problem(omega=0.0, alpha=1.0, d=60, seed=2)
    res = minimise_branch(prob, branch, n_starts=3, seed=0)
    Q = res.Q
    assert res.m == abs(Q.sum()) / prob.d and res.theta == pytest.approx(
        0.25 * abs(prob.Q_star @ Q) / prob.d, abs=1e-18)
    if branch in ("semantic", "agnostic"):
        assert res.m < 1e-14
    if branch in ("positional", "agnostic"):
        assert res.theta < 1e-14
    free = {"positional": res.m, "semantic": res.theta_over_sigma2, "agnostic": res.q}[branch]
    assert free > 0.02          # the free direction is used: not a trivially zero minimiser
    assert res.eps_t == min(res.start_eps_t) and len(res.start_eps_t) == 3


def test_rs_references_match_the_spec() -> None:
    ref = {"positional": 1.7838e-3, "semantic": 1.7925e-3, "agnostic": 1.8017e-3}
    for branch, value in ref.items():
        fp = rs_reference(0.0, 0.6, branch)
        assert fp.converged and fp.branch == branch
        assert fp.eps_t == pytest.approx(value, rel=2e-4)
    assert rs_reference(0.0, 0.6, "positional").m == pytest.approx(0.144, abs=1e-3)
    assert rs_reference(0.0, 0.6, "semantic").theta / 0.25 == pytest.approx(0.232, abs=1e-3)


def test_semantic_branch_is_closer_to_rs_than_the_memorising_one_at_d_200() -> None:
    """ω = 0, α = 0.6: per seed, the memorising (m = θ = 0) minimum sits more than 2 points
    of % further above its RS energy than the semantic one (both share the data set)."""
    df = finite_d.run_branches(0.0, 0.6, [200], [0, 1, 2], branches=["semantic", "agnostic"],
                               progress=False)
    gap = df.pivot(index="seed", columns="branch", values="gap_pct")
    assert (gap["agnostic"] - gap["semantic"] > 2.0).all(), gap


def test_tables_and_bad_inputs() -> None:
    rows = []
    for seed, (ep, es) in enumerate([(1.0, 3.0), (2.0, 2.0)]):
        for b, e in (("positional", ep), ("semantic", es)):
            rows.append({"omega": 0.0, "alpha": 0.6, "d": 100, "seed": seed, "branch": b,
                         "eps_t": e, "rs_eps_t": 1.0, "gap_pct": 100 * (e - 1),
                         "gap_pct_median_start": 0.0, "gap_pct_gd_start": 0.0, "q": 0.1, "fit": 0.5,
                         "m": 0.0, "theta_over_sigma2": 0.0, "rs_q": 0.1, "rs_m": 0.0,
                         "rs_theta": 0.0})
    df = pd.DataFrame(rows)
    delta = finite_d.delta_table(df)
    assert delta["pair"].tolist() == ["semantic - positional"]
    assert delta["delta_mean"].iloc[0] == 1.0 and delta["delta_std"].iloc[0] == pytest.approx(
        math.sqrt(2))
    s = finite_d.summarise(df)
    assert s.set_index("branch").loc["semantic", "gap_pct_mean"] == 150.0
    assert s["rs_fit"].iloc[0] == pytest.approx(1.0 - 0.01 * 0.1 / (2 * 0.25))
    with pytest.raises(LmlabError, match="branch must be one of"):
        minimise_branch(draw_problem(0.0, 0.6, 20, 0), "mixed")
    with pytest.raises(LmlabError, match="alpha must be > 0"):
        draw_problem(0.0, -1.0, 20, 0)


def test_command_line(tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "fd"
    assert finite_d.main(["--d", "30", "40", "--seeds", "2", "--starts", "2", "--alpha", "0.6",
                          "--out", str(out), "--no-progress"]) == 0
    table = pd.read_csv(out / "finite_d_branches.csv")
    assert len(table) == 2 * 2 * 3 and set(table["branch"]) == {"positional", "semantic",
                                                                "agnostic"}
    assert (out / "finite_d_branches.png").stat().st_size > 1000
    assert len(pd.read_csv(out / "finite_d_summary.csv")) == 2 * 3
    n_calls = []
    real = finite_d.minimise_branch
    monkeypatch.setattr(finite_d, "minimise_branch",
                        lambda *a, **k: n_calls.append(1) or real(*a, **k))
    args = ["--d", "30", "40", "--seeds", "3", "--starts", "2", "--alpha", "0.6", "--out",
            str(out), "--no-progress", "--resume"]
    assert finite_d.main(args) == 0
    assert len(n_calls) == 2 * 3                    # only seed 2 of each d is new
    assert len(pd.read_csv(out / "finite_d_branches.csv")) == 2 * 3 * 3
    assert len(json.loads((out / "finite_d.json").read_text())["commands"]) == 2
    assert finite_d.main([*args[:-2], "--alpha", "0.7", "--resume"]) == 2   # other settings
    assert finite_d.main(["--seeds", "0", "--out", str(out)]) == 2
    assert "error:" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert finite_d.main(["--out", str(tmp_path / "file")]) == 2
