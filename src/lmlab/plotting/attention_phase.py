"""Plots of the attention phase transition: Δε vs α with theory, errors of both branches and the
linear baseline, order parameters, and phase diagrams over ω × α.

Theory points that did not converge are drawn as crosses and never joined into a curve. The
functions only draw: every mean, standard error and difference comes computed in the tables
(see :mod:`lmlab.studies._attention_phase_tables`).

>>> import pandas as pd
>>> delta = pd.DataFrame({"alpha": [0.5, 1.5], "mean": [1.5e-3, -1.5e-3],
...                       "se": [5e-4, 5e-4], "seeds": [2, 2]})
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

__all__ = ["plot_absolute_errors", "plot_concentration", "plot_cross_validation", "plot_delta",
           "plot_errors", "plot_order_parameters", "plot_phase_diagram"]

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


def plot_delta(delta: pd.DataFrame, pairs: pd.DataFrame, column: str, *, omega: float,
               ax: Axes | None = None) -> Axes:
    """Semantic − positional ``column`` per α.

    Args:
        delta: per α, the simulation's ``mean`` ± ``se`` of the paired per-seed differences
            and the number of ``seeds``.
        pairs: per α, the theory's difference ``delta_<column>`` and ``converged`` (empty
            without theory).
        column: ``eps_t`` or ``eps_g``.
        omega: the teacher's ω (for the title).
    """
    ax = ax or new_axes((7.0, 4.2))
    name = _NAMES.get(column, column)
    ax.errorbar(delta["alpha"], delta["mean"].to_numpy(), yerr=delta["se"].to_numpy(), fmt="o",
                ms=4, capsize=2, color="#1f77b4",
                label=f"simulation (mean ± s.e., {int(delta['seeds'].max())} seeds)")
    if not pairs.empty:
        _theory_line(ax, pairs, pairs[f"delta_{column}"], "#000000", "theory")
    ax.axhline(0, color="#888888", lw=0.8)
    ax.set(xlabel="α = n/d", ylabel=f"Δ{name} = {name}(semantic) − {name}(positional)",
           title=f"Δ{name} at ω = {omega}")
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_errors(branches: pd.DataFrame, best: pd.DataFrame, theory: pd.DataFrame,
                pairs: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Test error of each initialisation, of the global minimum and of the linear baseline.

    Args:
        branches: per (α, init), the simulation's ``eps_g`` ± ``eps_g_se``.
        best: per α, the simulated ``eps_g_global`` (the init with the lower mean training
            error) and the mean ``eps_lin``.
        theory: the theory's branch curves (empty without theory).
        pairs: per α, the theory's ``eps_g_global`` and ``converged``.
    """
    ax = ax or new_axes((7.0, 4.2))
    for init, g in branches.groupby("init"):
        ax.errorbar(g["alpha"], g["eps_g"], yerr=g["eps_g_se"], fmt="o",
                    ms=4, capsize=2, color=_COLORS.get(str(init)), label=f"{init} init (sim)")
    ax.plot(best["alpha"], best["eps_g_global"], "s", mfc="none", ms=9, color=_COLORS["global"],
            label="global minimum (sim)")
    ax.plot(best["alpha"].to_numpy(), best["eps_lin"].to_numpy(), "^", ms=4,
            color=_COLORS["linear"], label="linear baseline (sim)")
    if not theory.empty:
        for name in ("semantic", "positional"):
            b = _branch(theory, name)
            _theory_line(ax, b, b["eps_g"], _COLORS[name], f"{name} (theory)")
        _theory_line(ax, pairs, pairs["eps_g_global"], _COLORS["global"],
                     "global minimum (theory)", ls="--")
        ax.axhline(float(theory["eps_lin"].iloc[0]), color=_COLORS["linear"], ls=":", lw=1.2,
                   label="linear baseline (theory)")
    ax.set(xlabel="α = n/d", ylabel="ε_g", title="Test error")
    ax.legend(frameon=False, fontsize=7)
    return ax


def plot_order_parameters(branches: pd.DataFrame, theory: pd.DataFrame, *,
                          ax: Axes | None = None) -> Axes:
    """θ/σ² of the semantic branch and m of the positional one, simulation and theory.

    Args:
        branches: per (α, init), the simulation's ``theta_emp`` and ``m`` with their stds.
        theory: the theory's branch curves with ``theta_over_sigma2`` (empty without theory).
    """
    ax = ax or new_axes((7.0, 4.2))
    sem = branches[branches["init"] == "semantic"]
    pos = branches[branches["init"] == "positional"]
    ax.errorbar(sem["alpha"], sem["theta_emp"], yerr=sem["theta_emp_std"], fmt="o", ms=4,
                capsize=2, color=_COLORS["semantic"], label="θ/σ², semantic init (sim)")
    ax.errorbar(pos["alpha"], pos["m"], yerr=pos["m_std"], fmt="s", ms=4, capsize=2,
                color=_COLORS["positional"], label="m, positional init (sim)")
    if not theory.empty:
        b = _branch(theory, "semantic")
        _theory_line(ax, b, b["theta_over_sigma2"], _COLORS["semantic"], "θ/σ² (theory)")
        b = _branch(theory, "positional")
        _theory_line(ax, b, b["m"], _COLORS["positional"], "m (theory)")
    ax.set(xlabel="α = n/d", ylabel="overlap", title="Summary statistics")
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_phase_diagram(grid: pd.DataFrame, lines: pd.DataFrame, line: str, *, title: str,
                       label: str, crossings: pd.DataFrame | None = None,
                       published: pd.DataFrame | None = None,
                       ax: Axes | None = None) -> Axes:
    """A diverging colour map of ``grid['delta']`` over (α, ω) with a theory line α(ω), and
    optionally the simulated crossings (``alpha_c_sim`` ± ``alpha_c_sim_se`` per ω) and a
    published line (``alpha_c`` per ``omega``, sorted by ω)."""
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
    if line == "alpha_c" and not lines.empty and "alpha_sp_sem" in lines:
        for col, color, who in (("alpha_sp_sem", _COLORS["semantic"], "semantic"),
                                ("alpha_sp_pos", _COLORS["positional"], "positional")):
            ok = lines[np.isfinite(lines[col])]
            ax.plot(ok[col], ok["omega"], ":", marker=".", color=color, lw=1.8,
                    label=f"spinodal, {who} branch (theory)")
    if published is not None and not published.empty:
        ax.plot(published["alpha_c"].tolist(), published["omega"].tolist(), "--", color="0.35",
                lw=1.5, label=f"{name}(ω), published")
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


