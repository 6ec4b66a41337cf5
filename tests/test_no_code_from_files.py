"""Nothing lmlab reads back from its own files runs code (issue 15, item 1).

A malicious pickle — an object whose ``__reduce__`` creates a marker file when unpickled — is
planted in every kind of file lmlab writes and reads back, in each format that could carry it
(``torch.save`` zip and legacy, plain ``pickle.dump``, an ``.npy`` object array), and the file
is then read through the public code path that reads it. Each case checks that

* the marker does not exist (no code ran);
* the file is refused with a one-line :class:`LmlabError` naming it, or, where lmlab
  deliberately computes a cache again, a warning or stderr line names it;
* no text shown advises ``weights_only`` (torch's advice to unpickle anything).

A first test proves that every planted file is live: read the unsafe way, it does run code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lmlab.errors import LmlabError
from tests.studies import conftest as _studies

tiny_dir = _studies.tiny_dir  # the study tests' tiny GPT-2 model directory, as a fixture here

# ------------------------------------------------------------------------ the planted payload


class _Touch:
    """Unpickled, creates ``marker``: the stand-in for any code a file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return Path.touch, (self.marker,)


def _torch_zip(path: Path, obj: Any) -> None:
    torch.save(obj, path)


def _torch_legacy(path: Path, obj: Any) -> None:
    torch.save(obj, path, _use_new_zipfile_serialization=False)


def _pickle(path: Path, obj: Any) -> None:
    path.write_bytes(pickle.dumps(obj))


def _npy(path: Path, obj: Any) -> None:
    with path.open("wb") as f:
        np.save(f, np.array([obj], dtype=object), allow_pickle=True)


TORCH_WRITERS = {"torch.save": _torch_zip, "torch.save-legacy": _torch_legacy,
                 "pickle.dump": _pickle}
NPY_WRITERS = {"np.save-object": _npy, "pickle.dump": _pickle}


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "code-ran"
    yield path
    assert not path.exists(), "code from a planted file ran"


