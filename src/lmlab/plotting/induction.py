"""Plots of the induction study: the source's five panels per setting (one row per matching
method and rotary distance), the relative-distance sweep, heat maps of W_qkov and QK0, position
matching and ScreeNOT ranks over training, an overlay of the settings, and OOD error against
the pattern-pool size.

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

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lmlab.plotting.spectral import new_axes

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["option_rows", "plot_circuit_matrices", "plot_circuit_ranks", "plot_overlay",
           "plot_pool_sweep", "plot_rel_dist_sweep", "plot_setting_panels"]

_FLOOR_ID, _FLOOR_OOD = 0.092, 0.047
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")


def _steps(err: pd.DataFrame) -> np.ndarray:
    """Steps of the weights each error entry was computed on (epoch + 1), at least 1 for a
    log axis."""
    return np.maximum(err["epoch"].to_numpy() + 1, 1)


def _label(method: str, rel_dist: int) -> str:
    """``largest, R(+5)`` / ``mean, R = I``: a row's matching method and rotary distance."""
    return f"{method}, " + ("R = I" if int(rel_dist) == 0 else f"R({int(rel_dist)})")


def option_rows(measures: pd.DataFrame) -> list[tuple[str, int]]:
    """The (method, rel_dist) pairs of a long measures table, in order of appearance
    (one ``("largest", 1)`` for a table without those columns).

    >>> option_rows(pd.DataFrame({"method": ["mean", "mean", "largest"], "rel_dist": [0, 5, 0]}))
    [('mean', 0), ('mean', 5), ('largest', 0)]
    """
    if "method" not in measures or "rel_dist" not in measures:
        return [("largest", 1)]
    pairs = zip(measures["method"].astype(str), measures["rel_dist"].astype(int), strict=True)
    return list(dict.fromkeys(pairs))


def _rows_of(measures: pd.DataFrame, method: str, rel_dist: int) -> pd.DataFrame:
    if "method" not in measures or "rel_dist" not in measures:
        return measures.sort_values("step")
    keep = (measures["method"] == method) & (measures["rel_dist"] == rel_dist)
    return measures[keep].sort_values("step")


def _baseline(m: pd.DataFrame, baseline: np.ndarray | None, r: int) -> float | None:
    col = f"baseline_r{r}"
    if col in m and len(m):
        return float(m[col].iloc[0])
    return float(baseline[r - 1]) if baseline is not None and r <= len(baseline) else None


def _error_panel(ax: Axes, err: pd.DataFrame) -> None:
    cheap = err[~err["full"]] if "full" in err else err
    full = err[err["full"]] if "full" in err else err.iloc[0:0]
    marker = "o-" if len(full) <= 300 else "-"
    for col, color, name in (("err_test", "#1f77b4", "ID"), ("err_ood", "#d62728", "OOD")):
        if len(cheap) and col in cheap:
            ax.plot(_steps(cheap), cheap[col], color=color, lw=0.6, alpha=0.5)
        if len(full) and col in full:
            ax.plot(_steps(full), full[col], marker, color=color, ms=2, lw=1.2, label=name)
    ax.axhline(_FLOOR_ID, color="#1f77b4", ls=":", lw=1)
    ax.axhline(_FLOOR_OOD, color="#d62728", ls=":", lw=1)
    ax.set(xscale="log", xlabel="step", ylabel="error (authors' mask)", ylim=(0, 1.02),
           title="errors (dotted: perfect-copier floors)")
    if len(err):
        ax.legend(frameon=False, fontsize=8)


