"""Plots of the character-level study: loss curves, the initial-loss "hockey stick", tanh
activation histograms, saturation and update-to-data ratios over training.

Every function draws what the charlm study computed (``lmlab.studies.charlm.Result``) and
computes nothing of its own beyond block means of a curve.

>>> ax = plot_loss_curves({"e01": np.linspace(3.3, 2.1, 5000)}, smooth=1000)
>>> len(ax.lines)
1
>>> table = pd.DataFrame({"member": "e01", "tanh": [-0.5, 0.5], "density": [0.4, 0.6],
...                       "mean": 0.1, "std": 0.5, "saturated": 0.0})
>>> plot_tanh_hist(table).get_legend().get_texts()[0].get_text()
'e01: mean +0.10, std 0.50, saturated 0.0%'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lmlab.plotting.spectral import new_axes

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from matplotlib.axes import Axes

__all__ = ["plot_loss_curves", "plot_first_steps", "plot_tanh_hist", "plot_diagnostic",
           "smooth_log10"]


def smooth_log10(losses: torch.Tensor | np.ndarray, smooth: int) -> tuple[np.ndarray, np.ndarray]:
    """(step, log10 loss averaged over blocks of ``smooth`` steps); the block centres as steps."""
    values = np.log10(np.asarray(losses, dtype=np.float64))
    n = len(values) // smooth * smooth
    if n == 0:
        return np.arange(len(values)), values
    blocks = values[:n].reshape(-1, smooth).mean(1)
    return np.arange(len(blocks)) * smooth + smooth / 2, blocks


def plot_loss_curves(curves: Mapping[str, torch.Tensor | np.ndarray], *, smooth: int = 1000,
                     ax: Axes | None = None) -> Axes:
    """Training loss per step of several models, log10 and averaged over ``smooth`` steps."""
    ax = ax or new_axes((8.0, 4.4))
    for name, losses in curves.items():
        x, y = smooth_log10(losses, smooth)
        ax.plot(x, y, lw=1.3, label=name)
    ax.set(xlabel="step", ylabel=f"log10 training loss (mean of {smooth} steps)",
           title="Training loss")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_first_steps(curves: Mapping[str, torch.Tensor | np.ndarray], *, steps: int = 1000,
                     uniform: float | None = None, ax: Axes | None = None) -> Axes:
    """The first ``steps`` losses, raw: the hockey stick of an unscaled last layer."""
    ax = ax or new_axes((7.0, 4.0))
    for name, losses in curves.items():
        y = np.asarray(losses[:steps], dtype=np.float64)
        ax.plot(np.arange(len(y)), y, lw=0.8, label=name)
    if uniform is not None:
        ax.axhline(uniform, color="k", ls="--", lw=1, label=f"−ln(1/V) = {uniform:.4f}")
    ax.set(xlabel="step", ylabel="minibatch loss", yscale="log",
           title=f"The first {steps} steps")
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_tanh_hist(table: pd.DataFrame, *, title: str = "tanh activations",
                   ax: Axes | None = None) -> Axes:
    """Histograms of tanh outputs, with each one's saturated share (|h| > 0.97) in the legend.

    Args:
        table: one row per member and bin: ``member``, ``tanh`` (bin centre), ``density``, and
            the member's ``mean``, ``std`` and ``saturated`` share (the same on its rows).
        title: the axes title.
        ax: where to draw (default: a new figure).
    """
    ax = ax or new_axes((7.0, 4.0))
    for name, g in table.groupby("member", sort=False):
        first = g.iloc[0]
        ax.plot(g["tanh"].to_numpy(), g["density"].to_numpy(), lw=1.3,
                label=f"{name}: mean {first['mean']:+.2f}, std {first['std']:.2f}, "
                      f"saturated {first['saturated']:.1%}")
    ax.set(xlabel="tanh output", ylabel="density", title=title)
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_diagnostic(diag: pd.DataFrame, column: str, *, ylabel: str, title: str,
                    hline: float | None = None, ax: Axes | None = None) -> Axes:
    """One diagnostic column over steps, a line per member (and an optional reference line)."""
    ax = ax or new_axes((7.0, 4.0))
    for member, g in diag.groupby("member", sort=False):
        ax.plot(g["step"], g[column], lw=1.2, label=str(member))
    if hline is not None:
        ax.axhline(hline, color="k", ls="--", lw=1)
    ax.set(xlabel="step", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    return ax
