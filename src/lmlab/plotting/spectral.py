"""Plots of weight spectra: ESD with the fitted tail, α by layer, α histogram, α over training.

Each function takes the result of a computation (an :func:`lmlab.spectral.analyze` table, a
spectrum, a tracker table) and an optional ``ax``; without one it makes a new figure (no pyplot
state is touched, so this works headless and in threads). It returns the Axes.

>>> import numpy as np
>>> from lmlab.spectral import fit_power_law
>>> x = np.random.default_rng(0).pareto(2.0, 2000) + 1
>>> ax = plot_esd(x, fit_power_law(x), title="Pareto sample")
>>> ax.get_xscale(), ax.get_yscale()
('log', 'log')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from lmlab.spectral.powerlaw import PowerLawFit

__all__ = ["plot_esd", "plot_alpha_by_layer", "plot_alpha_hist", "plot_alpha_over_training",
           "plot_layer_panels", "new_axes", "figure_of", "short_layer_name"]

_TYPE_COLORS = {"dense": "#1f77b4", "conv1d": "#ff7f0e", "embedding": "#2ca02c",
                "conv2d": "#9467bd"}
_BAND: dict[str, Any] = dict(color="#2ca02c", alpha=0.08, lw=0)


_FILLER = {"model", "transformer", "encoder", "decoder", "layer", "layers", "h", "blocks",
           "attention", "self", "attn", "embeddings", "base_model"}


def short_layer_name(longname: str, width: int = 26) -> str:
    """A compact tick label for a module path (container names dropped).

    >>> short_layer_name("encoder.layer.4.attention.self.value")
    '4.value'
    """
    parts = [p for p in str(longname).split(".") if p not in _FILLER]
    text = ".".join(parts) or str(longname)
    return text if len(text) <= width else "…" + text[-(width - 1):]


def figure_of(ax: Axes) -> Figure:
    """The top-level Figure that holds ``ax`` (to save it)."""
    fig = ax.get_figure(root=True)
    assert fig is not None
    return fig  # type: ignore[return-value]


def captioned(fig: Figure | Axes, caption: str) -> Figure:
    """The figure (of an Axes, or itself) with its report caption attached.

    A study's ``plot()`` returns ``{name: captioned(fig, "...")}``; the report reads the
    caption back with ``fig.get_label()``.

    >>> captioned(new_axes(), "Loss per step.").get_label()
    'Loss per step.'
    """
    from matplotlib.axes import Axes as _Axes

    figure = figure_of(fig) if isinstance(fig, _Axes) else fig
    figure.set_label(caption)
    return figure


def new_axes(figsize: tuple[float, float] = (7.0, 4.2)) -> Axes:
    """A fresh Axes on its own Figure (not registered with pyplot)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig.subplots()


def plot_esd(evals: np.ndarray, fit: PowerLawFit | None = None, *, title: str = "",
             ax: Axes | None = None) -> Axes:
    """Empirical spectral density on log-log axes, with the fitted power-law tail and xmin.

    Args:
        evals: eigenvalues of one layer.
        fit: its power-law fit (drawn from xmin on, with α in the legend).
        title: the plot title (e.g. the layer's name).
    """
    ax = ax or new_axes()
    x = np.asarray(evals, dtype=float)
    x = x[x > 0]
    bins = np.logspace(np.log10(x.min()), np.log10(x.max()), 60).tolist()
    ax.hist(x, bins=bins, density=True, color="#9ecae1", edgecolor="#3182bd", lw=0.5,
            label="ESD")
    if fit is not None and fit.ok:
        xs = np.logspace(np.log10(fit.xmin), np.log10(fit.xmax), 100)
        tail_mass = np.mean(x >= fit.xmin)
        pdf = tail_mass * (fit.alpha - 1) / fit.xmin * (xs / fit.xmin) ** (-fit.alpha)
        ax.plot(xs, pdf, "r--", lw=2, label=f"power law, α = {fit.alpha:.2f}")
        ax.axvline(fit.xmin, color="#d62728", lw=1, label=f"xmin = {fit.xmin:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue λ of WᵀW")
    ax.set_ylabel("density")
    if title:
        ax.set_title(title)
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_alpha_by_layer(df: pd.DataFrame, *, title: str = "α per layer",
                        ax: Axes | None = None) -> Axes:
    """α of every analysed layer in depth order, coloured by layer type, with the 2–6 band.

    Layers whose fit failed are marked with a red × on the axis.
    """
    ax = ax or new_axes((9.0, 4.2))
    rows = df[df["status"] != "skipped"].reset_index(drop=True)
    pos = np.arange(len(rows))
    ax.axhspan(2, 6, **_BAND, label="2 ≤ α ≤ 6")
    for kind, group in rows.groupby("layer_type", sort=True):
        ok = group[group["status"] == "success"]
        ax.scatter(pos[ok.index], ok["alpha"].astype(float), s=22,
                   color=_TYPE_COLORS.get(str(kind), "gray"), label=str(kind), zorder=3)
    failed = rows[rows["status"] == "failed"]
    if len(failed):
        ax.scatter(pos[failed.index], np.zeros(len(failed)), marker="x", color="red",
                   label="fit failed", zorder=3)
    for y in (2, 6):
        ax.axhline(y, color="gray", lw=0.8, ls=":")
    ax.set_xlabel("layer (depth order)")
    ax.set_ylabel("α")
    ax.set_title(title)
    if len(rows) <= 60:
        ax.set_xticks(pos, [short_layer_name(n) for n in rows["longname"]], rotation=90,
                      fontsize=6)
    ax.legend(frameon=False, fontsize=8, ncol=3)
    return ax