def plot_setting_panels(err: pd.DataFrame, measures: pd.DataFrame,
                        baseline: np.ndarray | None = None, *,
                        ranks: Sequence[int] = (5, 10, 15, 20), title: str = "",
                        rows: Sequence[tuple[str, int]] | None = None) -> Figure:
    """The source's five panels — ID/OOD error (log step), z-score, QK–OV matching with the
    random baseline (one line per rank), token mismatch, embedding–OV matching — one row per
    (matching method, relative distance) of ``rows`` (default: every pair in ``measures``).

    The random baseline is read from the ``baseline_r<k>`` columns, else from ``baseline``
    (its entry ``k − 1``).
    """
    from matplotlib.figure import Figure

    pairs = list(rows) if rows is not None else option_rows(measures)
    fig = Figure(figsize=(21, 3.6 * len(pairs) + 0.4), layout="constrained")
    grid = fig.subplots(len(pairs), 5, squeeze=False)
    for axes, (method, rel_dist) in zip(grid, pairs, strict=True):
        _error_panel(axes[0], err)
        m = _rows_of(measures, method, rel_dist)
        tag = _label(method, rel_dist)
        steps = np.maximum(m["step"].to_numpy(), 1)
        if "zscore" in m:
            axes[1].plot(steps, m["zscore"], color="#2ca02c")
        axes[1].set(xscale="log", xlabel="step", ylabel="z",
                    title=f"diagonal z-score of W_qk W_ov ({tag})")
        for i, r in enumerate(ranks):
            color = _COLORS[i % len(_COLORS)]
            base = _baseline(m, baseline, r)
            for ax, col in ((axes[2], f"match_r{r}"), (axes[4], f"emb_ov_match_r{r}")):
                if col in m:
                    ax.plot(steps, m[col], color=color, label=f"r = {r}")
                    if base is not None:
                        ax.axhline(base, color=color, ls="--", lw=0.8)
        axes[2].set(xscale="log", xlabel="step", ylabel=method, ylim=(0, 1.02),
                    title=f"QK–OV matching ({tag}; dashed: random)")
        if "mismatch" in m:
            axes[3].plot(steps, m["mismatch"], color="#8c564b")
        axes[3].set(xscale="log", xlabel="step", ylabel="share", ylim=(0, 1.02),
                    title=f"token mismatch ratio ({tag})")
        axes[4].set(xscale="log", xlabel="step", ylabel=method, ylim=(0, 1.02),
                    title="embedding–OV matching (dashed: random)")
        for ax in (axes[2], axes[4]):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(frameon=False, fontsize=7)
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


def plot_pool_sweep(sweep: pd.DataFrame | Mapping[float, float], *, steps: int,
                    ax: Axes | None = None) -> Axes:
    """OOD error at the end of training against the pool size (∞ drawn at the right): the
    mean over seeds with its standard error, each seed as a dot, and the number of seeds that
    generalise (OOD error < 0.5) above each pool.

    Args:
        sweep: rows of ``pool`` (inf: infinite), ``seed`` and ``final_err_ood`` (or a mapping
            pool -> error, one seed).
        steps: the training length, for the title.
    """
    ax = ax or new_axes((7.0, 4.2))
    if isinstance(sweep, Mapping):
        sweep = pd.DataFrame({"pool": list(sweep), "seed": 0.0,
                              "final_err_ood": list(sweep.values())})
    finite = sweep[np.isfinite(sweep["pool"])]
    right = float(finite["pool"].max()) * 2 if len(finite) else 200.0
    x = sweep["pool"].where(np.isfinite(sweep["pool"]), right)
    ax.scatter(x, sweep["final_err_ood"], s=12, color="#9ecae1", zorder=2, label="one seed")
    stats = sweep.assign(x=x).groupby("x")["final_err_ood"].agg(["mean", "sem", "count"])
    wins = sweep.assign(x=x, ok=sweep["final_err_ood"] < 0.5).groupby("x")["ok"].sum()
    ax.errorbar(stats.index, stats["mean"], yerr=stats["sem"].fillna(0), fmt="o-",
                color="#1f77b4", capsize=3, zorder=3, label="mean ± s.e.")
    for xv, row in stats.iterrows():
        ax.annotate(f"{int(wins[xv])}/{int(row['count'])}", (float(str(xv)), 1.0),
                    ha="center", va="bottom", fontsize=7, color="#555555")
    if (~np.isfinite(sweep["pool"])).any():
        ax.axvline(right / 1.4, color="#cccccc", lw=0.8)
        ax.annotate("∞", (right, 0.02), ha="center", fontsize=9)
    ax.axhline(_FLOOR_OOD, color="#888888", ls=":", lw=1, label="perfect copier")
    ax.set(xscale="log", xlabel="pattern pool size", ylabel="OOD error",
           title=f"OOD error after {steps:,} steps", ylim=(0, 1.1))
    ax.legend(frameon=False, fontsize=7, loc="lower left")
    return ax


