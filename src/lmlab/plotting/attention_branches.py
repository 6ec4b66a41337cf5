"""Plots of the finite-d branch minima of the attention model against the RS theory.

The functions draw the tables of :mod:`lmlab.theory.finite_d` (``summarise`` and
``delta_table``); they compute nothing.

>>> import pandas as pd
>>> summary = pd.DataFrame({"d": [500, 1000], "branch": "semantic", "seeds": 3,
...                         "gap_pct_mean": [5.0, 3.0], "gap_pct_std": [1.0, 0.5],
...                         "gap_pct_min": [4.0, 2.5], "gap_pct_max": [6.0, 3.5],
...                         "gap_pct_median_start": [6.0, 4.0]})
>>> ax = plot_branch_gaps(summary)
>>> len(ax.containers)   # the error bars
1
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from lmlab.plotting.spectral import new_axes

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_branch_gaps", "plot_branch_delta", "branch_figure", "save_branch_gaps"]

_COLORS = {"positional": "#d62728", "semantic": "#1f77b4", "agnostic": "#7f7f7f"}
_ORDER = ("positional", "semantic", "agnostic")


def plot_branch_gaps(summary: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Relative gap of each branch's finite-d minimum to its RS energy, against d.

    Markers and error bars: mean ± standard deviation over seeds of the best start; the thin
    vertical line spans the seeds' min–max; open markers (if ``gap_pct_median_start`` is
    present): the mean over seeds of the median start, i.e. a typical minimum.
    """
    ax = ax or new_axes()
    names = [b for b in _ORDER if b in set(summary["branch"])]
    ds = sorted(summary["d"].unique())
    shift = {b: (i - (len(names) - 1) / 2) * 0.03 for i, b in enumerate(names)}
    for b in names:
        s = summary[summary["branch"] == b].sort_values("d")
        x = s["d"].to_numpy(float) * (1 + shift[b])
        color = _COLORS.get(b, "k")
        ax.errorbar(x, s["gap_pct_mean"], yerr=s["gap_pct_std"].fillna(0.0), fmt="o-",
                    color=color, capsize=3, lw=1.4, label=f"{b} (best start)")
        if {"gap_pct_min", "gap_pct_max"} <= set(s):
            ax.vlines(x, s["gap_pct_min"], s["gap_pct_max"], color=color, lw=0.8, alpha=0.5)
        if "gap_pct_median_start" in s:
            ax.plot(x, s["gap_pct_median_start"], "o", mfc="none", color=color, ms=6,
                    label=f"{b} (median start)")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xticks(ds, [str(int(d)) for d in ds])
    ax.minorticks_off()
    ax.set_xlabel("d")
    ax.set_ylabel("(ε_t finite d − ε_t RS) / ε_t RS  [%]")
    seeds = sorted(set(summary["seeds"].astype(int))) if "seeds" in summary else []
    ax.set_title(f"finite-d minimum vs RS, per branch (seeds per d: "
                 f"{', '.join(map(str, seeds))})", fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    return ax


def plot_branch_delta(delta: pd.DataFrame, pairs: Sequence[str] = ("semantic - positional",),
                      ax: Axes | None = None) -> Axes:
    """ε_t(first) − ε_t(second) of branch pairs against d: the mean over seeds (the pairs share
    each seed's data) with its standard error (capped bars) and ± one standard deviation (thin
    lines), and the RS difference as a dashed line."""
    ax = ax or new_axes()
    colors = {"semantic - positional": "k", "agnostic - semantic": "#1f77b4",
              "agnostic - positional": "#d62728"}
    ds: list[float] = []
    for pair in pairs:
        s = delta[delta["pair"] == pair].sort_values("d")
        if not len(s):
            continue
        color = colors.get(pair, "k")
        std = s["delta_std"].fillna(0.0)
        ax.errorbar(s["d"], s["delta_mean"], yerr=std / s["seeds"].clip(lower=1) ** 0.5,
                    fmt="o-", color=color, capsize=3, lw=1.6, label=f"{pair}: finite d")
        ax.vlines(s["d"], s["delta_mean"] - std, s["delta_mean"] + std, color=color, lw=0.8,
                  alpha=0.5)
        ax.axhline(float(s["rs_delta"].iloc[0]), color=color, ls="--", lw=1.2,
                   label=f"{pair}: RS")
        ds = sorted(set(ds) | set(s["d"].tolist()))
    if ds:
        ax.set_xscale("log")
        ax.set_xticks(ds, [str(int(d)) for d in ds])
        ax.minorticks_off()
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlabel("d")
    ax.set_ylabel("Δε_t between branches")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if ds:
        ax.legend(fontsize=8)
    return ax


def branch_figure(summary: pd.DataFrame, delta: pd.DataFrame) -> Figure:
    """Three panels: the gap of each branch to RS; the memorising branch against the two
    others; ε_t semantic − positional (the sign that decides α_c)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15.0, 4.4), layout="constrained")
    left, mid, right = fig.subplots(1, 3, width_ratios=[1.3, 1.0, 1.0])
    plot_branch_gaps(summary, ax=left)
    plot_branch_delta(delta, ("agnostic - semantic", "agnostic - positional"), ax=mid)
    mid.set_title("memorising (m = θ = 0) above the others", fontsize=10)
    plot_branch_delta(delta, ("semantic - positional",), ax=right)
    right.set_title("semantic − positional (> 0: positional wins)", fontsize=10)
    if len(summary) and {"omega", "alpha"} <= set(summary):
        first = summary.iloc[0]
        fig.suptitle(f"ω = {first['omega']:g}, α = {first['alpha']:g}; capped bars: "
                     "left ± s.d. over seeds, middle and right ± s.e.; thin lines: ± s.d. "
                     "(left: min–max)", fontsize=10)
    return fig


def save_branch_gaps(summary: pd.DataFrame, delta: pd.DataFrame,
                     paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Draw :func:`branch_figure` and save it (atomically) to every path in ``paths``."""
    from lmlab.runs.io import save_figure

    fig = branch_figure(summary, delta)
    return [str(save_figure(fig, p)) for p in paths] if len(paths) else []
