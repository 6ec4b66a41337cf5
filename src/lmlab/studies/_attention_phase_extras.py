"""The opt-in parts of the attention-phase study: cross-validation of the ridge λ, and the
concentration of the summary statistics over d (their spread over seeds against d).

Not a study (leading underscore): :mod:`lmlab.studies.attention_phase` calls these. The
tables are computed here, so that plotting only draws.

>>> cv_split(10, 0.2), cv_split(1, 0.2)
((8, 2), None)
>>> runs = pd.DataFrame({"d": [100, 100, 400, 400], "seed": [0, 1, 0, 1],
...                      "init": "positional", "m": [0.20, 0.24, 0.21, 0.23],
...                      "theta_emp": 0.0, "eps_t": 1.0, "eps_g": 1.0})
>>> spread = concentration_table(runs)
>>> spread[spread["quantity"] == "m"]["std"].round(4).tolist()
[0.0283, 0.0141]
>>> round(concentration_slopes(spread)["m_positional"], 3)
-0.5
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from lmlab.config import check_ranges, ranged
from lmlab.data.attention_teacher import AttentionTask
from lmlab.errors import LmlabError
from lmlab.models.attention_student import GDConfig

__all__ = ["CVConfig", "ConcentrationCell", "ConcentrationConfig", "concentration_cells",
           "concentration_slopes", "concentration_table", "cv_choice", "cv_split", "cv_table",
           "simulate_concentration_cell"]

#: The statistic drawn per initialisation in the concentration figure and slopes.
CONCENTRATION_QUANTITIES = (("theta_emp", "semantic"), ("m", "positional"),
                            ("eps_t", "semantic"), ("eps_t", "positional"))


@dataclass(frozen=True)
class CVConfig:
    """Cross-validation of the ridge λ at ``grid.fig2_omega`` (off while ``lambdas`` is empty).

    At every α of the grid, seed and initialisation, a student trains with each λ on the
    first ``n − n_val`` of the α's n samples and is scored on the other ``n_val =
    round(holdout·n)`` (held out); the validation error is averaged over seeds, and the
    chosen λ per (α, init) is the one with the lowest mean.

    Attributes:
        lambdas: the λ grid, e.g. ``--set cv.lambdas=0.001,0.01,0.1``; empty: no
            cross-validation.
        holdout: the fraction of each α's samples held out for validation.
    """

    lambdas: tuple[float, ...] = ranged((), 0)
    holdout: float = ranged(0.2, 0, 1, open_lo=True, open_hi=True)

    def validate(self) -> None:
        """Every value in its declared range; no λ twice."""
        check_ranges(self, "cv.")
        if len(set(self.lambdas)) != len(self.lambdas):
            raise LmlabError(f"cv.lambdas has a value twice: {self.lambdas}")


@dataclass(frozen=True)
class ConcentrationConfig:
    """The spread over seeds of m, θ and ε_t against d (off while ``ds`` is empty).

    For every d in ``ds``, ``seeds`` teachers and data sets of ``n = round(alpha·d)`` samples
    at ω = ``grid.fig2_omega``; both initialisations, trained with ``gd``; test error on
    ``n_test`` fresh samples. The summary statistics concentrate: their standard deviation
    over seeds falls like 1/√d.

    Attributes:
        ds: the dimensions, e.g. ``--set concentration.ds=100,200,500,1000,2000``; empty: off.
        alpha: the sample ratio α = n/d.
        seeds: teachers and data sets per d.
        n_test: test samples per seed.
    """

    ds: tuple[int, ...] = ranged((), 2, 10_000)
    alpha: float = ranged(1.5, 0, 100, open_lo=True)
    seeds: int = ranged(8, 2, 1000, why="the spread needs two seeds; each is a teacher")
    n_test: int = ranged(2000, 1, 10**6)

    def validate(self) -> None:
        """Every value in its declared range."""
        check_ranges(self, "concentration.")


def cv_split(n: int, holdout: float) -> tuple[int, int] | None:
    """``(n_fit, n_val)`` for n samples: ``n_val = max(1, round(holdout·n))``; None when
    fewer than one sample would be left to train on."""
    n_val = max(1, round(holdout * n))
    return (n - n_val, n_val) if n - n_val >= 1 else None


def cv_table(cv_runs: pd.DataFrame) -> pd.DataFrame:
    """Per (α, init, λ): the mean validation error over seeds, its standard error (0 for one
    seed), the mean test error and the number of seeds."""
    if cv_runs.empty:
        return pd.DataFrame(columns=["alpha", "init", "lam", "eps_val", "eps_val_se", "eps_g",
                                     "seeds"])
    g = cv_runs.groupby(["alpha", "init", "lam"])
    n = g.size()
    out = pd.DataFrame({"eps_val": g["eps_val"].mean(),
                        "eps_val_se": (g["eps_val"].std(ddof=1) / np.sqrt(n)).fillna(0.0),
                        "eps_g": g["eps_g"].mean(), "seeds": n})
    return out.reset_index()


def cv_choice(table: pd.DataFrame) -> pd.DataFrame:
    """Per (α, init): the λ with the lowest mean validation error, that error, and the mean
    test error of the students trained with it.

    >>> t = pd.DataFrame({"alpha": 1.0, "init": "semantic", "lam": [0.01, 0.1],
    ...                   "eps_val": [2.0, 1.0], "eps_val_se": 0.0, "eps_g": [3.0, 4.0],
    ...                   "seeds": 2})
    >>> cv_choice(t)[["lam", "eps_val", "eps_g"]].values.tolist()
    [[0.1, 1.0, 4.0]]
    """
    if table.empty:
        return pd.DataFrame(columns=["alpha", "init", "lam", "eps_val", "eps_g"])
    best = table.loc[table.groupby(["alpha", "init"])["eps_val"].idxmin()]
    return best[["alpha", "init", "lam", "eps_val", "eps_g"]].reset_index(drop=True)


@dataclass(frozen=True)
class ConcentrationCell:
    """One seed at one d of the concentration sweep."""

    task: AttentionTask
    gd: GDConfig
    n: int
    omega: float
    seed: int
    n_test: int
    inits: tuple[str, ...]
    dtype: str


def concentration_cells(task: AttentionTask, gd: GDConfig, conc: ConcentrationConfig, *,
                        omega: float, inits: tuple[str, ...], seed: int, dtype: str
                        ) -> list[ConcentrationCell]:
    """The cells of the concentration sweep, d-major (seeds distinct from the main grid's)."""
    return [ConcentrationCell(replace(task, d=d), gd, max(1, round(conc.alpha * d)), omega,
                              seed * 1_000_003 + 500_000 + s, conc.n_test, inits, dtype)
            for d in conc.ds for s in range(conc.seeds)]


def simulate_concentration_cell(cell: ConcentrationCell) -> list[dict[str, Any]]:
    """Train every initialisation of one (d, seed) cell; one row per initialisation."""
    import torch

    from lmlab.data.attention_teacher import sample_group
    from lmlab.models.attention_student import StudentSpec, train_students

    dtype = getattr(torch, cell.dtype)
    data = sample_group(cell.task, n=cell.n, n_test=cell.n_test, seed=cell.seed, dtype=dtype)
    specs = [StudentSpec(n=cell.n, omega=cell.omega, init=i)  # type: ignore[arg-type]
             for i in cell.inits]
    res = train_students(data, specs, cell.gd, seed=cell.seed, dtype=dtype)
    rows = res.table[["alpha", "omega", "init", "eps_t", "eps_g", "m", "theta_emp"]]
    return rows.assign(d=cell.task.d, seed=cell.seed).to_dict("records")


def concentration_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (d, init, quantity ∈ m, theta_emp, eps_t, eps_g): the mean and the standard
    deviation over seeds, the relative spread std/|mean| and the number of seeds."""
    if runs.empty:
        return pd.DataFrame(columns=["d", "init", "quantity", "mean", "std", "rel_std",
                                     "seeds"])
    parts = []
    for q in ("m", "theta_emp", "eps_t", "eps_g"):
        g = runs.groupby(["d", "init"])[q]
        mean, std = g.mean(), g.std(ddof=1)
        parts.append(pd.DataFrame({"quantity": q, "mean": mean, "std": std,
                                   "rel_std": std / mean.abs(), "seeds": g.size()}))
    return pd.concat(parts).reset_index()[["d", "init", "quantity", "mean", "std", "rel_std",
                                           "seeds"]]


def concentration_slopes(table: pd.DataFrame) -> dict[str, float]:
    """The least-squares slope of log(std over seeds) against log d, per drawn statistic
    (``<quantity>_<init>``); −1/2 is concentration at the rate 1/√d. NaN with fewer than
    two d."""
    out: dict[str, float] = {}
    for q, init in CONCENTRATION_QUANTITIES:
        t = table[(table["quantity"] == q) & (table["init"] == init)]
        t = t[np.isfinite(t["std"]) & (t["std"] > 0)]
        if t["d"].nunique() < 2:
            if len(table[(table["init"] == init)]):
                out[f"{q}_{init}"] = math.nan
            continue
        out[f"{q}_{init}"] = float(np.polyfit(np.log(t["d"]), np.log(t["std"]), 1)[0])
    return out