def _nearest(m: pd.DataFrame, step: int) -> pd.DataFrame:
    """The rows of ``m`` at the measured step nearest to ``step``."""
    steps = m["step"].to_numpy()
    return m[m["step"] == steps[np.abs(steps - step).argmin()]] if len(m) else m


def plot_rel_dist_sweep(measures: pd.DataFrame, *, snapshot_steps: Sequence[int],
                        ranks: Sequence[int] = (5, 10, 15), title: str = "") -> Figure:
    """The relative-distance sweep of one setting: per matching method, a row against the
    rotary distance (0: R = I) at the ``snapshot_steps`` checkpoints — z-score and mismatch
    (one line per checkpoint), QK–OV matching at each checkpoint (one line per rank, dashed:
    random) — and a row over training (one line per distance): z-score, mismatch and the
    matching at the first three ranks.

    >>> m = pd.DataFrame({"step": [0, 0, 9, 9], "method": "largest", "rel_dist": [0, 5, 0, 5],
    ...                   "zscore": [0.1, 0.2, 2.0, 1.0], "mismatch": [0.9, 0.9, 0.1, 0.5],
    ...                   "match_r5": [0.4, 0.5, 0.9, 0.7], "baseline_r5": 0.45})
    >>> fig = plot_rel_dist_sweep(m, snapshot_steps=[0, 9], ranks=(5,))
    >>> sum(ax.get_visible() for ax in fig.axes)  # z, mismatch, 2 snapshots; 3 over training
    7
    """
    from matplotlib.figure import Figure

    methods = list(dict.fromkeys(measures["method"].astype(str)))
    fig = Figure(figsize=(21, 7.4 * len(methods) + 0.4), layout="constrained")
    grid = fig.subplots(2 * len(methods), 5, squeeze=False)
    snaps = list(snapshot_steps)[:3]
    for j, method in enumerate(methods):
        m = measures[measures["method"] == method]
        dists = sorted(int(t) for t in m["rel_dist"].unique())
        top, bottom = grid[2 * j], grid[2 * j + 1]
        for i, step in enumerate(snaps):
            at = _nearest(m, step).sort_values("rel_dist")
            shade = _SNAP_STYLES[i % len(_SNAP_STYLES)]
            label = f"step {int(at['step'].iloc[0]):,}" if len(at) else f"step {step}"
            for ax, col in ((top[0], "zscore"), (top[1], "mismatch")):
                if col in at:
                    ax.plot(at["rel_dist"], at[col], shade, color="#333333", label=label)
            ax = top[2 + i]
            for k, r in enumerate(ranks):
                col = f"match_r{r}"
                if col in at:
                    color = _COLORS[k % len(_COLORS)]
                    ax.plot(at["rel_dist"], at[col], "o-", color=color, ms=3, label=f"r = {r}")
                    if f"baseline_r{r}" in at:
                        ax.axhline(float(at[f"baseline_r{r}"].iloc[0]), color=color, ls="--",
                                   lw=0.8)
            ax.set(xlabel="relative distance (0: R = I)", ylabel=method, ylim=(0, 1.02),
                   title=f"QK–OV matching, {label}")
            ax.legend(frameon=False, fontsize=7)
        for ax in top[2 + len(snaps):]:
            ax.set_visible(False)
        top[0].set(xlabel="relative distance (0: R = I)", ylabel="z",
                   title=f"diagonal z-score ({method})")
        top[1].set(xlabel="relative distance (0: R = I)", ylabel="share", ylim=(0, 1.02),
                   title=f"token mismatch ({method})")
        for ax in top[:2]:
            if ax.get_legend_handles_labels()[0]:
                ax.legend(frameon=False, fontsize=7)
        cols = [("zscore", "diagonal z-score", "z"), ("mismatch", "token mismatch", "share"),
                *((f"match_r{r}", f"QK–OV matching r = {r}", method) for r in ranks[:3])]
        for ax, (col, name, ylabel) in zip(bottom, cols, strict=False):
            for n, t in enumerate(dists):
                rows = m[m["rel_dist"] == t].sort_values("step")
                if col in rows:
                    ax.plot(np.maximum(rows["step"], 1), rows[col], color=_cmap(n, len(dists)),
                            label="R = I" if t == 0 else f"t = {t}")
            ax.set(xscale="log", xlabel="step", ylabel=ylabel, title=f"{name} over training")
            if col != "zscore":
                ax.set_ylim(0, 1.02)
        for ax in bottom[len(cols):]:
            ax.set_visible(False)
        if bottom[0].get_legend_handles_labels()[0]:
            bottom[0].legend(frameon=False, fontsize=7, ncol=2)
    if title:
        fig.suptitle(title)
    return fig


