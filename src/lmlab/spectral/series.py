"""A training run's checkpoints as a series: find them, read their steps, analyse each one.

A **folder of checkpoints** holds, at its top, no model weights of its own (no
``*.safetensors``, ``model.safetensors.index.json``, ``pytorch_model*.bin``, ``model.pt`` or
``model.bin``) and at least one child whose name is a checkpoint name:

* ``step<N>``, ``step-<N>``, ``step_<N>`` — a model directory, or a weights file with one of the
  suffixes ``.safetensors``, ``.pt``, ``.pth``, ``.bin``, ``.ckpt``;
* ``ckpt<N>``, ``ckpt-<N>``, ``ckpt_<N>`` (e.g. ``ckpt_400.pt``) — the same;
* ``checkpoint<N>``, ``checkpoint-<N>``, ``checkpoint_<N>`` (Hugging Face Trainer's
  ``checkpoint-500/``) — the same.

``<N>`` (digits, any zero padding) is the training step; the prefix is matched without regard
to case. Checkpoints are ordered by step as a number (``step_10`` after ``step_9``, and
``step_0010`` after ``step_9``); two children with the same step are refused. Other entries
(``ckpt.pt``, ``config.json``, ``train_state.pt``, half-written ``*.tmp`` files) are ignored.

:func:`analyze_series` analyses every checkpoint with :func:`lmlab.spectral.analyze` through
the sweep backends (:func:`lmlab.sweep.run_sweep`: in-process, a process pool or Ray), one
checkpoint per cell, and returns one table with a row per layer per step. A checkpoint that
cannot be read gets one row with ``status = "unreadable"`` and the reason, and the others go on.

>>> checkpoint_step("checkpoint-500"), checkpoint_step("ckpt_0010.pt"), checkpoint_step("ckpt.pt")
(500, 10, None)
>>> checkpoint_step("step_3.safetensors"), checkpoint_step("step_3.json")
(3, None)
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmlab.errors import LmlabError, first_line

if TYPE_CHECKING:
    import pandas as pd

    from lmlab.spectral.options import AnalyzeOptions
    from lmlab.sweep import SweepConfig

__all__ = ["CHECKPOINT_PATTERN", "POOL_MIN_BYTES", "UNREADABLE", "Checkpoint",
           "analyze_checkpoint", "analyze_series", "checkpoint_step", "find_checkpoints",
           "has_model_weights", "is_checkpoint_folder", "no_checkpoints_error", "series_keys"]

#: A checkpoint's name: prefix, optional separator, the step, optional weights suffix.
CHECKPOINT_PATTERN = re.compile(
    r"^(?:step|ckpt|checkpoint)[-_]?(\d+)(\.(?:safetensors|pt|pth|bin|ckpt))?$", re.IGNORECASE)
#: The ``status`` of the row of a checkpoint that could not be read.
UNREADABLE = "unreadable"
_NAMES = "step_N, step-N, stepN, ckpt_N, checkpoint-N (folders, or .safetensors/.pt/.bin files)"
#: A series smaller than this runs in-process by default: a worker process needs seconds to
#: start (importing torch), more than analysing a few small checkpoints takes.
POOL_MIN_BYTES = 512 * 1024**2
_TOP_WEIGHTS = ("model.safetensors.index.json", "pytorch_model.bin.index.json",
                "pytorch_model.bin", "model.pt", "model.bin")


def checkpoint_step(name: str, *, is_dir: bool | None = None) -> int | None:
    """The training step a checkpoint's name carries, or None when it is no checkpoint name.

    Args:
        name: a file or folder name (no path).
        is_dir: True for a folder (a name with a weights suffix is then refused), False for a
            file (a name without one is refused); None accepts both.

    >>> checkpoint_step("step10"), checkpoint_step("STEP-7"), checkpoint_step("steps_7")
    (10, 7, None)
    >>> checkpoint_step("checkpoint-500", is_dir=False), checkpoint_step("ckpt_1.pt", is_dir=True)
    (None, None)
    """
    match = CHECKPOINT_PATTERN.match(name)
    if match is None:
        return None
    has_suffix = match.group(2) is not None
    if is_dir is not None and has_suffix == is_dir:
        return None
    return int(match.group(1))


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of a series.

    Attributes:
        step: the training step read from the name.
        path: the checkpoint's file or folder.
    """

    step: int
    path: Path

    @property
    def name(self) -> str:
        """The file or folder name (the table's ``checkpoint`` column)."""
        return self.path.name


