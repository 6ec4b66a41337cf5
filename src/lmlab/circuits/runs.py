"""Reading anyone's run folders: the authors' layout, lmlab's, and what is wrong with them.

A run folder ("setting", spec §4) holds ``config.json``, ``ckpt_{k}.pt`` (state dicts of the
2-layer rotary attention-only ``TFModel``, the authors' keys) and ``err_arr.json``. A folder of
settings holds one run folder per setting, ``<root>/<setting>/…`` (the authors' ``out_dir``
layout, e.g. ``out_phase_progress_long/{infinite_pool_size, …}``).

* :func:`find_settings`: the settings under a root, and one line per problem found in their
  files (no ``config.json``, no ``err_arr.json``, no checkpoints, checkpoints missing from the
  config's grid, a config of another architecture).
* :func:`load_run`: every checkpoint of one run stacked into ``(N, …)`` arrays. With
  ``strict=False`` a checkpoint that cannot be read (corrupt, a pickle that would run code),
  does not fit the architecture of the others, or holds NaN/inf weights is skipped and listed in
  ``.problems``; only a run where nothing can be read raises.
* ``err_arr.json`` is read by :func:`~lmlab.circuits.err_arr.read_err_arr` (the authors' dense
  layout, lmlab's sparse one, and more).

Checkpoints are read with ``torch.load(weights_only=True)``: nothing in a file can run code.

>>> import tempfile, torch
>>> with tempfile.TemporaryDirectory() as tmp:
...     root = Path(tmp)
...     for name in ("small", "large"):
...         (root / name).mkdir()
...         sd = {k: torch.zeros(s) for k, s in checkpoint_shapes(8, 8).items()}
...         torch.save(sd, root / name / "ckpt_0.pt")
...     _ = (root / "small" / "config.json").write_text('{"num_epoch": 10, "n_save": 1}')
...     found = find_settings(root)
>>> sorted(found.settings)
['large', 'small']
>>> [p.split(":")[0] for p in found.problems]
['large', 'large', 'small', 'small']
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from lmlab.circuits.err_arr import ERR_COLUMNS, _read_json, read_err_arr
from lmlab.errors import LmlabError, first_line

__all__ = [
    "ERR_COLUMNS",  # re-exported from err_arr
    "RunWeights",
    "SettingsFound",
    "checkpoint_shapes",
    "expected_steps",
    "find_settings",
    "load_run",
    "read_err_arr",  # re-exported from err_arr
]

_CKPT_RE = re.compile(r"^ckpt_(\d+)\.pt$")
_REWRITE = "write it again with torch.save(model.state_dict(), path), or train the run again"
_SHOWN = 4                              # missing checkpoints named in one problem line


def checkpoint_shapes(vocab_size: int = 64, d_model: int = 64,
                      num_layers: int = 2) -> dict[str, tuple[int, ...]]:
    """State-dict keys and shapes of the rotary attention-only ``TFModel`` (spec §1).

    >>> len(checkpoint_shapes()), checkpoint_shapes()["h.1.mha.W_q.weight"]
    (29, (64, 64))
    """
    d, V = d_model, vocab_size
    shapes: dict[str, tuple[int, ...]] = {"embed.embed.weight": (V, d)}
    for i in range(num_layers):
        for w in "qkvo":
            shapes[f"h.{i}.mha.W_{w}.weight"] = (d, d)
            shapes[f"h.{i}.mha.W_{w}.bias"] = (d,)
        for ln in (1, 2):
            shapes[f"h.{i}.ln_{ln}.weight"] = (d,)
            shapes[f"h.{i}.ln_{ln}.bias"] = (d,)
    shapes.update({"ln_f.weight": (d,), "ln_f.bias": (d,), "fc.weight": (V, d), "fc.bias": (V,)})
    return shapes


@dataclass
class RunWeights:
    """All (readable) checkpoints of one run, stacked along a leading step axis.

    Attributes:
        steps: ``(N,)`` training steps, ascending.
        params: state-dict key → ``(N, *shape)`` float32 array.
        config: ``config.json`` (empty if absent or unreadable).
        err: ``err_arr.json`` from :func:`read_err_arr`, or ``None``.
        missing: what is absent: grid checkpoints ``ckpt_{k}.pt``, ``config.json``,
            ``err_arr.json``.
        run_dir: where it was read from.
        problems: one line per file skipped or read only in part (``load_run(strict=False)``).
    """

    steps: np.ndarray
    params: dict[str, np.ndarray]
    config: dict[str, Any] = field(default_factory=dict)
    err: pd.DataFrame | None = None
    missing: list[str] = field(default_factory=list)
    run_dir: Path | None = None
    problems: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def num_layers(self) -> int:
        return sum(1 for k in self.params if k.endswith(".mha.W_q.weight"))

    @property
    def E(self) -> np.ndarray:
        """``(N, V, d)`` token embeddings."""
        return self.params["embed.embed.weight"]

    @property
    def d_model(self) -> int:
        return int(self.E.shape[-1])

    @property
    def vocab_size(self) -> int:
        return int(self.E.shape[-2])

    def weight(self, layer: int, name: Literal["q", "k", "v", "o"]) -> np.ndarray:
        """``(N, d, d)`` stack of ``h.{layer}.mha.W_{name}.weight`` (nn.Linear ``(out, in)``)."""
        return self.params[f"h.{layer}.mha.W_{name}.weight"]


@dataclass
class SettingsFound:
    """What :func:`find_settings` found under a root.

    Attributes:
        settings: setting name → run folder, for every setting with at least one checkpoint.
        problems: one line per problem, each starting with the setting's name.
        root: the folder searched.
    """

    settings: dict[str, Path]
    problems: list[str]
    root: Path | None = None


# ------------------------------------------------------------------------------ the folders


def _checkpoints(root: Path) -> dict[int, Path]:
    """Step → ``ckpt_{step}.pt`` (regular files only: a FIFO would hang the reader)."""
    try:
        entries = list(root.iterdir())
    except OSError as exc:
        raise LmlabError(f"cannot list {root}: {first_line(exc)}") from None
    return {int(m.group(1)): p for p in entries
            if (m := _CKPT_RE.match(p.name)) and p.is_file()}

def run_checkpoints(run_dir: str | Path) -> tuple[Path, dict[int, Path]]:
    """``(folder, {step: ckpt path})`` of a run folder; refused in one line when the folder or
    its checkpoints are missing."""
    root = Path(run_dir)
    if not root.is_dir():
        raise LmlabError(f"no such run directory: {root}")
    found = _checkpoints(root)
    if not found:
        raise LmlabError(f"no checkpoints ckpt_<step>.pt in {root}")
    return root, found


def read_config(path: Path) -> dict[str, Any]:
    """A run's ``config.json``, which must hold a JSON object."""
    loaded = _read_json(path)
    if not isinstance(loaded, dict):
        raise LmlabError(f"{path} is not a JSON object")
    return loaded



