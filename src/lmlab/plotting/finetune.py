"""Plots of the fine-tuning studies: mean α before/after, Δα per layer, loss and perplexity
curves, layer importance. They only draw: every number comes from the study's ``Result``.

>>> ax = plot_mean_alpha_bars({"pre-trained": 4.0, "fine-tuned": 3.8})
>>> [round(float(p.get_height()), 1) for p in ax.patches]
[4.0, 3.8]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lmlab.plotting.spectral import new_axes, short_layer_name

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["plot_alpha_and_test_loss", "plot_delta_alpha", "plot_layer_importance",
           "plot_loss_curves",
           "plot_mean_alpha_bars", "plot_perplexity_per_epoch", "plot_train_loss"]

_KIND_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf"]


def plot_mean_alpha_bars(means: Mapping[str, float | None], *, ax: Axes | None = None) -> Axes:
    """Bars of mean α per stage with the 2 and 6 lines of the healthy band (None: no bar)."""
    ax = ax or new_axes((5.0, 4.0))
    names = list(means)
    values = [float("nan") if v is None else float(v) for v in means.values()]
    bars = ax.bar(names, values, color=["#9ecae1", "#3182bd"][: len(names)] or None)
    for bar, v in zip(bars, values, strict=True):
        ax.annotate(f"{v:.3f}", (bar.get_x() + bar.get_width() / 2, v), ha="center",
                    va="bottom", fontsize=9)
    ax.axhline(2, color="#d62728", ls="--", lw=1, label="α = 2")
    ax.axhline(6, color="#ff7f0e", ls="--", lw=1, label="α = 6")
    ax.set_ylim(0, max(7.0, max(values, default=0) * 1.15))
    ax.set_ylabel("mean α over layers")
    ax.set_title("Mean α before and after fine-tuning")
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_delta_alpha(delta: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Δα = α(after) − α(before) per layer in depth order, coloured by matrix type.

    Args:
        delta: one row per layer in depth order with ``longname``, ``delta`` and ``kind``
            (:func:`lmlab.studies.finetune_spectral.delta_alpha`).
    """
    from matplotlib.patches import Patch

    ax = ax or new_axes((9.0, 4.2))
    kinds = sorted(delta["kind"].unique())
    colors = {k: _KIND_COLORS[i % len(_KIND_COLORS)] for i, k in enumerate(kinds)}
    x = np.arange(len(delta))
    ax.bar(x, delta["delta"], color=[colors[k] for k in delta["kind"]], width=0.85)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("layer (depth order)")
    ax.set_ylabel("Δα (after − before)")
    ax.set_title("Change of α per layer")
    if len(delta) <= 60:
        ax.set_xticks(x, [short_layer_name(n) for n in delta["longname"]], rotation=90,
                      fontsize=6)
    ax.legend(handles=[Patch(color=colors[k], label=k) for k in kinds], frameon=False,
              fontsize=7, ncol=min(len(kinds), 6))
    return ax


def plot_loss_curves(history: Sequence[Mapping[str, Any]], evals: Sequence[Mapping[str, Any]],
                     *, ax: Axes | None = None) -> Axes:
    """Training loss per step and test loss after each epoch (mean token loss)."""
    ax = ax or new_axes()
    steps = [r["step"] for r in history]
    ax.plot(steps, [r["loss"] for r in history], lw=1.2, label="train loss (per step)")
    if evals:
        ax.plot([e["step"] for e in evals], [e["loss"] for e in evals], "o-", color="#d62728",
                label="test loss")
    ax.set_xlabel("step")
    ax.set_ylabel("mean token loss (nats)")
    ax.set_title("Loss during fine-tuning")
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_alpha_and_test_loss(tracking: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Mean α (left axis) and test loss (right axis) at every tracked step.

    Args:
        tracking: one row per tracked step with ``step``, ``mean_alpha`` and ``test_loss``
            (:func:`lmlab.studies._finetune_tracking.alpha_and_test_loss`).

    Returns:
        The α axes; the test loss is drawn on its twin, the figure's next axes.

    >>> t = pd.DataFrame({"step": [0, 5], "mean_alpha": [4.0, 3.9], "test_loss": [3.0, 2.5]})
    >>> ax = plot_alpha_and_test_loss(t)
    >>> [[float(y) for y in a.lines[0].get_ydata()] for a in ax.figure.axes]
    [[4.0, 3.9], [3.0, 2.5]]
    """
    ax = ax or new_axes((7.0, 4.0))
    ax.set_xlabel("step")
    ax.set_title("Mean α and test loss during fine-tuning")
    right = ax.twinx()
    if tracking.empty:
        ax.text(0.5, 0.5, "no tracked steps recorded", ha="center", va="center",
                transform=ax.transAxes)
        return ax
    a = ax.plot(tracking["step"], tracking["mean_alpha"], "o-", color="#1f77b4",
                label="mean α over layers")
    ax.set_ylabel("mean α", color="#1f77b4")
    has = tracking["test_loss"].notna()
    b = right.plot(tracking.loc[has, "step"], tracking.loc[has, "test_loss"], "s--",
                   color="#d62728", label="test loss")
    right.set_ylabel("test loss (mean token loss, nats)", color="#d62728")
    ax.legend(handles=[*a, *b], frameon=False, fontsize=8, loc="best")
    return ax


def plot_train_loss(history: pd.DataFrame, by: str, *, ax: Axes | None = None) -> Axes:
    """Training loss per iteration, one line per value of column ``by`` (in table order)."""
    ax = ax or new_axes()
    for name, g in history.groupby(by, sort=False):
        ax.plot(g["step"], g["loss"], lw=1.2, label=str(name))
    ax.set(xlabel="iteration", ylabel="training loss (mean token loss)",
           title="Training loss per iteration")
    ax.legend(frameon=False)
    return ax


def plot_perplexity_per_epoch(evals: pd.DataFrame, by: str, *, title: str,
                              ax: Axes | None = None) -> Axes:
    """Validation perplexity after each epoch (log scale), one line per value of ``by``."""
    ax = ax or new_axes()
    for name, g in evals.groupby(by, sort=False):
        ax.plot(g["epoch"] + 1, g["perplexity"], "o-", label=str(name))
    ax.set(xlabel="epoch", ylabel="validation perplexity", yscale="log", title=title)
    ax.legend(frameon=False)
    return ax


def plot_layer_importance(importance: pd.DataFrame, baseline: float, mode: str, *,
                          ax: Axes | None = None) -> Axes:
    """Perplexity with one layer's attention ablated, per layer, against no ablation."""
    ax = ax or new_axes((8.0, 4.0))
    ax.bar(importance["layer"], importance["perplexity"], color="#6baed6")
    ax.axhline(baseline, color="black", ls="--", lw=1, label="no ablation")
    ax.set(xlabel="layer ablated (alone)", ylabel="validation perplexity", yscale="log",
           title=f"Layer importance: {mode} ablation of one layer, no training")
    ax.legend(frameon=False)
    return ax
