"""The drop-in front end: a weightwatcher script runs with one import changed."""

from __future__ import annotations

import contextlib
import io
import types

import numpy as np
import pandas as pd
import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.spectral import WeightWatcher
from tests.conftest import tiny_model

#: A short weightwatcher-style script: every method a user reaches for. ``ww`` is the module
#: under test (weightwatcher itself or lmlab.spectral); ``model``/``base`` are given.
SCRIPT = """
watcher = ww.WeightWatcher(model=model)
described = watcher.describe()
details = watcher.analyze(layers=[-2], mp_fit=True, detX=True, fix_fingers="clip_xmax")
summary = watcher.get_summary()
same = watcher.get_details()
esd = watcher.get_ESD(layer=9)
weights = watcher.get_Weights(layer=9)
delta = ww.WeightWatcher(model=model, base_model=base).analyze(xmax=-2)
"""

DETERMINISTIC_EXTRA = ("num_spikes", "sigma_mp", "mp_softrank", "detX_num", "detX_val",
                       "num_fingers", "raw_alpha")


def _run(module: types.ModuleType, model: torch.nn.Module, base: torch.nn.Module) -> dict:
    scope = {"ww": module, "model": model, "base": base}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(SCRIPT, scope)  # noqa: S102 - the script is a constant of this test
    return scope


def _same_frames(mine: pd.DataFrame, ref: pd.DataFrame, *, extra_ok: tuple[str, ...] = ()) -> None:
    assert mine["layer_id"].tolist() == ref["layer_id"].tolist()
    lm_only = set(mine.columns) - set(ref.columns)
    assert lm_only <= {"reason", "fit_mode", *extra_ok}, lm_only
    for col in ref.columns:
        assert col in mine.columns, f"column {col} missing"
        a, b = mine[col], ref[col]
        if pd.api.types.is_numeric_dtype(b) and not pd.api.types.is_bool_dtype(b):
            np.testing.assert_allclose(a.astype(float), b.astype(float), rtol=1e-6, atol=1e-9,
                                       err_msg=col)
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), col


def test_a_weightwatcher_script_runs_with_one_import_changed(ww_module) -> None:
    import lmlab.spectral as lm

    model, base = tiny_model("gpt2", 0), tiny_model("gpt2", 1)
    ref, mine = _run(ww_module, model, base), _run(lm, model, base)
    _same_frames(mine["described"], ref["described"])
    _same_frames(mine["details"], ref["details"])
    for col in DETERMINISTIC_EXTRA:
        assert col in mine["details"].columns, col
    _same_frames(mine["delta"], ref["delta"])
    assert mine["same"] is mine["details"]
    for key, value in ref["summary"].items():
        assert mine["summary"][key] == pytest.approx(value, rel=1e-9), key
    np.testing.assert_allclose(mine["esd"], ref["esd"], rtol=1e-9)
    assert len(mine["weights"]) == len(ref["weights"])
    np.testing.assert_array_equal(mine["weights"][0], ref["weights"][0])


def test_plot_saves_one_figure_per_layer(tmp_path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 96))
    watcher = WeightWatcher(model=model)
    details = watcher.analyze(plot=True, savefig=str(tmp_path / "img"))
    files = sorted(p.name for p in (tmp_path / "img").iterdir())
    assert files == [f"ww.layer{i}.esd.png" for i in sorted(details["layer_id"])]
    assert all((tmp_path / "img" / f).stat().st_size > 10_000 for f in files)


def test_skipped_layers_are_left_out_of_details_but_kept_in_table() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Linear(4, 4))
    watcher = WeightWatcher(model=model)
    details = watcher.analyze()
    assert details["layer_id"].tolist() == [1]
    assert watcher.table is not None
    assert watcher.table["status"].tolist() == ["success", "skipped"]


def test_summary_averages_successful_fits_only() -> None:
    watcher = WeightWatcher()
    details = pd.DataFrame({"alpha": [2.0, 4.0, float("nan")], "log_norm": [1.0, 3.0, 9.0],
                            "status": ["success", "success", "failed"]})
    summary = watcher.get_summary(details)
    assert summary == {"alpha": 3.0, "log_norm": 2.0}


def test_front_end_errors_are_one_line() -> None:
    with pytest.raises(LmlabError, match="no model to analyse"):
        WeightWatcher().analyze()
    with pytest.raises(LmlabError, match="no analysis yet"):
        WeightWatcher().get_summary()
    with pytest.raises(LmlabError, match="no layer is named"):
        WeightWatcher(model=torch.nn.Linear(8, 8)).get_ESD(layer="nope")


def test_get_esd_of_a_conv2d_layer_matches_weightwatcher(ww_module) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 32, 3))
    with contextlib.redirect_stdout(io.StringIO()):
        ref = ww_module.WeightWatcher(model=model).get_ESD(layer=3)
    assert len(ref) == 16 * 9
    np.testing.assert_allclose(WeightWatcher(model=model).get_ESD(layer=3), ref, rtol=1e-9)


def test_analyze_vectors_tabulates_every_eigenvector(ww_module) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.Linear(48, 40))
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(AttributeError):
        ww_module.WeightWatcher(model=model).analyze_vectors()  # broken in 0.7.7
    table = WeightWatcher(model=model).analyze_vectors()
    assert table.groupby("layer_id").size().to_dict() == {1: 32, 2: 40}
    evals = WeightWatcher(model=model).get_ESD(layer=1)
    np.testing.assert_allclose(np.sort(table.loc[table.layer_id == 1, "eval"]), evals,
                               rtol=1e-8)
    assert (table[["vec_entropy", "loc_ratio", "part_ratio"]] > 0).all().all()