def _has_run_files(folder: Path, *, config: bool = False) -> bool:
    """Checkpoints or an ``err_arr.json`` (or, with ``config``, a ``config.json``) in it."""
    try:
        return ((folder / "err_arr.json").exists() or bool(_checkpoints(folder))
                or (config and (folder / "config.json").exists()))
    except LmlabError:
        return False


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return []


def _candidates(root: Path) -> dict[str, Path]:
    """The run folders under ``root`` (see :func:`find_settings`)."""
    if _has_run_files(root):
        return {root.resolve().name or "run": root}
    subs = {p.name: p for p in _subfolders(root) if _has_run_files(p, config=True)}
    if subs:
        return subs
    deeper: dict[str, Path] = {}          # e.g. an lmlab study run: <run>/settings/<setting>/
    for sub in _subfolders(root):
        for p in _subfolders(sub):
            if _has_run_files(p, config=True):
                deeper[p.name if p.name not in deeper else f"{sub.name}/{p.name}"] = p
    if deeper:
        return deeper
    return {root.resolve().name or "run": root} if (root / "config.json").exists() else {}


def _grid(config: Mapping[str, Any]) -> int | None:
    ne, ns = config.get("num_epoch"), config.get("n_save")
    try:
        ne, ns = int(ne), int(ns)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return ne // ns if ne >= ns >= 1 else None


