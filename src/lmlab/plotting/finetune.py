"""Plots of a fine-tuning run: mean α before/after, Δα per layer, loss curves.

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

__all__ = ["plot_mean_alpha_bars", "plot_delta_alpha", "plot_loss_curves", "matrix_kind"]

_KIND_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf"]


def matrix_kind(longname: str) -> str:
    """The matrix type of a layer from its module path (its last component).

    >>> matrix_kind("model.layers.3.self_attn.q_proj"), matrix_kind("transformer.wte")
    ('q_proj', 'wte')
    """
    return str(longname).split(".")[-1]


def plot_mean_alpha_bars(means: Mapping[str, float], *, ax: Axes | None = None) -> Axes:
    """Bars of mean α per stage with the 2 and 6 lines of the healthy band."""
    ax = ax or new_axes((5.0, 4.0))
    names, values = list(means), [float(v) for v in means.values()]
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


def plot_delta_alpha(pre: pd.DataFrame, post: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Δα = α(after) − α(before) per layer in depth order, coloured by matrix type."""
    ax = ax or new_axes((9.0, 4.2))
    merged = _merged(pre, post)
    kinds = sorted(merged["kind"].unique())
    colors = {k: _KIND_COLORS[i % len(_KIND_COLORS)] for i, k in enumerate(kinds)}
    x = np.arange(len(merged))
    from matplotlib.patches import Patch

    ax.bar(x, merged["delta"], color=[colors[k] for k in merged["kind"]], width=0.85)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("layer (depth order)")
    ax.set_ylabel("Δα (after − before)")
    ax.set_title("Change of α per layer")
    if len(merged) <= 60:
        ax.set_xticks(x, [short_layer_name(n) for n in merged["longname"]], rotation=90,
                      fontsize=6)
    ax.legend(handles=[Patch(color=colors[k], label=k) for k in kinds], frameon=False,
              fontsize=7, ncol=min(len(kinds), 6))
    return ax


def _merged(pre: pd.DataFrame, post: pd.DataFrame) -> pd.DataFrame:
    cols = ["layer_id", "longname", "alpha"]
    a = pre[pre["status"] == "success"][cols]
    b = post[post["status"] == "success"][cols]
    merged = a.merge(b, on=["layer_id", "longname"], suffixes=("_pre", "_post"))
    merged = merged.sort_values("layer_id").reset_index(drop=True)
    merged["delta"] = merged["alpha_post"] - merged["alpha_pre"]
    merged["kind"] = merged["longname"].map(matrix_kind)
    return merged


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