def has_model_weights(folder: Path) -> bool:
    """Whether ``folder`` holds model weights at its top (then it is one model, not a series).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     before = has_model_weights(Path(tmp))
    ...     _ = (Path(tmp) / "model.safetensors").write_bytes(b"")
    ...     before, has_model_weights(Path(tmp))
    (False, True)
    """
    if any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model-*.bin")):
        return True
    return any((folder / name).exists() or (folder / name).is_symlink() for name in _TOP_WEIGHTS)


def find_checkpoints(folder: str | os.PathLike[str]) -> list[Checkpoint]:
    """The checkpoints directly inside ``folder``, in step order (empty if there are none).

    Only regular files and folders count (a FIFO named ``ckpt_1.pt`` would block a reader).

    Raises:
        LmlabError: ``folder`` cannot be listed, or two children carry the same step.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for name in ("step_9", "step_10", "step_0002", "ckpt.pt", "notes"):
    ...         (Path(tmp) / name).mkdir()
    ...     [(c.step, c.name) for c in find_checkpoints(tmp)]
    [(2, 'step_0002'), (9, 'step_9'), (10, 'step_10')]
    """
    root = Path(folder).expanduser()
    try:
        entries = sorted(root.iterdir())
    except OSError as exc:
        raise LmlabError(f"cannot list {root}: {first_line(exc)}") from None
    found: dict[int, Path] = {}
    for p in entries:
        is_dir = p.is_dir()
        if not (is_dir or p.is_file()):
            continue
        step = checkpoint_step(p.name, is_dir=is_dir)
        if step is None:
            continue
        if step in found:
            raise LmlabError(f"{found[step].name} and {p.name} in {root} are both step {step}; "
                             "keep one of them (or move one out of the folder)")
        found[step] = p
    return [Checkpoint(step, found[step]) for step in sorted(found)]


