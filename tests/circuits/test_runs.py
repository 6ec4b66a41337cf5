"""find_settings, read_err_arr and the bad run folders: measure what can be measured, list the
rest one line each, and a one-line error naming the file only when nothing can be done."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from lmlab.circuits import (
    MeasureConfig,
    expected_steps,
    find_settings,
    load_run,
    measure_runs,
    read_err_arr,
)
from lmlab.errors import LmlabError
from tests.circuits._layout import D, V, write_source_run

CFG = MeasureConfig(ranks=(1, 4), position_ranks=(2,), screenot_k=(3,), baseline_draws=50)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path / "cache"))


class _Touch:
    """Unpickled, creates ``marker``: the stand-in for any code a file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return Path.touch, (self.marker,)


def one_line(lines: list[str]) -> None:
    assert all("\n" not in line for line in lines), lines


def measured_steps(df: pd.DataFrame, setting: str) -> list[int]:
    return sorted(df.loc[df.setting == setting, "step"].unique().tolist())


# ------------------------------------------------------------------------------ layouts


def test_one_run_folder_is_one_setting(tmp_path: Path) -> None:
    write_source_run(tmp_path / "my_run")
    found = find_settings(tmp_path / "my_run")
    assert found.settings == {"my_run": tmp_path / "my_run"} and found.problems == []


def test_folder_of_settings_ignores_other_folders(tmp_path: Path) -> None:
    write_source_run(tmp_path / "a")
    write_source_run(tmp_path / "b", seed=1)
    (tmp_path / "sweep").mkdir()                 # lmlab's sweep store: no run files
    (tmp_path / "sweep" / "cells.json").write_text("[]")
    (tmp_path / "notes.txt").write_text("x")
    found = find_settings(tmp_path)
    assert list(found.settings) == ["a", "b"] and found.problems == []


def test_an_lmlab_study_run_folder_one_level_up(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"preset": "quick"}')     # the study's config
    (tmp_path / "measures.csv").write_text("step\n")
    write_source_run(tmp_path / "settings" / "infinite_pool_size")
    write_source_run(tmp_path / "settings" / "pool_100", seed=1)
    (tmp_path / "settings" / "sweep").mkdir()
    found = find_settings(tmp_path)
    assert list(found.settings) == ["infinite_pool_size", "pool_100"]
    assert found.problems == []


def test_a_setting_folder_that_is_not_there(tmp_path: Path) -> None:
    write_source_run(tmp_path / "a")
    df = measure_runs({"a": tmp_path / "a", "b": tmp_path / "b"}, CFG)
    assert df["setting"].unique().tolist() == ["a"]
    assert df.attrs["problems"] == [f"b: no such run folder {tmp_path / 'b'}: not measured"]


def test_expected_steps_follow_the_authors_trainer() -> None:
    assert expected_steps({"num_epoch": 20000, "n_save": 100})[:3] == [0, 200, 400]
    assert len(expected_steps({"num_epoch": 20000, "n_save": 100})) == 101
    # up_to_first_save: (1 + epoch) in 2**k for k < int(log2(num_epoch // n_save)) = 7
    assert expected_steps({"num_epoch": 20000, "n_save": 100, "up_to_first_save": True})[:9] \
        == [0, 1, 2, 4, 8, 16, 32, 64, 200]
    assert expected_steps({"num_epoch": 64, "n_save": 8, "up_to_first_save": True}) \
        == [0, 1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]
    assert expected_steps({"num_epoch": 20000}) == []


# ------------------------------------------------------------------------------ err_arr.json


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "err_arr.json"
    path.write_text(json.dumps(data))
    return path


def test_err_arr_layouts(tmp_path: Path) -> None:
    cols = ["loss_train", "err_train", "loss_test", "err_test", "loss_ood", "err_ood"]
    dense = [dict(zip(["epoch", *cols], [e, 4.0, .9, 4.1, .91 - e / 10, 4.2, .98], strict=True))
             for e in range(3)]
    want = [0.91, 0.81, 0.71]
    got = read_err_arr(_write(tmp_path, dense))
    assert got.index.tolist() == [0, 1, 2] and got["err_test"].tolist() == pytest.approx(want)
    # lmlab's sparse log: epoch −1 with nulls, a cheap and a full entry for one epoch
    sparse = [{"epoch": -1, "loss_train": None, "err_train": None, "err_test": 0.95,
               "err_ood": 0.99, "full": True, "err_ood_nofloor": 0.97},
              {"epoch": 9, "err_test": 0.5, "err_ood": 0.6, "full": True,
               "err_ood_nofloor": 0.55},
              {"epoch": 9, "err_test": 0.4, "err_ood": 0.7}]
    got = read_err_arr(_write(tmp_path, sparse))
    assert got.index.tolist() == [-1, 9]
    assert got.loc[9, "err_test"] == 0.5 and got.loc[9, "err_ood_nofloor"] == 0.55
    assert math.isnan(got.loc[-1, "loss_train"])
    # a dict of columns, with and without epochs; rows of 6 (authors' err_arr) and 7 numbers
    got = read_err_arr(_write(tmp_path, {"err_test": want, "err_ood": [1, 1, 1]}))
    assert got.index.tolist() == [0, 1, 2] and got["err_test"].tolist() == pytest.approx(want)
    got = read_err_arr(_write(tmp_path, {"epoch": [4, 5], "err_ood": [1, 0]}))
    assert got.index.tolist() == [4, 5]
    rows = [[4.0, .9, 4.1, w, 4.2, .98] for w in want]
    assert read_err_arr(_write(tmp_path, rows))["err_test"].tolist() == pytest.approx(want)
    rows7 = [[e + 10, 4.0, .9, 4.1, w, 4.2, .98] for e, w in enumerate(want)]
    assert read_err_arr(_write(tmp_path, rows7)).index.tolist() == [10, 11, 12]