def _cmap(i: int, n: int) -> tuple[float, float, float, float]:
    from matplotlib import colormaps

    return colormaps["viridis"](0.0 if n < 2 else 0.9 * i / (n - 1))  # type: ignore[no-any-return]


_SNAP_STYLES = ("o:", "s--", "^-")


def plot_circuit_matrices(snapshots: Sequence[Mapping[str, object]], *,
                          title: str = "") -> Figure:
    """Heat maps of ``W_qkov = W_qk W_ov`` (d × d) and ``QK0 = E W_qk W_ov Eᵀ`` (V × V) at a
    few checkpoints: one row per setting; each map has its own symmetric colour scale.

    Args:
        snapshots: per setting ``{"setting": name, "steps": (n,), "W_qkov": (n, d, d),
            "QK0": (n, V, V)}`` (and optionally ``"rel_dist"``).

    >>> snap = {"setting": "a", "steps": np.array([0, 9]), "W_qkov": np.zeros((2, 4, 4)),
    ...         "QK0": np.eye(3)[None].repeat(2, 0)}
    >>> len([ax for ax in plot_circuit_matrices([snap]).axes if ax.images])
    4
    """
    from matplotlib.figure import Figure

    width = max(len(np.asarray(s["steps"])) for s in snapshots) if snapshots else 1
    fig = Figure(figsize=(3.4 * 2 * width, 3.3 * max(len(snapshots), 1) + 0.4),
                 layout="constrained")
    grid = fig.subplots(max(len(snapshots), 1), 2 * width, squeeze=False)
    for axes, snap in zip(grid, snapshots, strict=False):
        steps = np.asarray(snap["steps"])
        t = int(snap.get("rel_dist", 1))  # type: ignore[call-overload]
        for j, key in enumerate(("W_qkov", "QK0")):
            stack = np.asarray(snap[key])
            for i, step in enumerate(steps):
                ax = axes[j * width + i]
                mat = stack[i]
                vmax = float(np.abs(mat).max()) or 1.0
                image = ax.imshow(mat, cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                                  interpolation="nearest")
                fig.colorbar(image, ax=ax, shrink=0.75)
                ax.set_title(f"{snap['setting']}: {key}, step {int(step):,}"
                             + ("" if t == 1 else " (R = I)" if t == 0 else f" (t = {t})"),
                             fontsize=8)
                ax.set_xticks([])
                ax.set_yticks([])
            for ax in axes[j * width + len(steps):(j + 1) * width]:
                ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return fig


