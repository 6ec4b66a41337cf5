"""Atomic file writes (text, bytes, strict JSON, torch objects, figures, tables, directories)
and the one JSON normaliser.

Every writer puts the data in a temporary file in the target's directory, flushes and fsyncs
it, then renames it over the target with ``os.replace``. A crash or an error mid-write leaves
the previous file intact and no temporary file behind. :func:`atomic_write_with` is the one
place that does this; every other writer (and every module of lmlab that writes a file
atomically) calls it. :func:`atomic_directory` does the same for a whole directory.

NaN policy: every JSON file lmlab writes is strict JSON made by :func:`to_jsonable`, and a
non-finite float (NaN, +inf, -inf) is written as ``null``: ``config.json``, ``meta.json``,
``summary.json``, ``metrics.jsonl``, ``result/result.json``, ``report.json``, JSON tables, a
sweep's ``cells.jsonl`` and the theory cache alike. Readers get ``None`` back where a
non-finite number was (in a pandas column: NaN); a reader that needs a float puts NaN there.
Parquet tables and ``.npy`` arrays keep NaN and infinities as they are. Configs never hold
non-finite numbers: :mod:`lmlab.config` rejects them when a config is built, so a saved
``config.json`` always reads back to the same config.

>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = atomic_write_json(pathlib.Path(tmp) / "x.json", {"loss": float("nan")})
...     path.read_text()
'{\\n  "loss": null\\n}\\n'
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from lmlab.errors import LmlabError, first_line

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = [
    "atomic_directory",
    "atomic_save_torch",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_write_with",
    "save_figure",
    "save_table",
    "to_jsonable",
]

TABLE_SUFFIXES = (".csv", ".json", ".jsonl", ".parquet")
_WRITABLE = "choose a writable location"
_STALE_SECONDS = 6 * 3600  # temporary directories older than this were left by a killed process


@functools.lru_cache(maxsize=1)
def _file_mode() -> int:
    """Permissions for new files: 0o666 minus the process umask (as ``open`` would give)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _reason(exc: OSError) -> str:
    return exc.strerror or first_line(exc)


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
    ``0o666`` minus the umask). If ``write`` raises, the temporary file is removed and the
    exception propagates unchanged; an ``OSError`` becomes a one-line :class:`LmlabError`.

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
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
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
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            what = hint or "check that the location is writable and the disk is not full"
            raise LmlabError(f"cannot write {path}: {_reason(exc)}; {what}") from exc
        raise
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


def _json_key(key: Any) -> str:
    """A mapping key as ``json.dumps`` writes it (``true``, ``null``, ``1``), else ``str``."""
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool):
        return json.dumps(key)
    return str(key)


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values, under lmlab's one NaN policy (see the module docstring).

    Non-finite floats become ``None``; tuples and sets become lists (sets sorted by ``repr``,
    so equal sets give equal JSON in every process); mapping keys become strings as
    ``json.dumps`` writes them; paths become strings, enums their value, dataclasses dicts of
    their fields. NumPy and torch scalars and arrays are converted with ``.tolist()`` /
    ``.item()``; pandas' missing values become ``None``; timestamps ``.isoformat()``;
    anything else ``str(obj)``.

    Args:
        obj: Any value.

    Returns:
        A value that ``json.dumps(..., allow_nan=False)`` accepts.

    >>> to_jsonable({"loss": float("nan"), "shape": (2, 3), 1: {"b", "a"}, None: -math.inf})
    {'loss': None, 'shape': [2, 3], '1': ['a', 'b'], 'null': None}
    """
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):  # NumPy's float64 too, as a plain float
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {_json_key(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return [to_jsonable(v) for v in sorted(obj, key=repr)]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy / torch arrays and scalars
        return to_jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):
        return to_jsonable(obj.item())
    if type(obj).__name__ in ("NAType", "NaTType"):  # pandas missing values
        return None
    if hasattr(obj, "isoformat") and callable(obj.isoformat):
        return obj.isoformat()
    return str(obj)


def _dumps(obj: Any, indent: int | None) -> str:
    return json.dumps(
        to_jsonable(obj), indent=indent, sort_keys=False, allow_nan=False, ensure_ascii=False
    )


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


def atomic_save_torch(path: str | os.PathLike[str], obj: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (a checkpoint is either whole or absent).

    Args:
        path: The target file, e.g. ``run/checkpoints/last.pt``; its directory is created.
        obj: Anything ``torch.save`` accepts (state dicts, tensors, plain containers).

    Returns:
        The target path.

    Raises:
        LmlabError: If the directory cannot be created or written.

    >>> import tempfile, pathlib, torch
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = atomic_save_torch(pathlib.Path(tmp) / "w.pt", {"w": torch.ones(2)})
    ...     torch.load(p)["w"].tolist()
    [1.0, 1.0]
    """
    import torch

    return atomic_write_with(path, lambda handle: torch.save(obj, handle))


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
