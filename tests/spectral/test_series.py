"""A folder of checkpoints as a series: names and steps, what is a series, α per step."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.spectral import analyze
from lmlab.spectral.options import AnalyzeOptions
from lmlab.spectral.series import (
    analyze_series,
    checkpoint_step,
    find_checkpoints,
    has_model_weights,
    is_checkpoint_folder,
)
from lmlab.sweep import SweepConfig

INPROCESS = SweepConfig(backend="inprocess")


@pytest.mark.parametrize(("name", "is_dir", "step"), [
    ("step100", True, 100), ("step-100", True, 100), ("step_100", True, 100),
    ("Step_7", True, 7), ("step_0010", True, 10),
    ("step_5.safetensors", False, 5), ("step-5.pt", False, 5),
    ("ckpt_400.pt", False, 400), ("ckpt-3.pth", False, 3), ("ckpt12.bin", False, 12),
    ("ckpt_8.ckpt", False, 8), ("ckpt_9", True, 9),
    ("checkpoint-500", True, 500), ("checkpoint_20", True, 20), ("checkpoint-1.pt", False, 1),
])
def test_every_documented_name_gives_its_step(name: str, is_dir: bool, step: int) -> None:
    assert checkpoint_step(name, is_dir=is_dir) == step
    assert checkpoint_step(name) == step


@pytest.mark.parametrize(("name", "is_dir"), [
    ("ckpt.pt", False), ("checkpoint", True), ("step_1.json", False), ("step_1.pt.tmp", False),
    ("steps_1", True), ("my_step_1", True), ("step_1_final", True), ("train_state.pt", False),
    ("step_1.pt", True),      # a folder named like a file
    ("checkpoint-500", False),  # a file without a weights suffix
    ("step_", True), ("step_-1", True),
])
def test_other_names_are_not_checkpoints(name: str, is_dir: bool) -> None:
    assert checkpoint_step(name, is_dir=is_dir) is None


def test_steps_are_ordered_as_numbers_whatever_the_zero_padding(tmp_path: Path) -> None:
    for name in ("step_10", "step_9", "step_0002", "step_100", "step_011"):
        (tmp_path / name).mkdir()
    found = find_checkpoints(tmp_path)
    assert [c.step for c in found] == [2, 9, 10, 11, 100]
    assert [c.name for c in found] == ["step_0002", "step_9", "step_10", "step_011", "step_100"]


def test_files_and_folders_mix_and_other_entries_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "checkpoint-500").mkdir()
    for name in ("ckpt_3.pt", "ckpt.pt", "config.json", "err_arr.json", "ckpt_4.pt.tmp-x"):
        (tmp_path / name).write_bytes(b"x")
    os.mkfifo(tmp_path / "ckpt_7.pt")  # a FIFO would block a reader: not a checkpoint
    assert [(c.step, c.name) for c in find_checkpoints(tmp_path)] == [
        (3, "ckpt_3.pt"), (500, "checkpoint-500")]


def test_two_children_with_one_step_are_refused(tmp_path: Path) -> None:
    (tmp_path / "step_5").mkdir()
    (tmp_path / "step-005").mkdir()
    with pytest.raises(LmlabError, match=r"step-005 and step_5 .* are both step 5"):
        find_checkpoints(tmp_path)


def test_a_model_directory_is_not_a_series_even_with_checkpoints_inside(tmp_path: Path) -> None:
    (tmp_path / "checkpoint-500").mkdir()
    assert is_checkpoint_folder(tmp_path)
    (tmp_path / "config.json").write_text("{}")  # a config alone is no weights
    assert is_checkpoint_folder(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")  # a Trainer's output dir: final model
    assert has_model_weights(tmp_path) and not is_checkpoint_folder(tmp_path)
    assert not is_checkpoint_folder(tmp_path / "missing")
    assert not is_checkpoint_folder(tmp_path / "model.safetensors")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not is_checkpoint_folder(empty)


# ----------------------------------------------------------------------------- α per step

_RNG = np.random.default_rng(0)
_GAUSS = _RNG.standard_normal((200, 100))


def _heavy(mu: float) -> np.ndarray:
    """Entries with a Pareto tail of index ``mu``: smaller ``mu``, heavier ESD tail."""
    rng = np.random.default_rng(1)
    return rng.pareto(mu, size=(200, 100)) * rng.choice([-1, 1], size=(200, 100))


def _save(path: Path, w: np.ndarray) -> None:
    t = torch.tensor(w, dtype=torch.float64)
    torch.save({"fc.weight": t, "proj.weight": t.T.contiguous()}, path)


def _series(folder: Path) -> dict[int, np.ndarray]:
    """Step -> weights: Gaussian, the same ×3, then heavier and heavier tails."""
    weights = {0: _GAUSS, 10: 3 * _GAUSS, 20: _heavy(3.0), 30: _heavy(1.5)}
    folder.mkdir(exist_ok=True)
    for step, w in weights.items():
        _save(folder / f"ckpt_{step}.pt", w)
    return weights


def test_alpha_per_step_follows_the_known_change(tmp_path: Path) -> None:
    weights = _series(tmp_path / "run")
    table = analyze_series(find_checkpoints(tmp_path / "run"), AnalyzeOptions(),
                           sweep=INPROCESS, progress=False)
    assert table.columns[:2].tolist() == ["step", "checkpoint"]
    assert table["step"].tolist() == [0, 0, 10, 10, 20, 20, 30, 30]
    assert (table["status"] == "success").all()
    alpha = table.groupby("step")["alpha"].mean()
    # α is scale-free: three times the weights, the same α (to rounding)
    assert alpha[10] == pytest.approx(alpha[0], rel=1e-6)  # weights go through float32
    # a Gaussian matrix has no heavy tail (α > 4); heavier entry tails, smaller α
    assert alpha[0] > 4 and alpha[0] > alpha[20] > alpha[30]
    assert alpha[30] < 2  # the Pareto(1.5) entries: a very heavy tail, "over-trained" zone
    # each step's rows are analyze()'s rows of that checkpoint
    direct = analyze(tmp_path / "run" / "ckpt_20.pt", progress=False)
    got = table[table["step"] == 20]
    assert got["alpha"].tolist() == pytest.approx(direct["alpha"].tolist())
    assert got["longname"].tolist() == direct["longname"].tolist() == ["fc", "proj"]
    assert len(weights) == table["step"].nunique()


def test_a_store_keeps_finished_checkpoints_and_a_rerun_does_only_new_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lmlab.spectral

    folder = tmp_path / "run"
    folder.mkdir()
    for step in (0, 1, 2):
        _save(folder / f"step_{step}.pt", _GAUSS * (step + 1))
    calls: list[str] = []
    real = lmlab.spectral.analyze

    def counting(path, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(Path(path).name)
        return real(path, **kwargs)

    monkeypatch.setattr(lmlab.spectral, "analyze", counting)
    store = tmp_path / "store"
    first = analyze_series(find_checkpoints(folder), AnalyzeOptions(), sweep=INPROCESS,
                           store=store, progress=False)
    assert calls == ["step_0.pt", "step_1.pt", "step_2.pt"]
    lines = (store / "cells.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["key"].split("@")[0] for line in lines] == [
        "step_0.pt", "step_1.pt", "step_2.pt"]

    _save(folder / "step_3.pt", _heavy(1.5))  # training went on
    calls.clear()
    again = analyze_series(find_checkpoints(folder), AnalyzeOptions(), sweep=INPROCESS,
                           store=store, progress=False)
    assert calls == ["step_3.pt"]
    assert again["step"].unique().tolist() == [0, 1, 2, 3]
    assert (store / "cells.jsonl").read_bytes().splitlines()[:3] == lines  # untouched
    assert again[again["step"] < 3]["alpha"].tolist() == pytest.approx(first["alpha"].tolist())

    _save(folder / "step_1.pt", _heavy(3.0))  # a checkpoint rewritten: analysed again
    calls.clear()
    third = analyze_series(find_checkpoints(folder), AnalyzeOptions(), sweep=INPROCESS,
                           store=store, progress=False)
    assert calls == ["step_1.pt"]
    assert third[third["step"] == 1]["alpha"].mean() < first[first["step"] == 1]["alpha"].mean()


def test_an_unreadable_checkpoint_is_recorded_and_tried_again(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    _series(folder)
    good = (folder / "ckpt_20.pt").read_bytes()
    (folder / "ckpt_20.pt").write_bytes(good[: len(good) // 2])  # killed while writing
    (folder / "step_40").mkdir()  # a folder without weights
    store = tmp_path / "store"
    table = analyze_series(find_checkpoints(folder), AnalyzeOptions(), sweep=INPROCESS,
                           store=store, progress=False)
    bad = table[table["status"] == "unreadable"]
    assert bad[["step", "checkpoint"]].values.tolist() == [[20, "ckpt_20.pt"], [40, "step_40"]]
    assert "ckpt_20.pt" in bad["reason"].iloc[0] and "\n" not in bad["reason"].iloc[0]
    assert "holds no weights" in bad["reason"].iloc[1]
    assert not bad["reason"].iloc[0].startswith("LmlabError")
    assert bad["alpha"].isna().all()
    assert set(table.loc[table["status"] != "unreadable", "step"]) == {0, 10, 30}
    stored = [json.loads(x)["key"] for x in (store / "cells.jsonl").read_text().splitlines()]
    assert len(stored) == 3  # the unreadable ones are not stored ...
    (folder / "ckpt_20.pt").write_bytes(good)  # ... so once whole, a rerun reads it
    again = analyze_series(find_checkpoints(folder), AnalyzeOptions(), sweep=INPROCESS,
                           store=store, progress=False)
    assert (again.loc[again["step"] == 20, "status"] == "success").all()


@pytest.mark.slow  # spawning the workers takes ~15 s on 2 busy cores
def test_a_process_pool_gives_the_same_table(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    _series(folder)
    one = analyze_series(find_checkpoints(folder), AnalyzeOptions(), sweep=INPROCESS,
                         progress=False)
    two = analyze_series(find_checkpoints(folder), AnalyzeOptions(),
                         sweep=SweepConfig(backend="process", workers=2), progress=False)
    assert two["step"].tolist() == one["step"].tolist()
    assert two["alpha"].tolist() == pytest.approx(one["alpha"].tolist(), rel=1e-12)


def test_a_small_series_runs_in_this_process_by_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lmlab.spectral

    _series(tmp_path / "run")
    calls: list[str] = []
    real = lmlab.spectral.analyze

    def counting(path, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(Path(path).name)
        return real(path, **kwargs)

    monkeypatch.setattr(lmlab.spectral, "analyze", counting)  # seen only in this process
    analyze_series(find_checkpoints(tmp_path / "run"), AnalyzeOptions(), progress=False)
    assert calls == ["ckpt_0.pt", "ckpt_10.pt", "ckpt_20.pt", "ckpt_30.pt"]
