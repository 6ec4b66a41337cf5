"""The attention-phase study end to end on a tiny grid, its resume, and its input errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmlab.studies import get_study
from lmlab.studies.attention_phase import crossing
from lmlab.studies.runner import run_study
from tests.studies.conftest import assert_redraws
from tests.test_bad_input import study_error

TINY = ["task.d=40", "grid.alpha_min=0.25", "grid.alpha_points=6", "grid.omegas=0.1,0.3",
        "grid.seeds=3", "gd.steps=150", "n_test=400", "theory.enabled=false"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def run_path(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    return run_study("attention-phase", preset="quick", overrides=[*TINY, f"store={store}"],
                     out=out).path


def test_tables_summary_and_figures(run_path: Path) -> None:
    runs = pd.read_csv(run_path / "runs.csv")
    assert len(runs) == 3 * 2 * 6 * 2  # seeds × ω × α × inits
    assert sorted(runs["n"].unique()) == [10, 24, 38, 52, 66, 80]  # round(α d), α in [0.25, 2]
    assert set(runs["init"]) == {"semantic", "positional"}
    assert (runs["eps_t"] > 0).all() and (runs["eps_g"] > 0).all()
    s = json.loads((run_path / "summary.json").read_text())
    for key in ("alpha_c_sim", "alpha_c_sim_se", "eps_g_sem_alpha2", "eps_g_pos_alpha2",
                "eps_lin", "theta_sem_alpha2", "m_pos_alpha2"):
        assert key in s, key
    top = runs[(runs["omega"] == 0.3) & (runs["n"] == 80)]
    assert s["eps_g_sem_alpha2"] == pytest.approx(
        top[top["init"] == "semantic"]["eps_g"].mean(), rel=1e-9)
    md = (run_path / "report.md").read_text()
    for fig in ("fig2_left_delta_eps_t", "fig2_middle_eps_g", "fig2_right_order_parameters",
                "delta_eps_g", "fig3_phase_eps_t", "fig3_attention_vs_linear"):
        png = run_path / "figures" / f"{fig}.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and f"figures/{fig}.png" in md


def test_report_redraws_from_the_saved_result(run_path: Path) -> None:
    summary = json.loads((run_path / "summary.json").read_text())
    assert get_study("attention-phase").SUMMARY.problems(summary) == []
    assert summary["alpha_c_theory"] is None and "theory" not in summary  # theory.enabled=false
    assert_redraws(run_path, "attention-phase")


def test_the_crossing_table_per_omega(run_path: Path) -> None:
    runs = pd.read_csv(run_path / "runs.csv")
    table = pd.read_csv(run_path / "alpha_c_by_omega.csv").set_index("omega")
    assert list(table.index) == [0.1, 0.3]
    assert table["alpha_c_published"].to_dict() == pytest.approx({0.1: 0.707, 0.3: 1.241})
    assert table["alpha_c_theory"].isna().all()          # theory.enabled=false
    for w in (0.1, 0.3):                                 # recomputed from the runs by hand
        r = runs[runs["omega"] == w].pivot_table(index=["alpha", "seed"], columns="init",
                                                 values="eps_t")
        delta = (r["semantic"] - r["positional"]).groupby("alpha").mean()
        expect = crossing(delta.index.to_numpy(), delta.to_numpy())
        got = table.loc[w, "alpha_c_sim"]
        assert (math.isnan(expect) and math.isnan(got)) or got == pytest.approx(expect)
    s = json.loads((run_path / "summary.json").read_text())
    assert s["alpha_c_sim"] == pytest.approx(table.loc[0.3, "alpha_c_sim"], nan_ok=True)


def test_no_published_line_for_other_parameters(tmp_path: Path) -> None:
    path = run_study("attention-phase", preset="quick",
                     overrides=[*TINY, "grid.omegas=0.3", "grid.seeds=1", "task.sigma=0.7"],
                     out=tmp_path).path
    assert pd.read_csv(path / "alpha_c_by_omega.csv")["alpha_c_published"].isna().all()


def test_a_resumed_sweep_computes_only_new_cells(store: Path, run_path: Path,
                                                 tmp_path: Path) -> None:
    lines = (store / "cells.jsonl").read_text().splitlines()
    assert len(lines) == 6  # 3 seeds × 2 ω
    before = {json.loads(x)["key"]: x for x in lines}
    sets = [o for o in TINY if not o.startswith("grid.seeds")] + ["grid.seeds=4",
                                                                 f"store={store}"]
    new = run_study("attention-phase", preset="quick", overrides=sets, out=tmp_path).path
    after = (store / "cells.jsonl").read_text().splitlines()
    assert len(after) == 8 and after[:6] == lines  # two new cells appended, old ones untouched
    assert set(before) < {json.loads(x)["key"] for x in after}
    old = pd.read_csv(run_path / "runs.csv")
    both = pd.read_csv(new / "runs.csv")
    kept = both[both["seed"].isin(old["seed"].unique())].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept[old.columns].reset_index(drop=True),
                                  old.reset_index(drop=True), check_exact=False, rtol=1e-12)


def test_crossing_interpolates_the_last_sign_change() -> None:
    alphas = np.array([0.5, 1.0, 1.5, 2.0])
    assert crossing(alphas, np.array([-1.0, 1.0, 1.0, -1.0])) == pytest.approx(1.75)
    assert math.isnan(crossing(alphas, np.array([1.0, 1.0, 2.0, 3.0])))


@pytest.mark.parametrize("sets, message", [
    (["grid.omegas=0.3,1.2"], "'grid.omegas' values must be in [0, 1]"),
    (["gd.lam=-0.1"], "gd.lam"),
    (["task.A=0.6,0.5,0.4,0.6"], "row-stochastic"),
    (["task.d=1"], "task.d"),
    (["task.d=50", "grid.alpha_min=0.001"], "n = round(α d) = 0"),
])
def test_bad_input_exits_2_in_one_line(sets: list[str], message: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert message in study_error("attention-phase", sets, tmp_path, capsys)
