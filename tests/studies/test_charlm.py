"""The charlm study end to end on real names with short training, and its input errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from lmlab.studies import get_study
from lmlab.studies.runner import run_study
from tests.conftest import SHARED_DATA
from tests.studies.conftest import assert_redraws
from tests.test_bad_input import study_error

SHORT = ["mlp.train.steps=600", "mlp.train.lr_decay_step=400", "mlp.train.diag_every=100",
         "wavenet.train.steps=300", "transformer.train.steps=60", "transformer.n_layer=1",
         "samples=5", "device=cpu"]


@pytest.fixture(scope="module")
def names_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = SHARED_DATA / "names_2018.txt"
    if not src.is_file():
        pytest.skip(f"the lecture's names file is not at {src}")
    path = tmp_path_factory.mktemp("names") / "names.txt"
    path.write_text("\n".join(src.read_text().splitlines()[::8]), encoding="utf-8")  # 4,005
    return path


@pytest.fixture(scope="module")
def run_path(names_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    return run_study("charlm", preset="quick", overrides=[f"data.path={names_file}", *SHORT],
                     out=out).path


def test_summary_holds_every_check(run_path: Path) -> None:
    s = json.loads((run_path / "summary.json").read_text())
    for key in ("train_loss", "dev_loss", "test_loss", "init_loss_scaled", "init_loss_unscaled",
                "bn_fold_max_abs_diff", "dev_loss_best", "best_model", "steps_per_second"):
        assert key in s, key
    assert s["words"] == {"train": 3204, "dev": 400, "test": 401}
    assert s["init_loss_zero"] == pytest.approx(math.log(27), abs=1e-6)
    assert abs(s["init_loss_scaled"] - math.log(27)) < 0.05 < s["init_loss_unscaled"] - 5
    assert 0 < s["bn_fold_max_abs_diff"] < 1e-4
    assert s["dev_loss"] < 2.9 and s["train_loss"] < s["models"]["mlp-zero"]["train"]
    sym = {r["member"]: r["distinct hidden units"] for r in s["symmetry"]}
    assert sym["zero"] == 1 and sym["e01"] == 200
    best = min(s["models"].items(), key=lambda kv: kv[1]["dev"])
    assert (s["best_model"], s["dev_loss_best"]) == (best[0], best[1]["dev"])
    assert set(s["samples"]) >= {"e01"} and all(len(v) == 5 for v in s["samples"].values())
    assert all(set(w) <= set("abcdefghijklmnopqrstuvwxyz") for w in s["samples"]["e01"])


def test_min_batch_loss_is_the_lowest_logged_step_loss(run_path: Path) -> None:
    from lmlab.studies import load_result

    s = json.loads((run_path / "summary.json").read_text())
    curve = load_result(run_path).curves["mlp-e01"]
    assert len(curve) == 600
    assert s["min_batch_loss"] == pytest.approx(float(min(curve)), abs=1e-7)
    assert s["min_batch_loss"] < float(curve[-50:].mean())  # a minimum, not a typical step


def test_zero_init_step0_evidence_in_the_summary(run_path: Path) -> None:
    s = json.loads((run_path / "summary.json").read_text())
    assert s["zero_init_h_max_abs"] == 0.0 and s["zero_init_W1_grad_max_abs"] == 0.0
    assert s["zero_init_step0_loss"] == pytest.approx(math.log(27), abs=1e-6)
    table = pd.read_csv(run_path / "losses.csv").set_index("model")
    assert s["zero_init_step0_loss"] == pytest.approx(  # the loop's own first step
        table.loc["mlp-zero", "step0_loss"], abs=1e-6)
    assert 0 < s["zero_init_b2_grad_max_abs"] < 1
    assert "max |W1.grad| = 0" in (run_path / "report.md").read_text()


def test_tables_metrics_and_report(run_path: Path) -> None:
    table = pd.read_csv(run_path / "losses.csv")
    assert set(table["model"]) == {"mlp-e01", "mlp-e03", "mlp-unscaled", "mlp-zero",
                                   "mlp-bn-gaussian", "mlp-nobn", "mlp-nobn-gaussian",
                                   "wavenet", "transformer"}
    assert table.set_index("model").loc["wavenet", "parameters"] == 76579
    diag = pd.read_csv(run_path / "mlp_diagnostics.csv")
    assert sorted(diag["step"].unique()) == [0, 100, 200, 300, 400, 500, 599]
    metrics = pd.read_json(run_path / "metrics.jsonl", lines=True)
    e01 = metrics[(metrics["model"] == "mlp") & (metrics["member"] == "e01")]
    assert len(e01) == 6 and e01["loss"].iloc[-1] < e01["loss"].iloc[0]
    md = (run_path / "report.md").read_text()
    for text in ("E01", "E02", "E03", "symmetry", "BatchNorm folding", "Samples", "Speed"):
        assert text in md, text
    for fig in ("loss_curves", "first_steps", "tanh_init", "tanh_trained", "saturation",
                "update_ratio"):
        png = run_path / "figures" / f"{fig}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert f"figures/{fig}.png" in md


def test_report_redraws_from_the_saved_result(names_file: Path, tmp_path: Path) -> None:
    run = run_study("charlm", preset="quick", overrides=[f"data.path={names_file}", *SHORT],
                    out=tmp_path)
    summary = json.loads((run.path / "summary.json").read_text())
    assert get_study("charlm").SUMMARY.problems(summary) == []
    assert_redraws(run, "charlm")


def test_summary_schema_marks_the_notebook_keys_as_headline() -> None:
    assert set(get_study("charlm").SUMMARY.headline()) == {
        "dev_loss", "init_loss_scaled", "dev_loss_best", "best_model", "samples"}


@pytest.mark.parametrize("sets, message", [
    (["data.path={missing}"], "word file not found"),
    (["data.path={empty}"], "holds no words"),
    (["data.path={names}", "data.chars=abc"], "outside the vocabulary"),
    (["data.path={names}", "mlp.block_size=0"], "'mlp.block_size' must be in [1, 64]"),
    (["data.path={names}", "mlp.variants=zero"], "must include e01"),
    (["data.path={names}", "mlp.variants=e01,e02"], "unknown MLP variant"),
    (["data.path={names}", "wavenet.block_size=6"], "power of 2"),
    (["data.year=2020"], "1880–2017"),
])
def test_bad_input_exits_2_in_one_line(sets: list[str], message: str, names_file: Path,
                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    paths = {"missing": tmp_path / "nope.txt", "empty": tmp_path / "empty.txt",
             "names": names_file}
    assert message in study_error("charlm", [s.format(**paths) for s in sets], tmp_path, capsys)


def test_trained_weights_are_saved_and_reload(run_path: Path) -> None:
    import torch

    from lmlab.models.char_wavenet import CharWaveNet

    ens = torch.load(run_path / "checkpoints" / "mlp_ensemble.pt")
    assert ens["names"][0] == "e01" and ens["params"]["W1"].shape == (7, 30, 200)
    assert ens["vocab"] == "." + "abcdefghijklmnopqrstuvwxyz"
    wn = torch.load(run_path / "checkpoints" / "wavenet.pt")
    model = CharWaveNet(27)
    model.load_state_dict(wn["state_dict"])  # strict: every tensor present and shaped
    tf = torch.load(run_path / "checkpoints" / "transformer.pt")
    assert tf["config"]["n_layer"] == 1 and tf["block_size"] >= 2
