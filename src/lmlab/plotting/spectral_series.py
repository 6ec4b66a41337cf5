"""Plots of α over a training run's checkpoints: mean α per step, and α per layer × step.

Both take the series table of :func:`lmlab.spectral.series.analyze_series` (one row per layer
per step: ``step``, ``longname``, ``alpha``, ``status``) and an optional ``ax``.

>>> import pandas as pd
>>> t = pd.DataFrame({"step": [0, 0, 5, 5], "longname": ["a", "b", "a", "b"],
...                   "alpha": [2.0, 4.0, 3.0, 5.0], "status": ["success"] * 4})
>>> ax = plot_alpha_mean_over_steps(t)
>>> [float(y) for y in ax.lines[0].get_ydata()]
[3.0, 4.0]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lmlab.plotting.spectral import _BAND, new_axes, short_layer_name

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["plot_alpha_mean_over_steps", "plot_alpha_heatmap"]


def plot_alpha_mean_over_steps(table: pd.DataFrame, *, title: str = "mean α over training",
                               ax: Axes | None = None) -> Axes:
    """Mean α over the fitted layers at every step (with the middle half of the layers as a
    band), the 2 and 6 lines, and a red × at the bottom for each checkpoint not read.
    """
    ax = ax or new_axes()
    ok = table[table["status"] == "success"]
    by_step = ok.groupby("step")["alpha"]
    steps = np.asarray(sorted(ok["step"].unique()), dtype=float)
    if len(steps):
        mean = by_step.mean().reindex(steps).to_numpy(dtype=float)
        q1 = by_step.quantile(0.25).reindex(steps).to_numpy(dtype=float)
        q3 = by_step.quantile(0.75).reindex(steps).to_numpy(dtype=float)
        ax.plot(steps, mean, color="black", lw=2.0, marker="o", ms=3, label="mean α")
        ax.fill_between(steps, q1, q3, color="#6baed6", alpha=0.35, lw=0,
                        label="layers' middle half")
    unread = table.loc[table["status"] == "unreadable", "step"].drop_duplicates()
    if len(unread):
        ax.scatter(unread.astype(float), np.zeros(len(unread)), marker="x", color="red",
                   label="checkpoint not read", zorder=3)
    ax.axhspan(2, 6, **_BAND)
    for y in (2, 6):
        ax.axhline(y, color="gray", lw=0.8, ls=":")
    ax.set_xlabel("training step")
    ax.set_ylabel("α")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_alpha_heatmap(table: pd.DataFrame, *, title: str = "α per layer and step",
                       ax: Axes | None = None, max_labels: int = 60) -> Axes:
    """α of every layer (rows, depth order) at every step (columns, step order) as colours;
    a layer not fitted at a step is left blank.
    """
    ax = ax or new_axes((9.0, 5.0))
    ok = table[table["status"] == "success"]
    order = (ok.sort_values(["layer_id", "longname"]).drop_duplicates("longname")["longname"]
             if "layer_id" in ok else ok["longname"].drop_duplicates())
    wide = ok.pivot_table(index="longname", columns="step", values="alpha").reindex(order)
    values = wide.to_numpy(dtype=float)
    if values.size:
        finite = values[np.isfinite(values)]
        lo, hi = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
        image = ax.imshow(values, aspect="auto", interpolation="nearest", cmap="viridis",
                          vmin=lo, vmax=max(hi, lo + 1e-9))
        ax.get_figure(root=True).colorbar(image, ax=ax, label="α")  # type: ignore[union-attr]
        steps = list(wide.columns)
        shown = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), 12)).round().astype(int))
        ax.set_xticks(shown, [str(steps[i]) for i in shown], fontsize=7)
        if len(wide) <= max_labels:
            ax.set_yticks(np.arange(len(wide)), [short_layer_name(n) for n in wide.index],
                          fontsize=6)
    ax.set_xlabel("training step")
    ax.set_ylabel("layer (depth order)")
    ax.set_title(title)
    return ax
