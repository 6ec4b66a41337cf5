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


EXTRAS = ["task.d=40", "grid.alpha_min=0.5", "grid.alpha_points=4", "grid.omegas=0.3",
          "grid.seeds=3", "gd.steps=150", "n_test=400", "theory.enabled=false",
          "cv.lambdas=[0.001, 0.1]", "cv.holdout=0.25",
          "concentration.ds=25,400", "concentration.seeds=6", "concentration.n_test=200"]


@pytest.fixture(scope="module")
def extras_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_study("attention-phase", preset="quick", overrides=EXTRAS,
                     out=tmp_path_factory.mktemp("extras")).path


def test_cross_validation_tables_and_choice(extras_path: Path) -> None:
    cv_runs = pd.read_csv(extras_path / "cv_runs.csv")
    assert len(cv_runs) == 3 * 4 * 2 * 2                  # seeds × α × inits × λ
    assert len(pd.read_csv(extras_path / "runs.csv")) == 3 * 4 * 2   # the main grid apart
    assert sorted(cv_runs["lam"].unique()) == [0.001, 0.1]
    # each α's n = round(α d) samples: a quarter held out, the rest trained on
    n = (cv_runs["alpha"] * 40).round().astype(int)
    assert (cv_runs["n"] == n - (0.25 * n).round().astype(int)).all()
    assert cv_runs["eps_val"].gt(0).all()
    table = pd.read_csv(extras_path / "cv.csv")
    by_hand = cv_runs.groupby(["alpha", "init", "lam"])["eps_val"].mean()
    assert table.set_index(["alpha", "init", "lam"])["eps_val"].to_numpy() == pytest.approx(
        by_hand.to_numpy(), rel=1e-12)
    choice = pd.read_csv(extras_path / "cv_choice.csv").set_index(["alpha", "init"])
    for (alpha, init), g in by_hand.groupby(level=["alpha", "init"]):
        assert choice.loc[(alpha, init), "lam"] == g.idxmin()[2]
    s = json.loads((extras_path / "summary.json").read_text())
    top = choice.loc[choice.index.get_level_values("alpha") == 2.0]
    assert s["cv_lambda_sem_alpha2"] == top.loc[(2.0, "semantic"), "lam"]
    assert s["alpha_sp_sem_theory"] is None                    # theory.enabled=false


def test_the_spread_over_seeds_shrinks_with_d(extras_path: Path) -> None:
    t = pd.read_csv(extras_path / "concentration.csv").set_index(["quantity", "init", "d"])
    assert (t["seeds"] == 6).all()
    for quantity, init in (("m", "positional"), ("theta_emp", "semantic"),
                           ("eps_t", "semantic"), ("eps_t", "positional")):
        small, large = t.loc[(quantity, init, 25), "std"], t.loc[(quantity, init, 400), "std"]
        assert large < small / 2, (quantity, init, small, large)   # 1/√d predicts ÷4
    s = json.loads((extras_path / "summary.json").read_text())
    assert -0.8 < s["concentration_slope"]["m_positional"] < -0.3


def test_the_new_figures_are_in_the_report_and_redraw(extras_path: Path) -> None:
    md = (extras_path / "report.md").read_text()
    for fig in ("errors_absolute", "cv_lambda", "concentration"):
        png = extras_path / "figures" / f"{fig}.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and f"figures/{fig}.png" in md
    summary = json.loads((extras_path / "summary.json").read_text())
    assert get_study("attention-phase").SUMMARY.problems(summary) == []
    assert_redraws(extras_path, "attention-phase")