def expected_steps(config: Mapping[str, Any]) -> list[int]:
    """The checkpoint steps the authors' trainer writes for this config (empty if unknown).

    ``0``, every ``grid = num_epoch // n_save`` up to ``num_epoch``, and with
    ``up_to_first_save`` also ``2**k`` for ``k < int(log2(grid))`` (as ``train.py`` decides).

    >>> expected_steps({"num_epoch": 800, "n_save": 4, "up_to_first_save": True})
    [0, 1, 2, 4, 8, 16, 32, 64, 200, 400, 600, 800]
    """
    grid = _grid(config)
    if grid is None:
        return []
    steps = set(range(0, int(config["num_epoch"]) + 1, grid))
    if config.get("up_to_first_save"):
        steps |= {2 ** k for k in range(int(math.log2(grid)))}
    return sorted(steps)


def _gaps(config: Mapping[str, Any], found: Mapping[int, Path]) -> list[str]:
    want = expected_steps(config)
    return [f"ckpt_{k}.pt" for k in want if k not in found]


def _foreign_config(config: Mapping[str, Any]) -> str | None:
    """Why a config describes a model these measurements do not fit, or None."""
    pos, heads = config.get("pos", "rotary"), config.get("num_heads", 1)
    if pos != "rotary":
        return f"pos={pos!r} (the measurements need rotary)"
    if heads not in (1, None):
        return f"num_heads={heads} (the measurements read one head per layer)"
    return None


def _file_problems(name: str, folder: Path) -> tuple[list[str], bool]:
    """One line per problem of the files of one setting, and whether it can be measured."""
    if not folder.is_dir():
        return [f"{name}: no such run folder {folder}: not measured"], False
    problems: list[str] = []
    found = _checkpoints(folder)
    config: dict[str, Any] = {}
    cfg_path = folder / "config.json"
    if not cfg_path.exists():
        problems.append(f"{name}: no config.json in {folder}: architecture read from the "
                        "checkpoints, rotary_theta 10000, missing checkpoints not checked")
    else:
        try:
            config = read_config(cfg_path)
        except LmlabError as exc:
            problems.append(f"{name}: {exc}; measured as without a config")
    foreign = _foreign_config(config)
    if foreign:
        problems.append(f"{name}: {cfg_path} describes another architecture, {foreign}: "
                        "not measured")
    if not (folder / "err_arr.json").exists():
        problems.append(f"{name}: no err_arr.json in {folder}: its error columns are empty")
    if not found:
        problems.append(f"{name}: no checkpoints ckpt_<step>.pt in {folder}: not measured")
    else:
        gaps = _gaps(config, found)
        if gaps:
            shown = ", ".join(gaps[:_SHOWN]) + (", …" if len(gaps) > _SHOWN else "")
            problems.append(
                f"{name}: {len(gaps)} of {len(expected_steps(config))} checkpoints missing in "
                f"{folder} (num_epoch={config.get('num_epoch')}, n_save={config.get('n_save')})"
                f": {shown}")
    return problems, bool(found) and not foreign


