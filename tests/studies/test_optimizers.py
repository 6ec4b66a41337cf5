"""The optimizers study on a tiny GPT-2: same start, AdamW beats SGD at the same small lr."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from lmlab.errors import LmlabError
from lmlab.runs import RunDir
from lmlab.studies import get_study, load_result
from lmlab.studies.optimizers import LinesData, _lines_used, load_lines_data
from lmlab.studies.runner import build_config, run_study
from tests.studies.conftest import IR, assert_redraws


def write_lines(path: Path) -> Path:
    """200 IR-Triplets records as one line each, separated by blank lines, in ``path``."""
    from lmlab.data import format_records, load_ir_triplets

    lines = [t.replace("\n", " ") for t in format_records(load_ir_triplets(IR)[:200])]
    path.write_text("\n\n".join(lines), encoding="utf-8")  # blank lines are skipped
    return path


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "lines.txt")


@pytest.fixture(scope="module")
def tiny_run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """One finished comparison on the tiny GPT-2 (3 epochs), shared by the tests below."""
    root = tmp_path_factory.mktemp("optimizers")
    sets = [f"model={tiny_dir}", "data.source=file", f"data.path={write_lines(root / 'lines.txt')}",
            "data.budget=400", "train.epochs=3", "train.lr=0.001", "device=cpu"]
    return run_study("optimizers", preset="paper", overrides=sets, out=root / "runs")


def test_adamw_and_sgd_from_the_same_start(tiny_run: RunDir) -> None:
    run = tiny_run
    summary = json.loads((run.path / "summary.json").read_text())
    assert get_study("optimizers").SUMMARY.problems(summary) == []
    metrics = pd.read_json(run.path / "metrics.jsonl", lines=True)
    train = metrics[metrics["kind"] == "train"]
    first = train.groupby("optimizer")["loss"].first()
    assert first["adamw"] == pytest.approx(first["sgd"], rel=1e-6)  # same model, data, order
    assert summary["adamw"]["final_train_loss"] < summary["sgd"]["final_train_loss"]
    evals = metrics[metrics["kind"] == "eval"]
    assert evals.groupby("optimizer").size().tolist() == [3, 3]  # one per epoch
    last = evals.groupby("optimizer").last()
    for name in ("adamw", "sgd"):
        assert summary[name]["val_perplexity"] == pytest.approx(math.exp(last.loc[name, "loss"]))
        assert summary[name]["seconds"] > 0
    html = (run.path / "report.html").read_text()
    assert 'src="figures/train_loss.png"' in html and 'src="figures/val_perplexity.png"' in html
    assert not list((run.path / "checkpoints").iterdir())  # dropped once finished


def test_report_redraws_from_the_saved_result(tiny_run: RunDir) -> None:
    back = load_result(tiny_run.path)
    assert back.config.optimizers == ("adamw", "sgd")
    assert back.table["optimizer"].tolist() == ["adamw", "sgd"]
    assert back.evals.groupby("optimizer").size().tolist() == [3, 3]
    assert_redraws(tiny_run, "optimizers")


def test_token_budget_protocol(tiny_dir: Path, text_file: Path) -> None:
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir)
    train, val, name = load_lines_data(LinesData(source="file", path=str(text_file),
                                                 max_tokens=20, budget=100), tok)
    assert all(len(x) <= 20 for x in train + val)
    assert sum(map(len, train)) >= 100 and sum(map(len, train[:-1])) < 100
    lines = text_file.read_text().splitlines()
    assert _lines_used(lines, train) == 2 * len(train) - 1  # blank separators counted
    assert tok(lines[_lines_used(lines, train) + 1])["input_ids"][:20] == val[0]
    assert "lines.txt" in name


def test_unknown_optimizer_is_a_clear_error() -> None:
    with pytest.raises(LmlabError, match="unknown optimizer 'adamx'"):
        build_config("optimizers", "quick", ["optimizers=adamw,adamx"])


@pytest.mark.parametrize("sets", [["data.source=file", "data.path=/no/such.txt"],
                                  ["data.source=file"]])
def test_bad_data_fails_before_a_run_directory_exists(tiny_dir: Path, tmp_path: Path, sets):
    with pytest.raises(LmlabError, match="data.path"):
        run_study("optimizers", preset="paper", out=tmp_path,
                  overrides=[f"model={tiny_dir}", *sets])
    assert not (tmp_path / "optimizers").exists()
