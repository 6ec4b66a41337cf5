"""`make gpu-check`'s script: its comparisons on known answers, its one-line refusal without
CUDA, and its CPU dry run (every study twice on the CPU: the same numbers bit for bit, α parity,
exact resumes)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tmp_path: Path, device: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GPU_CHECK_DEVICE": device, "OMP_NUM_THREADS": "1",
           "LMLAB_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out"), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)


def test_compare_finds_the_largest_difference_and_leaves_timings_out() -> None:
    gc = _module()
    cpu = {"a": {"loss": 2.0, "seconds": 10.0}, "b": [1.0, 4.0], "n": 3, "ok": True}
    dev = {"a": {"loss": 2.0, "seconds": 1.0}, "b": [1.0, 5.0], "n": 3, "ok": True}
    diff = gc.compare(cpu, dev)
    assert diff["n"] == 4 and diff["at"] == "b.1" and diff["max_rel"] == pytest.approx(0.2)
    assert diff["not_finite"] == [] and diff["missing"] == []
    nan = gc.compare({"x": 1.0}, {"x": float("nan"), "y": 2.0})
    assert nan["not_finite"] == ["x"] and nan["missing"] == ["y"]


def test_without_cuda_it_stops_in_one_line(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal cannot be seen here")
    done = _run(tmp_path, "cuda")
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("gpu_check: error: CUDA")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "cpu").exists()  # refused before any run


def test_the_cpu_dry_run_passes(tmp_path: Path) -> None:
    done = _run(tmp_path, "cpu")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["ok"] and report["machine"]["device"] == "cpu"
    studies = {r["study"]: r for r in report["studies"]}
    assert set(studies) == set(_module().SMALL)
    for row in studies.values():  # the same device twice: the same numbers, bit for bit
        assert row["status"] == "finished" and row["n"] > 0 and row["max_rel"] == 0.0
    checks = {c["check"].split(":")[0]: c for c in report["checks"]}
    assert checks["spectral"]["layers"] > 0 and checks["spectral"]["ok"]
    assert checks["train loop"]["ok"] and checks["train loop"]["steps"] == 12
    assert checks["induction"]["ok"]
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| charlm |" in table and "Overall: ok" in table