@pytest.mark.parametrize("data, message", [
    ({"a": 1}, "not an err_arr"),
    ([[1, 2]], r"rows of \[2\] numbers"),
    ([{"epoch": 0, "foo": 1}], "none of the columns"),
    ([{"epoch": 0, "err_test": "high"}], "'err_test' holds values that are not numbers"),
    ({"err_test": [1, 2], "err_ood": [1]}, "different lengths"),
])
def test_err_arr_refused_in_one_line(tmp_path: Path, data: Any, message: str) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(LmlabError, match=message) as info:
        read_err_arr(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------ bad folders


def test_gaps_missing_err_arr_and_config_are_measured_and_listed(tmp_path: Path) -> None:
    write_source_run(tmp_path / "gappy", drop=(10, 30))
    write_source_run(tmp_path / "no_err", err=False)
    write_source_run(tmp_path / "no_config", config=False)
    found = find_settings(tmp_path)
    assert list(found.settings) == ["gappy", "no_config", "no_err"]
    one_line(found.problems)
    gappy, = [p for p in found.problems if p.startswith("gappy:")]
    assert "2 of 5 checkpoints missing" in gappy and "ckpt_10.pt, ckpt_30.pt" in gappy
    no_err, = [p for p in found.problems if p.startswith("no_err:")]
    assert "no err_arr.json" in no_err and str(tmp_path / "no_err") in no_err
    no_config, = [p for p in found.problems if p.startswith("no_config:")]
    assert "no config.json" in no_config
    df = measure_runs(found, CFG)
    assert measured_steps(df, "gappy") == [0, 20, 40]
    assert measured_steps(df, "no_err") == measured_steps(df, "no_config") == [0, 10, 20, 30, 40]
    assert df.loc[df.setting == "no_err", "err_ood"].isna().all()
    assert df.loc[(df.setting == "no_config") & (df.step > 0), "err_ood"].notna().all()
    assert df.attrs["problems"] == found.problems        # carried over, not repeated
    assert df.attrs["missing"]["gappy"] == ["ckpt_10.pt", "ckpt_30.pt"]


def _foreign(path: Path) -> None:
    """A checkpoint of another architecture: an MLP block and a wider embedding."""
    sd = torch.load(path, weights_only=True)
    sd["h.0.feed_forward.0.weight"] = torch.zeros(4, D)
    sd["embed.embed.weight"] = torch.zeros(V + 3, D)
    torch.save(sd, path)


def test_foreign_malicious_and_nan_checkpoints_are_skipped(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_source_run(run)
    marker = tmp_path / "code-ran"
    _foreign(run / "ckpt_10.pt")
    sd = torch.load(run / "ckpt_20.pt", weights_only=True)
    torch.save({**sd, "x": _Touch(marker)}, run / "ckpt_20.pt")       # would run code
    sd = torch.load(run / "ckpt_30.pt", weights_only=True)
    sd["h.1.mha.W_k.weight"][0, 0] = float("nan")
    torch.save(sd, run / "ckpt_30.pt")
    df = measure_runs(find_settings(tmp_path), CFG)
    assert not marker.exists()
    assert measured_steps(df, "run") == [0, 40]
    problems = df.attrs["problems"]
    one_line(problems)
    assert len(problems) == 3
    ten, twenty, thirty = problems
    assert "ckpt_10.pt" in ten and "h.0.feed_forward.0.weight" in ten
    assert str(run / "ckpt_20.pt") in twenty and "weights_only" not in twenty
    assert "ckpt_30.pt" in thirty and "h.1.mha.W_k.weight holds NaN" in thirty
    with pytest.raises(LmlabError, match="ckpt_20.pt"):   # strict: the first unreadable file
        load_run(run)
    assert not marker.exists()


def test_setting_with_only_foreign_checkpoints_is_left_out(tmp_path: Path) -> None:
    write_source_run(tmp_path / "good")
    write_source_run(tmp_path / "alien", num_epoch=20, n_save=2)
    for path in (tmp_path / "alien").glob("ckpt*.pt"):
        _foreign(path)
    write_source_run(tmp_path / "relative")
    cfg = json.loads((tmp_path / "relative" / "config.json").read_text())
    (tmp_path / "relative" / "config.json").write_text(json.dumps({**cfg, "pos": "relative"}))
    write_source_run(tmp_path / "empty", num_epoch=20, n_save=2, drop=(0, 10, 20))
    found = find_settings(tmp_path)
    assert list(found.settings) == ["alien", "good"]      # alien's weights are read later
    df = measure_runs(found, CFG)
    assert df["setting"].unique().tolist() == ["good"]
    problems = df.attrs["problems"]
    one_line(problems)
    alien = [p for p in problems if p.startswith("alien:")]
    assert len(alien) == 1 and "not measured" in alien[0] and "ckpt_0.pt" in alien[0]
    assert any(p.startswith("relative:") and "pos='relative'" in p for p in problems)
    assert any(p.startswith("empty:") and "no checkpoints" in p for p in problems)


def test_a_one_layer_control_is_left_out(tmp_path: Path) -> None:
    from lmlab.models.rotary_tf import RotaryConfig, TFModel

    write_source_run(tmp_path / "infinite_pool_size")
    one = tmp_path / "one_layer_infinite_pool_size"
    write_source_run(one, num_epoch=10, n_save=1)
    for k in (0, 10):
        model = TFModel(RotaryConfig(vocab_size=V, d_model=D, num_layers=1, max_seq_len=16))
        torch.save(model.state_dict(), one / f"ckpt_{k}.pt")
    df = measure_runs(find_settings(tmp_path), CFG)
    assert df["setting"].unique().tolist() == ["infinite_pool_size"]
    line, = df.attrs["problems"]
    assert line.startswith("one_layer_infinite_pool_size:") and "needs at least 2 layers" in line


def test_nothing_measurable_is_one_line_naming_the_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_source_run(run, num_epoch=10, n_save=1)
    _foreign(run / "ckpt_0.pt")
    _foreign(run / "ckpt_10.pt")
    with pytest.raises(LmlabError) as info:
        measure_runs(find_settings(run), CFG)
    text = str(info.value)
    assert "\n" not in text and "ckpt_0.pt" in text and str(run) in text
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil"
    write_source_run(evil, num_epoch=10, n_save=1, drop=(10,))
    torch.save({"x": _Touch(marker)}, evil / "ckpt_0.pt")
    with pytest.raises(LmlabError) as info:
        measure_runs({"evil": evil}, CFG)
    assert "\n" not in str(info.value) and str(evil / "ckpt_0.pt") in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "no such folder"),
    (lambda p: p.mkdir(), "no run folders in"),
    (lambda p: p.write_text("x"), "is a file"),
    (lambda p: (p / "a").mkdir(parents=True) or (p / "a" / "config.json").write_text("{}"),
     "nothing to measure in .*a: no checkpoints"),
])
def test_find_settings_refuses_in_one_line(tmp_path: Path, make: Callable[[Path], Any],
                                           message: str) -> None:
    root = tmp_path / "root"
    make(root)
    with pytest.raises(LmlabError, match=message) as info:
        find_settings(root)
    assert "\n" not in str(info.value) and str(root) in str(info.value)


