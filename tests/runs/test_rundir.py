from __future__ import annotations

import json
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

import lmlab.runs.rundir as rundir_module
from lmlab.config import config_from_dict
from lmlab.errors import LmlabError
from lmlab.runs import RunDir


@dataclass(frozen=True)
class Opt:
    lr: float = 0.01
    betas: tuple[float, ...] = (0.9, 0.99)


@dataclass(frozen=True)
class Cfg:
    seed: int = 1
    out: Path = Path("out")
    opt: Opt = field(default_factory=Opt)


def test_create_makes_layout(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "runs", "heavy_tails", name="quick")
    assert run.path.parent == tmp_path / "runs" / "heavy_tails"
    assert re.fullmatch(r"\d{8}-\d{6}-quick", run.path.name)
    assert run.figures_dir == run.path / "figures" and run.figures_dir.is_dir()
    assert run.checkpoints_dir == run.path / "checkpoints" and run.checkpoints_dir.is_dir()


def test_create_adds_suffix_on_collision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rundir_module.time, "strftime", lambda fmt: "20240101-120000")
    names = [RunDir.create(tmp_path, "s", "x").path.name for _ in range(3)]
    assert names == ["20240101-120000-x", "20240101-120000-x-2", "20240101-120000-x-3"]


def test_create_sanitises_names(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "my study", name="a/b c")
    assert run.path.parent.name == "my-study"
    assert run.path.name.endswith("-a-b-c")
    with pytest.raises(LmlabError, match="run name"):
        RunDir.create(tmp_path, "s", name="///")


def test_create_under_a_regular_file_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    with pytest.raises(LmlabError) as err:
        RunDir.create(blocker / "runs", "s")
    assert str(blocker / "runs") in str(err.value)
    assert "writable" in str(err.value)
    with pytest.raises(LmlabError, match="is a file"):
        RunDir.create(blocker, "s")


def test_create_refuses_when_disk_is_nearly_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        rundir_module.shutil, "disk_usage", lambda p: usage._replace(free=10 * 1024**2)
    )
    with pytest.raises(LmlabError) as err:
        RunDir.create(tmp_path / "runs", "s")
    assert "10 MB free" in str(err.value) and str(tmp_path / "runs") in str(err.value)
    assert not (tmp_path / "runs" / "s").exists()


def test_open_requires_config(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "s")
    with pytest.raises(LmlabError, match="no config.json"):
        RunDir.open(run.path)
    with pytest.raises(LmlabError, match="no run directory"):
        RunDir.open(tmp_path / "missing")
    run.save_config(Cfg())
    assert RunDir.open(run.path) == run


def test_config_and_meta_round_trip(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "s")
    cfg = Cfg(seed=5, opt=Opt(betas=(0.5, 0.6)))
    run.save_config(cfg, meta={"study": "s", "preset": "quick", "device": "cpu"})
    data = run.read_config()
    assert data["_study"] == "s" and data["_preset"] == "quick"
    assert data["opt"]["betas"] == [0.5, 0.6] and data["out"] == "out"
    assert config_from_dict(Cfg, data) == cfg
    assert json.loads((run.path / "meta.json").read_text())["device"] == "cpu"
    run.update_meta({"duration_s": 12.5})
    assert run.read_meta() == {
        "study": "s",
        "preset": "quick",
        "device": "cpu",
        "duration_s": 12.5,
    }


def test_config_without_meta_has_no_metadata_keys(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "s")
    run.save_config(Cfg())
    assert not any(k.startswith("_") for k in run.read_config())
    assert not (run.path / "meta.json").exists()
    assert run.read_meta() == {}


def test_metrics_append_and_read(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "s")
    assert run.read_metrics().empty
    run.log_metrics({"step": 0, "loss": 3.0})
    run.log_metrics({"step": i, "loss": 3.0 / (i + 1)} for i in range(1, 3))
    run.log_metrics({"step": 3, "loss": float("nan"), "acc": 0.5})
    df = run.read_metrics()
    assert df["step"].tolist() == [0, 1, 2, 3]
    assert df["loss"].iloc[:3].tolist() == [3.0, 1.5, 1.0] and pd.isna(df["loss"].iloc[3])
    assert pd.isna(df["acc"].iloc[0]) and df["acc"].iloc[3] == 0.5
    assert "NaN" not in run.metrics_path.read_text()


