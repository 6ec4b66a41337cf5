"""The induction study end to end on two tiny settings, and its input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from lmlab.studies.runner import run_study
from tests.test_bad_input import study_error

TINY = ["pools=0,20", "steps=40", "save_every=20", "eval_every=10", "eval_cheap=20",
        "eval_full=50", "sweep.backend=inprocess"]


@pytest.fixture(scope="module")
def run_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    return run_study("induction", preset="quick", overrides=TINY, out=out).path


def test_settings_trained_measured_and_reported(run_path: Path) -> None:
    s = json.loads((run_path / "summary.json").read_text())
    assert set(s["settings"]) == {"infinite_pool_size", "pool_size_20"}
    for info in s["settings"].values():
        assert info["checkpoints"] == 3                      # steps 0, 20, 40
        assert 0.5 < info["final_err_id"] <= 1 and 0.5 < info["final_err_ood"] <= 1
        assert info["transition_step"] is None               # 40 steps: still on the plateau
        assert 0 <= info["match_r5_at_end"] <= 1
    assert s["baseline_r5"] == pytest.approx(0.45, abs=0.02)
    assert s["conventions"] == {"R": "rotary R(rel_dist=+1)", "argmax_axis": "row",
                                "layernorm": "ignore"}
    measures = pd.read_csv(run_path / "measures.csv")
    assert sorted(measures["step"].unique()) == [0, 20, 40]
    ckpts = sorted(p.name for p in (run_path / "settings" / "pool_size_20").glob("ckpt_*.pt"))
    assert ckpts == ["ckpt_0.pt", "ckpt_20.pt", "ckpt_40.pt"]
    md = (run_path / "report.md").read_text()
    for fig in ("setting_infinite_pool_size", "setting_pool_size_20", "overlay", "pool_sweep"):
        png = run_path / "figures" / f"{fig}.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and f"figures/{fig}.png" in md


def test_report_redraws_from_the_saved_result(run_path: Path) -> None:
    import numpy as np

    from lmlab.studies import get_study, load_result
    from tests.studies.conftest import assert_redraws

    module = get_study("induction")
    summary = json.loads((run_path / "summary.json").read_text())
    assert module.SUMMARY.problems(summary) == []
    assert set(module.SUMMARY.headline()) == {"settings", "baseline_r5"}
    back = load_result(run_path)
    assert isinstance(back, module.Result) and back.config.pools == (0, 20)
    assert back.summary == summary
    assert isinstance(back.baseline, np.ndarray) and back.baseline.shape == (32,)
    assert back.baseline[4] == pytest.approx(summary["baseline_r5"])
    assert set(back.errors) == set(summary["settings"])
    assert all(isinstance(e, pd.DataFrame) and e["full"].dtype == bool
               for e in back.errors.values())
    pd.testing.assert_frame_equal(back.measures, pd.read_csv(run_path / "measures.csv"),
                                  check_dtype=False)
    assert back.pool_sweep["pool"].tolist() == [float("inf"), 20.0]
    assert_redraws(run_path, "induction")


@pytest.mark.parametrize("sets, message", [
    (["pools=0,0"], "duplicates"), (["pools=-5"], "'pools' values must be in [0, 1e6]"),
    (["argmax_axis=diag"], "argmax_axis"),
    (["ranks_plotted=40"], "'ranks_plotted' values must be in [1, 32]"),
    (["steps=3500"], "must divide steps=3500"),
])
def test_bad_input_exits_2_in_one_line(sets: list[str], message: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert message in study_error("induction", sets, tmp_path, capsys)
