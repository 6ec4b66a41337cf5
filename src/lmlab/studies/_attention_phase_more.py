"""The attention-phase study's opt-in parts, wired into its run, summary, figures and report:
cross-validation of λ, the concentration over d, and the theory's spinodals.

Not a study (leading underscore): :mod:`lmlab.studies.attention_phase` calls these.

>>> lines = pd.DataFrame({"omega": [0.3], "alpha_c": [1.25], "alpha_sp_sem": [0.81],
...                       "alpha_sp_pos": [6.2]})
>>> s = {"omega": 0.3}
>>> extra_summary(s, None, lines, pd.DataFrame(), pd.DataFrame())
>>> s["alpha_sp_sem_theory"], s["alpha_sp_pos_theory"], s["cv_lambda_sem_alpha2"]
(0.81, 6.2, None)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lmlab.studies._attention_phase_extras import (
    concentration_cells,
    concentration_slopes,
    concentration_table,
    cv_choice,
    cv_table,
    simulate_concentration_cell,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from lmlab.runs import Report, RunDir

__all__ = ["concentration_of", "cv_of", "extra_figures", "extra_report", "extra_summary",
           "spinodal_columns"]


def cv_of(cv_runs: pd.DataFrame, run_dir: RunDir) -> dict[str, pd.DataFrame]:
    """The cross-validation tables (``cv``, ``cv_choice``) from the cells' ``part == "cv"``
    rows; saved as ``cv_runs.csv``, ``cv.csv`` and ``cv_choice.csv`` when there are any."""
    table = cv_table(cv_runs)
    choice = cv_choice(table)
    if not cv_runs.empty:
        run_dir.save_table("cv_runs.csv", cv_runs.drop(columns=["part"]).reset_index(drop=True))
        run_dir.save_table("cv.csv", table)
        run_dir.save_table("cv_choice.csv", choice)
    return {"cv": table, "cv_choice": choice}


def concentration_of(cfg: Any, store: str, run_dir: RunDir) -> pd.DataFrame:
    """Run the concentration sweep (its cells kept in ``<store>/concentration``) and return
    its table; empty without ``concentration.ds``."""
    if not cfg.concentration.ds:
        return concentration_table(pd.DataFrame())
    from lmlab.sweep import run_sweep

    cells = concentration_cells(cfg.task, cfg.gd, cfg.concentration,
                                omega=cfg.grid.fig2_omega, inits=("semantic", "positional"),
                                seed=cfg.seed, dtype=cfg.dtype)
    runs = run_sweep(simulate_concentration_cell, cells, cfg.sweep,
                     store=str(Path(store) / "concentration"),
                     desc="attention-phase concentration").drop(columns=["cell"],
                                                                errors="ignore")
    run_dir.save_table("concentration_runs.csv", runs)
    table = concentration_table(runs)
    run_dir.save_table("concentration.csv", table)
    return table


def spinodal_columns(lines: pd.DataFrame, params: Callable[[float], Any]) -> pd.DataFrame:
    """``lines`` with ``alpha_sp_sem`` and ``alpha_sp_pos``: where the semantic branch (below)
    and the positional one (above) cease to exist, by continuation from α_c at each ω."""
    from lmlab.theory import spinodal

    sem, pos = [], []
    for w, ac in zip(lines["omega"], lines["alpha_c"], strict=True):
        ok = math.isfinite(ac)
        sem.append(spinodal(params(w), "semantic", start=ac) if ok else math.nan)
        pos.append(spinodal(params(w), "positional", start=ac) if ok else math.nan)
    return lines.assign(alpha_sp_sem=sem, alpha_sp_pos=pos)


def extra_summary(s: dict[str, Any], cfg: Any, lines: pd.DataFrame, choice: pd.DataFrame,
                  concentration: pd.DataFrame) -> None:
    """Add the spinodals, the cross-validated λ at the largest α and the concentration
    slopes to the summary ``s`` (null or absent where the part is off)."""
    s["alpha_sp_sem_theory"] = s["alpha_sp_pos_theory"] = None
    if not lines.empty and "alpha_sp_sem" in lines:
        row = lines[np.isclose(lines["omega"], s["omega"])]
        if len(row):
            s["alpha_sp_sem_theory"] = float(row["alpha_sp_sem"].iloc[0])
            s["alpha_sp_pos_theory"] = float(row["alpha_sp_pos"].iloc[0])
    s["cv_lambda_sem_alpha2"] = s["cv_lambda_pos_alpha2"] = None
    if not choice.empty:
        top = choice[choice["alpha"] == choice["alpha"].max()].set_index("init")["lam"]
        for init, key in (("semantic", "cv_lambda_sem_alpha2"),
                          ("positional", "cv_lambda_pos_alpha2")):
            if init in top:
                s[key] = float(top[init])
    if not concentration.empty:
        s["concentration_slope"] = concentration_slopes(concentration)


def extra_figures(result: Any) -> dict[str, Figure]:
    """The figures of the parts that ran: absolute errors always; cross-validation and
    concentration when their tables are there."""
    from lmlab.plotting import captioned
    from lmlab.plotting.attention_phase import (
        plot_absolute_errors,
        plot_concentration,
        plot_cross_validation,
    )

    r, w = result, result.config.grid.fig2_omega
    figures = {"errors_absolute": captioned(
        plot_absolute_errors(r.branches, r.theory, omega=w),
        f"Training error ε_t and test error ε_g of each start at ω = {w}, in absolute terms "
        "(mean ± standard error over seeds), with the theory's branches.")}
    if not r.cv.empty:
        figures["cv_lambda"] = captioned(
            plot_cross_validation(r.cv, r.cv_choice, omega=w),
            f"Cross-validation of λ at ω = {w}: the validation error on held-out samples "
            f"(holdout {r.config.cv.holdout:g}) per λ, against α, for each start; circles "
            "mark the chosen λ per α.")
    if not r.concentration.empty:
        c = r.config.concentration
        figures["concentration"] = captioned(
            plot_concentration(r.concentration),
            f"Concentration: the standard deviation over {c.seeds} seeds of θ/σ² (semantic "
            f"start), m (positional start) and ε_t (both), against d, at α = {c.alpha:g}, "
            f"ω = {w}; the dashed line is the rate 1/√d.")
    return figures


def extra_report(rep: Report, result: Any) -> None:
    """The tables of the parts that ran."""
    if not result.cv_choice.empty:
        rep.add_table(result.cv_choice, caption="Cross-validated λ per α and start: the λ of "
                      "lowest mean validation error, that error and the test error with it")
    if not result.concentration.empty:
        t = result.concentration
        rep.add_table(t[t["quantity"].isin(["m", "theta_emp", "eps_t"])],
                      caption="Concentration over d: mean and standard deviation over seeds")
