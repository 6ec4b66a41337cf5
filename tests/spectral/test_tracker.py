"""SpectralTracker: α per layer recorded at chosen steps, into its table and a run's metrics."""

from __future__ import annotations

import torch

from lmlab.runs import RunDir
from lmlab.spectral import SpectralTracker, analyze
from lmlab.train import TrainState


def test_tracks_alpha_as_weights_change(tmp_path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(48, 96), torch.nn.Linear(96, 48))
    run = RunDir.create(tmp_path, "track")
    tracker = SpectralTracker(steps=[2], every=None, sink=run)
    tracker.on_train_begin(TrainState(step=0, model=model))
    alpha_before = analyze(model)["alpha"].tolist()
    with torch.no_grad():  # a strong rank-one spike changes the tail of layer 0
        model[0].weight += 3.0 * torch.outer(torch.randn(96), torch.randn(48))
    for step in (1, 2, 3):
        tracker.on_step_end(TrainState(step=step, model=model))
    tracker.on_train_end(TrainState(step=3, model=model))

    table = tracker.frame()
    assert sorted(table["step"].unique()) == [0, 2, 3]
    assert len(table) == 3 * 2
    at0 = table[table["step"] == 0].sort_values("layer_id")["alpha"].tolist()
    assert at0 == alpha_before
    first = table[table["longname"] == "0"].set_index("step")["alpha"]
    assert first[0] != first[2]

    logged = run.read_metrics()
    assert (logged["kind"] == "spectral").all()
    cols = ["step", "layer_id", "alpha"]
    assert logged[cols].values.tolist() == table[cols].values.tolist()


def test_a_step_is_recorded_once() -> None:
    model = torch.nn.Linear(32, 64)
    tracker = SpectralTracker(steps=[5], at_begin=False)
    tracker.on_step_end(TrainState(step=5, model=model))
    tracker.on_train_end(TrainState(step=5, model=model))
    assert len(tracker.frame()) == 1