@contextmanager
def _shown(capsys: pytest.CaptureFixture[str]) -> Iterator[list[str]]:
    """Collect what the user would see: warnings and stderr lines (filled in at exit)."""
    seen: list[str] = []
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield seen
    seen += [str(w.message) for w in caught]
    seen += [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _refused(error: BaseException, path: Path, seen: tuple[str, ...] | list[str] = ()) -> str:
    """The checks on a refusal: one line naming ``path``, nothing about weights_only."""
    text = str(error)
    assert isinstance(error, LmlabError), repr(error)
    assert "\n" not in text and str(path) in text, text
    assert "weights_only" not in text, text
    _no_bypass_advice(seen)
    return text


def _no_bypass_advice(seen: tuple[str, ...] | list[str]) -> None:
    # torch itself may still warn about the pickle protocol of a plain pickle ("the
    # weights_only Unpickler might not support ..."); it must never advise to turn it off
    for line in seen:
        assert "weights_only=False" not in line, line


def _named_once(seen: list[str], path: Path) -> str:
    """The first warning or stderr line that names ``path`` (none advises weights_only=False)."""
    naming = [line for line in seen if str(path) in line]
    assert len(naming) >= 1, seen
    assert "weights_only" not in naming[0], naming[0]
    _no_bypass_advice(seen)
    return naming[0]


@pytest.mark.parametrize("name", [*TORCH_WRITERS, "np.save-object"])
def test_every_planted_file_runs_code_when_read_unsafely(name: str, tmp_path: Path) -> None:
    marker, path = tmp_path / "code-ran", tmp_path / "planted"
    writer = TORCH_WRITERS.get(name, _npy)
    writer(path, {"step": 1, "x": _Touch(marker)})
    if name == "pickle.dump":
        pickle.loads(path.read_bytes())
    elif name == "np.save-object":
        np.load(path, allow_pickle=True)
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


# ------------------------------------------------ the fine-tuning checkpoint and its metrics


@pytest.fixture(scope="module")
def finetune_run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny fine-tuning run (4 steps, ``checkpoints/last.pt``) to copy and spoil."""
    from lmlab.studies.runner import run_study
    from tests.studies.test_finetune_spectral import overrides

    out = tmp_path_factory.mktemp("finetune")
    run_study("finetune-spectral", preset="paper", overrides=overrides(tiny_dir), out=out)
    return out


def _resumable_copy(out: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the runs directory whose run looks killed mid-run: (runs dir, run dir)."""
    from lmlab.runs import RunDir

    copy = shutil.copytree(out, tmp_path / "runs")
    (run,) = (copy / "finetune-spectral").iterdir()
    (run / "summary.json").unlink()
    RunDir.open(run).update_meta({"status": "running", "pid": 0})
    return copy, run


def _resume_finetune(tiny_dir: Path, out: Path) -> Any:
    from lmlab.studies.runner import run_study
    from tests.studies.test_finetune_spectral import overrides

    return run_study("finetune-spectral", preset="paper", overrides=overrides(tiny_dir),
                     out=out, resume=True)


@pytest.mark.parametrize("writer", TORCH_WRITERS.values(), ids=TORCH_WRITERS)
def test_finetune_checkpoint_on_resume(writer: Callable[[Path, Any], None], finetune_run: Path,
                                       tiny_dir: Path, tmp_path: Path, marker: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out, run = _resumable_copy(finetune_run, tmp_path)
    path = run / "checkpoints" / "last.pt"
    writer(path, {"step": 2, "x": _Touch(marker)})
    with _shown(capsys) as seen, pytest.raises(LmlabError) as info:
        _resume_finetune(tiny_dir, out)
    assert "delete it" in _refused(info.value, path, seen)


def test_finetune_metrics_on_resume(finetune_run: Path, tiny_dir: Path, tmp_path: Path,
                                    marker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The spectral tracker keeps no file of its own: a resumed run takes its rows back from
    ``metrics.jsonl`` (JSON lines); a pickled line there is dropped, and the run finishes."""
    from lmlab.runs import RunDir

    out, run = _resumable_copy(finetune_run, tmp_path)
    path = run / "metrics.jsonl"
    rows = RunDir.open(run).read_metrics()
    path.write_bytes(pickle.dumps({"x": _Touch(marker)}) + b"\n" + path.read_bytes())
    with _shown(capsys) as seen:
        _resume_finetune(tiny_dir, out)
    _no_bypass_advice(seen)
    back = RunDir.open(run).read_metrics()
    assert len(back) >= len(rows) and set(back.columns) == set(rows.columns)


# ------------------------------------------------------------ charlm's per-phase checkpoints


@pytest.mark.parametrize("writer", TORCH_WRITERS.values(), ids=TORCH_WRITERS)
def test_charlm_phase_checkpoint(writer: Callable[[Path, Any], None], tmp_path: Path,
                                 marker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``checkpoints/trained-<phase>.pt`` as a resumed charlm run reads it: named on stderr,
    and the phase trains again (then the file holds that phase, read back on the next run)."""
    from lmlab.runs import RunDir
    from lmlab.studies._charlm_train import module_state, trained
    from lmlab.train.sampled import StepResult

    run = RunDir.create(tmp_path, "charlm", "t")
    model = torch.nn.Linear(3, 2)
    path = run.checkpoints_dir / "trained-mlp.pt"
    writer(path, {"phase": "mlp", "state": model.state_dict(),
                  "result": {"losses": torch.zeros(1, 2)}, "x": _Touch(marker)})
    calls = []

    def train() -> StepResult:
        calls.append(1)
        return StepResult(losses=torch.ones(1, 2))

    with _shown(capsys) as seen:
        result = trained(run, "mlp", *module_state(model), train)
    assert calls == [1] and torch.equal(result.losses, torch.ones(1, 2))
    line = _named_once(seen, path)
    assert line.startswith("lmlab: ") and "training the mlp phase again" in line
    assert trained(run, "mlp", *module_state(model), train).losses.sum() == 2  # kept
    assert calls == [1]


def test_charlm_phase_checkpoint_on_resume(tmp_path: Path, marker: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """End to end: a resumed charlm run names the spoiled file, trains that phase again and
    ends with the same numbers."""
    from lmlab.runs import RunDir
    from lmlab.studies.runner import run_study
    from tests.conftest import SHARED_DATA
    from tests.studies.test_charlm import SHORT

    source = SHARED_DATA / "names_2018.txt"
    if not source.is_file():
        pytest.skip(f"the lecture's names file is not at {source}")
    words = tmp_path / "names.txt"
    words.write_text("\n".join(source.read_text().split()[::16]))
    sets = [f"data.path={words}", *SHORT]
    run = run_study("charlm", overrides=sets, out=tmp_path / "runs").path
    want = json.loads((run / "summary.json").read_text())
    path = run / "checkpoints" / "trained-mlp.pt"
    _torch_zip(path, {"phase": "mlp", "x": _Touch(marker)})
    (run / "summary.json").unlink()
    RunDir.open(run).update_meta({"status": "running", "pid": 0})
    with _shown(capsys) as seen:
        run_study("charlm", overrides=sets, out=tmp_path / "runs", resume=True)
    assert "training the mlp phase again" in _named_once(seen, path)
    got = json.loads((run / "summary.json").read_text())
    assert got["models"]["mlp-e01"]["dev"] == want["models"]["mlp-e01"]["dev"]
    assert got["test_loss"] == want["test_loss"]


def test_charlm_phase_checkpoint_of_another_shape_is_not_half_loaded(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmlab.runs import RunDir
    from lmlab.studies._charlm_train import module_state, trained
    from lmlab.train.sampled import StepResult

    run = RunDir.create(tmp_path, "charlm", "t")
    model = torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"phase": "mlp", "state": {"weight": torch.ones(2, 3), "bias": torch.ones(5)},
                "result": {"losses": torch.zeros(1, 2)}}, run.checkpoints_dir / "trained-mlp.pt")

    def train() -> StepResult:
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), k  # the weights the phase starts from
        return StepResult(losses=torch.ones(1, 2))

    with _shown(capsys) as seen:
        trained(run, "mlp", *module_state(model), train)
    assert "do not fit the model" in _named_once(seen, run.checkpoints_dir / "trained-mlp.pt")


# ---------------------------------------------------- induction's per-setting checkpoints


def _setting() -> Any:
    from lmlab.studies.induction_train import TrainSetting

    return TrainSetting("m", pool_size=None, steps=4, save_every=2, eval_cheap=5, eval_full=5)


@pytest.fixture(scope="module")
def induction_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A setting stopped at step 2: ``ckpt_0.pt``, ``ckpt_2.pt``, ``train_state.pt``."""
    from lmlab.studies.induction_train import train_setting

    out = tmp_path_factory.mktemp("induction") / "m"
    train_setting(_setting(), out, stop_after=2)
    return out


def _spoiled(induction_dir: Path, tmp_path: Path, name: str, writer: Callable[[Path, Any], None],
             marker: Path) -> tuple[Path, Path]:
    out = shutil.copytree(induction_dir, tmp_path / "m")
    path = out / name
    content = torch.load(path, weights_only=True)
    writer(path, {**content, "x": _Touch(marker)})
    return out, path


@pytest.mark.parametrize("writer", TORCH_WRITERS.values(), ids=TORCH_WRITERS)
@pytest.mark.parametrize("name", ["train_state.pt", "ckpt_2.pt"])
def test_induction_resume(name: str, writer: Callable[[Path, Any], None], induction_dir: Path,
                          tmp_path: Path, marker: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    from lmlab.studies.induction_train import train_setting

    out, path = _spoiled(induction_dir, tmp_path, name, writer, marker)
    with _shown(capsys) as seen, pytest.raises(LmlabError) as info:
        train_setting(_setting(), out)
    assert "delete" in _refused(info.value, path, seen)


@pytest.mark.parametrize("writer", TORCH_WRITERS.values(), ids=TORCH_WRITERS)
def test_induction_checkpoint_measured(writer: Callable[[Path, Any], None], induction_dir: Path,
                                       tmp_path: Path, marker: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """``ckpt_<step>.pt`` as the measurement (:func:`lmlab.circuits.load_run`) and
    :func:`lmlab.models.rotary_tf.load_checkpoint` read it."""
    from lmlab.circuits import load_run
    from lmlab.models.rotary_tf import load_checkpoint

    out, path = _spoiled(induction_dir, tmp_path, "ckpt_2.pt", writer, marker)
    with _shown(capsys) as seen, pytest.raises(LmlabError) as info:
        load_run(out)
    assert "torch.save(model.state_dict()" in _refused(info.value, path, seen)
    with _shown(capsys) as seen, pytest.raises(LmlabError) as info:
        load_checkpoint(path)
    _refused(info.value, path, seen)


def test_induction_resume_with_a_foreign_err_arr(induction_dir: Path, tmp_path: Path,
                                                 marker: Path) -> None:
    from lmlab.studies.induction_train import train_setting

    out = shutil.copytree(induction_dir, tmp_path / "m")
    path = out / "err_arr.json"
    _pickle(path, [{"epoch": 0, "x": _Touch(marker)}])
    with pytest.raises(LmlabError) as info:
        train_setting(_setting(), out)
    assert "delete" in _refused(info.value, path)


# ---------------------------------------------------------------------------- the caches


@pytest.mark.parametrize("writer", NPY_WRITERS.values(), ids=NPY_WRITERS)
def test_subspace_baseline_cache(writer: Callable[[Path, Any], None], tmp_path: Path,
                                 marker: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    from lmlab.circuits import subspace

    want = subspace.random_baseline(8, [1, 3], draws=20, seed=5, disk=False)
    monkeypatch.setattr(subspace, "_BASELINE_CACHE", {})
    path = subspace._baseline_file(tmp_path, 8, 20, 5, "largest")
    path.parent.mkdir(parents=True)
    writer(path, _Touch(marker))
    with _shown(capsys) as seen:
        got = subspace.random_baseline(8, [1, 3], draws=20, seed=5, cache_dir=tmp_path)
    np.testing.assert_array_equal(got, want)
    assert "computing the baseline again" in _named_once(seen, path)
    assert np.load(path, allow_pickle=False).shape == (8,)  # written again as plain numbers


def test_theory_cache(tmp_path: Path, marker: Path, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture[str]) -> None:
    from lmlab.theory import attention
    from lmlab.theory.attention import FixedPoint, TheoryParams

    point = FixedPoint(alpha=2.0, branch="semantic", q=1.0, m=0.0, theta=0.5, V=1.0, qhat=0.0,
                       mhat=0.0, thetahat=0.1, Vhat=0.2, eps_t=0.3, eps_g=0.4, converged=True,
                       iterations=2)
    monkeypatch.setattr(attention, "solve_branch", lambda a, b, p: point)
    params = TheoryParams(order=4, max_iter=2)
    path = attention._cache_file(tmp_path, params)
    _pickle(path, {"points": {"2.0|semantic": _Touch(marker)}})
    with _shown(capsys) as seen:
        df = attention.solve_curve([2.0], params, branches=["semantic"], cache_dir=tmp_path)
    assert df["eps_t"].tolist() == [0.3]
    assert "solving those points again" in _named_once(seen, path)
    assert json.loads(path.read_text())["points"]  # written again as JSON


def test_data_cache(tmp_path: Path, marker: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A downloaded file replaced by a pickle: refused by its checksum; with a forged checksum
    too, it is read as text and refused as such."""
    from lmlab.data import data_cache_dir, load_ir_triplets

    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "triplets.json"
    source.write_text(json.dumps([{"form": "f", "Question": "q", "Answer": "a"}]))
    assert load_ir_triplets(None, url=source.as_uri())[0]["Answer"] == "a"
    (path,) = data_cache_dir().glob("*.json")
    _pickle(path, [{"form": _Touch(marker)}])
    with pytest.raises(LmlabError) as info:
        load_ir_triplets(None, url=source.as_uri())
    assert "delete it" in _refused(info.value, path)

    forged = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(f"{path.name}.sha256").write_text(forged + "\n")
    with pytest.raises(LmlabError) as info:
        load_ir_triplets(None, url=source.as_uri())
    _refused(info.value, path)


def _square(cell: dict[str, int]) -> dict[str, int]:
    return {"y": cell["x"] ** 2}


@pytest.mark.parametrize("tail", [b"", b"\n"], ids=["no-newline", "newline"])
def test_sweep_store(tail: bytes, tmp_path: Path, marker: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    from lmlab.sweep import STORE_FILE, run_sweep

    path = tmp_path / STORE_FILE
    path.write_bytes(pickle.dumps({"key": "k", "rows": [_Touch(marker)]}) + tail)
    with _shown(capsys) as seen:
        table = run_sweep(_square, [{"x": 2}, {"x": 3}], store=tmp_path, progress=False)
    assert table["y"].tolist() == [4, 9]
    assert "recomputed" in _named_once(seen, path)


@dataclasses.dataclass(frozen=True)
class _Saved:
    curve: np.ndarray


@pytest.mark.parametrize("writer", NPY_WRITERS.values(), ids=NPY_WRITERS)
def test_saved_result_array(writer: Callable[[Path, Any], None], tmp_path: Path,
                            marker: Path) -> None:
    """``result/<field>.npy`` as ``lmlab report`` reads it (:func:`lmlab.runs.read_result`)."""
    from lmlab.runs.result import read_result, save_result

    save_result(tmp_path, _Saved(np.arange(3.0)))
    path = tmp_path / "result" / "curve.npy"
    writer(path, _Touch(marker))
    with pytest.raises(LmlabError) as info:
        read_result(_Saved, tmp_path)
    _refused(info.value, path)
