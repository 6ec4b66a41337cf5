"""Spectral plots draw what they claim: the fitted line, the xmin mark, the α bands."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmlab.plotting import plot_alpha_by_layer, plot_alpha_hist, plot_alpha_over_training, plot_esd
from lmlab.spectral import SpectralTracker, analyze, fit_power_law
from lmlab.train import TrainState
from tests.conftest import tiny_model


def test_esd_plot_shows_the_fit() -> None:
    x = np.random.default_rng(0).pareto(2.0, 3000) + 1
    fit = fit_power_law(x)
    ax = plot_esd(x, fit, title="t")
    labels = [line.get_label() for line in ax.get_lines()]
    assert any(f"{fit.alpha:.2f}" in label for label in labels)
    xmin_lines = [line for line in ax.get_lines() if line.get_label().startswith("xmin")]
    assert xmin_lines[0].get_xdata()[0] == pytest.approx(fit.xmin)


def test_alpha_by_layer_plots_every_fitted_layer() -> None:
    df = analyze(tiny_model("gpt2"))
    ax = plot_alpha_by_layer(df)
    points = np.concatenate([c.get_offsets() for c in ax.collections if hasattr(c, "get_offsets")
                             and len(c.get_offsets())])
    ok = df[df["status"] == "success"]
    assert sorted(points[:, 1].tolist()) == pytest.approx(sorted(ok["alpha"].tolist()))


def test_alpha_hist_counts_fitted_layers() -> None:
    df = analyze(tiny_model("bert"))
    ax = plot_alpha_hist(df)
    (bars,) = ax.containers  # the histogram's BarContainer
    heights = sum(p.get_height() for p in bars)
    assert heights == (df["status"] == "success").sum()


def test_alpha_over_training_draws_the_mean() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Linear(64, 32))
    tracker = SpectralTracker(every=1)
    for step in range(3):
        with torch.no_grad():
            model[0].weight.mul_(1.5)
        tracker.on_step_end(TrainState(step=step, model=model))
    from lmlab.spectral.tracker import alpha_by_step

    ax = plot_alpha_over_training(alpha_by_step(tracker.frame()))
    mean_line = [line for line in ax.get_lines() if line.get_label() == "mean α"][0]
    table = tracker.frame()
    expected = table.groupby("step")["alpha"].mean().tolist()
    assert mean_line.get_ydata().tolist() == pytest.approx(expected)
