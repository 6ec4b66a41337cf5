"""The example study of docs/adding-a-study.md: its module alone registers it, and it passes
every check the built-in studies pass (bad input, notebook, lmlab report) without an edit to
any other file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lmlab.cli import main
from lmlab.studies import get_study, load_result, study_names
from tests.studies.conftest import assert_redraws
from tests.test_bad_input import CASES, check_malformed_settings
from tests.test_examples import check_executed, execute

DOC = Path(__file__).resolve().parents[2] / "docs" / "adding-a-study.md"


@pytest.fixture
def zipf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The docs' example module, alone in a folder on LMLAB_STUDY_PATH."""
    (block,) = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "zipf.py").write_text(block, encoding="utf-8")
    monkeypatch.setenv("LMLAB_STUDY_PATH", str(folder))
    return folder


def test_the_module_alone_registers_it(zipf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert study_names()[-1] == "zipf" and "spectral" in study_names()
    assert main(["study", "list"]) == 0
    assert "zipf" in capsys.readouterr().out
    assert main(["study", "show", "zipf"]) == 0
    shown = capsys.readouterr().out
    assert "max_rank" in shown and "the last rank of the fit" in shown


def test_it_passes_the_bad_input_sweep(zipf: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    for case in CASES:
        check_malformed_settings("zipf", case, tmp_path / case, capsys)
    out = tmp_path / "runs"
    assert main(["run", "zipf", "--set", "min_rank=50", "--set", "max_rank=10",
                 "--out", str(out)]) == 2
    assert "min_rank < max_rank" in capsys.readouterr().err and not out.exists()


def test_it_runs_and_redraws_with_a_known_answer(zipf: Path, tmp_path: Path) -> None:
    assert main(["run", "zipf", "--out", str(tmp_path / "runs")]) == 0
    (run,) = (tmp_path / "runs" / "zipf").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert get_study("zipf").SUMMARY.problems(summary) == []
    assert 0.7 < summary["slope"] < 1.4  # Zipf's law in English text: s close to 1
    result = load_result(run)
    assert result.table["count"].is_monotonic_decreasing
    assert result.table["count"].sum() > 10 * summary["n_words"]
    assert_redraws(run, "zipf")


def test_it_passes_the_notebook_check(zipf: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from lmlab.studies.notebook import write_notebook

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    path = write_notebook("zipf", tmp_path / "zipf.ipynb")
    nb = execute(path, tmp_path, overrides=["n_docs=300"], timeout=300)
    check_executed("zipf", nb, tmp_path)
