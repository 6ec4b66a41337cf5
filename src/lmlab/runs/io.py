"""Atomic file writes (text, bytes, strict JSON, torch objects, figures, tables, directories)
and appends to logs.

Every writer puts the data in a temporary file in the target's directory, flushes and fsyncs
it, then renames it over the target with ``os.replace``. An error mid-write leaves the previous
file intact and no temporary file behind, and becomes one :class:`LmlabError` line that names
the file (whatever raised it: ``torch.save`` turns a full disk into a ``RuntimeError``).
:func:`atomic_write_with` is the one place that does this; every other writer (and every module
of lmlab that writes a file atomically) calls it. :func:`atomic_directory` does the same for a
whole directory, :func:`append_lines` appends to a log such as ``metrics.jsonl``. Only a killed
process leaves a temporary file (``.<name>.<pid>-<random>.tmp``); a run directory that is
reopened is cleared of them (:func:`lmlab.runs.guard.remove_temporaries`).

JSON files are strict, with NaN and infinities as ``null``: the one normaliser,
:func:`to_jsonable`, lives in :mod:`lmlab.runs.jsonable` (its NaN policy is written there).

>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = atomic_write_json(pathlib.Path(tmp) / "x.json", {"loss": float("nan")})
...     path.read_text()
'{\\n  "loss": null\\n}\\n'
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from lmlab.errors import LmlabError, first_line
from lmlab.runs.guard import check_free_space, storage_bytes
from lmlab.runs.jsonable import _dumps, to_jsonable

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["append_lines", "atomic_directory", "atomic_save_torch", "atomic_write_bytes",
           "atomic_write_json", "atomic_write_text", "atomic_write_with", "save_figure",
           "save_table", "to_jsonable"]

TABLE_SUFFIXES = (".csv", ".json", ".jsonl", ".parquet")
_WRITABLE = "choose a writable location"
_DISK = "check that the location is writable and the disk is not full"
_STALE_SECONDS = 6 * 3600  # temporary directories older than this were left by a killed process


@functools.lru_cache(maxsize=1)
def _file_mode() -> int:
    """Permissions for new files: 0o666 minus the process umask (as ``open`` would give)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _reason(exc: OSError) -> str:
    return exc.strerror or first_line(exc)


def _write_error(path: Path, exc: Exception, hint: str | None) -> LmlabError:
    """One line for a failed write of ``path``: what the disk (or the writer) said, what to do.

    A library may replace the disk's ``OSError`` by its own error (``torch.save`` raises
    ``RuntimeError: ... unexpected pos`` when the disk is full); the ``OSError`` it was
    handling is then quoted instead.
    """
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError):
        return LmlabError(f"cannot write {path}: {_reason(cause)}; {hint or _DISK}")
    return LmlabError(f"cannot write {path} ({type(exc).__name__}: {first_line(exc)}); "
                      f"{hint or _DISK}")


def _ensure_dir(directory: Path, hint: str = _WRITABLE) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LmlabError(f"cannot create directory {directory}: {_reason(exc)}; {hint}") from None
    if not directory.is_dir():
        raise LmlabError(f"{directory} is not a directory; {hint}")


