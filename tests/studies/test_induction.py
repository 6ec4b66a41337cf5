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
    assert s["conventions"] == {"R": "rotary R(+t) for t in rel_dist; t = 0: R = I",
                                "argmax_axis": "row", "layernorm": "ignore",
                                "method": ["largest"], "rel_dist": [1],
                                "ranks_plotted": [5, 10, 15, 20], "screenot_k": [5, 10, 20],
                                "primary": "largest, rel_dist 1"}
    assert s["source"] == "trained" and s["problems"] == []
    measures = pd.read_csv(run_path / "measures.csv")
    assert sorted(measures["step"].unique()) == [0, 20, 40]
    assert set(measures["method"]) == {"largest"} and set(measures["rel_dist"]) == {1}
    assert len(measures) == 2 * 3                           # settings × checkpoints
    for col in ("pos_match_q_r5", "pos_match_k_r20", "rank_Wq0_k5", "rank_Wk0_k10",
                "rank_Enorm_k20", "rank_qk_k5", "zscore", "match_r32", "baseline_r5"):
        assert col in measures, col
    ckpts = sorted(p.name for p in (run_path / "settings" / "pool_size_20").glob("ckpt_*.pt"))
    assert ckpts == ["ckpt_0.pt", "ckpt_20.pt", "ckpt_40.pt"]
    md = (run_path / "report.md").read_text()
    assert s["settings"]["pool_size_20"]["snapshot_steps"] == [0, 20, 40]  # no transition
    for fig in ("setting_infinite_pool_size", "setting_pool_size_20", "overlay", "pool_sweep",
                "matrices", "circuits"):
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
    assert [snap["setting"] for snap in back.snapshots] == ["infinite_pool_size",
                                                            "pool_size_20"]
    snap = back.snapshots[0]
    assert snap["steps"].tolist() == [0, 20, 40] and snap["rel_dist"] == 1
    assert snap["W_qkov"].shape == (3, 64, 64) and snap["QK0"].shape == (3, 64, 64)
    assert_redraws(run_path, "induction")


@pytest.mark.parametrize("sets, message", [
    (["pools=0,0"], "duplicates"), (["pools=-5"], "'pools' values must be in [0, 1e6]"),
    (["argmax_axis=diag"], "argmax_axis"),
    (["ranks_plotted=40"], "'ranks_plotted' values must be in [1, 32]"),
    (["steps=3500"], "must divide steps=3500"),
    (["method=median"], "'method'"), (["method="], "method is empty"),
    (["rel_dist=-1"], "'rel_dist' values must be in [0, 10000]"),
    (["rel_dist=0,0"], "rel_dist has duplicates"), (["rel_dist="], "rel_dist is empty"),
    (["screenot_k=40"], "'screenot_k' values must be in [0, 31]"),
    (["seeds=1,1"], "seeds has duplicates"), (["ranks_plotted="], "ranks_plotted is empty"),
    (["err_layout=authors"], "set eval_every=1"),
])
def test_bad_input_exits_2_in_one_line(sets: list[str], message: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert message in study_error("induction", sets, tmp_path, capsys)


def test_cells_per_pool_and_seed() -> None:
    from lmlab.studies.induction import Config, cells_of

    cells = cells_of(Config(pools=(0, 100), seeds=(1, 2)), Path("root"))
    assert [(c.name, c.pool, c.setting.seed) for c in cells] == [
        ("infinite_pool_size_seed1", 0, 1), ("infinite_pool_size_seed2", 0, 2),
        ("small_pool_size_seed1", 100, 1), ("small_pool_size_seed2", 100, 2)]
    assert cells[3].out_dir == str(Path("root") / "small_pool_size_seed2")
    assert [c.name for c in cells_of(Config(pools=(0,)), Path("r"))] == ["infinite_pool_size"]
    dense = cells_of(Config(pools=(0,), err_layout="authors", eval_every=1), Path("r"))
    assert dense[0].setting.err_layout == "authors" and dense[0].setting.eval_every == 1


def test_tuple_options_from_the_command_line() -> None:
    from lmlab.studies.runner import build_config

    cfg = build_config("induction", "quick", ["method=mean", "rel_dist=0,5,10",
                                              "screenot_k=5,31", "checkpoints=some/dir"])
    assert cfg.method == ("mean",) and cfg.rel_dist == (0, 5, 10)
    assert cfg.screenot_k == (5, 31) and cfg.checkpoints == "some/dir"
    assert build_config("induction", "quick", ["method=largest,mean"]).method == (
        "largest", "mean")
    assert build_config("induction", "quick").checkpoints == ""


def test_snapshots_before_at_and_after_the_transition() -> None:
    from lmlab.studies._induction_measure import pick_snapshots, transition_step

    err = pd.DataFrame({"epoch": [-1, 99, 199, 299, 399], "err_ood": [0.98, 0.97, 0.6, 0.4, 0.1],
                        "full": [True, True, True, False, True]})
    assert transition_step(err) == 400                      # the cheap entry does not count
    steps = [0, 100, 200, 300, 400, 500, 600]
    assert pick_snapshots(steps, 400) == [300, 400, 600]
    assert pick_snapshots(steps, 0) == [0, 600]
    assert pick_snapshots(steps, 10_000) == [0, 300, 600]   # after the end: no transition
    assert pick_snapshots(steps, 400, wanted=(120, 590)) == [100, 600]