def test_the_report_renders_in_a_browser(extras_path: Path) -> None:
    pytest.importorskip("playwright")
    from tests.runs.test_browser_render import CHROMIUM, CHROMIUM_ARGS, check_page

    if not CHROMIUM.is_file():
        pytest.skip(f"no {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context().new_page()
            broken, errors = check_page(page, (extras_path / "report.html").as_uri())
            images = page.locator("figure img").count()
        finally:
            browser.close()
    assert broken == [] and errors == []
    assert images == len(list((extras_path / "figures").glob("*.png"))) == 7  # one ω: no Fig. 3


def test_store_keys_without_cross_validation_are_unchanged() -> None:
    from lmlab.data.attention_teacher import AttentionTask
    from lmlab.models.attention_student import GDConfig
    from lmlab.studies._attention_phase_cells import Cell, cell_key

    cell = Cell(AttentionTask(d=40), GDConfig(steps=150, momentum=0.9), (10, 24), 0.3, 7, 400,
                ("semantic", "positional"), 1e-4, "float32")
    assert cell_key(cell) == "6bbcc1b36654"      # the key stores were written under before
    assert cell_key(Cell(**{**cell.__dict__, "cv_lambdas": (0.1,)})) != "6bbcc1b36654"


@pytest.mark.slow
def test_the_concentration_over_the_full_d_list(tmp_path: Path) -> None:
    path = run_study("attention-phase", preset="quick", out=tmp_path, overrides=[
        "grid.omegas=0.3", "grid.seeds=1", "grid.alpha_points=2", "theory.enabled=false",
        "concentration.ds=100,200,500,1000,2000", "concentration.seeds=6",
        "concentration.n_test=1000"]).path
    t = pd.read_csv(path / "concentration.csv")
    m = t[(t["quantity"] == "m") & (t["init"] == "positional")].set_index("d")["std"]
    assert m[2000] < m[100] / 2.5                                  # √20 ≈ 4.5 predicted
    s = json.loads((path / "summary.json").read_text())
    assert -0.8 < s["concentration_slope"]["m_positional"] < -0.3


def test_branch_existence_on_either_side_of_the_semantic_spinodal() -> None:
    # ω = 0.3 (order-10 spinodals: semantic 0.81, positional 6.2, α_c 1.255): both branches
    # exist at α = 1.3, the semantic one no longer at 0.6 (it leaves m = 0, θ collapses)
    from lmlab.theory import TheoryParams, branch_exists, transverse_multiplier

    p = TheoryParams(omega=0.3, order=6)
    ok_sem, fp = branch_exists(1.3, "semantic", p)
    assert ok_sem and transverse_multiplier(fp, p) < 1
    assert branch_exists(1.3, "positional", p)[0]
    ok, far = branch_exists(0.6, "semantic", p, init=fp)
    assert not ok and transverse_multiplier(far, p) > 1


@pytest.mark.slow
def test_spinodals_bracket_the_transition() -> None:
    from lmlab.theory import TheoryParams, alpha_c, branch_exists, spinodal

    p = TheoryParams(omega=0.0, order=6)
    ac = alpha_c(p, bracket=(0.45, 0.85), n_scan=3)
    sem = spinodal(p, "semantic", start=ac, ratio=1.15, xtol=5e-3)
    pos = spinodal(p, "positional", start=ac, ratio=1.15, xtol=5e-3)
    assert sem < ac < pos                      # both branches exist at the transition
    for branch, inside, beyond in (("semantic", sem + 0.01, sem - 0.01),
                                   ("positional", pos - 0.01, pos + 0.01)):
        assert branch_exists(inside, branch, p)[0], (branch, inside)
        assert not branch_exists(beyond, branch, p)[0], (branch, beyond)


@pytest.mark.parametrize("sets, message", [
    (["grid.omegas=0.3,1.2"], "'grid.omegas' values must be in [0, 1]"),
    (["gd.lam=-0.1"], "gd.lam"),
    (["task.A=0.6,0.5,0.4,0.6"], "row-stochastic"),
    (["task.d=1"], "task.d"),
    (["task.d=50", "grid.alpha_min=0.001"], "n = round(α d) = 0"),
    (["cv.lambdas=0.1,-1"], "'cv.lambdas' values must be"),
    (["cv.holdout=1"], "cv.holdout"),
    (["concentration.ds=1,100"], "'concentration.ds' values must be"),
])
def test_bad_input_exits_2_in_one_line(sets: list[str], message: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert message in study_error("attention-phase", sets, tmp_path, capsys)
