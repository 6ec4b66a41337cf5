"""What keeps a run directory sound: one writer at a time, room on the disk, no leftovers.

* :class:`DirectoryLock` is an OS-level lock (``fcntl.flock`` on ``<dir>/.lock``) that a run
  holds for as long as it writes its directory; a second lmlab process that wants to write the
  same directory is refused at once. The operating system drops the lock when the holder ends,
  however it ends (even SIGKILL), so a lock is never stale.
* :func:`check_free_space` refuses a write the disk cannot hold, sized from what is written
  (:func:`storage_bytes` for a checkpoint) rather than a fixed margin.
* :func:`remove_temporaries` clears the temporary files a process killed mid-write left behind
  (only lmlab's own names, :data:`TEMP_NAME`).

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     with DirectoryLock(tmp):
...         try:
...             DirectoryLock(tmp).acquire()
...         except LmlabError as e:
...             print("another lmlab process" in str(e))
...     DirectoryLock(tmp).acquire().release()  # free again once the first one let go
True
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from lmlab.errors import LmlabError

__all__ = ["LOCK_NAME", "TEMP_NAME", "DirectoryLock", "check_free_space", "remove_temporaries",
           "storage_bytes"]

LOCK_NAME = ".lock"
"""The lock file of a run directory (it stays; only the OS lock on it comes and goes)."""

TEMP_NAME = re.compile(r"^\..+\.(?:\d+-)?[a-z0-9_]{8}\.tmp$")
"""The names of lmlab's temporary files and directories: ``.<name>.<pid>-<random>.tmp`` (and
``.<name>.<random>.tmp``, written by earlier versions)."""

_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


class DirectoryLock:
    """An exclusive, non-blocking lock on ``directory`` (a context manager).

    The lock file holds the pid of the holder, which the refusal names.

    Args:
        directory: An existing directory.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> DirectoryLock:
        """Take the lock (a no-op if this object holds it already).

        Returns:
            This lock.

        Raises:
            LmlabError: Another process holds it (naming its pid), or the lock file cannot be
                created.
        """
        if self._fd is not None:
            return self
        try:
            import fcntl
        except ImportError:  # Windows has no flock: no lock there (lmlab runs on Linux/macOS)
            return self
        path = self.directory / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise LmlabError(f"cannot create the lock file {path}: {exc.strerror or exc}; "
                             "check that the run directory is writable") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno not in _BUSY:  # a file system without locks: no protection, as above
                return self
            pid = f" (pid {holder})" if holder else ""
            raise LmlabError(f"{self.directory} is being written by another lmlab process{pid}; "
                             "wait for it to finish or stop it") from None
        with contextlib.suppress(OSError):  # the pid is for the message only
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Let go of the lock (closing the file releases it)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _holder(fd: int) -> str:
    """The pid written in the lock file (the holder may not have written it yet: wait a bit)."""
    for _ in range(20):
        try:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            return ""
        if text.isdigit():
            return text
        time.sleep(0.01)
    return ""


def storage_bytes(obj: Any) -> int:
    """The bytes of the tensor storages in ``obj`` (dicts, lists, tuples), each counted once.

    >>> import torch
    >>> w = torch.zeros(10)
    >>> storage_bytes({"w": w, "view": w[:5], "b": [torch.zeros(2, dtype=torch.int64)]})
    56
    """
    import torch

    seen: set[tuple[str, int]] = set()
    total, stack = 0, [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            key = (str(item.device), storage.data_ptr())
            if key[1] == 0 or key not in seen:
                seen.add(key)
                total += storage.nbytes()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
    return total


def _mb(n: float) -> str:
    return f"{n / 1024**2:.1f} MB"


def check_free_space(directory: str | os.PathLike[str], need: int, what: str,
                     hint: str | None = None) -> None:
    """Refuse a write of about ``need`` bytes that the disk of ``directory`` cannot hold.

    Args:
        directory: An existing directory on the disk to write.
        need: The bytes the write needs.
        what: What is written, for the message (e.g. the file's path).
        hint: What to do; by default, to free some space or choose another location.

    Raises:
        LmlabError: naming ``what``, the bytes needed and the bytes free.

    >>> check_free_space(".", 1, "a one-byte file")
    """
    try:
        free = shutil.disk_usage(directory).free
    except OSError:  # no answer on this file system: the write itself will tell
        return
    if free < need:
        todo = hint or "free some space or choose another location"
        raise LmlabError(f"cannot write {what}: it needs about {_mb(need)} and only {_mb(free)} "
                         f"are free on that disk; {todo}")


def remove_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files and directories of lmlab's writes under ``directory``.

    Only a process killed mid-write leaves one; call this only on a directory that no other
    process writes (a locked run directory).

    Args:
        directory: The directory to clear, searched recursively (links are not followed).

    Returns:
        What was removed.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (pathlib.Path(tmp) / ".last.pt.123-ab12cd34.tmp").write_bytes(b"half")
    ...     [p.name for p in remove_temporaries(tmp)], list(pathlib.Path(tmp).iterdir())
    (['.last.pt.123-ab12cd34.tmp'], [])
    """
    removed: list[Path] = []
    for root, dirs, files in os.walk(directory):
        for name in [*files, *dirs]:
            path = Path(root) / name
            if not TEMP_NAME.match(name):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
            removed.append(path)
        dirs[:] = [d for d in dirs if not TEMP_NAME.match(d)]
    return removed
