"""Training checkpoints: written atomically, read back with a clear error when corrupt.

A checkpoint holds the model and optimiser state, the scheduler, the step counter, where the
data order stands, and the random-number states, so a resumed run continues exactly.

>>> import tempfile, torch
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = save_checkpoint(tmp, {"step": 3, "model": {"w": torch.ones(2)}})
...     load_checkpoint(path)["step"]
3
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from lmlab.errors import LmlabError

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "checkpoint_step"]

_NAME = "last.pt"


def save_checkpoint(directory: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` to ``<directory>/last.pt`` atomically (temp file, fsync, rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / _NAME
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".ckpt-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The checkpoint in ``directory``, if one was completed."""
    path = Path(directory) / _NAME
    return path if path.exists() else None


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        LmlabError: the file is missing, truncated or not a checkpoint.
    """
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise LmlabError(f"no checkpoint at {path}") from None
    except Exception as e:  # noqa: BLE001 - zip/pickle errors of many kinds
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LmlabError(
            f"cannot read checkpoint {path}: {first}; it is corrupt — delete it to start over"
        ) from None
    if not isinstance(state, dict) or "step" not in state:
        raise LmlabError(f"{path} is not an lmlab checkpoint; delete it to start over")
    return state


def checkpoint_step(directory: str | os.PathLike[str]) -> int:
    """The step of the checkpoint in ``directory`` (0 when there is none).

    A resumed run continues from this step; the tensors are memory-mapped, not read.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     before = checkpoint_step(tmp)
    ...     _ = save_checkpoint(tmp, {"step": 7})
    ...     before, checkpoint_step(tmp)
    (0, 7)
    """
    path = latest_checkpoint(directory)
    if path is None:
        return 0
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # noqa: BLE001 - report it the way load_checkpoint does
        state = load_checkpoint(path)
    if not isinstance(state, dict) or "step" not in state:
        raise LmlabError(f"{path} is not an lmlab checkpoint; delete it to start over")
    return int(state["step"])
