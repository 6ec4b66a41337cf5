"""Atomic file writes: text, bytes, strict JSON, figures and tables.

Every writer puts the data in a temporary file in the target's directory, flushes and fsyncs
it, then renames it over the target with ``os.replace``. A crash or an error mid-write leaves
the previous file intact and no temporary file behind.

>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = atomic_write_json(pathlib.Path(tmp) / "x.json", {"loss": float("nan")})
...     path.read_text()
'{\\n  "loss": null\\n}\\n'
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from lmlab.errors import LmlabError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "save_figure",
    "save_table",
]

TABLE_SUFFIXES = (".csv", ".json", ".jsonl", ".parquet")


@functools.lru_cache(maxsize=1)
def _file_mode() -> int:
    """Permissions for new files: 0o666 minus the process umask (as ``open`` would give)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _ensure_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LmlabError(
            f"cannot create directory {directory}: {exc.strerror or exc}; "
            "choose a writable location"
        ) from None
    if not directory.is_dir():
        raise LmlabError(f"{directory} is not a directory; choose a writable location")


def _atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write`` on a temp file beside ``path``, fsync it, then rename it to ``path``."""
    path = Path(path)
    directory = path.parent
    _ensure_dir(directory)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise LmlabError(
            f"cannot write to directory {directory}: {exc.strerror or exc}; "
            "choose a writable location"
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
            raise LmlabError(
                f"cannot write {path}: {exc.strerror or exc}; "
                "check that the location is writable and the disk is not full"
            ) from exc
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

    return _atomic_write(path, write)


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


def _to_jsonable(obj: Any) -> Any:
    """Plain JSON values: non-finite floats become None, tuples lists, paths strings.

    NumPy and torch scalars and arrays are converted with ``.item()`` / ``.tolist()``;
    timestamps with ``.isoformat()``; anything else unknown with ``str``.
    """
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, enum.Enum):
        return _to_jsonable(obj.value)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy / torch arrays and scalars
        return _to_jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):
        return _to_jsonable(obj.item())
    if type(obj).__name__ in ("NAType", "NaTType"):  # pandas missing values
        return None
    if hasattr(obj, "isoformat") and callable(obj.isoformat):
        return obj.isoformat()
    return str(obj)


def _dumps(obj: Any, indent: int | None) -> str:
    return json.dumps(
        _to_jsonable(obj), indent=indent, sort_keys=False, allow_nan=False, ensure_ascii=False
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
        return _atomic_write(
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
        return _atomic_write(path, lambda handle: table.to_parquet(handle, index=False))
    records = table.to_dict(orient="records")
    if suffix == ".json":
        return atomic_write_json(path, records)
    lines = "".join(_dumps(record, indent=None) + "\n" for record in records)
    return atomic_write_text(path, lines)
