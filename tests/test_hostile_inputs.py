"""Hostile and unlucky inputs through the command line (issue 15, the user-input half).

Each case runs ``lmlab.cli.main`` as a user would and expects exit code 2, exactly one stderr
line ``lmlab: error: ...`` that names the culprit, no traceback, no run directory — and, for
pickles planted to run code, no trace of that code having run. Files that would block a reader
(FIFOs, devices) are run in a child process with a timeout.
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from lmlab.cli import main

HANG_LIMIT_S = 60.0


def check_one_line(rc: int, err: str) -> str:
    """The single ``lmlab: error:`` line of a refused command (exit 2, no traceback)."""
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmlab: error: "), err
    return lines[0]


def one_error_line(argv: list[str], capsys: pytest.CaptureFixture[str], *,
                   isolated: bool = False) -> str:
    """Run ``lmlab argv``; the single ``lmlab: error:`` line.

    ``isolated`` runs it in a child process killed after :data:`HANG_LIMIT_S`: a read of a
    FIFO may block inside C code that holds the GIL, which no thread of this process could
    time out.
    """
    if not isolated:
        rc = main(argv)
        return check_one_line(rc, capsys.readouterr().err)
    code = "import sys; from lmlab.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True,
                              text=True, timeout=HANG_LIMIT_S, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"lmlab {' '.join(argv)} hung for {HANG_LIMIT_S:.0f} s")
    return check_one_line(done.returncode, done.stderr)


def spectral_error(target: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                   *extra: str, isolated: bool = False) -> str:
    out = tmp_path / "runs"
    line = one_error_line(["spectral", str(target), "--out", str(out), *extra], capsys,
                          isolated=isolated)
    assert not out.exists(), "a run directory was left behind"
    return line


# ---------------------------------------------------------------------------- pickles


class TouchOnLoad:
    """Unpickling this calls ``pathlib.Path.touch(marker)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


