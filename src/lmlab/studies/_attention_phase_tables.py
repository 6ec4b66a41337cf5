"""The tables of the attention-phase study: per-cell means, paired differences, crossings, and
every table its figures draw (computed here, so that plotting only draws).

Not a study (leading underscore): :mod:`lmlab.studies.attention_phase` calls these.

>>> runs = pd.DataFrame({"omega": 0.3, "seed": [0, 0, 1, 1], "alpha": 1.0,
...                      "init": ["semantic", "positional"] * 2,
...                      "eps_t": [0.002, 0.001, 0.004, 0.001]})
>>> paired_delta(runs, "eps_t")["delta"].tolist()
[0.001, 0.003]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["crossing", "crossing_table", "delta_by_alpha", "figure_tables", "global_minimum",
           "means_of", "paired_delta", "simulated_crossings", "theory_pairs"]

_MEAN_COLUMNS = ["eps_t", "eps_g", "m", "theta_emp", "theta", "q", "eps_lin", "grad_norm"]


def means_of(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (ω, α, init): the mean and standard deviation over seeds, and the number of runs."""
    g = runs.groupby(["omega", "alpha", "init"])[_MEAN_COLUMNS]
    out = g.mean().join(g.std().add_suffix("_std")).join(g.size().rename("runs"))
    return out.reset_index()


