"""`lmlab spectral FOLDER_OF_CHECKPOINTS`: one table over steps, figures, resume, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lmlab.cli import main
from lmlab.errors import LmlabError
from lmlab.runs import RunDir
from lmlab.studies import get_study
from lmlab.studies.runner import build_config
from tests.conftest import tiny_model

PNG = b"\x89PNG\r\n\x1a\n"
FAST = ["--backend", "inprocess"]  # the default process pool is tested in tests/spectral


def _ckpt(path: Path, seed: int, mu: float | None = None) -> None:
    """A two-matrix state dict: Gaussian entries, or entries with a Pareto(mu) tail."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((120, 60)) if mu is None else (
        rng.pareto(mu, (120, 60)) * rng.choice([-1, 1], (120, 60)))
    t = torch.tensor(w, dtype=torch.float32)
    torch.save({"fc.weight": t, "out.weight": t.T.contiguous()}, path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    run = tmp_path / "training"
    run.mkdir()
    for step, mu in ((0, None), (500, 3.0), (1000, 1.5)):
        _ckpt(run / f"ckpt_{step}.pt", step, mu)
    (run / "config.json").write_text('{"lr": 0.1}')  # a trainer's own config: not weights
    return run


def _only_run(out: Path) -> Path:
    (run,) = (out / "spectral").iterdir()
    return run


def test_a_folder_of_checkpoints_gives_one_table_over_steps(
        folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    assert main(["spectral", str(folder), "--out", str(out), *FAST]) == 0
    run = _only_run(out)
    assert capsys.readouterr().out.strip().endswith(str(run))
    table = pd.read_csv(run / "spectra.csv")
    assert table.columns[:2].tolist() == ["step", "checkpoint"]
    assert table[["step", "checkpoint", "longname"]].values.tolist() == [
        [0, "ckpt_0.pt", "fc"], [0, "ckpt_0.pt", "out"], [500, "ckpt_500.pt", "fc"],
        [500, "ckpt_500.pt", "out"], [1000, "ckpt_1000.pt", "fc"], [1000, "ckpt_1000.pt", "out"]]
    mean = table.groupby("step")["alpha"].mean()
    assert mean[0] > mean[500] > mean[1000]  # heavier entry tails, smaller α

    summary = json.loads((run / "summary.json").read_text())
    assert get_study("spectral").SUMMARY.problems(summary) == []
    assert summary["read_as"] == "series" and summary["n_checkpoints"] == 3
    assert (summary["first_step"], summary["last_step"], summary["n_unreadable"]) == (0, 1000, 0)
    assert summary["alpha_mean_first"] == pytest.approx(mean[0])
    assert summary["alpha_mean"] == pytest.approx(mean[1000])  # the last checkpoint's

    steps = pd.read_csv(run / "series" / "steps.csv")
    assert steps["step"].tolist() == [0, 500, 1000]
    assert steps["alpha_mean"].tolist() == pytest.approx(mean.tolist())
    metrics = RunDir.open(run).read_metrics()
    assert sorted(set(metrics["step"])) == [0, 500, 1000] and len(metrics) == 6

    figures = {p.name for p in (run / "figures").iterdir()}
    assert figures == {"alpha_mean_over_steps.png", "alpha_heatmap.png",
                       "alpha_over_steps.png", "alpha_by_layer.png"}
    assert all((run / "figures" / f).read_bytes()[:8] == PNG for f in figures)
    report = (run / "report.md").read_text()
    assert "Read as **a folder of checkpoints**" in report and "steps 0 to 1000" in report
    assert main(["report", str(run)]) == 0  # redrawn from the saved result alone


def test_resume_analyses_only_the_new_checkpoint(folder: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    args = ["spectral", str(folder), "--out", str(out), *FAST]
    assert main(args) == 0
    run = _only_run(out)
    store = run / "series" / "cells.jsonl"
    before = store.read_bytes().splitlines()
    assert len(before) == 3

    _ckpt(folder / "ckpt_1500.pt", 7, 1.2)  # the training run wrote one more
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    assert _only_run(out) == run  # the same run directory
    after = store.read_bytes().splitlines()
    assert after[:3] == before and len(after) == 4  # only the new checkpoint was analysed
    assert json.loads(after[3])["key"].startswith("ckpt_1500.pt@")
    table = pd.read_csv(run / "spectra.csv")
    assert table["step"].unique().tolist() == [0, 500, 1000, 1500]
    assert json.loads((run / "summary.json").read_text())["last_step"] == 1500
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "finished" and meta["resumed"] == 1
    assert len(RunDir.open(run).read_metrics()) == 8  # every row once

    capsys.readouterr()
    assert main([*args, "--resume"]) == 0  # nothing new: nothing to do
    assert "finished already" in capsys.readouterr().err
    assert len(store.read_bytes().splitlines()) == 4


def test_an_unreadable_checkpoint_is_skipped_and_said(folder: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    data = (folder / "ckpt_500.pt").read_bytes()
    (folder / "ckpt_500.pt").write_bytes(data[:100])  # training killed mid-write
    out = tmp_path / "runs"
    assert main(["spectral", str(folder), "--out", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    assert "1 of 3 checkpoints could not be read and were skipped" in err and "ckpt_500.pt" in err
    run = _only_run(out)
    table = pd.read_csv(run / "spectra.csv")
    bad = table[table["status"] == "unreadable"]
    assert bad[["step", "checkpoint"]].values.tolist() == [[500, "ckpt_500.pt"]]
    assert "ckpt_500.pt" in bad["reason"].iloc[0]
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["n_checkpoints"], summary["n_unreadable"]) == (2, 1)
    assert "1 checkpoint(s) could not be read and were skipped" in (run / "report.md").read_text()

    (folder / "ckpt_500.pt").write_bytes(data)  # written again in full: --resume reads it
    assert main(["spectral", str(folder), "--out", str(out), *FAST, "--resume"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["n_checkpoints"], summary["n_unreadable"]) == (3, 0)


def test_no_checkpoint_readable_is_an_error(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "step_1.pt").write_bytes(b"not a checkpoint")
    assert main(["spectral", str(folder), "--out", str(tmp_path / "runs"), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmlab: error: none of the 1 checkpoints in") and "\n" not in err


@pytest.mark.parametrize("content", [[], ["notes.txt", "ckpt.pt"]])
def test_a_folder_without_checkpoints_is_one_line_exit_2(
        content: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "nothing"
    folder.mkdir()
    for name in content:
        (folder / name).write_text("x")
    assert main(["spectral", str(folder), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmlab: error: ") and "\n" not in err
    assert "neither model weights" in err and "checkpoint-N" in err
    assert not (tmp_path / "runs").exists()  # refused before a run directory is made


def test_trainer_checkpoint_folders_and_a_model_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "trainer"
    for step, seed in ((500, 0), (1000, 1)):
        tiny_model("gpt2", seed=seed).save_pretrained(out / f"checkpoint-{step}")
    runs = tmp_path / "runs"
    assert main(["spectral", str(out), "--out", str(runs), *FAST]) == 0
    table = pd.read_csv(_only_run(runs) / "spectra.csv")
    assert table["checkpoint"].unique().tolist() == ["checkpoint-500", "checkpoint-1000"]
    assert "transformer.h.0.attn.c_attn" in set(table["longname"])  # names from config.json

    tiny_model("gpt2", seed=2).save_pretrained(out)  # the final model at the top: one model
    runs2 = tmp_path / "runs2"
    assert main(["spectral", str(out), "--out", str(runs2), *FAST]) == 0
    run = _only_run(runs2)
    assert "step" not in pd.read_csv(run / "spectra.csv").columns
    summary = json.loads((run / "summary.json").read_text())
    assert summary["read_as"] == "model" and summary["n_checkpoints"] is None
    report = (run / "report.md").read_text()
    assert "Read as **one model**" in report and "It also holds 2 checkpoint(s)" in report

    from lmlab.studies._spectral_series import read_as

    assert read_as("series", out) == "series" and read_as("auto", out) == "model"
    assert read_as("model", out / "checkpoint-500") == "model"
    with pytest.raises(LmlabError, match="not a folder"):
        read_as("series", out / "checkpoint-500" / "model.safetensors")
    assert build_config("spectral", overrides=["read_as=series"]).read_as == "series"


def test_layers_are_checked_against_a_checkpoint_before_the_run(
        folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spectral", str(folder), "--layers", "nope", "--out", str(tmp_path / "r")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["spectral", str(folder), "--esd-layers", "fc", "--out", str(tmp_path / "r")]) == 2
    assert "folder of checkpoints; drop it" in capsys.readouterr().err
    assert main(["spectral", str(folder), "--layers", "fc", "--out", str(tmp_path / "r"),
                 *FAST]) == 0
    table = pd.read_csv(_only_run(tmp_path / "r") / "spectra.csv")
    assert set(table["longname"]) == {"fc"} and len(table) == 3


@pytest.mark.slow  # spawning two workers takes ~15 s on 2 busy cores
def test_two_workers_give_the_same_table(folder: Path, tmp_path: Path) -> None:
    assert main(["spectral", str(folder), "--out", str(tmp_path / "a"), *FAST]) == 0
    assert main(["spectral", str(folder), "--out", str(tmp_path / "b"), "--workers", "2"]) == 0
    a = pd.read_csv(_only_run(tmp_path / "a") / "spectra.csv")
    b = pd.read_csv(_only_run(tmp_path / "b") / "spectra.csv")
    assert b["alpha"].tolist() == pytest.approx(a["alpha"].tolist(), rel=1e-12)


def test_lmlab_run_spectral_resume_also_picks_up_new_checkpoints(folder: Path,
                                                                tmp_path: Path) -> None:
    """The series' resume is the runner's: `lmlab run spectral --set model=DIR --resume`
    analyses a checkpoint written after the run finished, like `lmlab spectral DIR --resume`."""
    out = tmp_path / "runs"
    args = ["run", "spectral", "--set", f"model={folder}", "--out", str(out), "--device", "cpu",
            "--set", "sweep.backend=inprocess"]
    assert main(args) == 0
    run = _only_run(out)
    _ckpt(folder / "ckpt_1500.pt", 7, 1.2)
    assert main([*args, "--resume"]) == 0
    assert _only_run(out) == run
    assert len((run / "series" / "cells.jsonl").read_bytes().splitlines()) == 4
    assert pd.read_csv(run / "spectra.csv")["step"].unique().tolist() == [0, 500, 1000, 1500]