def find_settings(root: str | Path) -> SettingsFound:
    """The settings under ``root``, and one line per problem of their files.

    ``root`` is one run folder (it holds ``ckpt_<k>.pt`` or ``err_arr.json``; the setting is
    named after the folder), a folder of run folders ``<root>/<setting>/`` (subfolders holding
    none of ``ckpt_<k>.pt``, ``err_arr.json``, ``config.json``, such as lmlab's ``sweep/``, are
    ignored), or, when it has none, a folder one level above those (an lmlab study run,
    ``<run>/settings/<setting>/``). Files are not opened beyond ``config.json``; unreadable or
    foreign checkpoints are found when they are loaded (:func:`load_run` with
    ``strict=False``, as :func:`~lmlab.circuits.measure_runs` does).

    Raises:
        LmlabError: ``root`` is missing or holds no run folder, or no setting has a
            checkpoint (one line naming the folders).
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise LmlabError(f"no such folder: {root}; give a run folder or a folder of settings")
    if not root.is_dir():
        raise LmlabError(f"{root} is a file; give the run folder that holds config.json, "
                         "ckpt_<step>.pt and err_arr.json, or a folder of such folders")
    candidates = _candidates(root)
    if not candidates:
        raise LmlabError(f"no run folders in {root}: expected config.json, ckpt_<step>.pt and "
                         "err_arr.json in it or in its subfolders <setting>/")
    settings: dict[str, Path] = {}
    problems: list[str] = []
    for name, folder in candidates.items():
        lines, ok = _file_problems(name, folder)
        problems += lines
        if ok:
            settings[name] = folder
    if not settings:
        raise LmlabError(f"nothing to measure in {root}: " + "; ".join(problems))
    return SettingsFound(settings, problems, root)


# ------------------------------------------------------------------------------ checkpoints


def _load_state_dict(path: Path) -> dict[str, Any]:
    """A state dict read as tensors and plain values only: nothing in the file can run code."""
    import torch

    from lmlab.train.checkpoint import read_torch

    sd = read_torch(path, advice=_REWRITE)
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise LmlabError(f"{path} is not a state_dict of tensors; {_REWRITE}")
    return dict(sd)


def _signature(sd: Mapping[str, Any]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple(sorted((k, tuple(v.shape)) for k, v in sd.items()))


def _architecture(sd: Mapping[str, Any]) -> dict[str, tuple[int, ...]] | None:
    """The expected shapes when ``sd`` is a rotary attention-only TFModel, else None."""
    emb = sd.get("embed.embed.weight")
    if emb is None or emb.ndim != 2:
        return None
    n_layers = sum(k.endswith(".mha.W_q.weight") for k in sd)
    expected = checkpoint_shapes(int(emb.shape[0]), int(emb.shape[1]), n_layers)
    return expected if n_layers >= 1 and _signature(sd) == tuple(sorted(expected.items())) \
        else None


def _mismatch(sd: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]],
              n_layers: int) -> str:
    lost, extra = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    if lost or extra:
        return (f"does not match a {n_layers}-layer rotary attention-only TFModel: missing "
                f"keys {lost[:_SHOWN]}, unexpected keys {extra[:_SHOWN]}")
    bad = next(k for k, s in expected.items() if tuple(sd[k].shape) != s)
    return f"{bad} has shape {tuple(sd[bad].shape)}, expected {expected[bad]}"


def load_run(run_dir: str | Path, *, grid: int | None = None,
             strict: bool = True) -> RunWeights:
    """Read and stack every ``ckpt_{k}.pt`` of a run folder, with its config and errors.

    The architecture is that of most readable checkpoints (ties: the earliest); it must be a
    rotary attention-only TFModel (:func:`checkpoint_shapes`). Missing grid checkpoints (``0,
    grid, 2·grid, …`` up to ``num_epoch`` or the last step found; ``grid`` defaults to
    ``num_epoch // n_save``, else 200), a missing ``config.json`` or ``err_arr.json`` are listed
    in ``.missing``.

    Args:
        run_dir: the run folder.
        grid: checkpoint spacing for ``.missing``.
        strict: raise on the first unreadable or foreign file; ``False``: skip it and list it
            in ``.problems`` (a checkpoint with NaN/inf weights too).

    Raises:
        LmlabError: no folder, no checkpoints, no checkpoint that can be measured; with
            ``strict``, any unreadable file or foreign checkpoint (the message names it).
    """
    root, found = run_checkpoints(run_dir)
    by_step: dict[int, str] = {}      # checkpoint problems, reported in step order
    problems: list[str] = []

    def skip(exc: LmlabError, step: int | None = None) -> None:
        if strict:
            raise exc
        if step is None:
            problems.append(str(exc))
        else:
            by_step[step] = f"skipped: {exc}"

    def read(reader: Any, path: Path, step: int | None = None) -> Any:
        """``reader(path)``, or ``None`` after :func:`skip` when it cannot be read."""
        try:
            return reader(path)
        except LmlabError as exc:
            skip(exc, step)
            return None

    cfg_path = root / "config.json"
    config: dict[str, Any] = (read(read_config, cfg_path) if cfg_path.exists() else None) or {}
    states: dict[int, dict[str, Any]] = {}
    for step in sorted(found):
        sd = read(_load_state_dict, found[step], step)
        if sd is not None:
            states[step] = sd
    shapes = _pick_architecture(root, found, states)
    steps, stacks = _stack(root, found, states, shapes, skip)
    params = {k: np.stack(v) for k, v in stacks.items()}
    V, d = params["embed.embed.weight"].shape[1:]
    for key, size in (("d_model", d), ("vocab_size", V)):
        if key in config and config[key] is not None and int(config[key]) != size:
            skip(LmlabError(f"{cfg_path} says {key}={config[key]} but the checkpoints' "
                            f"embed.embed.weight is {V}×{d}; the checkpoints are measured"))
    err_path = root / "err_arr.json"
    err: pd.DataFrame | None = read(read_err_arr, err_path) if err_path.exists() else None
    missing = [*_missing_grid(config, found, grid),
               *([] if cfg_path.exists() else ["config.json"]),
               *([] if err_path.exists() else ["err_arr.json"])]
    return RunWeights(np.asarray(steps, dtype=np.int64), params, config, err, missing, root,
                      [by_step[k] for k in sorted(by_step)] + problems)


def _pick_architecture(root: Path, found: Mapping[int, Path],
                       states: Mapping[int, Mapping[str, Any]]) -> dict[str, tuple[int, ...]]:
    """The shapes of the most common readable TFModel architecture (ties: the earliest step)."""
    valid = {step: _signature(sd) for step, sd in states.items() if _architecture(sd)}
    if valid:
        counts = Counter(valid.values())
        best = max(counts.values())
        step = next(s for s in sorted(valid) if counts[valid[s]] == best)
        return _architecture(states[step]) or {}
    if not states:
        raise LmlabError(f"no checkpoint in {root} can be read ({len(found)} tried, e.g. "
                         f"{found[min(found)]}); {_REWRITE}")
    step = min(states)
    sd = states[step]
    n_layers = sum(k.endswith(".mha.W_q.weight") for k in sd) or 2
    emb = sd.get("embed.embed.weight")
    V, d = tuple(emb.shape) if emb is not None and emb.ndim == 2 else (64, 64)
    raise LmlabError(f"{found[step].name} in {root} "
                     f"{_mismatch(sd, checkpoint_shapes(V, d, n_layers), n_layers)}; no "
                     "checkpoint there is a rotary attention-only TFModel")


def _stack(root: Path, found: Mapping[int, Path], states: Mapping[int, Mapping[str, Any]],
           shapes: Mapping[str, tuple[int, ...]],
           skip: Any) -> tuple[list[int], dict[str, list[np.ndarray]]]:
    """Steps and per-key lists of float32 arrays of the checkpoints that fit ``shapes``."""
    import torch

    n_layers = sum(k.endswith(".mha.W_q.weight") for k in shapes)
    stacks: dict[str, list[np.ndarray]] = {k: [] for k in shapes}
    steps: list[int] = []
    for step, sd in states.items():
        if _signature(sd) != tuple(sorted(shapes.items())):
            skip(LmlabError(f"{found[step].name} in {root} {_mismatch(sd, shapes, n_layers)}"),
                 step)
            continue
        arrays = {k: sd[k].detach().to(torch.float32).numpy() for k in shapes}
        bad = next((k for k, a in arrays.items() if not np.isfinite(a).all()), None)
        if bad is not None:
            skip(LmlabError(f"{found[step].name} in {root}: {bad} holds NaN or inf (a "
                            "diverged run?); it cannot be measured"), step)
            continue
        steps.append(step)
        for k, a in arrays.items():
            stacks[k].append(a)
    if not steps:
        raise LmlabError(f"no checkpoint in {root} can be measured: "
                         + "; ".join(f"{found[s].name}" for s in sorted(found)[:_SHOWN]))
    return steps, stacks


def _missing_grid(config: Mapping[str, Any], found: Mapping[int, Path],
                  grid: int | None) -> list[str]:
    """The grid checkpoints ``ckpt_{k}.pt`` absent from ``found`` (see :func:`load_run`)."""
    if grid is None:
        grid = _grid(config) or 200
    end = max(int(config.get("num_epoch") or 0), max(found))
    want = set(range(0, end + 1, grid)) | set(expected_steps(config))
    return [f"ckpt_{k}.pt" for k in sorted(want) if k not in found]
