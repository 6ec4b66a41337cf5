"""Measurement side of the `induction` study: which run folders to measure, what they lack, the
long table over (setting, checkpoint, method, relative distance), the error logs, and the
matrices of the heat maps.

A run folder is in the authors' layout (``config.json``, ``ckpt_<step>.pt``, ``err_arr.json``;
spec §4), whether lmlab trained it or not. Everything a folder lacks is collected as a *problem*
(one line each, for the report); an error is raised only when nothing can be measured.

>>> pick_snapshots([0, 200, 400, 600, 800], transition=400)
[200, 400, 800]
>>> pick_snapshots([0, 200, 400, 600, 800], transition=None)
[0, 400, 800]
>>> pick_snapshots([0, 200, 400], transition=None, wanted=(190, 10_000))
[200, 400]
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lmlab.errors import LmlabError, first_line

if TYPE_CHECKING:  # pragma: no cover
    from lmlab.circuits import MeasureConfig
    from lmlab.studies.induction import Config

__all__ = ["SettingRun", "folder_settings", "measure_settings", "pick_snapshots",
           "primary_rows", "read_errors", "setting_of", "snapshots_of", "summary_of",
           "transition_step"]

_ERR_COLUMNS = ["epoch", "err_test", "err_ood", "full"]


@dataclass(frozen=True)
class SettingRun:
    """One run folder to measure.

    Attributes:
        name: the setting's name (its folder's name).
        out_dir: the folder.
        pool: the pattern-pool size (0: infinite or unknown).
        seed: the training seed (None: unknown).
        steps: the training length from its config (None: unknown).
    """

    name: str
    out_dir: str
    pool: int = 0
    seed: int | None = None
    steps: int | None = None


def setting_of(name: str, out_dir: str | Path) -> SettingRun:
    """A run folder's setting, with pool, seed and length read from its ``config.json`` (left
    unknown when the file is absent or unreadable: the problem is listed elsewhere).

    >>> setting_of("x", "/no/such/folder")
    SettingRun(name='x', out_dir='/no/such/folder', pool=0, seed=None, steps=None)
    """
    cfg: Any = {}
    path = Path(out_dir) / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    cfg = cfg if isinstance(cfg, dict) else {}
    return SettingRun(name, str(out_dir), _int(cfg.get("pool_size")) or 0,
                      _int(cfg.get("seed")), _int(cfg.get("num_epoch")))


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return int(value)


def folder_settings(root: str | Path, cfg: MeasureConfig | None = None
                    ) -> tuple[list[SettingRun], list[str]]:
    """The settings of a run folder (one run, or a folder of ``<setting>/`` runs) and the
    problems found while looking (:func:`lmlab.circuits.find_settings`); with ``cfg``, one
    checkpoint of each setting is also read, and the settings none of whose checkpoints can be
    measured (corrupt, foreign, a 1-layer model) are dropped with a problem line.

    Raises:
        LmlabError: when nothing in ``root`` can be measured (one line naming the folder).
    """
    from lmlab.circuits import circuit_matrices, find_settings

    found = find_settings(Path(root).expanduser())
    runs = [setting_of(name, folder) for name, folder in found.settings.items()]
    problems = list(found.problems)
    if cfg is not None:
        usable = []
        for run in runs:
            try:
                circuit_matrices(run.out_dir, [0], cfg=cfg)
            except LmlabError as exc:
                problems.append(f"{run.name}: not measured: {first_line(exc)}")
                continue
            usable.append(run)
        if not usable:
            raise LmlabError(f"nothing can be measured in {root}: " + "; ".join(problems))
        runs = usable
    return runs, problems


def measure_settings(runs: Sequence[SettingRun], cfg: MeasureConfig, *,
                     methods: Sequence[str], rel_dists: Sequence[int]
                     ) -> tuple[pd.DataFrame, list[str]]:
    """The long measures table of every setting that can be measured, and the problem lines
    (what the folders lack, the checkpoints skipped, the settings that cannot be measured and
    why).

    Raises:
        LmlabError: when no setting can be measured (naming the reasons).
    """
    from lmlab.circuits import measure_runs

    frames: list[pd.DataFrame] = []
    problems: list[str] = []
    for run in runs:
        try:
            df = measure_runs({run.name: run.out_dir}, cfg, methods=tuple(methods),
                              rel_dists=tuple(rel_dists))
        except LmlabError as exc:
            problems.append(f"{run.name}: not measured: {first_line(exc)}")
            continue
        problems.extend(str(p) for p in df.attrs.get("problems", []))
        frames.append(df)
    if not frames:
        raise LmlabError("nothing can be measured: " + "; ".join(problems or ["no setting"]))
    return pd.concat(frames, ignore_index=True), list(dict.fromkeys(problems))


def read_errors(out_dir: str | Path) -> tuple[pd.DataFrame, str | None]:
    """A run's error log (``epoch, err_test, err_ood, ..., full``; read with
    :func:`lmlab.circuits.read_err_arr`) and a problem line if it cannot be read.

    lmlab's layout marks the full-test-set entries ``"full": true``; in the authors' dense layout
    (one entry per step, no ``full`` key) every entry is a full evaluation, unless lmlab wrote it
    (``err_layout="authors"``): then ``err_full.json`` holds the full evaluations.

    >>> df, problem = read_errors("/no/such/run")
    >>> len(df), problem
    (0, None)
    """
    from lmlab.circuits import read_err_arr

    path = Path(out_dir) / "err_arr.json"
    empty = pd.DataFrame({c: pd.Series(dtype=bool if c == "full" else float)
                          for c in _ERR_COLUMNS})
    if not path.exists():
        return empty, None  # listed by find_settings
    try:
        df = read_err_arr(path).reset_index()
    except LmlabError as exc:
        return empty, f"{first_line(exc)}: its errors are not drawn"
    for col in ("err_test", "err_ood"):
        if col not in df:
            df[col] = np.nan
    if "full" in df:
        df["full"] = df["full"].astype(bool)
    else:  # the authors' layout: every entry is an evaluation on the full test sets
        df["full"] = True
    full_path = Path(out_dir) / "err_full.json"  # _induction_errlog.FULL_FILE
    if full_path.is_file():  # lmlab in the authors' layout: its full evaluations apart
        try:
            full = read_err_arr(full_path).reset_index()
        except LmlabError as exc:
            return df, f"{first_line(exc)}: the full evaluations are not marked"
        full["full"] = True
        df["full"] = False
        df = pd.concat([df[~df["epoch"].isin(full["epoch"])], full], ignore_index=True)
    return df.sort_values("epoch", kind="stable").reset_index(drop=True), None


def transition_step(err: pd.DataFrame) -> int | None:
    """The first step whose full evaluation has an OOD error below 0.5 (None: never)."""
    full = err[err["full"]] if len(err) else err
    below = full[full["err_ood"] < 0.5].sort_values("epoch") if len(full) else full
    return int(below["epoch"].iloc[0]) + 1 if len(below) else None


def pick_snapshots(steps: Sequence[int], transition: int | None,
                   wanted: Sequence[int] = ()) -> list[int]:
    """Three measured checkpoints: the nearest to each ``wanted`` step; else the one before the
    transition, the first at or after it, and the last; with no transition the first, middle
    and last."""
    measured = sorted({int(s) for s in steps})
    if not measured:
        return []
    arr = np.asarray(measured)
    if wanted:
        picks = [int(arr[np.abs(arr - w).argmin()]) for w in wanted]
    elif transition is None or transition > measured[-1]:
        picks = [measured[0], measured[len(measured) // 2], measured[-1]]
    else:
        at = int(arr[arr >= transition][0])
        before = [s for s in measured if s < at]
        picks = [before[-1] if before else measured[0], at, measured[-1]]
    return list(dict.fromkeys(picks))


def snapshots_of(runs: Sequence[SettingRun], steps: Mapping[str, Sequence[int]], *,
                 rel_dist: int, cfg: MeasureConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """Per setting, ``W_qkov`` and ``QK0`` at its snapshot steps
    (:func:`lmlab.circuits.circuit_matrices`), stacked: ``{"setting", "rel_dist", "steps",
    "W_qkov": (n, d, d), "QK0": (n, V, V)}``; and a problem line per setting that fails."""
    from lmlab.circuits import circuit_matrices

    out: list[dict[str, Any]] = []
    problems: list[str] = []
    for run in runs:
        wanted = [int(s) for s in steps.get(run.name, [])]
        if not wanted:
            continue
        try:
            mats = circuit_matrices(run.out_dir, wanted, rel_dist=rel_dist, cfg=cfg)
        except LmlabError as exc:
            problems.append(f"{run.name}: no heat maps: {first_line(exc)}")
            continue
        got = sorted(mats)
        if not got:
            continue
        out.append({"setting": run.name, "rel_dist": int(rel_dist),
                    "steps": np.asarray(got, dtype=np.int64),
                    "W_qkov": np.stack([np.asarray(mats[s]["W_qkov"], dtype=np.float32)
                                        for s in got]),
                    "QK0": np.stack([np.asarray(mats[s]["QK0"], dtype=np.float32)
                                     for s in got])})
    return out, problems


def primary_rows(measures: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """The rows of the primary option (the first method and the first rel_dist)."""
    if "method" not in measures or "rel_dist" not in measures:
        return measures
    return measures[(measures["method"] == cfg.method[0])
                    & (measures["rel_dist"] == cfg.rel_dist[0])]


def summary_of(cfg: Config, runs: list[SettingRun], errors: dict[str, pd.DataFrame],
               measures: pd.DataFrame, baseline: np.ndarray, measure_seconds: float,
               problems: list[str], snaps: dict[str, list[int]]) -> dict[str, Any]:
    """The study's ``summary.json`` (the keys of ``induction.SUMMARY``)."""
    main = primary_rows(measures, cfg)
    settings: dict[str, Any] = {}
    for r in runs:
        err = errors[r.name]
        full = err[err["full"]].sort_values("epoch")
        m = main[main["setting"] == r.name].sort_values("step")
        settings[r.name] = {
            "pool": r.pool or None,
            "seed": r.seed,
            "transition_step": transition_step(err),
            "final_err_id": _last(full, "err_test"),
            "final_err_ood": _last(full, "err_ood"),
            "final_err_id_nofloor": _last(full, "err_test_nofloor"),
            "final_err_ood_nofloor": _last(full, "err_ood_nofloor"),
            "match_r5_at_end": _last(m, "match_r5"),
            "zscore_at_end": _last(m, "zscore"),
            "mismatch_at_end": _last(m, "mismatch"),
            "checkpoints": int(m["step"].nunique()),
            "snapshot_steps": [int(s) for s in snaps.get(r.name, [])],
        }
    steps = (cfg.steps if not cfg.checkpoints else
             int(max([r.steps or 0 for r in runs] + [int(measures["step"].max())])))
    sign = "+" if cfg.r_sign == 1 else "-"
    trained = not cfg.checkpoints
    return {"source": "trained" if trained else str(Path(cfg.checkpoints)),
            "steps": steps, "num_layers": cfg.num_layers if trained else None,
            "seed": cfg.seed if trained else None,
            "conventions": {"R": f"rotary R({sign}t) for t in rel_dist; t = 0: R = I",
                            "argmax_axis": cfg.argmax_axis, "layernorm": cfg.layernorm,
                            "method": list(cfg.method), "rel_dist": list(cfg.rel_dist),
                            "ranks_plotted": list(cfg.ranks_plotted),
                            "screenot_k": list(cfg.screenot_k),
                            "primary": f"{cfg.method[0]}, rel_dist {cfg.rel_dist[0]}"},
            "baseline_r5": float(baseline[4]), "measure_seconds": round(measure_seconds, 2),
            "problems": problems, "settings": settings}


def _last(df: pd.DataFrame, col: str) -> float | None:
    if col not in df or not len(df):
        return None
    value = float(df[col].iloc[-1])
    return None if math.isnan(value) else value
