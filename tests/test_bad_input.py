"""The bad-input sweep: every study and command fed malformed input answers with one line
``lmlab: error: ...`` and exit code 2, never a traceback, and creates no run directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmlab.cli import main
from lmlab.studies import study_names


def numeric_field(study: str) -> str:
    """The first int or float ``--set`` key of a study (to feed it a wrong type)."""
    from lmlab.studies.options import study_options

    return next(o.key for o in study_options(study) if o.type in ("int", "float"))


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmlab: error: "), err
    return lines[0]


def study_error(study: str, sets: list[str], tmp_path: Path,
                capsys: pytest.CaptureFixture[str]) -> str:
    """``lmlab run <study> --set ...`` must fail in one line before any run directory exists."""
    out = tmp_path / "runs"
    line = run(["run", study, "--out", str(out), *[a for s in sets for a in ("--set", s)]],
               capsys)
    assert not out.exists()
    return line


CASES = ["unknown-key", "wrong-type", "no-value", "bad-preset", "section"]


@pytest.mark.parametrize("study", study_names())
@pytest.mark.parametrize("case", CASES)
def test_every_study_rejects_malformed_settings(study: str, case: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    check_malformed_settings(study, case, tmp_path, capsys)


def check_malformed_settings(study: str, case: str, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    """One bad-input case for one study: one line, exit code 2, no run directory."""
    argv = ["run", study, "--out", str(tmp_path / "runs")]
    field = numeric_field(study)
    extra, expect = {
        "unknown-key": (["--set", "no_such_field=1"], "no_such_field"),
        "wrong-type": (["--set", f"{field}=lots"], field),
        "no-value": (["--set", field], "key=value"),
        "bad-preset": (["--preset", "huge"], "unknown preset"),
        "section": (["--set", f"{field.split('.')[0]}.x.y=1"], field.split(".")[0]),
    }[case]
    line = run(argv + extra, capsys)
    assert expect in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv, expect", [
    (["run", "all", "--preset", "huge"], "unknown preset"),
    (["run", "all", "--set", "seed=1"], "apply to one study"),
    (["run", "charlm", "--set", "data.path={tmp}/missing.txt"], "not found"),
    (["run", "charlm", "--set", "data.path={tmp}/empty.txt"], "no words"),
    (["run", "spectral", "--set", "model={tmp}/corrupt.safetensors"], "corrupt.safetensors"),
    (["spectral", "{tmp}/empty_dir"], "empty_dir"),
    (["report", "{tmp}/empty_dir"], "empty_dir"),
    (["report", "{tmp}/corrupt_run"], "result.json"),
    (["report", "{tmp}/old_run"], "no saved result"),
    (["run", "charlm", "--resume", "{tmp}/no_such_run"], "no run directory"),
    (["run", "charlm", "--resume", "{tmp}/empty_dir"], "not a run directory"),
    (["run", "charlm", "--resume", "{tmp}/torn_run"], "config.json"),
    (["run", "all", "--resume", "{tmp}/no_such_lab"], "no lab directory"),
    (["run", "spectral", "--out", "{tmp}/empty.txt"], "is a file"),
])
def test_commands_reject_bad_paths_and_files(argv: list[str], expect: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "corrupt.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "empty_dir").mkdir()
    run_dir = tmp_path / "corrupt_run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"_study": "spectral"}')
    (run_dir / "result").mkdir()
    (run_dir / "result" / "result.json").write_text("{ torn")
    (tmp_path / "old_run").mkdir()  # a run of an older layout: no saved result
    (tmp_path / "old_run" / "config.json").write_text('{"_study": "spectral"}')
    (tmp_path / "old_run" / "report.json").write_text('{"title": "t", "blocks": []}')
    (tmp_path / "torn_run").mkdir()
    (tmp_path / "torn_run" / "config.json").write_text('{"seed": ')
    filled = [a.format(tmp=tmp_path) for a in argv]
    if filled[0] in ("run", "spectral") and "--out" not in filled:
        filled += ["--out", str(tmp_path / "runs")]
    line = run(filled, capsys)
    assert expect in line
