"""The durable store of a sweep: ``cells.jsonl``, one line per finished cell."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from lmlab.errors import LmlabError
from lmlab.runs.io import _fsync_dir, to_jsonable

STORE_FILE = "cells.jsonl"


class _Store:
    """``cells.jsonl`` in a directory: one ``{"key", "seconds", "rows"}`` line per finished cell.

    Lines are JSON, so nothing in the file can run code. A torn last line (a crash mid-write)
    is ignored with a warning and cut off before the next append; a corrupt line elsewhere is
    skipped with a warning. Either way that cell is computed again.
    A lock file keeps two sweeps from writing the same store at once (where ``fcntl`` exists).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser()
        self.path = self.directory / STORE_FILE
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LmlabError(
                f"cannot create the sweep store {self.directory}: {exc.strerror or exc}; "
                "choose a writable directory"
            ) from None
        self._good_size: int | None = None  # bytes before a torn last line, if there is one
        self._fd: int | None = None
        self._lock: Any = None

    def lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # not on this platform: no protection against a second writer
            return
        try:
            self._lock = open(self.directory / ".lock", "a")  # noqa: SIM115 - until close()
        except OSError:  # a read-only store can still be read; appending will say what is wrong
            return
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise LmlabError(
                f"the sweep store {self.directory} is in use by another sweep; "
                "wait for it or use another store"
            ) from None

    def load(self) -> dict[str, list[dict[str, Any]]]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise LmlabError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        good = data.rfind(b"\n") + 1  # a torn tail after the last newline is ignored
        self._good_size = good if good < len(data) else None
        if self._good_size is not None:
            warnings.warn(
                f"ignored the unfinished last line of {self.path} (a write cut short); that "
                "cell will be recomputed",
                stacklevel=4,  # load <- _stored_results <- run_sweep <- its caller
            )
        done: dict[str, list[dict[str, Any]]] = {}
        for number, line in enumerate(data[:good].split(b"\n")[:-1], start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key, rows = record["key"], record["rows"]
                if not (isinstance(key, str) and isinstance(rows, list)
                        and all(isinstance(row, dict) for row in rows)):
                    raise TypeError
            except (ValueError, TypeError, KeyError):
                warnings.warn(
                    f"skipped corrupt line {number} of {self.path}; that cell will be recomputed",
                    stacklevel=4,  # load <- _stored_results <- run_sweep <- its caller
                )
                continue
            done[key] = rows
        return done

    def append(self, key: str, rows: list[dict[str, Any]], seconds: float) -> None:
        record = to_jsonable({"key": key, "seconds": round(seconds, 6), "rows": rows})
        line = json.dumps(record, allow_nan=False) + "\n"
        data = line.encode("utf-8")
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
                if self._good_size is not None:  # drop the torn last line before appending
                    os.ftruncate(self._fd, self._good_size)
                _fsync_dir(self.directory)
            while data:
                data = data[os.write(self._fd, data) :]
            os.fsync(self._fd)
        except OSError as exc:
            raise LmlabError(
                f"cannot append to {self.path} ({exc.strerror or exc}); "
                "check that the store is writable and the disk is not full"
            ) from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None