_RANK_MATRICES = (("Wq0", "layer-0 W_q"), ("Wk0", "layer-0 W_k"), ("E", "E"),
                  ("Enorm", "normalised E"), ("qk", "W_qk"), ("ov", "W_ov"))
_K_STYLES = ("-", "--", ":", "-.")


def plot_circuit_ranks(measures: pd.DataFrame, settings: Sequence[str], *,
                       ranks: Sequence[int] = (5, 10, 15, 20),
                       screenot_k: Sequence[int] = (5, 10, 20)) -> Figure:
    """Per setting (one row), over training: how much layer 0's W_q and W_k read position
    (``pos_match_{q,k}_r<k>``, solid) or token (``tok_match_{q,k}_r<k>``, dashed) information,
    one colour per rank, dotted: random; their top singular values (``sv_{q,k}0_<i>``); and the
    ScreeNOT ranks of the source's matrices (layer-0 W_q, W_k, E, normalised E) and of W_qk,
    W_ov — one colour per matrix, one line style per bound k.

    >>> m = pd.DataFrame({"setting": "a", "step": [0, 9], "pos_match_q_r5": [0.2, 0.8],
    ...                   "sv_q0_1": [1.0, 2.0], "rank_Wq0_k5": [0, 3], "rank_qk_k5": [0, 2]})
    >>> len(plot_circuit_ranks(m, ["a"], ranks=(5,), screenot_k=(5,)).axes)
    5
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(23, 3.4 * max(len(settings), 1) + 0.4), layout="constrained")
    grid = fig.subplots(max(len(settings), 1), 5, squeeze=False)
    for axes, name in zip(grid, settings, strict=False):
        m = measures[measures["setting"] == name].sort_values("step")
        steps = np.maximum(m["step"].to_numpy(), 1)
        for ax, side in ((axes[0], "q"), (axes[1], "k")):
            for i, r in enumerate(ranks):
                color = _COLORS[i % len(_COLORS)]
                for kind, style in (("pos", "-"), ("tok", "--")):
                    col = f"{kind}_match_{side}_r{r}"
                    if col in m:
                        ax.plot(steps, m[col], style, color=color,
                                label=f"{'position' if kind == 'pos' else 'token'}, r = {r}")
                base = _baseline(m, None, r) if f"pos_match_{side}_r{r}" in m else None
                if base is not None:
                    ax.axhline(base, color=color, ls=":", lw=0.8)
            ax.set(xscale="log", xlabel="step", ylim=(0, 1.02), ylabel="matching",
                   title=f"{name}: layer-0 W_{side} reads position / token")
        sv = sorted((c for c in m.columns if re.fullmatch(r"sv_[qk]0_\d+", c)),
                    key=lambda c: (c[3], int(c.rsplit("_", 1)[1])))
        for col in sv:
            i = int(col.rsplit("_", 1)[1])
            axes[2].plot(steps, m[col], "-" if col[3] == "q" else "--",
                         color=_COLORS[(i - 1) % len(_COLORS)],
                         label=f"W_{col[3]} σ_{i}")
        axes[2].set(xscale="log", xlabel="step", ylabel="singular value",
                    title="layer-0 W_q (solid), W_k (dashed)")
        for ax, group in ((axes[3], _RANK_MATRICES[:4]), (axes[4], _RANK_MATRICES[4:])):
            for c, (key, label) in enumerate(group):
                for s, k in enumerate(screenot_k):
                    col = f"rank_{key}_k{k}"
                    if col in m:
                        ax.plot(steps, m[col], _K_STYLES[s % len(_K_STYLES)],
                                color=_COLORS[c % len(_COLORS)], label=f"{label}, k = {k}")
            ax.set(xscale="log", xlabel="step", ylabel="ScreeNOT rank",
                   title=("ranks of layer-0 W_q, W_k, E, normalised E" if ax is axes[3]
                          else "ranks of W_qk, W_ov"))
        for ax in axes:
            if ax.get_legend_handles_labels()[0]:
                ax.legend(frameon=False, fontsize=6, ncol=2)
    return fig