def atomic_write_with(
    path: str | os.PathLike[str],
    write: Callable[[IO[bytes]], object],
    *,
    hint: str | None = None,
) -> Path:
    """Call ``write`` on a temporary file beside ``path``, fsync it, then rename it to ``path``.

    The file keeps the permissions of the file it replaces (new files get the usual
    ``0o666`` minus the umask). If anything fails (``write``, the flush, the fsync or the
    rename), the temporary file is removed and the error becomes a one-line
    :class:`LmlabError` naming ``path``; an :class:`LmlabError` raised by ``write`` and
    ``KeyboardInterrupt`` propagate as they are.

    Args:
        path: The target file; its directory is created if missing.
        write: Writes the content into the binary handle it is given.
        hint: What the user should do when the location cannot be written (the end of the
            error message); by default, to choose a writable location.

    Returns:
        The target path.

    Raises:
        LmlabError: If the directory cannot be created or the file cannot be written.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = atomic_write_with(pathlib.Path(tmp) / "d" / "w.bin", lambda f: f.write(b"hi"))
    ...     p.read_bytes()
    b'hi'
    """
    path = Path(path)
    directory = path.parent
    _ensure_dir(directory, hint or _WRITABLE)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp",
                                        dir=directory)
    except OSError as exc:
        raise LmlabError(
            f"cannot write to directory {directory}: {_reason(exc)}; {hint or _WRITABLE}"
        ) from None
    tmp = Path(tmp_name)
    try:
        mode = path.stat().st_mode & 0o777 if path.is_file() else _file_mode()
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, LmlabError) or not isinstance(exc, Exception):
            raise
        raise _write_error(path, exc, hint) from exc
    _fsync_dir(directory)
    return path


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable where the platform allows it (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically.

    Args:
        path: The target file; its directory is created if missing.
        data: The bytes to write.

    Returns:
        The target path.

    Raises:
        LmlabError: If the directory cannot be created or written.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     atomic_write_bytes(pathlib.Path(tmp) / "b.bin", b"ok").read_bytes()
    b'ok'
    """

    def write(handle: IO[bytes]) -> None:
        handle.write(data)

    return atomic_write_with(path, write)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Args:
        path: The target file; its directory is created if missing.
        text: The text to write, as is (no newline translation).

    Returns:
        The target path.

    Raises:
        LmlabError: If the directory cannot be created or written.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     atomic_write_text(pathlib.Path(tmp) / "a.txt", "héllo").read_text("utf-8")
    'héllo'
    """
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as strict JSON (indent 2, key order kept, NaN/inf as null) atomically.

    Args:
        path: The target file; its directory is created if missing.
        obj: Dicts, lists, numbers, strings; tuples, paths, NumPy values are converted.

    Returns:
        The target path.

    Raises:
        LmlabError: If the directory cannot be created or written.

    >>> import tempfile, pathlib, json
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = atomic_write_json(pathlib.Path(tmp) / "s.json", {"b": 1, "a": (2, 3)})
    ...     json.loads(p.read_text())
    {'b': 1, 'a': [2, 3]}
    """
    return atomic_write_text(path, _dumps(obj, indent=2) + "\n")


def atomic_save_torch(path: str | os.PathLike[str], obj: Any, *, hint: str | None = None) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (a checkpoint is either whole or absent).

    The disk's free space is first checked against the size of the tensors in ``obj`` (plus 5%
    and 1 MB for the file's own structure).

    Args:
        path: The target file, e.g. ``run/checkpoints/last.pt``; its directory is created.
        obj: Anything ``torch.save`` accepts (state dicts, tensors, plain containers).
        hint: What the user should do when the file cannot be written.

    Returns:
        The target path.

    Raises:
        LmlabError: If the directory cannot be created or written, or its disk has too little
            free space for the file.

    >>> import tempfile, pathlib, torch
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = atomic_save_torch(pathlib.Path(tmp) / "w.pt", {"w": torch.ones(2)})
    ...     torch.load(p, weights_only=True)["w"].tolist()
    [1.0, 1.0]
    """
    import torch

    path = Path(path)
    _ensure_dir(path.parent, hint or _WRITABLE)
    need = storage_bytes(obj)
    check_free_space(path.parent, need + need // 20 + 1024**2, str(path), hint)
    return atomic_write_with(path, lambda handle: torch.save(obj, handle), hint=hint)


def append_lines(path: str | os.PathLike[str], data: bytes, *, hint: str | None = None) -> Path:
    """Append whole lines (``data`` ends with a newline) to ``path``, flushed and fsynced.

    A torn last line left by a crash is ended first, so the new lines start on a line of their
    own. A failed append cuts the file back to its previous length (as far as the disk allows).

    Args:
        path: The file; created if missing (its directory must exist).
        data: The lines to add, as bytes.
        hint: What the user should do when the file cannot be written.

    Returns:
        The path.

    Raises:
        LmlabError: If the file cannot be opened or written.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = pathlib.Path(tmp) / "log.jsonl"
    ...     _ = p.write_bytes(b"1")  # a torn line
    ...     append_lines(p, b"2\\n").read_bytes()
    b'1\\n2\\n'
    """
    path = Path(path)
    what = hint or _DISK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0),
                     0o666)
    except OSError as exc:
        raise LmlabError(f"cannot append to {path}: {_reason(exc)}; {what}") from None
    size = 0
    try:
        size = os.fstat(fd).st_size
        if size:
            os.lseek(fd, size - 1, os.SEEK_SET)
            if os.read(fd, 1) != b"\n":
                data = b"\n" + data
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except Exception as exc:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        reason = _reason(exc) if isinstance(exc, OSError) else first_line(exc)
        raise LmlabError(f"cannot append to {path}: {reason}; {what}") from exc
    finally:
        os.close(fd)
    return path


def _sibling(target: Path) -> Path:
    """A fresh temporary name beside ``target``: ``.<name>.<pid>-<random>.tmp``."""
    return target.parent / f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _remove_stale(target: Path) -> None:
    """Remove temporary directories of ``target`` that a killed process left behind."""
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        try:
            if stale.is_dir() and time.time() - stale.stat().st_mtime > _STALE_SECONDS:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            continue


