"""The ablation study on a tiny GPT-2: honest modes, untrained and trained, layer importance."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from lmlab.errors import LmlabError
from lmlab.runs import RunDir
from lmlab.studies import get_study, load_result
from lmlab.studies.runner import build_config, run_study
from tests.studies.conftest import assert_redraws
from tests.studies.test_optimizers import write_lines


@pytest.fixture(scope="module")
def tiny_run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """One finished run with every mode on the tiny GPT-2 (2 epochs), shared below."""
    root = tmp_path_factory.mktemp("ablation")
    sets = [f"model={tiny_dir}", "data.source=file", f"data.path={write_lines(root / 'lines.txt')}",
            "data.budget=300", "train.epochs=2", "train.lr=0.001", "device=cpu",
            "modes=zero,uniform,mean,previous-token"]
    return run_study("ablation", preset="paper", overrides=sets, out=root / "runs")


def test_ablation_study_end_to_end(tiny_run: RunDir) -> None:
    run = tiny_run
    s = json.loads((run.path / "summary.json").read_text())
    assert get_study("ablation").SUMMARY.problems(s) == []
    for mode in ("zero", "uniform", "mean", "previous-token"):
        assert s[mode]["perplexity"] > 0 and s[mode]["untrained_perplexity"] > 0
    # ablating attention in a model that uses it changes its predictions
    assert s["zero"]["untrained_perplexity"] != pytest.approx(s["untrained_baseline_perplexity"])
    importance = pd.read_csv(run.path / "layer_importance.csv")
    assert importance["layer"].tolist() == [0, 1] and (importance["mode"] == "zero").all()
    metrics = pd.read_json(run.path / "metrics.jsonl", lines=True)
    evals = metrics[metrics["kind"] == "eval"]
    assert sorted(evals["variant"].unique()) == ["baseline", "mean", "previous-token", "uniform",
                                                 "zero"]
    html = (run.path / "report.html").read_text()
    assert "what the seed" in html and 'src="figures/layer_importance.png"' in html


def test_report_redraws_from_the_saved_result(tiny_run: RunDir) -> None:
    back = load_result(tiny_run.path)
    assert back.config.modes == ("zero", "uniform", "mean", "previous-token")
    assert back.table["variant"].tolist() == ["baseline", *back.config.modes]
    assert back.importance["layer"].tolist() == [0, 1]
    assert_redraws(tiny_run, "ablation")


def test_bad_modes_and_ranges(tiny_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(LmlabError, match="unknown ablation mode 'uniformm'"):
        build_config("ablation", "quick", ["modes=uniformm"])
    with pytest.raises(LmlabError, match="range|0 to 1|0..1|valid"):
        run_study("ablation", preset="paper", out=tmp_path,
                  overrides=[f"model={tiny_dir}", "data.source=stdlib-docstrings",
                             "data.budget=100", "layers=5", "device=cpu"])


def test_training_repeated_over_seeds(tiny_dir: Path, tmp_path: Path) -> None:
    """seeds=2: the untrained numbers once, each variant trained with seeds 42 and 43; the
    trained perplexity is the mean over seeds and its spread their sample std."""
    sets = [f"model={tiny_dir}", "data.source=file", f"data.path={write_lines(tmp_path / 'l.txt')}",
            "data.budget=600", "train.epochs=2", "train.lr=0.001", "device=cpu", "modes=zero",
            "per_layer=false", "seeds=2"]
    run = run_study("ablation", preset="paper", overrides=sets, out=tmp_path / "runs")
    s = json.loads((run.path / "summary.json").read_text())
    assert get_study("ablation").SUMMARY.problems(s) == [] and s["seeds"] == 2
    metrics = pd.read_json(run.path / "metrics.jsonl", lines=True)
    evals = metrics[metrics["kind"] == "eval"]
    last = evals.sort_values("epoch").groupby(["variant", "seed"])["perplexity"].last()
    assert sorted(last.index) == [("baseline", 42), ("baseline", 43), ("zero", 42), ("zero", 43)]
    assert last["baseline", 42] != pytest.approx(last["baseline", 43])  # another data order
    for got, variant in ((s["baseline_perplexity"], "baseline"),
                         (s["zero"]["perplexity"], "zero")):
        assert got == pytest.approx((last[variant, 42] + last[variant, 43]) / 2)
    assert s["baseline_perplexity_std"] == pytest.approx(
        abs(last["baseline", 42] - last["baseline", 43]) / 2**0.5)
    html = (run.path / "report.html").read_text()
    assert "Mean over 2 seeds (42 to 43)" in html and " ± " in html
    assert_redraws(run, "ablation")
