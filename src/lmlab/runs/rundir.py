"""Run directories: one folder per run holding its config, metrics, tables, figures and report.

Layout of ``<root>/<study>/<YYYYmmdd-HHMMSS>-<name>/``::

    config.json      resolved config (plus "_study" / "_preset" when known)
    meta.json        what ran: study, preset, model, data, device, seed, versions, duration
    metrics.jsonl    one JSON object per line, appended as training goes
    summary.json     final numbers
    figures/*.png    checkpoints/    report.json, report.md, report.html
    .lock            locked (:meth:`RunDir.lock`) by the one process that writes the run

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     run = RunDir.create(tmp, "demo")
...     run.log_metrics([{"step": 0, "loss": 2.0}, {"step": 1, "loss": 1.5}])
...     run.read_metrics()["loss"].tolist()
[2.0, 1.5]
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmlab.config import config_to_dict
from lmlab.errors import LmlabError
from lmlab.runs.guard import DirectoryLock, remove_temporaries
from lmlab.runs.io import (
    _dumps,
    append_lines,
    atomic_write_bytes,
    atomic_write_json,
    save_figure,
    save_table,
)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["RunDir"]

MIN_FREE_BYTES = 50 * 1024**2
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _slug(text: str, what: str) -> str:
    slug = _UNSAFE.sub("-", str(text).strip()).strip("-.")
    if not slug:
        raise LmlabError(f"the {what} {text!r} has no usable characters; use letters and digits")
    return slug


def check_runs_root(root: str | os.PathLike[str]) -> Path:
    """``root`` can hold run directories: not a file, and writable where it exists or would
    be created. Nothing is created (``lmlab run ... --check``).

    >>> check_runs_root(tempfile.gettempdir()).is_dir()
    True
    """
    path = Path(root).expanduser()
    if path.exists() and not path.is_dir():
        raise LmlabError(f"the runs directory {path} is a file; choose a directory instead")
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LmlabError(f"cannot write to {existing} (for the runs directory {path}); choose "
                         "a writable directory")
    return path


def _check_root(root: Path, need: int = MIN_FREE_BYTES) -> None:
    """Create ``root`` if needed and check that it is writable and has ``need`` bytes free."""
    check_runs_root(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise LmlabError(
            f"cannot write to the runs directory {root} ({exc.strerror or exc}); "
            "choose a writable directory"
        ) from None
    free = shutil.disk_usage(root).free
    if free < need:
        raise LmlabError(
            f"only {free / 1024**2:.0f} MB free on the disk holding {root}; "
            f"free at least {-(-need // 1024**2)} MB or choose another runs directory"
        )


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LmlabError(f"no {what} at {path}; check that the run finished") from None
    except (OSError, ValueError) as exc:
        detail = " ".join(str(exc).split())
        raise LmlabError(f"cannot read {path} ({detail}); the file may be corrupt") from None


class RunDir:
    """A run directory on disk; create one with :meth:`create` or reopen it with :meth:`open`.

    Args:
        path: The run directory (not checked; prefer the two constructors).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     run = RunDir.create(tmp, "demo", name="try")
    ...     run.path.name.endswith("-try"), run.figures_dir.is_dir()
    (True, True)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._lock = DirectoryLock(self._path)

    @classmethod
    def create(cls, root: str | os.PathLike[str], study: str, name: str = "run") -> RunDir:
        """Make ``root/<study>/<YYYYmmdd-HHMMSS>-<name>/`` with ``figures/`` and ``checkpoints/``.

        A ``-2``, ``-3``, ... suffix is added if the directory already exists.

        Args:
            root: The runs directory; created if missing.
            study: The study name (first level below ``root``).
            name: A short label for this run.

        Returns:
            The new run directory.

        Raises:
            LmlabError: If ``root`` cannot be written or its disk has less than 50 MB free.

        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     a, b = RunDir.create(tmp, "s", "x"), RunDir.create(tmp, "s", "x")
        ...     a.path != b.path
        True
        """
        root_path = Path(root).expanduser()
        _check_root(root_path)
        study_dir = root_path / _slug(study, "study name")
        base = f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(name, 'run name')}"
        try:
            study_dir.mkdir(parents=True, exist_ok=True)
            for attempt in range(1, 10_000):
                path = study_dir / (base if attempt == 1 else f"{base}-{attempt}")
                try:
                    path.mkdir()
                except FileExistsError:
                    continue
                break
            else:  # pragma: no cover - ten thousand runs in one second
                raise LmlabError(f"too many runs named {base} in {study_dir}; pick another name")
            (path / "figures").mkdir()
            (path / "checkpoints").mkdir()
        except OSError as exc:
            raise LmlabError(
                f"cannot create a run directory in {study_dir} ({exc.strerror or exc}); "
                "choose a writable runs directory"
            ) from None
        return cls(path)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunDir:
        """Reopen an existing run directory (it must contain ``config.json``).

        Args:
            path: The run directory.

        Returns:
            The run directory.

        Raises:
            LmlabError: If ``path`` is not a directory with a ``config.json``.

        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     run = RunDir.create(tmp, "demo")
        ...     _ = run.save_config({"seed": 0})
        ...     RunDir.open(run.path).read_config()
        {'seed': 0}
        """
        run_path = Path(path).expanduser()
        if not run_path.is_dir():
            raise LmlabError(f"no run directory at {run_path}; check the path")
        if not (run_path / "config.json").is_file():
            raise LmlabError(
                f"{run_path} is not a run directory (no config.json); "
                "pass a directory such as runs/<study>/<YYYYmmdd-HHMMSS>-<name>"
            )
        return cls(run_path)

    def check_writable(self) -> None:
        """Check that the run directory can be written and its disk has room for one more copy
        of its largest checkpoint (a checkpoint is replaced by writing the new one first), and
        at least 50 MB.

        Raises:
            LmlabError: naming the directory and what to do.
        """
        sizes = [p.stat().st_size for p in self.checkpoints_dir.rglob("*")
                 if p.is_file() and not p.is_symlink()] if self.checkpoints_dir.is_dir() else []
        _check_root(self._path, max([MIN_FREE_BYTES, *(s + s // 20 for s in sizes)]))

    def lock(self) -> RunDir:
        """Become the one process that writes this run directory, until :meth:`unlock` (or the
        end of the process, however it ends).

        Returns:
            This run directory.

        Raises:
            LmlabError: Another lmlab process writes it (naming its pid).
        """
        self._lock.acquire()
        return self

    def unlock(self) -> None:
        """Let another process write this run directory."""
        self._lock.release()

    def remove_temporaries(self) -> list[Path]:
        """Remove the temporary files a process killed mid-write left here; call when locked.

        Returns:
            What was removed.
        """
        return remove_temporaries(self._path)

    def __repr__(self) -> str:
        return f"RunDir({str(self._path)!r})"

    def __fspath__(self) -> str:
        return str(self._path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and other._path == self._path

    def __hash__(self) -> int:
        return hash(self._path)

    @property
    def path(self) -> Path:
        """The run directory."""
        return self._path

    @property
    def figures_dir(self) -> Path:
        """``<run>/figures``, where :meth:`save_figure` writes."""
        return self._path / "figures"

    @property
    def checkpoints_dir(self) -> Path:
        """``<run>/checkpoints``."""
        return self._path / "checkpoints"

    def _inside(self, name: str | os.PathLike[str]) -> Path:
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise LmlabError(f"{str(name)!r} must be a relative path inside the run directory")
        return self._path / relative

    def save_config(self, cfg: Any, meta: Mapping[str, Any] | None = None) -> Path:
        """Write the resolved config to ``config.json`` and, if given, ``meta`` to ``meta.json``.

        ``meta["study"]`` and ``meta["preset"]`` are also copied into ``config.json`` as
        ``"_study"`` and ``"_preset"`` (ignored when the config is read back).

        Args:
            cfg: A dataclass config, or a plain mapping.
            meta: What ran (study, preset, model, data source, device, seed, versions, ...).

        Returns:
            The path of ``config.json``.
        """
        if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
            data: dict[str, Any] = config_to_dict(cfg)
        elif isinstance(cfg, Mapping):
            data = dict(cfg)
        else:
            raise TypeError(f"expected a dataclass config or a mapping, got {type(cfg)!r}")
        if meta:
            for key in ("study", "preset"):
                if meta.get(key) is not None:
                    data[f"_{key}"] = meta[key]
            self.update_meta(meta)
        return atomic_write_json(self._path / "config.json", data)

    def _read_object(self, name: str) -> dict[str, Any]:
        data = _read_json(self._path / name, name)
        if not isinstance(data, dict):
            raise LmlabError(f"{self._path / name} is not a JSON object; it is corrupt")
        return data

    def read_config(self) -> dict[str, Any]:
        """The contents of ``config.json`` as a dict.

        Raises:
            LmlabError: If it is missing or corrupt.
        """
        return self._read_object("config.json")

    def read_meta(self) -> dict[str, Any]:
        """The contents of ``meta.json``, or an empty dict if there is none.

        Raises:
            LmlabError: If it exists but is corrupt.
        """
        path = self._path / "meta.json"
        if not path.exists():
            return {}
        data = _read_json(path, "meta.json")
        return data if isinstance(data, dict) else {}

    def update_meta(self, meta: Mapping[str, Any], drop: Iterable[str] = ()) -> Path:
        """Merge ``meta`` into ``meta.json`` (e.g. to add the duration at the end of a run).

        Args:
            meta: Keys to add or replace.
            drop: Keys to remove (e.g. the error of an earlier session).

        Returns:
            The path of ``meta.json``.
        """
        merged = {**self.read_meta(), **dict(meta)}
        for key in drop:
            merged.pop(key, None)
        return atomic_write_json(self._path / "meta.json", merged)

    @property
    def metrics_path(self) -> Path:
        """``<run>/metrics.jsonl``."""
        return self._path / "metrics.jsonl"

    def log_metrics(self, rows: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> None:
        """Append one row or many rows to ``metrics.jsonl``, flushed and fsynced.

        If a previous crash left a torn last line, the new rows start on a fresh line.

        Args:
            rows: A mapping such as ``{"step": 10, "loss": 1.2}``, or an iterable of them.
        """
        batch = [rows] if isinstance(rows, Mapping) else list(rows)
        if not batch:
            return
        payload = "".join(_dumps(dict(row), indent=None) + "\n" for row in batch).encode()
        append_lines(self.metrics_path, payload, hint="check that the run directory is "
                     "writable and the disk is not full")

    def metrics_sink(self, **tags: Any) -> Callable[[Mapping[str, Any]], None]:
        """A callable that logs one row with ``tags`` added (e.g. ``optimizer="sgd"``).

        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     run = RunDir.create(tmp, "demo")
        ...     run.metrics_sink(variant="a")({"step": 1})
        ...     run.read_metrics().to_dict("records")
        [{'step': 1, 'variant': 'a'}]
        """

        def log(row: Mapping[str, Any]) -> None:
            self.log_metrics({**row, **tags})

        return log

    def read_metrics(self) -> pd.DataFrame:
        """All metric rows as a DataFrame (empty if none); torn or corrupt lines are skipped.

        A torn last line (from a crash mid-write) is dropped silently; a corrupt line elsewhere
        is dropped with a warning.
        """
        import pandas as pd

        try:
            lines = self.metrics_path.read_bytes().split(b"\n")
        except FileNotFoundError:
            return pd.DataFrame()
        rows: list[dict[str, Any]] = []
        last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if isinstance(row, dict):
                rows.append(row)
            elif i != last:
                warnings.warn(f"skipped corrupt line {i + 1} of {self.metrics_path}", stacklevel=2)
        return pd.DataFrame.from_records(rows)

    def save_table(self, name: str, df: pd.DataFrame) -> Path:
        """Save a table under the run directory; the suffix picks the format (default ``.csv``).

        Args:
            name: A relative file name such as ``"layers.parquet"`` or ``"tables/grid.csv"``.
            df: The table.

        Returns:
            The path written.
        """
        path = self._inside(name)
        if not path.suffix:
            path = path.with_suffix(".csv")
        return save_table(df, path)

    def save_summary(self, d: Mapping[str, Any]) -> Path:
        """Write the final numbers to ``summary.json`` (strict JSON, NaN as null).

        Args:
            d: The summary.

        Returns:
            The path of ``summary.json``.
        """
        return atomic_write_json(self._path / "summary.json", dict(d))

    def read_summary(self) -> dict[str, Any]:
        """The contents of ``summary.json``.

        Raises:
            LmlabError: If it is missing or corrupt.
        """
        return self._read_object("summary.json")

    def save_figure(self, fig: Figure, name: str) -> Path:
        """Save ``fig`` as ``figures/<name>.png`` (atomically) and close it.

        Args:
            fig: A matplotlib figure.
            name: The file stem; a ``.png``, ``.pdf`` or ``.svg`` suffix is kept.

        Returns:
            The path written.
        """
        path = self._inside(Path("figures") / name)
        if path.suffix.lower() not in (".png", ".pdf", ".svg"):
            path = path.with_name(path.name + ".png")
        return save_figure(fig, path)

    def rewind_metrics(self, step: int, **tags: Any) -> int:
        """Drop the metric rows logged after ``step`` (by rows carrying ``tags``), atomically.

        A run resumed from a checkpoint at ``step`` logs the later steps again; the rows an
        interrupted run wrote past its last checkpoint go first, so no step appears twice.
        Rows without a ``step`` and rows whose tags differ are kept.

        Args:
            step: The step of the checkpoint the run continues from (0: from the start).
            **tags: Only rows with these values (e.g. ``optimizer="sgd"``) are considered.

        Returns:
            The number of rows dropped.

        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     run = RunDir.create(tmp, "demo")
        ...     run.log_metrics([{"step": s, "opt": o} for o in "ab" for s in (1, 2, 3)])
        ...     run.rewind_metrics(1, opt="a"), len(run.read_metrics())
        (2, 4)
        """
        try:
            lines = self.metrics_path.read_bytes().split(b"\n")
        except FileNotFoundError:
            return 0
        kept, dropped = [], 0
        for line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                dropped += 1  # a torn line from the crash
                continue
            late = (isinstance(row, dict) and isinstance(row.get("step"), int | float)
                    and row["step"] > step and all(row.get(k) == v for k, v in tags.items()))
            if late:
                dropped += 1
            else:
                kept.append(line + b"\n")
        if dropped:
            atomic_write_bytes(self.metrics_path, b"".join(kept))
        return dropped
