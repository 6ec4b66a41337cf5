"""SpectralTracker: α per layer recorded at chosen steps, into its table and a run's metrics."""

from __future__ import annotations

import numpy as np
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


# ------------------------------------------------------------------- where the tracker computes


def _spy_torch_route(monkeypatch) -> list[int]:
    from lmlab.spectral import esd_torch

    calls: list[int] = []
    original = esd_torch.spectrum_of_torch

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(esd_torch, "spectrum_of_torch", spy)
    return calls


def test_a_cpu_model_is_tracked_on_the_numpy_route_with_unchanged_numbers(monkeypatch) -> None:
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(40, 90), torch.nn.Linear(90, 30))
    calls = _spy_torch_route(monkeypatch)
    tracker = SpectralTracker(steps=[0], at_begin=False, at_end=False)
    tracker.on_step_end(TrainState(step=0, model=model))
    expected = analyze(model, progress=False)
    got = tracker.frame()
    assert calls == []
    for col in ("alpha", "D", "xmin"):
        assert got[col].tolist() == expected[col].tolist()


def test_a_model_off_the_cpu_is_tracked_on_its_device(monkeypatch) -> None:
    import pandas as pd

    from lmlab.spectral import tracker as tracker_mod

    seen: list[object] = []

    def fake_analyze(model, **kwargs):
        seen.append(kwargs.get("device"))
        return pd.DataFrame({c: [] for c in tracker_mod.TRACKED_COLUMNS})

    monkeypatch.setattr(tracker_mod, "analyze", fake_analyze)
    on_meta = torch.nn.Linear(8, 16, device="meta")
    SpectralTracker(steps=[0]).record(0, on_meta)
    SpectralTracker(steps=[0]).record(0, torch.nn.Linear(8, 16))
    SpectralTracker(steps=[0], device="cpu").record(0, on_meta)  # an explicit device wins
    assert seen == [torch.device("meta"), None, "cpu"]


def test_the_torch_route_tracks_the_same_alpha(monkeypatch) -> None:
    """The route a GPU model takes, run on the CPU: the NumPy route's α, xmin and D."""
    from lmlab.spectral import layer

    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(40, 90), torch.nn.Linear(90, 30))
    numpy_route = SpectralTracker(steps=[0])
    numpy_route.record(0, model)
    calls = _spy_torch_route(monkeypatch)
    torch_route = SpectralTracker(steps=[0], device="cpu")
    with layer.torch_route_on_cpu():
        torch_route.record(0, model)
    assert len(calls) == 2
    a, b = numpy_route.frame(), torch_route.frame()
    for col in ("alpha", "D", "xmin"):
        np.testing.assert_allclose(b[col].astype(float), a[col].astype(float), rtol=1e-9)
