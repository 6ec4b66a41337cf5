"""Training checkpoint files: written atomically, read without unpickling arbitrary objects.

A checkpoint is a dict of tensors and plain values (numbers, strings, lists, dicts) with at
least a ``"step"``; :class:`lmlab.train.core.TrainParts` builds one from a model, its
optimiser, scheduler, random states and the loop's counters. Files are written through the
project's one atomic write (:func:`lmlab.runs.io.atomic_save_torch`) and read with
``torch.load(..., weights_only=True)``, so loading a checkpoint never runs code from the file.
Checkpoints written before lmlab kept the random states as plain values hold pickled objects
and are refused with a one-line error (delete them to start over).

>>> import tempfile, torch
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = save_checkpoint(tmp, {"step": 3, "model": {"w": torch.ones(2)}})
...     path.name, load_checkpoint(path)["step"]
('last.pt', 3)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lmlab.errors import LmlabError
from lmlab.runs.io import atomic_save_torch

__all__ = ["CHECKPOINT_NAME", "save_checkpoint", "load_checkpoint", "latest_checkpoint",
           "checkpoint_step", "read_torch", "to_cpu"]

CHECKPOINT_NAME = "last.pt"
"""The file name of a run's checkpoint in its checkpoint directory."""

CHECKPOINT_HINT = ("make room on that disk (or make the directory writable), then run the same "
                   "command with --resume to continue from the last checkpoint")
"""What to do when a checkpoint cannot be written."""


def to_cpu(state: Any) -> Any:
    """``state`` with every tensor in it (in dicts, lists and tuples, at any depth) on the CPU.

    A checkpoint written from a GPU run then loads on any machine; loading puts the tensors on
    the run's device (``load_state_dict`` copies into the model's parameters, and an optimiser
    moves its state to its parameters' device). Tensors already on the CPU are not copied.

    >>> moved = to_cpu({"w": torch.ones(2), "n": [torch.zeros(1), 3], "s": "x"})
    >>> moved["w"].device.type, moved["n"][0].device.type, moved["n"][1], moved["s"]
    ('cpu', 'cpu', 3, 'x')
    """
    if isinstance(state, torch.Tensor):
        return state.detach() if state.device.type == "cpu" else state.detach().cpu()
    if isinstance(state, dict):
        return {k: to_cpu(v) for k, v in state.items()}
    if isinstance(state, list):
        return [to_cpu(v) for v in state]
    if isinstance(state, tuple):
        return tuple(to_cpu(v) for v in state)
    return state


def save_checkpoint(directory: str | os.PathLike[str], state: dict[str, Any],
                    name: str = CHECKPOINT_NAME) -> Path:
    """Write ``state`` to ``<directory>/<name>`` atomically and return the path.

    The disk must have room for the whole file before it is written (its size is that of the
    tensors in ``state``); the previous checkpoint stays intact until the new one is complete.
    Tensors are written from the CPU (:func:`to_cpu`), wherever the run keeps them.

    Args:
        directory: The checkpoint directory (created if missing).
        state: Tensors and plain values, with a ``"step"``.
        name: The file name.

    Raises:
        LmlabError: The disk is full (or fills up), or the directory cannot be written; the
            message names the file and says how to continue.
    """
    return atomic_save_torch(Path(directory) / name, to_cpu(state), hint=CHECKPOINT_HINT)


def latest_checkpoint(directory: str | os.PathLike[str],
                      name: str = CHECKPOINT_NAME) -> Path | None:
    """The checkpoint in ``directory``, if one was completed."""
    path = Path(directory) / name
    return path if path.is_file() else None


def read_torch(path: str | os.PathLike[str], *, mmap: bool = False, what: str = "checkpoint",
               advice: str = "delete it to start over") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one-line errors naming the file.

    Args:
        path: The file.
        mmap: Memory-map the tensors instead of reading them.
        what: What the file is, for the messages.
        advice: What to do when it cannot be read.

    Raises:
        LmlabError: The file is missing, truncated, or holds more than tensors and plain values.
    """
    import warnings

    from lmlab._files import file_kind, regular_file, torch_file_error

    file = Path(path)
    if file_kind(file) == "missing":
        raise LmlabError(f"no {what} at {path}")
    try:
        regular_file(file)
    except LmlabError as e:
        raise LmlabError(f"{e}; {advice}") from None
    with warnings.catch_warnings():  # torch's pickle warnings are not the user's to read
        warnings.simplefilter("ignore")
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
        except Exception as e:  # noqa: BLE001 - zip, stream and unpickling errors of many kinds
            raise torch_file_error(file, e, what=what, advice=advice) from None


def load_checkpoint(path: str | os.PathLike[str], *, mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (on the CPU).

    Raises:
        LmlabError: The file is missing, truncated or not a checkpoint.
    """
    state = read_torch(path, mmap=mmap)
    if not isinstance(state, dict) or "step" not in state:
        raise LmlabError(f"{path} is not an lmlab checkpoint; delete it to start over")
    return state


def checkpoint_step(directory: str | os.PathLike[str], name: str = CHECKPOINT_NAME) -> int:
    """The step of the checkpoint in ``directory`` (0 when there is none).

    A resumed run continues from this step; the tensors are memory-mapped, not read.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     before = checkpoint_step(tmp)
    ...     _ = save_checkpoint(tmp, {"step": 7})
    ...     before, checkpoint_step(tmp)
    (0, 7)
    """
    path = latest_checkpoint(directory, name)
    return 0 if path is None else int(load_checkpoint(path, mmap=True)["step"])