def test_unreadable_config_and_err_arr_are_problems(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_source_run(run)
    (run / "config.json").write_text("{not json")
    (run / "err_arr.json").write_text('{"a": 1}')
    found = find_settings(run)
    assert any("cannot read" in p and "config.json" in p for p in found.problems)
    df = measure_runs(found, CFG)
    assert measured_steps(df, "run") == [0, 10, 20, 30, 40]
    assert df["err_test"].isna().all()
    assert any("err_arr.json is not an err_arr" in p for p in df.attrs["problems"])
    one_line(df.attrs["problems"])


def test_lmlab_training_output_is_read(tmp_path: Path) -> None:
    """lmlab's own run folder (sparse err_arr with the epoch −1 entry) measured like any."""
    from lmlab.studies.induction_train import TrainSetting, train_setting

    setting = TrainSetting("tiny", pool_size=None, steps=4, save_every=2, eval_every=1,
                           eval_cheap=10, eval_full=20)
    train_setting(setting, tmp_path / "tiny")
    found = find_settings(tmp_path)
    assert list(found.settings) == ["tiny"] and found.problems == []
    df = measure_runs(found, MeasureConfig(ranks=(1, 5), baseline_draws=20))
    rows = df.set_index("step")
    log = json.loads((tmp_path / "tiny" / "err_arr.json").read_text())
    full = {e["epoch"]: e for e in log if e.get("full")}
    for step in (0, 2, 4):
        assert rows.loc[step, "err_ood"] == pytest.approx(full[step - 1]["err_ood"])
        assert rows.loc[step, "err_ood_nofloor"] == pytest.approx(
            full[step - 1]["err_ood_nofloor"])
    assert np.isfinite(rows["zscore"]).all()