def plot_alpha_hist(df: pd.DataFrame, *, title: str = "α histogram",
                    ax: Axes | None = None) -> Axes:
    """Histogram of α over the layers whose fit succeeded, with the 2 and 6 marks."""
    ax = ax or new_axes()
    alpha = df.loc[df["status"] == "success", "alpha"].astype(float)
    ax.axvspan(2, 6, **_BAND)
    ax.hist(alpha, bins=min(30, max(5, len(alpha) // 2)), color="#6baed6", edgecolor="white")
    for x in (2, 6):
        ax.axvline(x, color="gray", lw=0.8, ls=":")
    if len(alpha):
        ax.axvline(alpha.mean(), color="#d62728", lw=1.5, label=f"mean α = {alpha.mean():.2f}")
        ax.legend(frameon=False, fontsize=8)
    ax.set_xlabel("α")
    ax.set_ylabel("layers")
    ax.set_title(title)
    return ax


def plot_alpha_over_training(trajectory: pd.DataFrame, *, ax: Axes | None = None,
                             max_layers: int = 30) -> Axes:
    """α per layer against the training step (thin lines) and their mean (thick line).

    Args:
        trajectory: :func:`lmlab.spectral.tracker.alpha_by_step` of a tracker table (columns
            ``step``, ``mean``, then one per layer).
        max_layers: draw at most this many individual layers (the mean is over all).
    """
    ax = ax or new_axes()
    layers = [c for c in trajectory.columns if c not in ("step", "mean")]
    for name in layers[:max_layers]:
        ax.plot(trajectory["step"], trajectory[name], lw=0.7, alpha=0.5)
    ax.plot(trajectory["step"], trajectory["mean"], color="black", lw=2.2, label="mean α")
    ax.axhspan(2, 6, **_BAND)
    ax.set_xlabel("training step")
    ax.set_ylabel("α")
    ax.set_title("α per layer during training")
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_layer_panels(evals: np.ndarray, row: dict[str, Any]) -> Axes:
    """One layer's ESD in four panels, from its eigenvalues and its :func:`analyze` row.

    Log-log ESD with the fitted tail; the linear ESD with xmin; the ESD of log10 λ with xmin and
    xmax; and α and D against every candidate xmin (the weightwatcher power-law scan, so the
    choice of xmin can be judged). Returns the first Axes (its figure holds all four).

    >>> x = np.random.default_rng(0).pareto(2.0, 500) + 1
    >>> ax = plot_layer_panels(x, {"layer_id": 3, "longname": "fc", "alpha": 3.0,
    ...                             "xmin": 1.0, "xmax": float(x.max()), "status": "success"})
    >>> len(figure_of(ax).axes)
    5
    """
    from types import SimpleNamespace

    from matplotlib.figure import Figure

    from lmlab.spectral.powerlaw import fit_power_law

    fig = Figure(figsize=(11.0, 7.5), layout="constrained")
    (a, b), (c, d) = fig.subplots(2, 2)
    x = np.asarray(evals, dtype=float)
    x = x[x > 0]
    ok = row.get("status") == "success"
    fit = SimpleNamespace(ok=ok, alpha=row.get("alpha"), xmin=row.get("xmin"),
                          xmax=row.get("xmax"))
    name = f"layer {row.get('layer_id')} {row.get('longname', '')}".strip()
    plot_esd(x, fit if ok else None, title=f"{name}: log-log ESD", ax=a)  # type: ignore[arg-type]
    b.hist(x, bins=100, density=True, color="#9ecae1")
    c.hist(np.log10(x), bins=100, density=True, color="#9ecae1")
    if ok:
        b.axvline(fit.xmin, color="#d62728", label="xmin")
        c.axvline(np.log10(fit.xmin), color="#d62728", label="xmin")
        c.axvline(np.log10(fit.xmax), color="#ff7f0e", label="xmax")
        b.legend(frameon=False, fontsize=8)
        c.legend(frameon=False, fontsize=8)
    b.set(title="linear ESD", xlabel="λ", ylabel="density")
    c.set(title="ESD of log10 λ", xlabel="log10 λ", ylabel="density")
    scan = fit_power_law(x, all_distances=True)
    if scan.xmins.size:
        d.plot(scan.xmins, scan.Ds, color="#1f77b4", label="D (KS distance)")
        d.set_xscale("log")
        d.set(xlabel="candidate xmin", ylabel="D", title="power-law scan over xmin")
        twin = d.twinx()
        twin.plot(scan.xmins, scan.alphas, color="#2ca02c", lw=0.8, label="α")
        twin.set_ylabel("α")
        twin.set_ylim(0, min(20.0, float(np.nanmax(scan.alphas)) + 1))
        if ok:
            d.axvline(fit.xmin, color="#d62728", lw=1)
        d.legend(frameon=False, fontsize=8, loc="upper left")
        twin.legend(frameon=False, fontsize=8, loc="upper right")
    return a
