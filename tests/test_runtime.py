from __future__ import annotations

import dataclasses
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lmlab import __version__
from lmlab.errors import LmlabError
from lmlab.runtime import (
    cache_dir,
    environment_info,
    limit_threads,
    resolve_device,
    seed_everything,
    set_threads,
)


def _draw() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_seed_everything_makes_all_generators_repeat() -> None:
    seed_everything(123)
    first = _draw()
    seed_everything(123)
    assert _draw() == first
    seed_everything(124)
    assert _draw() != first


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "3", True])
def test_seed_everything_rejects_bad_seeds(bad: object) -> None:
    with pytest.raises(LmlabError, match="seed must be an integer"):
        seed_everything(bad)  # type: ignore[arg-type]


def test_resolve_device_auto_and_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_resolve_device_prefers_cuda_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # restored after the test
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    assert resolve_device("cpu") == torch.device("cpu")
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ  # a CPU run leaves cuBLAS alone
    assert resolve_device("auto") == torch.device("cuda")
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # before CUDA's first product
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"  # the user's setting is kept
    with pytest.raises(LmlabError, match="only 2 GPU"):
        resolve_device("cuda:2")


@dataclasses.dataclass(frozen=True)
class _WithDevice:
    device: str = "auto"
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class _NoDevice:
    seed: int = 0


def test_the_run_records_the_device_it_computes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from lmlab.studies.runner import _resolved, _run_device, _start_meta

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    dev = _run_device(_WithDevice())
    assert dev == torch.device("cpu") and _resolved(_WithDevice(), dev).device == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Fake GPU")
    dev = _run_device(_WithDevice())
    assert _resolved(_WithDevice(), dev).device == "cuda"  # config.json: not "auto"
    assert _resolved(_WithDevice("cpu"), torch.device("cpu")).device == "cpu"
    meta = _start_meta("s", "quick", _WithDevice("cuda"), dev, {})
    assert meta["device"] == "cuda" and meta["versions"]["cuda"] == "Fake GPU"
    # a study without a device key computes on the CPU, on a GPU machine too
    dev = _run_device(_NoDevice())
    meta = _start_meta("s", "quick", _NoDevice(), dev, {})
    assert meta["device"] == "cpu" and "cuda" not in meta["versions"]
    assert _resolved(_NoDevice(), dev) == _NoDevice()


def test_resume_on_another_device_type_is_refused_in_one_line(tmp_path: Path) -> None:
    from lmlab.runs import RunDir
    from lmlab.studies.runner import _check_device_type

    run = RunDir.create(tmp_path, "s", "t")
    with pytest.raises(LmlabError) as err:
        _check_device_type(run, "cuda", "cpu")
    msg = str(err.value)
    assert "\n" not in msg and "ran on cuda" in msg and "on cpu" in msg
    assert msg.endswith("resume with --device cuda")
    with pytest.raises(LmlabError, match="resume with --device cpu"):
        _check_device_type(run, "cpu", "cuda:1")
    _check_device_type(run, "cuda", "cuda:1")  # another GPU of the same type
    _check_device_type(run, "cpu", "cpu")
    _check_device_type(run, "auto", "cuda")  # a run directory of an older lmlab


@pytest.mark.parametrize("request_", ["cuda", "cuda:0", "CUDA:3"])
def test_resolve_device_cuda_unavailable(monkeypatch: pytest.MonkeyPatch, request_: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(LmlabError) as err:
        resolve_device(request_)
    assert str(err.value) == "CUDA was requested but is not available; use --device cpu"


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "tpu", ""])
def test_resolve_device_unknown_lists_choices(bad: str) -> None:
    with pytest.raises(LmlabError, match="choose one of auto, cpu, cuda, cuda:N"):
        resolve_device(bad)


def test_set_threads_changes_torch_and_none_leaves_it() -> None:
    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
        set_threads(None)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_set_threads_rejects_bad_counts(bad: object) -> None:
    with pytest.raises(LmlabError, match="positive integer"):
        set_threads(bad)  # type: ignore[arg-type]


def test_limit_threads_restores_even_after_an_error() -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = torch.get_num_threads()
    blas_before = [
        p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"
    ]
    with pytest.raises(RuntimeError):
        with limit_threads(1):
            assert torch.get_num_threads() == 1
            inside = [
                p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"
            ]
            assert all(n == 1 for n in inside)
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    blas_after = [
        p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"
    ]
    assert blas_after == blas_before


def test_limit_threads_none_is_a_no_op() -> None:
    before = torch.get_num_threads()
    with limit_threads(None):
        assert torch.get_num_threads() == before


def test_environment_info_is_flat_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    info = environment_info()
    for key in (
        "python",
        "platform",
        "lmlab",
        "torch",
        "numpy",
        "scipy",
        "pandas",
        "device",
        "cpu_count",
        "threads",
    ):
        assert key in info, key
    assert all(isinstance(v, str) for v in info.values())
    assert info["lmlab"] == __version__
    assert info["torch"] == torch.__version__
    assert info["numpy"] == np.__version__
    assert info["device"] == "cpu"
    assert "cuda" not in info
    assert int(info["threads"]) == torch.get_num_threads()


# --- the one cache directory ------------------------------------------------------------------


def test_cache_dir_follows_lmlab_cache_then_the_platform(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LMLAB_CACHE", "~/my-cache")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "my-cache"
    assert cache_dir("models/smollm2") == tmp_path / "my-cache" / "models" / "smollm2"
    monkeypatch.delenv("LMLAB_CACHE")
    import platformdirs

    expected = Path(platformdirs.user_cache_dir("lmlab", appauthor=False))
    assert cache_dir() == expected and cache_dir("data") == expected / "data"
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert cache_dir("theory") == tmp_path / "xdg" / "lmlab" / "theory"
        monkeypatch.delenv("XDG_CACHE_HOME")
        assert cache_dir() == tmp_path / ".cache" / "lmlab"


@pytest.mark.parametrize("sub", ["/etc", "../outside", "a/../../b"])
def test_cache_dir_stays_inside_the_cache(sub: str) -> None:
    with pytest.raises(LmlabError, match="relative path inside the cache"):
        cache_dir(sub)