def paired_delta(runs: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per (ω, α, seed): semantic − positional of ``column``."""
    wide = runs.pivot_table(index=["omega", "alpha", "seed"], columns="init", values=column)
    return (wide["semantic"] - wide["positional"]).rename("delta").reset_index()


def crossing(alphas: np.ndarray, delta: np.ndarray) -> float:
    """The α where ``delta`` last changes sign from positive to negative (linear
    interpolation); NaN if it never does.

    >>> crossing(np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.5, -0.5]))
    2.5
    """
    for i in range(len(alphas) - 1, 0, -1):
        a, b = delta[i - 1], delta[i]
        if a > 0 >= b:
            return float(alphas[i - 1] + (alphas[i] - alphas[i - 1]) * a / (a - b))
    return float("nan")


def simulated_crossings(runs: pd.DataFrame) -> pd.DataFrame:
    """Per ω: ``alpha_c_sim`` (the crossing of the seed-mean Δε_t), ``alpha_c_sim_se`` (the
    standard error of the per-seed crossings) and ``seeds_crossing`` (seeds whose Δε_t crosses).

    >>> runs = pd.DataFrame({"omega": 0.3, "seed": [0] * 4, "alpha": [1.0, 1.0, 2.0, 2.0],
    ...                      "init": ["semantic", "positional"] * 2,
    ...                      "eps_t": [0.002, 0.001, 0.003, 0.004]})
    >>> simulated_crossings(runs)[["omega", "alpha_c_sim", "seeds_crossing"]].values.tolist()
    [[0.3, 1.5, 1.0]]
    """
    rows = []
    for w, delta in paired_delta(runs, "eps_t").groupby("omega"):
        mean = delta.groupby("alpha")["delta"].mean()
        per_seed = [crossing(g["alpha"].to_numpy(), g["delta"].to_numpy())
                    for _, g in delta.sort_values("alpha").groupby("seed")]
        finite = [c for c in per_seed if math.isfinite(c)]
        rows.append({"omega": float(w),
                     "alpha_c_sim": crossing(mean.index.to_numpy(), mean.to_numpy()),
                     "alpha_c_sim_se": (float(np.std(finite, ddof=1) / math.sqrt(len(finite)))
                                        if len(finite) > 1 else float("nan")),
                     "seeds_crossing": len(finite)})
    return pd.DataFrame(rows, columns=["omega", "alpha_c_sim", "alpha_c_sim_se",
                                       "seeds_crossing"])


def crossing_table(runs: pd.DataFrame, lines: pd.DataFrame,
                   published: dict[float, float]) -> pd.DataFrame:
    """:func:`simulated_crossings` with the theory's α_c (from ``lines``) and the published
    one at the same ω (NaN where there is none)."""
    theory = dict(zip(lines["omega"], lines["alpha_c"], strict=True)) if not lines.empty else {}
    table = simulated_crossings(runs)

    def at(values: dict[float, float], w: float) -> float:
        return next((v for k, v in values.items() if math.isclose(k, w)), float("nan"))

    return table.assign(alpha_c_theory=[at(theory, w) for w in table["omega"]],
                        alpha_c_published=[at(published, w) for w in table["omega"]])


def global_minimum(means: pd.DataFrame) -> pd.DataFrame:
    """Per (ω, α): ε_lin − ε_g of the initialisation with the lower mean training loss."""
    best = means.loc[means.groupby(["omega", "alpha"])["eps_t"].idxmin()]
    out = best.assign(delta=best["eps_lin"] - best["eps_g"])[["omega", "alpha", "delta"]]
    return out.reset_index(drop=True)


def delta_by_alpha(runs_w: pd.DataFrame) -> pd.DataFrame:
    """Per (quantity, α) at one ω: the mean over seeds of the paired semantic − positional
    difference of ``eps_t`` and ``eps_g``, its standard error (0 for one seed) and the seeds.

    >>> runs = pd.DataFrame({"omega": 0.3, "seed": [0, 0, 1, 1], "alpha": 1.0,
    ...                      "init": ["semantic", "positional"] * 2,
    ...                      "eps_t": [3.0, 1.0, 5.0, 1.0], "eps_g": 1.0})
    >>> delta_by_alpha(runs).values.tolist()
    [['eps_t', 1.0, 3.0, 1.0, 2], ['eps_g', 1.0, 0.0, 0.0, 2]]
    """
    parts = []
    for column in ("eps_t", "eps_g"):
        g = paired_delta(runs_w, column).groupby("alpha")["delta"]
        mean, n = g.mean(), g.size()
        se = (g.std(ddof=1) / np.sqrt(n)).fillna(0.0)
        parts.append(pd.DataFrame({"quantity": column, "alpha": mean.index.to_numpy(),
                                   "mean": mean.to_numpy(), "se": se.to_numpy(),
                                   "seeds": n.to_numpy()}))
    return pd.concat(parts, ignore_index=True)


def _branch(theory: pd.DataFrame, name: str) -> pd.DataFrame:
    return theory[theory["branch"] == name].sort_values("alpha")


def theory_pairs(theory: pd.DataFrame) -> pd.DataFrame:
    """Per α of the theory curves: semantic − positional of ``eps_t`` and ``eps_g``, the test
    error of the branch with the lower training error, and whether both branches converged."""
    if theory.empty:
        return pd.DataFrame()
    m = _branch(theory, "semantic").merge(_branch(theory, "positional"), on="alpha",
                                          suffixes=("_s", "_p"))
    return pd.DataFrame({
        "alpha": m["alpha"].to_numpy(),
        "delta_eps_t": (m["eps_t_s"] - m["eps_t_p"]).to_numpy(),
        "delta_eps_g": (m["eps_g_s"] - m["eps_g_p"]).to_numpy(),
        "eps_g_global": np.where(m["eps_t_s"] < m["eps_t_p"], m["eps_g_s"], m["eps_g_p"]),
        "converged": (m["converged_s"] & m["converged_p"]).to_numpy(),
    })


def figure_tables(runs: pd.DataFrame, means: pd.DataFrame, theory: pd.DataFrame, *,
                  omega: float, sigma: float, published: dict[float, float]
                  ) -> dict[str, pd.DataFrame]:
    """Every table the figures draw, by the name of its ``Result`` field.

    Args:
        runs: every simulated student.
        means: per (ω, α, init) means (:func:`means_of`).
        theory: the theory's branch curves at ``omega`` (empty without theory).
        omega: the ω of Fig. 2.
        sigma: the token scale σ (the semantic overlap is drawn as θ/σ²).
        published: the published α_c(ω) (empty where it does not apply).
    """
    means_w = means[np.isclose(means["omega"], omega)]
    g = means_w.groupby("alpha")
    best = means_w.loc[g["eps_t"].idxmin()].sort_values("alpha")
    out: dict[str, Any] = {
        "delta": delta_by_alpha(runs[np.isclose(runs["omega"], omega)]),
        "branches": means_w.assign(eps_g_se=means_w["eps_g_std"] / np.sqrt(means_w["runs"]),
                                   eps_t_se=means_w["eps_t_std"] / np.sqrt(means_w["runs"]))
                           .reset_index(drop=True),
        "best": pd.DataFrame({"alpha": best["alpha"].to_numpy(),
                              "eps_g_global": best["eps_g"].to_numpy(),
                              "eps_lin": g["eps_lin"].mean().reindex(best["alpha"]).to_numpy()}),
        "theory": (theory if theory.empty else
                   theory.assign(theta_over_sigma2=theory["theta"] / sigma ** 2)),
        "theory_pairs": theory_pairs(theory),
        "phase_eps_t": paired_delta(runs, "eps_t").groupby(["omega", "alpha"])["delta"].mean()
                                                  .reset_index(),
        "phase_linear": global_minimum(means),
        "published": pd.DataFrame(sorted(published.items()),
                                  columns=["omega", "alpha_c"]),
    }
    return out
