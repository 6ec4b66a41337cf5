"""Fault injection: the k-th file write, rename or fsync of a run fails (ENOSPC or EIO).

For a tiny run of each training study, an uninterrupted run first counts the I/O operations
lmlab makes under its ``--out`` directory; then, for each k, the same run is started with the
k-th operation failing, and must

* end with exit code 2 and one line (``lmlab: error: ...``) that quotes what the disk said,
* leave ``meta.json`` with ``status: failed`` and that line as ``error`` (or, when the run
  directory could not get its config, no run directory at all),
* leave no temporary file anywhere under ``--out``,
* and ``--resume`` afterwards ends with the same numbers (``summary.json`` except timings) as
  the uninterrupted run.

What is counted: every file lmlab writes goes through :mod:`lmlab.runs.io` (atomic writes and
the appends to ``metrics.jsonl``) or the sweep store (``cells.jsonl``); :class:`Faults` swaps
the ``os`` (and ``tempfile``) those two modules see for a proxy that counts the first
``write`` of each file, each ``os.write`` of an append, each ``fsync`` of a file and each
``os.replace``. Directory fsyncs are best effort by design (some file systems refuse them) and
are not counted. Nothing outside ``--out`` is counted (the model and data caches are).

The default suite runs a sample of k (one per kind of operation on each kind of file) for two
studies; ``-m slow`` runs every k of every training study with both errors and prints the
figures (``FAULTS study=... cases=... failures=...``).
"""

from __future__ import annotations

import errno
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import lmlab.runs.io as runs_io
import lmlab.sweep._store as sweep_store
from lmlab.cli import main
from lmlab.runs.guard import TEMP_NAME
from tests.conftest import SHARED_DATA
from tests.studies.conftest import tiny_dir  # noqa: F401 - the tiny GPT-2 fixture

KINDS = {"ENOSPC": errno.ENOSPC, "EIO": errno.EIO}
_TEMP_OF = re.compile(r"^(.*/)?\.(.+)\.\d+-[a-z0-9_]{8}\.tmp$")  # -> the target's path
_TIMING = re.compile(r"seconds|per_second|duration|elapsed|_time$")


# --------------------------------------------------------------------------------- harness


@dataclass
class Faults:
    """Counts the I/O operations on files under ``root``; the ``fail_at``-th one raises."""

    root: Path
    fail_at: int | None = None
    code: int = errno.ENOSPC
    ops: list[tuple[str, str]] = field(default_factory=list)
    fired: bool = False
    persistent: bool = False  # every operation from the fail_at-th on fails (a disk that is full)
    paths: dict[int, str] = field(default_factory=dict)  # fd -> path, for fsync and write

    def hit(self, op: str, path: str | os.PathLike[str] | None) -> None:
        if path is None or not Path(os.path.abspath(path)).is_relative_to(self.root):
            return
        name = os.path.relpath(path, self.root)
        temporary = _TEMP_OF.match(name)  # a write to the temporary file of an atomic write
        if temporary:
            name = (temporary.group(1) or "") + temporary.group(2)
        self.ops.append((op, name))
        if len(self.ops) == self.fail_at or (self.persistent and self.fired):
            self.fired = True
            raise OSError(self.code, os.strerror(self.code))


class _Handle:
    """A file handle whose first ``write`` is one counted operation."""

    def __init__(self, handle: Any, faults: Faults, path: str | None) -> None:
        self._handle, self._faults, self._path, self._counted = handle, faults, path, False

    def write(self, data: Any) -> int:
        if not self._counted:
            self._counted = True
            self._faults.hit("write", self._path)
        return self._handle.write(data)

    def __enter__(self) -> _Handle:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


