"""The lmlab command: help is fast, runs print their directory last, mistakes exit 2 in one line."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from lmlab.cli import main
from tests.conftest import tiny_model

LMLAB = [sys.executable, "-m", "lmlab.cli"]


def test_help_is_fast_and_imports_nothing_heavy() -> None:
    code = ("import sys, time; t = time.perf_counter(); import lmlab.cli; "
            "lmlab.cli.build_parser(); "
            "print(time.perf_counter() - t, 'torch' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, torch_loaded, mpl_loaded = out.stdout.split()
    assert torch_loaded == "False" and mpl_loaded == "False"
    assert float(seconds) < 1.0
    proc = subprocess.run([*LMLAB, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "spectral" in proc.stdout


def test_study_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "list"]) == 0
    assert capsys.readouterr().out.split()[0] == "spectral"


def test_spectral_command_writes_table_and_plots(tmp_path: Path, capsys) -> None:
    tiny_model("gpt2").save_pretrained(tmp_path / "m")
    code = main(["spectral", str(tmp_path / "m"), "--out", str(tmp_path / "runs"),
                 "--format", "parquet", "--esd-layers", "c_fc"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    run_dir = Path(out[-1])
    assert run_dir.parent == tmp_path / "runs" / "spectral"
    table = pd.read_parquet(run_dir / "spectra.parquet")
    assert (table["layer_type"] == "conv1d").sum() == 8
    assert any(line.split()[0] == "alpha_mean" for line in out[:-1])
    esd = sorted(p.name for p in (run_dir / "figures").glob("esd_layer_*.png"))
    c_fc_ids = table.loc[table["name"] == "c_fc", "layer_id"].tolist()
    assert esd == sorted(f"esd_layer_{i}.png" for i in c_fc_ids)


def test_report_rerenders(tmp_path: Path, capsys) -> None:
    tiny_model("bert").save_pretrained(tmp_path / "m")
    assert main(["run", "spectral", "--set", f"model={tmp_path / 'm'}", "--out",
                 str(tmp_path / "runs")]) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert "<img" in (run_dir / "report.html").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "nosuchstudy"], "unknown study"),
        (["run", "spectral", "--preset", "huge"], "unknown preset"),
        (["run", "spectral", "--set", "modle=x"], "did you mean 'model'"),
        (["run", "spectral", "--set", "max_n"], "key=value"),
        (["run", "spectral", "--set", "max_n=many"], "max_n"),
        (["run", "spectral", "--device", "tpu"], "device"),
        (["spectral", "/no/such/model.safetensors"], "no such file"),
        (["spectral", "no-such-model-anywhere"], "available offline: all-minilm-l6-v2"),
        (["spectral", "x", "--format", "xlsx"], "invalid choice"),
        (["spectral", "compare", "/no/such/a", "/no/such/b"], "no such file"),
        (["spectral", "compare", "/no/such/a"], "takes two models"),
        (["report", "/no/such/run"], "run"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(argv, message, tmp_path: Path) -> None:
    out = ["--out", str(tmp_path)] if argv[0] in ("run", "spectral") else []
    proc = subprocess.run([*LMLAB, *argv, *out], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("lmlab: error: ") and message in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("content", [b"garbage", b""])
def test_corrupt_weights_file_exits_2(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(content)
    proc = subprocess.run([*LMLAB, "spectral", str(bad), "--out", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "model.safetensors" in proc.stderr


def test_unwritable_out_fails_before_work(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    start = time.perf_counter()
    proc = subprocess.run([*LMLAB, "run", "spectral", "--out", str(blocker / "runs")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "lmlab: error:" in proc.stderr
    assert time.perf_counter() - start < 60


def test_nan_weights_exit_2_naming_the_layer_and_keep_the_rest(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    w = torch.randn(32, 32)
    w[1, 2] = float("nan")
    path = tmp_path / "w.safetensors"
    save_file({"blocks.0.proj.weight": torch.randn(32, 32), "blocks.1.proj.weight": w}, str(path))
    proc = subprocess.run([*LMLAB, "spectral", str(path), "--out", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "blocks.1.proj" in proc.stderr
    (run_dir,) = (tmp_path / "runs" / "spectral").iterdir()
    table = pd.read_csv(run_dir / "spectra.csv")
    assert table["status"].tolist() == ["success", "failed"]
    assert "NaN/Inf" in (run_dir / "report.html").read_text()


def test_check_validates_without_writing(tmp_path, capsys) -> None:
    out = tmp_path / "runs"
    assert main(["run", "charlm", "--check", "--out", str(out)]) == 0
    assert "valid; nothing was run" in capsys.readouterr().out
    assert not out.exists()
    assert main(["run", "charlm", "--check", "--set", "data.path=" + str(tmp_path / "no.txt"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no.txt" in err[0] and not out.exists()
    (tmp_path / "file").write_text("x")
    assert main(["run", "spectral", "--check", "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.parametrize("study, sets", [
    (study, ["model={long}"]) for study in ("finetune-spectral", "optimizers", "spectral")
] + [
    ("finetune-spectral", ["data.path=/tmp/{long}"]),
    ("optimizers", ["data.source=file", "data.path=/tmp/{long}"]),
    ("optimizers", ["data.path=/tmp/{long}"]),  # a path the data source would not read
])
def test_names_too_long_for_the_file_system_are_one_line(study, sets, tmp_path, capsys) -> None:
    long = "a" * 1000  # under lmlab's 4096-character bound, over the file system's 255
    argv = ["run", study, "--check", "--out", str(tmp_path / "runs")]
    for s in sets:
        argv += ["--set", s.format(long=long)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lmlab: error: ") and "Traceback" not in err[0]
    assert not (tmp_path / "runs").exists()