def plot_absolute_errors(branches: pd.DataFrame, theory: pd.DataFrame, *, omega: float,
                         ax: Axes | None = None) -> Axes:
    """ε_t and ε_g of each initialisation against α, in absolute terms, with the theory.

    Args:
        branches: per (α, init), the simulation's ``eps_t`` ± ``eps_t_se`` and ``eps_g`` ±
            ``eps_g_se``.
        theory: the theory's branch curves (empty without theory).
        omega: the teacher's ω (for the title).
    """
    ax = ax or new_axes((7.0, 4.4))
    for init, g in branches.groupby("init"):
        c = _COLORS.get(str(init))
        ax.errorbar(g["alpha"], g["eps_t"], yerr=g["eps_t_se"], fmt="o", ms=4, capsize=2,
                    color=c, label=f"ε_t, {init} init (sim)")
        ax.errorbar(g["alpha"], g["eps_g"], yerr=g["eps_g_se"], fmt="s", mfc="none", ms=5,
                    capsize=2, color=c, label=f"ε_g, {init} init (sim)")
    if not theory.empty:
        for name in ("semantic", "positional"):
            b = _branch(theory, name)
            _theory_line(ax, b, b["eps_t"], _COLORS[name], f"ε_t, {name} (theory)")
            _theory_line(ax, b, b["eps_g"], _COLORS[name], f"ε_g, {name} (theory)", ls="--")
    ax.set(xlabel="α = n/d", ylabel="error", title=f"Training and test error at ω = {omega}")
    ax.legend(frameon=False, fontsize=7, ncol=2)
    return ax


def plot_cross_validation(cv: pd.DataFrame, choice: pd.DataFrame, *, omega: float,
                          ax: Axes | None = None) -> Axes:
    """Validation error on held-out samples against α, one line per (λ, init), the chosen λ
    per α circled.

    Args:
        cv: per (α, init, λ), ``eps_val`` ± ``eps_val_se``.
        choice: per (α, init), the chosen ``lam`` and its ``eps_val``.
        omega: the teacher's ω (for the title).
    """
    import matplotlib as mpl

    ax = ax or new_axes((7.0, 4.4))
    lams = sorted(cv["lam"].unique())
    cmap = mpl.colormaps["viridis"]
    styles = {"semantic": ("-", "o"), "positional": ("--", "s"), "random": (":", "^")}
    for (init, lam), g in cv.groupby(["init", "lam"]):
        ls, marker = styles.get(str(init), ("-", "o"))
        color = cmap(lams.index(lam) / max(len(lams) - 1, 1))
        g = g.sort_values("alpha")
        ax.errorbar(g["alpha"], g["eps_val"], yerr=g["eps_val_se"], ls=ls, marker=marker,
                    ms=3, capsize=2, color=color, label=f"λ = {lam:g}, {init}")
    ax.plot(choice["alpha"], choice["eps_val"], "o", ms=10, mfc="none", mec="k",
            label="chosen λ")
    ax.set(xlabel="α = n/d", ylabel="validation error", yscale="log",
           title=f"Cross-validation of λ at ω = {omega}")
    ax.legend(frameon=False, fontsize=7, ncol=2)
    return ax


def plot_concentration(table: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Standard deviation over seeds of θ/σ² (semantic), m (positional) and ε_t (both)
    against d, log–log, with a 1/√d guide through the first point of m.

    Args:
        table: per (d, init, quantity), ``std`` over seeds.
    """
    ax = ax or new_axes((7.0, 4.4))
    drawn = (("theta_emp", "semantic", "θ/σ², semantic", "o"),
             ("m", "positional", "m, positional", "s"),
             ("eps_t", "semantic", "ε_t, semantic", "^"),
             ("eps_t", "positional", "ε_t, positional", "v"))
    for q, init, label, marker in drawn:
        t = table[(table["quantity"] == q) & (table["init"] == init)].sort_values("d")
        if len(t):
            ax.plot(t["d"], t["std"], marker=marker, color=_COLORS[init],
                    ls="-" if q != "eps_t" else ":", label=label)
    m = table[(table["quantity"] == "m") & (table["init"] == "positional")].sort_values("d")
    if len(m) and np.isfinite(m["std"].iloc[0]):
        d = m["d"].to_numpy(float)
        ax.plot(d, m["std"].iloc[0] * np.sqrt(d[0] / d), "k--", lw=1, label="∝ 1/√d")
    ax.set(xscale="log", yscale="log", xlabel="d", ylabel="standard deviation over seeds",
           title="Concentration of the summary statistics")
    ax.legend(frameon=False, fontsize=8)
    return ax