def test_torn_last_line_is_ignored_and_appends_start_fresh(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "s")
    run.log_metrics([{"step": 0, "loss": 1.0}, {"step": 1, "loss": 0.5}])
    with open(run.metrics_path, "a") as handle:
        handle.write('{"step": 2, "lo')  # a crash mid-write
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run.read_metrics()["step"].tolist() == [0, 1]
    run.log_metrics({"step": 2, "loss": 0.25})  # resumed run
    with pytest.warns(UserWarning, match="corrupt line 3"):
        df = run.read_metrics()
    assert df["step"].tolist() == [0, 1, 2]
    assert df["loss"].tolist() == [1.0, 0.5, 0.25]


def test_summary_tables_and_figures(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "s")
    run.save_summary({"alpha": 2.1, "bad": float("nan")})
    assert run.read_summary() == {"alpha": 2.1, "bad": None}
    table = pd.DataFrame({"layer": [0, 1], "alpha": [2.0, 3.0]})
    assert run.save_table("layers", table) == run.path / "layers.csv"
    parquet = run.save_table("tables/layers.parquet", table)
    pd.testing.assert_frame_equal(pd.read_parquet(parquet), table)
    with pytest.raises(LmlabError, match="inside the run directory"):
        run.save_table("../escape.csv", table)

    from matplotlib.figure import Figure

    fig = Figure()
    fig.add_subplot().plot([1, 2, 3])
    path = run.save_figure(fig, "loss")
    assert path == run.figures_dir / "loss.png" and path.stat().st_size > 0


def test_read_summary_errors(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "s")
    with pytest.raises(LmlabError, match="no summary.json"):
        run.read_summary()
    (run.path / "summary.json").write_text("{broken")
    with pytest.raises(LmlabError, match="corrupt"):
        run.read_summary()


def test_resume_space_check_is_sized_from_the_largest_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replacing a checkpoint writes the new one beside the old: the disk must hold one more."""
    run = RunDir.create(tmp_path, "s")
    (run.checkpoints_dir / "last.pt").write_bytes(b"\0" * 1024)
    usage = shutil.disk_usage(tmp_path)
    free = {"bytes": 60 * 1024**2}
    monkeypatch.setattr(rundir_module.shutil, "disk_usage",
                        lambda p: usage._replace(free=free["bytes"]))
    run.check_writable()  # a small checkpoint: the 50 MB floor applies, 60 MB free is enough
    big = run.checkpoints_dir / "sgd" / "last.pt"
    big.parent.mkdir()
    with big.open("wb") as f:
        f.truncate(100 * 1024**2)  # a sparse 100 MB checkpoint
    with pytest.raises(LmlabError, match=r"only 60 MB free .*; free at least 105 MB"):
        run.check_writable()
    free["bytes"] = 106 * 1024**2
    run.check_writable()


def test_update_meta_can_drop_keys(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "s")
    run.update_meta({"status": "failed", "error": "disk full"})
    run.update_meta({"status": "finished"}, drop=["error", "absent"])
    assert run.read_meta() == {"status": "finished"}


def test_a_failed_metrics_append_is_one_line_and_leaves_no_half_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    run = RunDir.create(tmp_path, "s")
    run.log_metrics({"step": 1, "loss": 2.0})
    before = run.metrics_path.read_bytes()

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr("lmlab.runs.io.os.fsync", eio)
    with pytest.raises(LmlabError) as err:
        run.log_metrics({"step": 2, "loss": 1.0})
    monkeypatch.undo()
    assert str(err.value) == (f"cannot append to {run.metrics_path}: Input/output error; check "
                              "that the run directory is writable and the disk is not full")
    assert run.metrics_path.read_bytes() == before


def test_remove_temporaries_of_a_run(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "s")
    left = run.checkpoints_dir / ".last.pt.99-abcd1234.tmp"
    left.write_bytes(b"half")
    assert run.remove_temporaries() == [left] and not left.exists()
    assert run.remove_temporaries() == []
