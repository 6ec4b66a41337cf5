"""Plots of the attention phase transition: Δε vs α with theory, errors of both branches and the
linear baseline, order parameters, and phase diagrams over ω × α.

Theory points that did not converge are drawn as crosses and never joined into a curve.

>>> import pandas as pd
>>> delta = pd.DataFrame({"alpha": [0.5, 0.5, 1.5, 1.5], "seed": [0, 1, 0, 1],
...                       "delta": [1e-3, 2e-3, -1e-3, -2e-3]})
>>> ax = plot_delta(delta, pd.DataFrame(), "eps_t", omega=0.3)
>>> len(ax.containers)   # the error bars
1
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lmlab.plotting.spectral import new_axes

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["plot_delta", "plot_errors", "plot_order_parameters", "plot_phase_diagram"]

_COLORS = {"semantic": "#1f77b4", "positional": "#d62728", "random": "#7f7f7f",
           "global": "#2ca02c", "linear": "#000000"}
_NAMES = {"eps_t": "ε_t", "eps_g": "ε_g"}


def _theory_line(ax: Axes, theory: pd.DataFrame, y: pd.Series | np.ndarray, color: str,
                 label: str, ls: str = "-") -> None:
    ok = theory["converged"].to_numpy(bool)
    x = theory["alpha"].to_numpy()
    yv = np.asarray(y, dtype=float)
    yc = np.where(ok, yv, np.nan)
    ax.plot(x, yc, color=color, ls=ls, lw=1.6, label=label)
    if (~ok).any():
        ax.plot(x[~ok], yv[~ok], "x", color=color, ms=6, label=f"{label}: not converged")


def _branch(theory: pd.DataFrame, name: str) -> pd.DataFrame:
    return theory[theory["branch"] == name].sort_values("alpha")


def plot_delta(delta: pd.DataFrame, theory: pd.DataFrame, column: str, *, omega: float,
               ax: Axes | None = None) -> Axes:
    """Semantic − positional ``column`` per α: simulation mean ± standard error of the paired
    per-seed differences, and the theory's difference."""
    ax = ax or new_axes((7.0, 4.2))
    g = delta.groupby("alpha")["delta"]
    mean, n = g.mean(), g.size()
    se = (g.std(ddof=1) / np.sqrt(n)).fillna(0.0)
    name = _NAMES.get(column, column)
    ax.errorbar(mean.index, mean.to_numpy(), yerr=se.to_numpy(), fmt="o", ms=4, capsize=2,
                color="#1f77b4", label=f"simulation (mean ± s.e., {int(n.max())} seeds)")
    if not theory.empty:
        sem, pos = _branch(theory, "semantic"), _branch(theory, "positional")
        merged = sem.merge(pos, on="alpha", suffixes=("_s", "_p"))
        merged["converged"] = merged["converged_s"] & merged["converged_p"]
        _theory_line(ax, merged, merged[f"{column}_s"] - merged[f"{column}_p"], "#000000",
                     "theory")
    ax.axhline(0, color="#888888", lw=0.8)
    ax.set(xlabel="α = n/d", ylabel=f"Δ{name} = {name}(semantic) − {name}(positional)",
           title=f"Δ{name} at ω = {omega}")
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_errors(means: pd.DataFrame, theory: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Test error of each initialisation, of the global minimum and of the linear baseline."""
    ax = ax or new_axes((7.0, 4.2))
    for init, g in means.groupby("init"):
        ax.errorbar(g["alpha"], g["eps_g"], yerr=g["eps_g_std"] / np.sqrt(g["runs"]), fmt="o",
                    ms=4, capsize=2, color=_COLORS.get(str(init)), label=f"{init} init (sim)")
    best = means.loc[means.groupby("alpha")["eps_t"].idxmin()].sort_values("alpha")
    ax.plot(best["alpha"], best["eps_g"], "s", mfc="none", ms=9, color=_COLORS["global"],
            label="global minimum (sim)")
    lin = means.groupby("alpha")["eps_lin"].mean()
    ax.plot(lin.index, lin.to_numpy(), "^", ms=4, color=_COLORS["linear"],
            label="linear baseline (sim)")
    if not theory.empty:
        for name in ("semantic", "positional"):
            b = _branch(theory, name)
            _theory_line(ax, b, b["eps_g"], _COLORS[name], f"{name} (theory)")
        sem, pos = _branch(theory, "semantic"), _branch(theory, "positional")
        m = sem.merge(pos, on="alpha", suffixes=("_s", "_p"))
        m["converged"] = m["converged_s"] & m["converged_p"]
        glob = np.where(m["eps_t_s"] < m["eps_t_p"], m["eps_g_s"], m["eps_g_p"])
        _theory_line(ax, m, glob, _COLORS["global"], "global minimum (theory)", ls="--")
        ax.axhline(float(theory["eps_lin"].iloc[0]), color=_COLORS["linear"], ls=":", lw=1.2,
                   label="linear baseline (theory)")
    ax.set(xlabel="α = n/d", ylabel="ε_g", title="Test error")
    ax.legend(frameon=False, fontsize=7)
    return ax


def plot_order_parameters(means: pd.DataFrame, theory: pd.DataFrame, *, sigma: float,
                          ax: Axes | None = None) -> Axes:
    """θ/σ² of the semantic branch and m of the positional one, simulation and theory."""
    ax = ax or new_axes((7.0, 4.2))
    sem = means[means["init"] == "semantic"]
    pos = means[means["init"] == "positional"]
    ax.errorbar(sem["alpha"], sem["theta_emp"], yerr=sem["theta_emp_std"], fmt="o", ms=4,
                capsize=2, color=_COLORS["semantic"], label="θ/σ², semantic init (sim)")
    ax.errorbar(pos["alpha"], pos["m"], yerr=pos["m_std"], fmt="s", ms=4, capsize=2,
                color=_COLORS["positional"], label="m, positional init (sim)")
    if not theory.empty:
        b = _branch(theory, "semantic")
        _theory_line(ax, b, b["theta"] / sigma ** 2, _COLORS["semantic"], "θ/σ² (theory)")
        b = _branch(theory, "positional")
        _theory_line(ax, b, b["m"], _COLORS["positional"], "m (theory)")
    ax.set(xlabel="α = n/d", ylabel="overlap", title="Summary statistics")
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_phase_diagram(grid: pd.DataFrame, lines: pd.DataFrame, line: str, *, title: str,
                       label: str, crossings: pd.DataFrame | None = None,
                       published: dict[float, float] | None = None,
                       ax: Axes | None = None) -> Axes:
    """A diverging colour map of ``grid['delta']`` over (α, ω) with a theory line α(ω), and
    optionally the simulated crossings (``alpha_c_sim`` ± ``alpha_c_sim_se`` per ω) and a
    published line ``{ω: α}``."""
    ax = ax or new_axes((7.0, 4.6))
    table = grid.pivot_table(index="omega", columns="alpha", values="delta")
    values = table.to_numpy()
    vmax = float(np.nanmax(np.abs(values))) or 1.0
    mesh = ax.pcolormesh(table.columns.to_numpy(), table.index.to_numpy(), values,
                         cmap="RdBu_r", vmin=-vmax, vmax=vmax, shading="nearest")
    ax.figure.colorbar(mesh, ax=ax, label=label)
    name = {"alpha_c": "α_c", "alpha_l": "α_l"}.get(line, line)
    if not lines.empty and line in lines:
        ok = lines[np.isfinite(lines[line])]
        ax.plot(ok[line], ok["omega"], "k-o", ms=3, lw=1.5, label=f"{name}(ω), theory")
    if published:
        w = sorted(published)
        ax.plot([published[k] for k in w], w, "--", color="0.35", lw=1.5,
                label=f"{name}(ω), published")
    if crossings is not None and not crossings.empty:
        ok = crossings[np.isfinite(crossings["alpha_c_sim"])]
        ax.errorbar(ok["alpha_c_sim"], ok["omega"], xerr=ok["alpha_c_sim_se"].fillna(0.0),
                    fmt="D", ms=4, color="gold", mec="k", ecolor="k", capsize=2, lw=1,
                    label="crossing, simulation (± s.e.)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=True, framealpha=0.85, fontsize=8, loc="upper left")
    ax.set(xlabel="α = n/d", ylabel="ω", title=title, xlim=(table.columns.min(),
                                                          table.columns.max()))
    return ax
