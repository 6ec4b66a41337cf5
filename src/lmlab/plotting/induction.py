"""Plots of the induction study: the notebook's five panels per setting, an overlay of the
settings, and OOD error against the pattern-pool size.

>>> import numpy as np, pandas as pd
>>> err = pd.DataFrame({"epoch": [-1, 199], "err_test": [0.97, 0.9], "err_ood": [0.98, 0.98],
...                     "full": [True, True]})
>>> m = pd.DataFrame({"step": [0, 200], "zscore": [0.1, 0.2], "mismatch": [0.9, 0.9],
...                   "match_r5": [0.4, 0.5], "emb_ov_match_r5": [0.4, 0.4]})
>>> fig = plot_setting_panels(err, m, np.linspace(0.1, 1, 32), ranks=(5,), title="t")
>>> len(fig.axes)
5
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lmlab.plotting.spectral import new_axes

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_overlay", "plot_pool_sweep", "plot_setting_panels"]

_FLOOR_ID, _FLOOR_OOD = 0.092, 0.047


def _steps(err: pd.DataFrame) -> np.ndarray:
    """Steps of the weights each error entry was computed on (epoch + 1), at least 1 for a
    log axis."""
    return np.maximum(err["epoch"].to_numpy() + 1, 1)


def plot_setting_panels(err: pd.DataFrame, measures: pd.DataFrame, baseline: np.ndarray, *,
                        ranks: Sequence[int] = (5, 10, 15, 20), title: str = "") -> Figure:
    """ID/OOD error (log step), z-score, QK–OV matching with the random baseline, token
    mismatch, embedding–OV matching — one row of five panels."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(21, 3.8), layout="constrained")
    axes = fig.subplots(1, 5)
    ax = axes[0]
    cheap = err[~err["full"]] if "full" in err else err
    full = err[err["full"]] if "full" in err else err.iloc[0:0]
    for col, color, name in (("err_test", "#1f77b4", "ID"), ("err_ood", "#d62728", "OOD")):
        if len(cheap):
            ax.plot(_steps(cheap), cheap[col], color=color, lw=0.6, alpha=0.5)
        if len(full):
            ax.plot(_steps(full), full[col], "o-", color=color, ms=2, lw=1.2, label=name)
    ax.axhline(_FLOOR_ID, color="#1f77b4", ls=":", lw=1)
    ax.axhline(_FLOOR_OOD, color="#d62728", ls=":", lw=1)
    ax.set(xscale="log", xlabel="step", ylabel="error (authors' mask)", ylim=(0, 1.02),
           title="errors (dotted: perfect-copier floors)")
    ax.legend(frameon=False, fontsize=8)
    m = measures.sort_values("step")
    steps = np.maximum(m["step"].to_numpy(), 1)
    axes[1].plot(steps, m["zscore"], color="#2ca02c")
    axes[1].set(xscale="log", xlabel="step", ylabel="z", title="diagonal z-score of W_qk W_ov")
    cmap = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
    for i, r in enumerate(ranks):
        col = f"match_r{r}"
        if col in m:
            axes[2].plot(steps, m[col], color=cmap[i % len(cmap)], label=f"r = {r}")
            axes[2].axhline(float(baseline[r - 1]), color=cmap[i % len(cmap)], ls="--", lw=0.8)
        col = f"emb_ov_match_r{r}"
        if col in m:
            axes[4].plot(steps, m[col], color=cmap[i % len(cmap)], label=f"r = {r}")
            axes[4].axhline(float(baseline[r - 1]), color=cmap[i % len(cmap)], ls="--", lw=0.8)
    axes[2].set(xscale="log", xlabel="step", ylabel="σ_max", ylim=(0, 1.02),
                title="QK–OV matching (dashed: random)")
    axes[2].legend(frameon=False, fontsize=7)
    axes[3].plot(steps, m["mismatch"], color="#8c564b")
    axes[3].set(xscale="log", xlabel="step", ylabel="share", ylim=(0, 1.02),
                title="token mismatch ratio")
    axes[4].set(xscale="log", xlabel="step", ylabel="σ_max", ylim=(0, 1.02),
                title="embedding–OV matching (dashed: random)")
    axes[4].legend(frameon=False, fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def plot_overlay(errs: Mapping[str, pd.DataFrame], measures: pd.DataFrame, *, rank: int = 5,
                 ax: Axes | None = None) -> Axes:
    """All settings on one axes: OOD error (solid) and QK–OV matching at ``rank`` (dashed)."""
    ax = ax or new_axes((8.0, 4.4))
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
    for i, (name, err) in enumerate(errs.items()):
        color = colors[i % len(colors)]
        full = err[err["full"]] if "full" in err else err
        if len(full):
            ax.plot(_steps(full), full["err_ood"], "-", color=color, label=f"{name}: OOD error")
        m = measures[measures["setting"] == name].sort_values("step")
        col = f"match_r{rank}"
        if len(m) and col in m:
            ax.plot(np.maximum(m["step"], 1), m[col], "--", color=color,
                    label=f"{name}: match r={rank}")
    ax.set(xscale="log", xlabel="step", ylim=(0, 1.02), title="Settings compared")
    ax.legend(frameon=False, fontsize=6, ncol=2)
    return ax


def plot_pool_sweep(pools: Mapping[float, float], *, steps: int, ax: Axes | None = None
                    ) -> Axes:
    """OOD error at the end of training against the pool size (∞ drawn at the right)."""
    ax = ax or new_axes((6.5, 4.0))
    finite = sorted((p, e) for p, e in pools.items() if math.isfinite(p))
    if finite:
        ax.plot([p for p, _ in finite], [e for _, e in finite], "o-", color="#1f77b4")
    right = max([p for p, _ in finite], default=100) * 2
    if any(not math.isfinite(p) for p in pools):
        ax.plot([right], [pools[math.inf]], "s", color="#d62728", label="infinite pool")
        ax.legend(frameon=False, fontsize=8)
    ax.axhline(_FLOOR_OOD, color="#888888", ls=":", lw=1)
    ax.set(xscale="log", xlabel="pattern pool size", ylabel="OOD error",
           title=f"OOD error after {steps:,} steps", ylim=(0, 1.02))
    return ax
