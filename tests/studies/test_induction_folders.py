"""``lmlab run induction --set checkpoints=DIR`` on folders with problems: what can be measured
is measured and the rest is listed in the report; a folder where nothing can be measured is
refused in one line (exit 2) before a run directory exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmlab.cli import main
from lmlab.models.rotary_tf import RotaryConfig, TFModel
from lmlab.studies import load_result
from tests.test_bad_input import study_error

STEPS = (0, 20, 40)
ERR_KEYS = ["loss_train", "err_train", "loss_test", "err_test", "loss_ood", "err_ood"]


def make_run(folder: Path, *, seed: int, layers: int = 2, config: bool = True,
             err_arr: bool = True, steps: tuple[int, ...] = STEPS) -> Path:
    """A run folder in the authors' layout with random weights and a dense error log whose
    OOD error drops below 0.5 at step 26."""
    folder.mkdir(parents=True)
    if config:
        (folder / "config.json").write_text(json.dumps(
            {"seed": seed, "vocab_size": 64, "d_model": 64, "num_heads": 1,
             "num_layers": layers, "pos": "rotary", "rotary_theta": 10000.0,
             "pool_size": None, "num_epoch": 40, "n_save": 2, "up_to_first_save": False,
             "device": "cuda"}))
    for k in steps:
        torch.manual_seed(seed * 100 + k)
        torch.save(TFModel(RotaryConfig(num_layers=layers)).state_dict(),
                   folder / f"ckpt_{k}.pt")
    if err_arr:
        rows = [{"epoch": e, **dict.fromkeys(ERR_KEYS, 0.9), "err_ood": 0.98 if e < 25 else 0.3}
                for e in range(40)]
        (folder / "err_arr.json").write_text(json.dumps(rows))
    return folder


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A folder of five settings with problems, measured from the command line."""
    root = tmp_path_factory.mktemp("folders") / "runs"
    make_run(root / "good", seed=1)
    make_run(root / "gappy", seed=2, steps=(0, 40))
    make_run(root / "bare", seed=3, err_arr=False, config=False)
    make_run(root / "one_layer", seed=5, layers=1)
    make_run(root / "corrupt", seed=6)
    (root / "corrupt" / "ckpt_20.pt").write_bytes(b"not a checkpoint")
    (root / "notes").mkdir()                                # not a run folder: ignored
    out = root.parent / "out"
    assert main(["run", "induction", "--set", f"checkpoints={root}", "--set", "ranks_plotted=5",
                 "--out", str(out)]) == 0
    (run_dir,) = (out / "induction").iterdir()
    return root, run_dir


def test_what_can_be_measured_is_measured(folder_run: tuple[Path, Path]) -> None:
    _, run_dir = folder_run
    s = json.loads((run_dir / "summary.json").read_text())
    checkpoints = {k: v["checkpoints"] for k, v in s["settings"].items()}
    assert checkpoints == {"good": 3, "gappy": 2, "bare": 3, "corrupt": 2, "one_layer": 0}
    one_layer = s["settings"]["one_layer"]          # not measurable: its errors only
    assert one_layer["final_err_ood"] == pytest.approx(0.3) and one_layer["zscore_at_end"] is None
    back = load_result(run_dir)
    assert set(back.errors) == set(s["settings"])
    assert len(back.pool_sweep) == 3                # the measured settings with an error log
    assert set(back.measures["setting"]) == {"good", "gappy", "bare", "corrupt"}
    good = s["settings"]["good"]
    assert good["transition_step"] == 26 and good["final_err_ood"] == pytest.approx(0.3)
    assert good["snapshot_steps"] == [20, 40]               # before / at (= after) the drop
    bare = s["settings"]["bare"]
    assert bare["final_err_ood"] is None and bare["seed"] is None
    assert bare["zscore_at_end"] is not None


def test_the_problems_are_listed_in_the_report(folder_run: tuple[Path, Path]) -> None:
    _, run_dir = folder_run
    problems = json.loads((run_dir / "summary.json").read_text())["problems"]

    def about(name: str) -> str:
        return " | ".join(p for p in problems if p.startswith(f"{name}:"))

    assert "ckpt_20.pt" in about("gappy")
    assert "no err_arr.json" in about("bare") and "no config.json" in about("bare")
    assert "not measured" in about("one_layer") and "layers" in about("one_layer")
    assert "ckpt_20.pt" in about("corrupt")
    assert about("good") == "" and about("notes") == ""
    md = (run_dir / "report.md").read_text()
    assert "Problems found" in md and "errors only (in the overlay): one_layer" in md
    assert "figures/setting_one_layer.png" not in md
    for name in ("gappy", "bare", "one_layer", "corrupt"):
        assert f"- {name}:" in md


def test_a_measured_run_redraws_from_its_saved_result(folder_run: tuple[Path, Path]) -> None:
    from tests.studies.conftest import assert_redraws

    assert_redraws(folder_run[1], "induction")


@pytest.mark.parametrize("layout, message", [
    ("missing", "no such folder"),
    ("empty", "no run folders"),
    ("file", "is a file"),
    ("one_layer", "nothing can be measured"),
    ("corrupt", "nothing can be measured"),
])
def test_nothing_measurable_exits_2_in_one_line(layout: str, message: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "in"
    if layout == "empty":
        root.mkdir()
    elif layout == "file":
        root.write_text("x")
    elif layout == "one_layer":
        make_run(root / "one_layer", seed=5, layers=1)
    elif layout == "corrupt":
        make_run(root, seed=1, steps=(0,))
        (root / "ckpt_0.pt").write_bytes(b"\x80garbage")
    line = study_error("induction", [f"checkpoints={root}"], tmp_path, capsys)
    assert message in line and str(root) in line