def is_checkpoint_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder of checkpoints: a directory with no model weights at its
    top and at least one checkpoint-named child.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     (Path(tmp) / "checkpoint-500").mkdir()
    ...     is_checkpoint_folder(tmp), is_checkpoint_folder(Path(tmp) / "checkpoint-500")
    (True, False)
    """
    root = Path(path).expanduser()
    if not root.is_dir() or has_model_weights(root):
        return False
    return bool(find_checkpoints(root))


def no_checkpoints_error(folder: Path) -> LmlabError:
    """The one line for a folder that holds neither model weights nor checkpoints."""
    return LmlabError(
        f"{folder} holds neither model weights (*.safetensors, pytorch_model.bin, model.pt) "
        f"nor checkpoints named {_NAMES}; give a model directory, a weights file or a folder "
        "of checkpoints")


def _signature(path: Path) -> str:
    """12 hex digits that change when a checkpoint is rewritten (sizes and mtimes of its
    files; for a folder, of the files at its top)."""
    parts: list[str] = []
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def _size(path: Path) -> int:
    """Bytes of a checkpoint file, or of the files at the top of a checkpoint folder."""
    files = [f for f in path.iterdir() if f.is_file()] if path.is_dir() else [path]
    return sum(f.stat().st_size for f in files)


def series_keys(checkpoints: Sequence[Checkpoint]) -> list[str]:
    """The sweep key of each checkpoint: its name and the signature of its files, so a
    rewritten checkpoint is analysed again and an unchanged one is not."""
    return [f"{c.name}@{_signature(c.path)}" for c in checkpoints]


def analyze_checkpoint(cell: dict[str, Any]) -> list[dict[str, Any]]:
    """Analyse one checkpoint: its :func:`lmlab.spectral.analyze` rows with ``step`` and
    ``checkpoint`` in front (the sweep's cell function; runs in a worker process).

    Args:
        cell: ``path``, ``step``, ``options`` (an :class:`AnalyzeOptions`), and optionally
            ``layers``, ``base_model``, ``device``, ``workers`` (matrices analysed at once
            inside the checkpoint: 1 in a pool of checkpoints, so pools do not nest).
    """
    from lmlab.spectral import analyze

    df = analyze(cell["path"], layers=list(cell.get("layers") or ()) or None,
                 base_model=cell.get("base_model"), device=cell.get("device"),
                 progress=False, options=cell["options"], workers=cell.get("workers", 1))
    df.insert(0, "checkpoint", Path(cell["path"]).name)
    df.insert(0, "step", int(cell["step"]))
    rows: list[dict[str, Any]] = df.to_dict("records")
    return rows


def analyze_series(
    checkpoints: Sequence[Checkpoint],
    options: AnalyzeOptions,
    *,
    sweep: SweepConfig | None = None,
    store: str | os.PathLike[str] | None = None,
    layers: Sequence[str] = (),
    base_model: str | os.PathLike[str] | None = None,
    device: str | None = None,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Analyse every checkpoint of a series: one table, a row per layer per step.

    Args:
        checkpoints: from :func:`find_checkpoints`.
        options: the analysis options (the same for every checkpoint).
        sweep: where checkpoints run. Default: a process pool of one worker per core, one
            BLAS thread each, when there are two or more checkpoints holding together at least
            :data:`POOL_MIN_BYTES`; else one after another in this process.
        store: a folder that keeps each finished checkpoint's rows as it completes
            (``cells.jsonl``); checkpoints already there are not analysed again.
        layers: as :func:`lmlab.spectral.analyze`'s ``layers``.
        base_model: analyse W − W_base at every step.
        device: where to compute; a GPU runs the checkpoints one after another in this process.
        progress: a progress bar over checkpoints (default: when stderr is a terminal).

    Returns:
        ``step``, ``checkpoint``, then :func:`~lmlab.spectral.analyze`'s columns, in step order.
        A checkpoint that could not be read has one row with ``status = "unreadable"`` and the
        error in ``reason``; it is not stored, so the next run tries it again.

    >>> import tempfile, torch
    >>> from lmlab.spectral.options import AnalyzeOptions
    >>> from lmlab.sweep import SweepConfig
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = torch.manual_seed(0)
    ...     for step in (0, 10):
    ...         torch.save({"fc.weight": torch.randn(64, 32)}, Path(tmp) / f"ckpt_{step}.pt")
    ...     _ = (Path(tmp) / "ckpt_20.pt").write_bytes(b"truncated")
    ...     table = analyze_series(find_checkpoints(tmp), AnalyzeOptions(),
    ...                            sweep=SweepConfig(backend="inprocess"), progress=False)
    >>> table[["step", "checkpoint", "status"]].values.tolist()
    [[0, 'ckpt_0.pt', 'success'], [10, 'ckpt_10.pt', 'success'], [20, 'ckpt_20.pt', 'unreadable']]
    """
    import sys

    import pandas as pd

    from lmlab.sweep import SweepConfig, run_sweep

    checkpoints = list(checkpoints)
    if sweep is None:
        big = sum(_size(c.path) for c in checkpoints) >= POOL_MIN_BYTES
        sweep = SweepConfig(backend="process" if len(checkpoints) >= 2 and big else "inprocess")
    if device not in (None, "cpu") and sweep.backend != "inprocess":
        sweep = SweepConfig(backend="inprocess", threads_per_worker=sweep.threads_per_worker)
    keys = series_keys(checkpoints)
    by_key = dict(zip(keys, checkpoints, strict=True))
    cells = [{"path": str(c.path), "step": c.step, "options": options, "layers": tuple(layers),
              "base_model": None if base_model is None else str(base_model), "device": device,
              # one checkpoint at a time: its matrices may use every core (analyze's rule)
              "workers": None if sweep.backend == "inprocess" else 1}
             for c in checkpoints]
    show = sys.stderr.isatty() if progress is None else progress
    key_of = dict(zip((id(c) for c in cells), keys, strict=True))
    raw = run_sweep(analyze_checkpoint, cells, sweep, store=store, key=lambda c: key_of[id(c)],
                    progress=show, desc="checkpoints", on_error="record")
    return _tidy(pd, raw, by_key)


def _tidy(pd: Any, raw: pd.DataFrame, by_key: dict[str, Checkpoint]) -> pd.DataFrame:
    """The sweep's table as the series table: failed cells become ``unreadable`` rows."""
    if raw.empty:
        return pd.DataFrame(columns=["step", "checkpoint", "status", "reason"])
    table = raw.copy()
    failed = table["error"].notna()
    for col in ("step", "checkpoint", "longname", "alpha", "status", "reason"):
        if col not in table:
            table[col] = None
    table = table.astype({"status": object, "reason": object, "checkpoint": object})
    for i in table.index[failed]:
        ckpt = by_key[table.at[i, "cell"]]
        message = str(table.at[i, "error"])
        message = message.removeprefix("LmlabError: ")
        table.loc[i, ["step", "checkpoint", "status", "reason"]] = [
            ckpt.step, ckpt.name, UNREADABLE, message]
    table = table.drop(columns=["cell", "error"])
    table["step"] = table["step"].astype("int64")
    for col in ("layer_id", "N", "M", "rf", "num_evals", "num_pl_spikes", "rank_loss",
                "weak_rank_loss", "matrix_rank"):
        if col in table and failed.any():
            table[col] = table[col].astype("Int64")
    return table.reset_index(drop=True)
