"""The spectral study end to end on a saved tiny model: config, table, figures, report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmlab.errors import LmlabError
from lmlab.spectral import analyze, summarize
from lmlab.studies import get_study, study_names
from lmlab.studies.runner import build_config, run_study
from tests.conftest import tiny_model

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def saved_llama(tmp_path: Path) -> Path:
    tiny_model("llama").save_pretrained(tmp_path / "llama")
    return tmp_path / "llama"


def test_run_writes_everything(saved_llama: Path, tmp_path: Path) -> None:
    run = run_study("spectral", overrides=[f"model={saved_llama}"], out=tmp_path / "runs")
    table = pd.read_csv(run.path / "spectra.csv")
    expected = analyze(saved_llama)
    assert table["longname"].tolist() == expected["longname"].tolist()
    assert table["alpha"].tolist() == pytest.approx(expected["alpha"].tolist(), nan_ok=True)

    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["alpha_mean"] == pytest.approx(summarize(expected)["alpha_mean"])
    assert get_study("spectral").SUMMARY.problems(summary) == []

    config = json.loads((run.path / "config.json").read_text())
    assert config["model"] == str(saved_llama) and config["_study"] == "spectral"
    meta = json.loads((run.path / "meta.json").read_text())
    assert meta["status"] == "finished" and meta["versions"]["torch"].startswith("2.")

    figures = sorted(p.name for p in (run.path / "figures").iterdir())
    assert {"alpha_by_layer.png", "alpha_hist.png"} <= set(figures)
    assert sum(name.startswith("esd_layer_") for name in figures) == 3
    assert all((run.path / "figures" / f).read_bytes()[:8] == PNG for f in figures)

    html = (run.path / "report.html").read_text()
    for name in figures:
        assert f'src="figures/{name}"' in html
    assert "What ran" in html and f"{summary['alpha_mean']:.4g}" in html


def test_presets_and_overrides() -> None:
    assert "spectral" in study_names()
    assert build_config("spectral", "paper").method == "svd"
    cfg = build_config("spectral", "quick", ["max_n=none", "layers=dense,embedding"])
    assert cfg.max_n is None and cfg.layers == ("dense", "embedding")
    with pytest.raises(LmlabError, match="did you mean 'precision'"):
        build_config("spectral", "quick", ["precison=float32"])
    with pytest.raises(LmlabError, match="unknown preset"):
        build_config("spectral", "huge")
    with pytest.raises(LmlabError, match="max_n must be positive|max_n"):
        build_config("spectral", "quick", ["max_n=-3"])


def test_report_redraws_from_the_saved_result(saved_llama: Path, tmp_path: Path) -> None:
    from tests.studies.conftest import assert_redraws

    run = run_study("spectral", overrides=[f"model={saved_llama}"], out=tmp_path / "runs")
    result = get_study("spectral").Result
    from lmlab.studies import load_result

    back = load_result(run.path)
    assert isinstance(back, result) and back.config.model == str(saved_llama)
    assert sorted(back.esds) and all(v.ndim == 1 for v in back.esds.values())
    assert_redraws(run, "spectral")


def test_report_refuses_a_run_another_process_writes(saved_llama: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from lmlab.cli import main
    from lmlab.runs import RunDir

    run = run_study("spectral", overrides=[f"model={saved_llama}"], out=tmp_path / "runs")
    holder = RunDir.open(run.path).lock()  # as a run still writing this directory would
    try:
        assert main(["report", str(run.path)]) == 2
        assert "another lmlab process" in capsys.readouterr().err
    finally:
        holder.unlock()
    assert main(["report", str(run.path)]) == 0


def test_weightwatcher_options_and_base_model_reach_the_table(saved_llama: Path,
                                                              tmp_path: Path) -> None:
    tiny_model("llama", seed=1).save_pretrained(tmp_path / "base")
    overrides = [f"model={saved_llama}", f"base_model={tmp_path / 'base'}", "mp_fit=true",
                 "fix_fingers=clip_xmax", "layers=-embed_tokens,-lm_head"]
    run = run_study("spectral", overrides=overrides, out=tmp_path / "runs")
    table = pd.read_csv(run.path / "spectra.csv")
    expected = analyze(saved_llama, base_model=tmp_path / "base", mp_fit=True,
                       fix_fingers="clip_xmax", layers=["-embed_tokens", "-lm_head"])
    assert table.columns.tolist() == expected.columns.tolist()
    assert "embed_tokens" not in set(table["name"])
    np.testing.assert_allclose(table["sigma_mp"], expected["sigma_mp"].astype(float))
    assert (table["fit_mode"] == "clip_xmax").all()
    assert "minus the base model" in (run.path / "report.md").read_text()


def test_conflicting_options_fail_before_a_run_directory_is_made(tmp_path: Path) -> None:
    with pytest.raises(LmlabError, match="cannot be combined"):
        run_study("spectral", overrides=["fix_fingers=clip_xmax", "xmax=-2"],
                  out=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