class _Os:
    """``os`` as lmlab's writers see it, with the counted operations going through ``faults``."""

    def __init__(self, faults: Faults) -> None:
        self._faults = faults

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def open(self, path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = os.open(path, flags, *args, **kwargs)
        self._faults.paths[fd] = os.fspath(path)
        return fd

    def fdopen(self, fd: int, *args: Any, **kwargs: Any) -> _Handle:
        return _Handle(os.fdopen(fd, *args, **kwargs), self._faults, self._faults.paths.get(fd))

    def write(self, fd: int, data: Any) -> int:
        self._faults.hit("write", self._faults.paths.get(fd))
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        path = self._faults.paths.get(fd)
        if path is not None and not os.path.isdir(path):  # directories: best effort, not counted
            self._faults.hit("fsync", path)
        os.fsync(fd)

    def replace(self, src: Any, dst: Any) -> None:
        self._faults.hit("rename", dst)
        os.replace(src, dst)


class _Tempfile:
    def __init__(self, faults: Faults) -> None:
        self._faults = faults

    def __getattr__(self, name: str) -> Any:
        return getattr(tempfile, name)

    def mkstemp(self, *args: Any, **kwargs: Any) -> tuple[int, str]:
        fd, path = tempfile.mkstemp(*args, **kwargs)
        self._faults.paths[fd] = path
        return fd, path


@contextmanager
def faults(root: Path, fail_at: int | None = None, code: int = errno.ENOSPC,
           persistent: bool = False) -> Iterator[Faults]:
    """Count (and fail the ``fail_at``-th of, or every one from it on) lmlab's file operations
    under ``root``."""
    f = Faults(root.resolve(), fail_at, code, persistent=persistent)
    saved = (runs_io.os, runs_io.tempfile, sweep_store.os)
    runs_io.os, runs_io.tempfile, sweep_store.os = _Os(f), _Tempfile(f), _Os(f)  # type: ignore
    try:
        yield f
    finally:
        runs_io.os, runs_io.tempfile, sweep_store.os = saved  # type: ignore[misc]


# ----------------------------------------------------------------------------------- studies


def _names(root: Path) -> list[str]:
    src = SHARED_DATA / "names_2018.txt"
    if not src.is_file():
        return []
    path = root / "names.txt"
    path.write_text("\n".join(src.read_text().split()[::16]))
    return [f"data.path={path}"]


def _lines(root: Path) -> str:
    from tests.studies.test_optimizers import write_lines

    return str(write_lines(root / "lines.txt"))


def study_settings(study: str, model: Path, root: Path) -> tuple[str, list[str]]:
    """The preset and ``--set`` values of a tiny run (those of the study's own tests)."""
    if study == "finetune-spectral":
        from tests.studies.test_finetune_spectral import overrides

        return "paper", overrides(model, **{"train.checkpoint_every": 2})
    if study in ("optimizers", "ablation"):
        sets = [f"model={model}", "data.source=file", f"data.path={_lines(root)}",
                "data.budget=200", "train.epochs=1", "train.lr=0.001", "device=cpu"]
        if study == "ablation":
            sets.append("modes=zero,mean")
        return "paper", sets
    if study == "charlm":
        return "quick", [*_names(root), "mlp.train.steps=60", "mlp.train.lr_decay_step=30",
                         "mlp.train.diag_every=20", "wavenet.enabled=false",
                         "transformer.enabled=false", "samples=2", "device=cpu"]
    if study == "induction":  # one setting, 20 steps: checkpoints at 0, 10 and 20
        return "quick", ["pools=20", "steps=20", "save_every=10", "eval_every=10",
                         "eval_cheap=20", "eval_full=50", "sweep.backend=inprocess"]
    if study == "attention-phase":
        from tests.studies.test_attention_phase import TINY

        return "quick", TINY
    raise ValueError(study)


def _numbers(value: Any) -> Any:
    """A summary without its timings."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items() if not _TIMING.search(k)}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


@dataclass
class Case:
    """One study's tiny run, and what an uninterrupted run of it gives."""

    study: str
    preset: str
    sets: list[str]
    ops: list[tuple[str, str]]
    want: Any

    def argv(self, out: Path, *extra: str) -> list[str]:
        return ["run", self.study, "--preset", self.preset,
                *(a for s in self.sets for a in ("--set", s)), "--out", str(out), *extra]


def _summary(out: Path, study: str) -> Any:
    import json

    (run,) = (out / study).iterdir()
    return _numbers(json.loads((run / "summary.json").read_text()))


def prepare(study: str, model: Path, root: Path) -> Case:
    """Run the study once without faults, counting its operations."""
    preset, sets = study_settings(study, model, root)
    case = Case(study, preset, sets, [], None)
    out = root / "straight"
    with faults(out) as f:
        assert main(case.argv(out)) == 0
    case.ops, case.want = f.ops, _summary(out, study)
    return case


def _leftovers(out: Path) -> list[str]:
    return [str(p) for p in out.rglob("*") if TEMP_NAME.match(p.name)]


def inject(case: Case, k: int, kind: str, out: Path,
           capsys: pytest.CaptureFixture[str]) -> str | None:
    """Fail the k-th operation with ``kind``, check the failure, resume; None if all is well,
    else what went wrong."""
    import json

    capsys.readouterr()
    with faults(out, fail_at=k, code=KINDS[kind]) as f:
        code = main(case.argv(out))
    err = capsys.readouterr().err.strip()
    what = f"k={k} ({case.ops[k - 1][0]} {case.ops[k - 1][1]}) {kind}"
    if not f.fired:
        return f"{what}: the fault did not fire (the run made other operations)"
    # progress bars share stderr; the error itself is one line, the last, and no traceback
    lines = [line for line in err.splitlines() if line.startswith("lmlab: error: ")]
    if (code != 2 or len(lines) != 1 or not err.endswith(lines[0])
            or "Traceback" in err):
        return f"{what}: exit {code}, stderr {err[-500:]!r}"
    if os.strerror(KINDS[kind]) not in lines[0]:
        return f"{what}: the message does not say what the disk said: {lines[0]}"
    runs = list((out / case.study).iterdir()) if (out / case.study).is_dir() else []
    if len(runs) > 1:
        return f"{what}: {len(runs)} run directories"
    if runs and (runs[0] / "config.json").is_file():
        meta = json.loads((runs[0] / "meta.json").read_text())
        if meta.get("status") != "failed" or meta.get("error") != lines[0][len("lmlab: error: "):]:
            return f"{what}: meta.json says {meta.get('status')!r}, {meta.get('error')!r}"
    elif runs:
        return f"{what}: a run directory without config.json is left: {runs[0]}"
    if _leftovers(out):
        return f"{what}: temporary files left: {_leftovers(out)}"
    code = main(case.argv(out, "--resume"))
    err = capsys.readouterr().err.strip()
    if code != 0:
        return f"{what}: --resume exited {code}: {err[-500:]!r}"
    got = _summary(out, case.study)
    if got != case.want:
        diff = sorted(k for k in set(got) | set(case.want) if got.get(k) != case.want.get(k))
        return f"{what}: --resume ended with other numbers: {diff}"
    if _leftovers(out):
        return f"{what}: temporary files left after --resume: {_leftovers(out)}"
    return None


def _kind_of_file(path: str) -> str:
    """What a file of a run is: config, meta, metrics, checkpoint, result, figure, report..."""
    name = Path(path).name
    for kind, pattern in [("checkpoint", r"\.pth?$"), ("figure", r"\.(png|svg|pdf)$"),
                          ("report", r"^report\."), ("result", r"^result/"),
                          ("cells", r"cells\.jsonl$"), ("table", r"\.(csv|parquet)$")]:
        if re.search(pattern, name if kind != "result" else path.split("/", 2)[-1]):
            return kind
    return name


def sample(ops: list[tuple[str, str]]) -> list[int]:
    """A few k (1-based) that fail each kind of file once, the operation taken in turn (write,
    fsync, rename), at its first occurrence."""
    order = ["write", "fsync", "rename"]
    files = list(dict.fromkeys(_kind_of_file(path) for _, path in ops))
    chosen = []
    for i, kind in enumerate(files):
        wanted = order[i % 3]
        at = [k for k, (op, path) in enumerate(ops, 1) if _kind_of_file(path) == kind]
        chosen.append(next((k for k in at if ops[k - 1][0] == wanted), at[0]))
    return sorted(chosen)


def sweep(case: Case, cases: list[tuple[int, str]], root: Path,
          capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Every (k, kind) case; returns the failures and prints the figures."""
    start = time.perf_counter()
    failures = []
    for k, kind in cases:
        problem = inject(case, k, kind, root / f"k{k}-{kind}", capsys)
        if problem:
            failures.append(problem)
    took = time.perf_counter() - start
    with capsys.disabled():
        print(f"\nFAULTS study={case.study} ops={len(case.ops)} "
              f"k={len({k for k, _ in cases})} kinds={','.join(sorted({c for _, c in cases}))} "
              f"cases={len(cases)} failures={len(failures)} seconds={took:.0f}",
              file=sys.stderr)
    return failures


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------------ tests


def test_the_harness_counts_and_fails_writes_renames_and_fsyncs(tmp_path: Path) -> None:
    from lmlab.runs import RunDir

    with faults(tmp_path) as f:
        run = RunDir.create(tmp_path, "demo")
        run.save_config({"seed": 0})
        run.log_metrics({"step": 1})
    names = [(op, Path(p).name) for op, p in f.ops]
    assert names == [("write", "config.json"), ("fsync", "config.json"),
                     ("rename", "config.json"), ("write", "metrics.jsonl"),
                     ("fsync", "metrics.jsonl")]
    for k in (1, 2, 3):  # the write, the fsync, the rename of config.json
        with faults(tmp_path, fail_at=k, code=errno.EIO) as f, pytest.raises(Exception) as e:
            run.save_config({"seed": k})
        assert f.fired and "Input/output error" in str(e.value)
        assert run.read_config() == {"seed": 0} and not _leftovers(tmp_path)


def test_a_disk_that_stays_full_shows_the_first_failure(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The run's own error is the one shown, not that of the clean-up, which fails too (the
    meta.json that says 'failed' cannot be written either)."""
    from tests.studies.test_attention_phase import TINY

    case = Case("attention-phase", "quick", TINY, [], None)
    out = tmp_path / "runs"
    with faults(out) as f:
        assert main(case.argv(out)) == 0
    first = next(k for k, (op, path) in enumerate(f.ops, 1) if path.endswith("cells.jsonl"))
    capsys.readouterr()
    with faults(tmp_path / "full", fail_at=first, persistent=True) as f:
        assert main(case.argv(tmp_path / "full")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("lmlab: error: cannot append to ") and "cells.jsonl" in err
    assert "No space left on device" in err and "meta.json" not in err
    assert len(f.ops) > first  # the clean-up did try to write, and failed quietly
    assert not _leftovers(tmp_path / "full")


DEFAULT = ["finetune-spectral", "attention-phase"]
TRAINING = ["finetune-spectral", "optimizers", "ablation", "charlm", "induction",
            "attention-phase"]


@pytest.mark.parametrize("study", DEFAULT)
def test_a_sample_of_faults(study: str, tiny_dir: Path, tmp_path: Path,  # noqa: F811
                            capsys: pytest.CaptureFixture[str]) -> None:
    case = prepare(study, tiny_dir, tmp_path)
    kinds = list(KINDS)  # the two errors in turn
    cases = [(k, kinds[i % 2]) for i, k in enumerate(sample(case.ops))]
    failures = sweep(case, cases, tmp_path, capsys)
    assert not failures, "\n".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize("study", TRAINING)
def test_every_fault_of_every_training_study(study: str, tiny_dir: Path,  # noqa: F811
                                             tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    case = prepare(study, tiny_dir, tmp_path)
    cases = [(k, kind) for k in range(1, len(case.ops) + 1) for kind in KINDS]
    failures = sweep(case, cases, tmp_path, capsys)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)