class SystemOnLoad:
    """Unpickling this runs ``touch marker`` in a shell."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch '{self.marker}'",))


def plant(path: Path, payload: object, fmt: str) -> None:
    """A state dict whose unpickling would run ``payload``, in torch's zip or legacy format, or
    as a bare pickle."""
    state = {"proj.weight": torch.randn(32, 32), "extra": payload}
    if fmt == "zip":
        torch.save(state, path)
    elif fmt == "legacy":
        torch.save(state, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(state))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
@pytest.mark.parametrize("fmt", ["zip", "legacy", "pickle"])
@pytest.mark.parametrize("payload", [TouchOnLoad, SystemOnLoad])
def test_a_pickle_that_would_run_code_is_refused(suffix: str, fmt: str, payload: type,
                                                 tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "MARKER"
    weights = tmp_path / f"evil{suffix}"
    plant(weights, payload(marker), fmt)
    line = spectral_error(weights, tmp_path, capsys)
    assert str(weights) in line and "Python objects other than tensors" in line
    assert "weights_only" not in line
    assert not marker.exists(), "code from the file ran"


def test_a_pytorch_model_bin_that_would_run_code_is_refused(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    from tests.conftest import tiny_model

    marker = tmp_path / "MARKER"
    model_dir = tmp_path / "model"
    tiny_model("gpt2").config.save_pretrained(model_dir)
    plant(model_dir / "pytorch_model.bin", TouchOnLoad(marker), "zip")
    line = spectral_error(model_dir, tmp_path, capsys)
    assert "pytorch_model.bin holds Python objects other than tensors" in line
    assert not marker.exists()


def test_an_empty_pt_says_it_is_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    (tmp_path / "w.pt").write_bytes(b"")
    assert "w.pt is empty (0 bytes)" in spectral_error(tmp_path / "w.pt", tmp_path, capsys)


# ---------------------------------------------------------------------------- not files


@pytest.mark.parametrize("name", ["x.safetensors", "x.pt", "x.bin"])
def test_a_fifo_named_like_weights_is_refused_without_reading(name: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    fifo = tmp_path / name
    os.mkfifo(fifo)
    line = spectral_error(fifo, tmp_path, capsys, isolated=True)
    assert f"{fifo} is a named pipe (FIFO), not a regular file" in line


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin",
                                  "model.safetensors.index.json"])
def test_a_fifo_inside_a_model_directory_is_refused(name: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    fifo = model_dir / name
    os.mkfifo(fifo)
    line = spectral_error(model_dir, tmp_path, capsys, isolated=True)
    assert f"{fifo} is a named pipe (FIFO)" in line


def test_a_device_named_like_weights_is_refused(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    link = tmp_path / "zero.pt"
    link.symlink_to("/dev/zero")
    assert "is a character device" in spectral_error(link, tmp_path, capsys, isolated=True)


# ---------------------------------------------------------------------------- indexes


def two_shards(model_dir: Path) -> None:
    model_dir.mkdir()
    for i in (1, 2):
        save_file({"proj.weight": torch.randn(32, 32) * i},
                  str(model_dir / f"model-0000{i}-of-00002.safetensors"))


@pytest.mark.parametrize("index, expect", [
    ("[]", "holds a JSON list, not an object"),
    ('"text"', "holds a JSON str, not an object"),
    ('{"metadata": {}}', "has no 'weight_map'"),
    ('{"weight_map": 7}', "has a 'weight_map' that is a JSON int"),
    ('{"weight_map": {"proj.weight": "model-00009-of-00009.safetensors"}}', "missing"),
    ("{ torn", "cannot read the shard index"),
])
def test_a_malformed_shard_index_is_refused_naming_it(index: str, expect: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    two_shards(tmp_path / "model")
    (tmp_path / "model" / "model.safetensors.index.json").write_text(index)
    line = spectral_error(tmp_path / "model", tmp_path, capsys)
    assert "model.safetensors.index.json" in line and expect in line


def test_a_tensor_in_two_shards_without_an_index_is_refused(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    two_shards(tmp_path / "model")
    line = spectral_error(tmp_path / "model", tmp_path, capsys)
    assert "'proj.weight' is in both" in line
    assert "model-00001-of-00002.safetensors" in line and "model-00002-of-00002" in line


# ---------------------------------------------------------------------------- layer names


@pytest.fixture
def weights_file(tmp_path: Path) -> Path:
    path = tmp_path / "w.safetensors"
    torch.manual_seed(0)
    save_file({f"blocks.{i}.attn.weight": torch.randn(48, 32) for i in range(3)}, str(path))
    return path


@pytest.mark.parametrize("flag", ["--esd-layers", "--layers"])
def test_an_unknown_layer_name_is_refused_with_the_nearest(flag: str, weights_file: Path,
                                                           tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    line = spectral_error(weights_file, tmp_path, capsys, flag, "blocks.1.attn", "blocks.1.atn")
    assert flag in line and "no layer is named 'blocks.1.atn'" in line
    assert "nearest names: blocks.1.attn" in line


def test_known_esd_layers_still_run(weights_file: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    assert main(["spectral", str(weights_file), "--out", str(out),
                 "--esd-layers", "blocks.2.attn"]) == 0
    figures = list(out.glob("spectral/*/figures/esd_layer_*.png"))
    assert [f.name for f in figures] == ["esd_layer_2.png"]


# ---------------------------------------------------------------------------- complex weights


def test_complex_weights_are_analysed_not_truncated(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    s = np.linspace(1.0, 4.0, 32)
    U, _ = np.linalg.qr(rng.standard_normal((64, 32)) + 1j * rng.standard_normal((64, 32)))
    V, _ = np.linalg.qr(rng.standard_normal((32, 32)) + 1j * rng.standard_normal((32, 32)))
    W = torch.from_numpy(((U * s) @ V.conj().T).astype(np.complex64))
    save_file({"proj.weight": W}, str(tmp_path / "c.safetensors"))
    out = tmp_path / "runs"
    assert main(["spectral", str(tmp_path / "c.safetensors"), "--out", str(out)]) == 0
    assert "imaginary" not in capsys.readouterr().err
    table = pd.read_csv(next(out.glob("spectral/*/spectra.csv")))
    assert table.loc[0, "sv_max"] == pytest.approx(4.0, rel=1e-5)
    assert table.loc[0, "sv_min"] == pytest.approx(1.0, rel=1e-5)


# ---------------------------------------------------------------------------- data files


def charlm_error(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                 isolated: bool = False) -> str:
    out = tmp_path / "runs"
    line = one_error_line(["run", "charlm", "--out", str(out), "--set", f"data.path={path}"],
                          capsys, isolated=isolated)
    assert not out.exists(), "a run directory was left behind"
    return line


def test_a_word_longer_than_the_bound_is_refused_with_its_line(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    words = tmp_path / "names.txt"
    words.write_text("emma\n\nolivia\n" + "a" * 5000 + "\nava\n", encoding="utf-8")
    line = charlm_error(words, tmp_path, capsys)
    assert f"line 4 of {words} is 5000 characters long, more than the 64" in line


def test_a_fifo_as_the_word_file_is_refused(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "names.txt"
    os.mkfifo(fifo)
    line = charlm_error(fifo, tmp_path, capsys, isolated=True)
    assert "named pipe" in line


def test_a_one_record_data_file_says_it_is_too_few_to_split(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    """finetune-spectral on a one-record IR-Triplets file: the message says what is wrong.

    (The data are read inside the run, so its run directory is left with status ``failed``.)
    """
    data = tmp_path / "one.json"
    data.write_text(json.dumps([{"form": "f", "Training Observations": "o", "Question": "q?",
                                 "Answer": "a."}]))
    model_dir = tmp_path / "no-model-needed"
    model_dir.mkdir()  # the split fails before any model is loaded
    line = one_error_line(["run", "finetune-spectral", "--out", str(tmp_path / "runs"),
                           "--set", f"model={model_dir}", "--set", f"data.path={data}",
                           "--set", "device=cpu"], capsys)
    assert "holds 1 record, too few records to split into train and test" in line
    assert "at least 5 are needed" in line and "raise data.n_samples" not in line


@pytest.mark.parametrize("study", ["charlm", "finetune-spectral", "optimizers"])
def test_an_empty_data_path_is_refused_as_empty(study: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """``--set data.path=`` is neither the current directory nor the default data."""
    out = tmp_path / "runs"
    line = one_error_line(["run", study, "--out", str(out), "--set", "data.path="], capsys)
    assert "data.path" in line and "empty" in line and "'.'" not in line
    assert not out.exists()