def _replace_dir(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; an existing ``target`` is moved aside, then deleted."""
    try:
        os.replace(tmp, target)  # target absent (or an empty directory)
        return
    except OSError:
        if not os.path.lexists(target):
            raise
    aside = _sibling(target)
    os.replace(target, aside)
    try:
        os.replace(tmp, target)
    except OSError:
        with contextlib.suppress(OSError):
            os.replace(aside, target)  # put the old one back
        raise
    _remove(aside)


@contextlib.contextmanager
def atomic_directory(
    target: str | os.PathLike[str], *, hint: str | None = None
) -> Iterator[Path]:
    """Fill a fresh temporary directory beside ``target``; on success it becomes ``target``.

    The block receives ``.<name>.<pid>-<random>.tmp``; when the block finishes without an
    exception it is renamed to ``target`` (an existing ``target`` is replaced), otherwise it
    is removed. So an interrupted fill never leaves a half-written ``target``. Temporary
    directories of the same target older than six hours (left by a killed process) are
    removed on the way.

    Args:
        target: The directory to create or replace; its parent is created if missing.
        hint: What the user should do when the location cannot be written (the end of the
            error message); by default, to choose a writable location.

    Yields:
        The temporary directory to fill.

    Raises:
        LmlabError: If the parent cannot be created or written, or the rename fails.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with atomic_directory(pathlib.Path(tmp) / "model") as work:
    ...         _ = (work / "config.json").write_text("{}")
    ...     sorted(p.name for p in pathlib.Path(tmp, "model").iterdir())
    ['config.json']
    """
    target = Path(target)
    what = hint or _WRITABLE
    _ensure_dir(target.parent, what)
    tmp = _sibling(target)
    try:
        tmp.mkdir()
    except OSError as exc:
        raise LmlabError(
            f"cannot write to directory {target.parent}: {_reason(exc)}; {what}"
        ) from None
    _remove_stale(target)
    try:
        yield tmp
        try:
            _replace_dir(tmp, target)
        except OSError as exc:
            raise LmlabError(f"cannot move a new {target} into place: {_reason(exc)}; "
                             f"{what}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _fsync_dir(target.parent)


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically (format from the suffix, PNG if none), then close it.

    Args:
        fig: The figure.
        path: The target file, e.g. ``run/figures/loss.png``.
        dpi: Resolution for raster formats.

    Returns:
        The path written.

    Raises:
        LmlabError: If the directory cannot be created or written.

    >>> import tempfile, pathlib
    >>> from matplotlib.figure import Figure
    >>> fig = Figure(); _ = fig.add_subplot().plot([0, 1])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     save_figure(fig, pathlib.Path(tmp) / "line").name
    'line.png'
    """
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    fmt = path.suffix.lstrip(".").lower()
    try:
        return atomic_write_with(
            path, lambda handle: fig.savefig(handle, format=fmt, dpi=dpi, bbox_inches="tight")
        )
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")
        manager = getattr(getattr(fig, "canvas", None), "manager", None)
        if pyplot is not None and manager is not None:  # only pyplot's figures stay alive
            pyplot.close(fig)


def _tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Move a meaningful index into columns so that every format keeps it."""
    import pandas as pd

    index = df.index
    default = isinstance(index, pd.RangeIndex) and index.name is None and index.start == 0
    return df if default else df.reset_index()


def save_table(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a DataFrame atomically as ``.csv``, ``.json`` (records), ``.jsonl`` or ``.parquet``.

    JSON outputs are strict (missing and non-finite values become ``null``). A non-default
    index is written as ordinary columns.

    Args:
        df: The table.
        path: The target file; the suffix selects the format.

    Returns:
        The target path.

    Raises:
        LmlabError: On an unsupported suffix or an unwritable location.

    >>> import tempfile, pathlib
    >>> import pandas as pd
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = save_table(pd.DataFrame({"x": [1, 2]}), pathlib.Path(tmp) / "t.csv")
    ...     p.read_text().splitlines()
    ['x', '1', '2']
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise LmlabError(
            f"unsupported table format {suffix or '(none)'!r} for {path}; "
            f"use one of {', '.join(TABLE_SUFFIXES)}"
        )
    table = _tidy(df)
    if suffix == ".csv":
        return atomic_write_text(path, table.to_csv(index=False))
    if suffix == ".parquet":
        return atomic_write_with(path, lambda handle: table.to_parquet(handle, index=False))
    records = table.to_dict(orient="records")
    if suffix == ".json":
        return atomic_write_json(path, records)
    lines = "".join(_dumps(record, indent=None) + "\n" for record in records)
    return atomic_write_text(path, lines)
