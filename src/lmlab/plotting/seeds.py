"""Curves and values over repeated seeds: the mean with a min–max band, and each seed's value.

They only draw: every number comes from a study's ``Result`` (tidy tables with a ``seed``
column).

>>> df = pd.DataFrame({"opt": ["a"] * 4, "seed": [1, 1, 2, 2], "step": [1, 2, 1, 2],
...                    "loss": [3.0, 2.0, 5.0, 4.0]})
>>> ax = plot_band(df, x="step", y="loss", by="opt")
>>> ax.lines[0].get_ydata().tolist()  # the mean over seeds
[4.0, 3.0]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lmlab.plotting.spectral import new_axes

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["band_over_seeds", "plot_band", "plot_loss_noise", "plot_per_seed", "two_axes"]


def band_over_seeds(df: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Per value of ``x``: the mean, min and max of ``y`` over seeds, and how many seeds.

    >>> df = pd.DataFrame({"step": [1, 1, 2], "loss": [1.0, 3.0, 2.0]})
    >>> band_over_seeds(df, "step", "loss").values.tolist()
    [[1.0, 2.0, 1.0, 3.0, 2.0], [2.0, 2.0, 2.0, 2.0, 1.0]]
    """
    g = df.groupby(x, sort=True)[y]
    out = pd.DataFrame({"mean": g.mean(), "min": g.min(), "max": g.max(), "n": g.count()})
    return out.reset_index().astype(float)


def plot_band(df: pd.DataFrame, *, x: str, y: str, by: str, marker: str = "",
              ax: Axes | None = None) -> Axes:
    """``y`` against ``x``, one line per value of ``by`` (table order): the mean over the
    ``seed`` rows, with a shaded band from their minimum to their maximum (none for one seed).
    """
    ax = ax or new_axes()
    for name, g in df.groupby(by, sort=False):
        band = band_over_seeds(g.dropna(subset=[y]), x, y)
        n = int(g["seed"].nunique()) if "seed" in g else 1
        (line,) = ax.plot(band[x], band["mean"], marker=marker, lw=1.2,
                          label=f"{name} (mean of {n} seeds)" if n > 1 else str(name))
        if n > 1:
            ax.fill_between(band[x], band["min"], band["max"], color=line.get_color(),
                            alpha=0.2, lw=0)
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_per_seed(runs: pd.DataFrame, *, value: str, by: str, ax: Axes | None = None) -> Axes:
    """Each seed's ``value`` as a dot per value of ``by``, with the mean over seeds as a bar
    and ± one sample standard deviation over seeds as an error bar (none for one seed)."""
    ax = ax or new_axes((5.0, 4.0))
    names = list(dict.fromkeys(runs[by]))
    for i, name in enumerate(names):
        vals = runs.loc[runs[by] == name, value].dropna().to_numpy(dtype=float)
        if not len(vals):
            continue
        std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        ax.bar(i, vals.mean(), width=0.6, color=f"C{i}", alpha=0.35,
               yerr=std if len(vals) > 1 else None, capsize=6)
        jitter = np.linspace(-0.12, 0.12, len(vals)) if len(vals) > 1 else np.zeros(1)
        ax.plot(i + jitter, vals, "o", color=f"C{i}", ms=5)
    ax.set_xticks(range(len(names)), [str(n) for n in names])
    return ax


def two_axes(figsize: tuple[float, float] = (11.0, 4.2)) -> tuple[Figure, Axes, Axes]:
    """A fresh Figure with two Axes side by side (not registered with pyplot)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    left, right = fig.subplots(1, 2)
    return fig, left, right


def plot_loss_noise(rolling: pd.DataFrame, runs: pd.DataFrame, *, by: str,
                    window: int) -> Figure:
    """The loss noise of each run: along training (left; mean over seeds, min–max band) and
    at the last step, per seed (right; dots, the mean as a bar, ± one standard deviation).

    Args:
        rolling: one row per ``by``, ``seed`` and ``step`` with ``loss_noise`` at that step.
        runs: one row per ``by`` and ``seed`` with the run's final ``loss_noise``.
        by: the column naming the variant (e.g. ``optimizer``).
        window: ``W``, named in the labels.
    """
    fig, left, right = two_axes()
    plot_band(rolling, x="step", y="loss_noise", by=by, ax=left)
    left.set(xlabel="iteration", ylabel=f"std of the last {window} loss changes",
             title="Loss noise along training")
    plot_per_seed(runs, value="loss_noise", by=by, ax=right)
    right.set(ylabel=f"std of the last {window} loss changes",
              title="Loss noise at the end, per seed")
    return fig
