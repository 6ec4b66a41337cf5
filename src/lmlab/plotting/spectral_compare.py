"""Plots of ``lmlab spectral compare``: Δα grouped by depth or matrix type, and α of B
against α of A. They only draw: every number comes from the comparison tables
(:mod:`lmlab.spectral.compare`). The mean-α bars and Δα per layer are the fine-tuning
study's (:mod:`lmlab.plotting.finetune`).

>>> import pandas as pd
>>> g = pd.DataFrame({"group": ["0", "1"], "mean": [0.5, -0.25], "std": [0.1, 0.0],
...                   "min": [0.4, -0.25], "max": [0.6, -0.25], "n": [2, 1]})
>>> ax = plot_delta_by_group(g, xlabel="block")
>>> [round(float(p.get_height()), 2) for p in ax.patches]
[0.5, -0.25]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lmlab.plotting.spectral import new_axes

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["plot_alpha_a_vs_b", "plot_delta_by_group"]


def plot_delta_by_group(groups: pd.DataFrame, *, xlabel: str, title: str = "",
                        ax: Axes | None = None) -> Axes:
    """Mean Δα per group as bars, ± one standard deviation, with each group's min–max range
    as a thin line and (up to 16 groups) its layer count at the bar.

    Args:
        groups: :func:`lmlab.spectral.compare.group_deltas` output (``group``, ``mean``,
            ``std``, ``min``, ``max``, ``n``).
        xlabel: what the groups are (``block``, ``matrix type``).
    """
    ax = ax or new_axes((7.0, 4.0))
    x = np.arange(len(groups))
    means = groups["mean"].astype(float).to_numpy()
    ax.bar(x, means, yerr=groups["std"].astype(float).to_numpy(), color="#3182bd",
           ecolor="black", capsize=3, width=0.7)
    ax.vlines(x, groups["min"].astype(float), groups["max"].astype(float), color="#636363",
              lw=1, alpha=0.7)
    for xi, v, n in zip(x, means, groups["n"], strict=True):
        if len(groups) <= 16:  # beyond that the counts overlap
            ax.annotate(f"n={int(n)}", (xi, v), ha="center", va="bottom" if v >= 0 else "top",
                        fontsize=7)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, groups["group"].astype(str).tolist(),
                  rotation=0 if len(groups) <= 16 else 90, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Δα = α(B) − α(A)")
    ax.set_title(title or f"Δα by {xlabel} (mean ± std; line: min–max)")
    return ax


def plot_alpha_a_vs_b(paired: pd.DataFrame, *, label_a: str = "A", label_b: str = "B",
                      ax: Axes | None = None) -> Axes:
    """α of B against α of A for every layer fitted in both, with the diagonal and the
    2 / 6 lines of the healthy band.

    >>> p = pd.DataFrame({"alpha_a": [3.0, 4.0], "alpha_b": [3.5, 4.0], "matrix": ["q", "k"]})
    >>> len(plot_alpha_a_vs_b(p).collections)
    2
    """
    ax = ax or new_axes((5.0, 5.0))
    d = paired.dropna(subset=["alpha_a", "alpha_b"])
    for kind, g in d.groupby("matrix", sort=True):
        ax.scatter(g["alpha_a"], g["alpha_b"], s=14, label=str(kind))
    values = pd.concat([d["alpha_a"], d["alpha_b"]]).astype(float)
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 7.0)
    lo, hi = min(lo, 2.0) - 0.2, max(hi, 6.0) + 0.2
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, label="α(B) = α(A)")
    for v, color in ((2, "#d62728"), (6, "#ff7f0e")):
        ax.axhline(v, color=color, ls="--", lw=0.8)
        ax.axvline(v, color=color, ls="--", lw=0.8)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"α — A: {label_a}"[:60])
    ax.set_ylabel(f"α — B: {label_b}"[:60])
    ax.set_title("α per layer, B against A")
    if len(d):
        ax.legend(frameon=False, fontsize=7, ncol=2)
    return ax
