"""Study `induction`: induction heads, composition and out-of-distribution copying.

After Song, Xu, Zhong, "Out-of-distribution generalization via composition: a lens through
induction heads in Transformers" (PNAS 122, 2025; arXiv 2408.09503). A 2-layer rotary
attention-only transformer learns to copy a repeated segment. With diverse enough training
patterns it generalises out of distribution (longer segments, uniform tokens) abruptly, when a
previous-token head (layer 0) and an induction head (layer 1) compose through a shared subspace:
the layer-1 QK key subspace aligns with the layer-0 OV output subspace far above a random
baseline. With a small pool of patterns the model memorises them instead (ID error falls, OOD
stays ≈ 0.98); the boundary lies between 740 and 750 patterns at 20k steps.

Each setting (a pattern-pool size) is one training run with checkpoints in the authors' layout;
settings run in parallel through :mod:`lmlab.sweep` (one thread each) and resume from their last
checkpoint. Measurements run over all checkpoints of a run at once (:mod:`lmlab.circuits`).

Commands::

    lmlab run induction --preset quick       # infinite pool vs pool 100, 3,600 steps (minutes)
    lmlab run induction --preset paper       # the five settings, 20,000 steps each
    lmlab run induction --set pools=0,100,400,1000 --set steps=20000
    lmlab run induction --set checkpoints=DIR                       # measure, no training
    lmlab run induction --set checkpoints=DIR --set method=largest,mean --set rel_dist=0,1,5

``checkpoints=DIR`` measures run folders that already exist — one run (``config.json``,
``ckpt_<step>.pt``, ``err_arr.json``, in the authors' layout or lmlab's) or a folder of
``<setting>/`` runs — and writes the same run directory, figures and report as a trained run;
what the folders lack is listed in the report. ``method`` (``largest``, ``mean``) and
``rel_dist`` (the rotary distance of R; 0: R = I) give one row of the measures table per
checkpoint and option.

>>> [setting_name(p) for p in Config.paper().pools]
['infinite_pool_size', 'small_pool_size', 'large_pool_size', 'boundary_pool_size_740', \
'boundary_pool_size_750']
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from lmlab.config import check_ranges, ranged, seed_field
from lmlab.errors import LmlabError
from lmlab.runs import Report, RunDir
from lmlab.studies.pattern import Summary, SummaryKey
from lmlab.sweep import SweepConfig

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from lmlab.circuits import MeasureConfig
    from lmlab.studies._induction_measure import SettingRun
    from lmlab.studies.induction_train import TrainSetting

#: Read by the registry without importing this module.
STUDY = {"name": "induction", "order": 7,
         "description": ("Induction heads: copying, pattern diversity, OOD generalisation "
                         "and QK–OV composition"),
         "source": "Song, Xu, Zhong, PNAS 2025"}

__all__ = ["Config", "Result", "SUMMARY", "TrainCell", "cells_of", "check", "plot", "report",
           "run", "setting_name", "train_cell", "train_cell_key"]

# ``lmlab run ... --resume`` continues an interrupted run: every setting checkpoints every
# ``save_every`` steps in ``<run>/settings``.
RESUMES = True

#: The keys of ``summary.json``, their types and meaning.
SUMMARY = Summary(
    SummaryKey("source", str, "'trained' or the folder of checkpoints that was measured"),
    SummaryKey("steps", int, "optimisation steps per setting (measured: the last checkpoint)"),
    SummaryKey("num_layers", int, "transformer layers (null: measured folders)"),
    SummaryKey("seed", int, "the training seed of every setting (null: measured folders, whose "
               "seeds are per setting)"),
    SummaryKey("conventions.R", str, "the rotary matrix R of the QK circuit (its rel_dist)"),
    SummaryKey("conventions.argmax_axis", str, "the token mismatch's argmax axis (row or col)"),
    SummaryKey("conventions.layernorm", str, "LayerNorm gains ignored or folded in"),
    SummaryKey("conventions.method", list, "the matching methods measured (largest, mean)"),
    SummaryKey("conventions.rel_dist", list, "the rotary distances measured (0: R = I)"),
    SummaryKey("conventions.ranks_plotted", list, "the ranks r of the matching panels"),
    SummaryKey("conventions.screenot_k", list, "the rank bounds k of the ScreeNOT estimates"),
    SummaryKey("conventions.primary", str,
               "the (method, rel_dist) of the *_at_end values and of the overlay"),
    SummaryKey("baseline_r5", float,
               "the QK–OV matching at rank 5 of random subspaces (first method)", headline=True),
    SummaryKey("measure_seconds", float,
               "the measurement pass over every checkpoint of every setting"),
    SummaryKey("problems", list, "what the run folders lack or what could not be measured"),
    SummaryKey("settings", dict, "one entry per setting, by its name", headline=True),
    SummaryKey("settings.<name>.pool", int, "the pattern-pool size (null: infinite)"),
    SummaryKey("settings.<name>.seed", int, "the setting's training seed"),
    SummaryKey("settings.<name>.transition_step", int,
               "first checkpoint with OOD error < 0.5 (null: never)"),
    SummaryKey("settings.<name>.final_err_id", float, "ID error on the full test set at the end"),
    SummaryKey("settings.<name>.final_err_ood", float,
               "OOD error on the full test set at the end"),
    SummaryKey("settings.<name>.final_err_id_nofloor", float,
               "floor-free ID error on the full test set at the end"),
    SummaryKey("settings.<name>.final_err_ood_nofloor", float,
               "floor-free OOD error on the full test set at the end"),
    SummaryKey("settings.<name>.match_r5_at_end", float,
               "QK–OV subspace matching at rank 5, last checkpoint (primary option)"),
    SummaryKey("settings.<name>.zscore_at_end", float,
               "diagonal z-score of W_qk W_ov, last checkpoint (primary option)"),
    SummaryKey("settings.<name>.mismatch_at_end", float,
               "token mismatch ratio, last checkpoint (primary option)"),
    SummaryKey("settings.<name>.checkpoints", int,
               "checkpoints measured (0: none could be; its errors are still shown)"),
    SummaryKey("settings.<name>.snapshot_steps", list,
               "the checkpoints of the heat maps and of the distance-sweep snapshots"),
)

_NAMES = {0: "infinite_pool_size", 100: "small_pool_size", 1000: "large_pool_size",
          740: "boundary_pool_size_740", 750: "boundary_pool_size_750"}


def setting_name(pool: int) -> str:
    """The authors' directory name of a pool size (0: an infinite pool)."""
    return _NAMES.get(pool, f"pool_size_{pool}")


MAX_CHECKPOINTS = 1000  # per setting (the paper's: 100)
_EVAL_WHY = "the test sets are held in memory and evaluated at every checkpoint"
Method = Literal["largest", "mean"]


@dataclass(frozen=True)
class Config:
    """The induction study.

    Attributes:
        checkpoints: a folder to measure instead of training: one run folder (config.json,
            ckpt_<step>.pt, err_arr.json) or a folder of <setting>/ run folders, in the
            authors' layout or lmlab's; empty = train the settings of ``pools``.
        pools: one training setting per pattern-pool size (0: a fresh pattern per sequence).
        steps: optimisation steps per setting (batch 50 of fresh sequences each).
        save_every: checkpoint (and full ID/OOD evaluation) interval.
        eval_every: interval of the cheap error estimates (``eval_cheap`` ID + OOD sequences).
        eval_cheap: sequences in each cheap ID and OOD estimate.
        eval_full: sequences in each full ID and OOD test set.
        num_layers: transformer layers (1: the control that cannot compose).
        seed: the training seed of every setting (the authors': 2026).
        seeds: several training seeds: every pool is trained once per seed (a setting
            ``<name>_seed<s>``); empty = ``seed`` alone.
        err_layout: ``lmlab``: a sparse err_arr.json (cheap estimates every eval_every steps,
            full evaluations marked at checkpoints); ``authors``: the authors' dense layout,
            one record per step that their notebook indexes by step (needs eval_every=1: a
            cheap evaluation after every step, which slows training), full evaluations in
            err_full.json.
        method: the subspace-matching statistics: ``largest`` (σ_max, the largest principal
            cosine) and/or ``mean`` (the RMS of the r principal cosines).
        rel_dist: the rotary distances t of R in W_qk = W_q1ᵀ R(t) W_k1 / √d (0: R = I); one
            row of the measures table per checkpoint, method and distance.
        ranks_plotted: the ranks r of the QK–OV matching panels.
        screenot_k: the rank bounds k of the ScreeNOT rank estimates.
        snapshot_steps: the checkpoints of the heat maps and distance-sweep snapshots (the
            nearest measured ones); empty = before, at and after the transition.
        r_sign, argmax_axis, layernorm: measurement conventions of the QK–OV matching (the
            sign of r, the axis of the argmax, how layer norms enter; recorded with the
            results).
        runs_dir: where the settings' run folders go (default: ``<run>/settings``); a rerun with
            the same folder resumes each setting from its last checkpoint.
        sweep: how settings run in parallel (default: two processes, one thread each).
        device: ``cpu``, ``cuda`` (``cuda:N``) or ``auto`` (CUDA when available): where the
            settings train (on ``cuda``, a process sweep runs one setting at a time); recorded
            in each setting's ``config.json``.
    """

    checkpoints: str = field(default="", metadata={"empty_ok": True})
    pools: tuple[int, ...] = ranged((0, 100, 1000, 740, 750), 0, 10**6,
                                    why="the pool's segments are held in memory")
    steps: int = ranged(20_000, 1, 10**6, why="the error log keeps a row every eval_every steps")
    save_every: int = ranged(200, 1)
    eval_every: int = ranged(20, 1)
    eval_cheap: int = ranged(200, 1, 10**5, why=_EVAL_WHY)
    eval_full: int = ranged(2000, 1, 10**5, why=_EVAL_WHY)
    num_layers: int = ranged(2, 1, 64, why="every layer adds a block of the paper's width")
    seed: int = seed_field(2026)
    seeds: tuple[int, ...] = ranged((), 0, 2**31 - 1, why="seeds are 32-bit integers")
    err_layout: Literal["lmlab", "authors"] = "lmlab"
    method: tuple[Method, ...] = ("largest",)
    rel_dist: tuple[int, ...] = ranged((1,), 0, 10**4, why="a distance between two positions")
    ranks_plotted: tuple[int, ...] = ranged((5, 10, 15, 20), 1, 32,
                                            why="the matching is measured up to rank 32")
    screenot_k: tuple[int, ...] = ranged((5, 10, 20), 0, 31,
                                         why="ScreeNOT needs 2k + 1 < 64 on 64-wide matrices")
    snapshot_steps: tuple[int, ...] = ranged((), 0, 10**6)
    r_sign: Literal[1, -1] = 1
    argmax_axis: Literal["row", "col"] = "row"
    layernorm: Literal["ignore", "fold"] = "ignore"
    runs_dir: str | None = None
    sweep: SweepConfig = field(default_factory=lambda: SweepConfig(backend="process",
                                                                   workers=2))
    device: str = "cpu"

    @classmethod
    def paper(cls) -> Config:
        """The five settings of the authors' runs, 20,000 steps. Full test sets of 2,000 ID +
        2,000 OOD sequences at every checkpoint (the authors' 5,000 + 5,000 cost about 8 CPU
        minutes per run at 101 checkpoints; set eval_full=5000 to match them)."""
        return cls()

    @classmethod
    def quick(cls) -> Config:
        """Infinite pool vs pool 100, 3,600 steps, full test sets of 1,000."""
        return cls(pools=(0, 100), steps=3600, eval_every=50, eval_full=1000)

    def validate(self) -> None:
        """Distinct pools; checkpoints that end at the last step and fit on disk; a cheap
        evaluation no larger than the full one; settings that validate; at least one distinct
        matching method and distance."""
        check_ranges(self)
        for key in ("pools", "seeds", "method", "rel_dist", "screenot_k"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise LmlabError(f"{key} has duplicates: {values}")
        for key in ("pools", "method", "rel_dist", "ranks_plotted"):
            if not getattr(self, key):
                raise LmlabError(f"{key} is empty; name at least one (lmlab study show "
                                 "induction lists what it takes)")
        if self.steps % self.save_every:
            raise LmlabError(f"save_every={self.save_every} must divide steps={self.steps} "
                             "(the last checkpoint holds the final weights)")
        if self.steps // self.save_every > MAX_CHECKPOINTS:
            raise LmlabError(f"steps / save_every = {self.steps // self.save_every} checkpoints "
                             f"per setting; at most {MAX_CHECKPOINTS} (each is saved to disk "
                             "and measured afterwards): raise save_every")
        if self.eval_cheap > self.eval_full:
            raise LmlabError(f"eval_cheap={self.eval_cheap} must not exceed eval_full="
                             f"{self.eval_full} (the cheap set is a prefix of the full one)")
        for cell in cells_of(self, Path(".")):
            cell.setting.validate()
        self.sweep.validate()


@dataclass(frozen=True)
class TrainCell:
    """One setting to train, the folder its run goes to and the device it trains on."""

    setting: TrainSetting
    out_dir: str
    device: str = "cpu"

    @property
    def name(self) -> str:
        """The setting's name (its folder's name)."""
        return self.setting.name

    @property
    def pool(self) -> int:
        """The pool size (0: infinite)."""
        return self.setting.pool_size or 0


def train_cell(cell: TrainCell) -> dict[str, Any]:
    """Train (or resume) one setting; return its summary row."""
    from lmlab.studies.induction_train import train_setting

    out = train_setting(cell.setting, cell.out_dir, device=cell.device)
    return {"setting": cell.name, "pool": cell.pool, **{k: v for k, v in out.items()
                                                       if isinstance(v, (int, float, str))}}


def train_cell_key(cell: TrainCell) -> str:
    """The sweep's key of a cell: the default key of its fields, without the device on the CPU
    (so stores written before it existed still match)."""
    from dataclasses import asdict

    from lmlab.sweep import cell_key

    fields = asdict(cell)
    if fields["device"] == "cpu":
        fields.pop("device")
    return cell_key(fields)


def cells_of(cfg: Config, root: Path, device: str = "cpu") -> list[TrainCell]:
    """One cell per pool size (and per seed, with ``seeds``), each running into
    ``root/<setting name>`` on ``device`` (resolved: ``cpu``, ``cuda``, ``cuda:N``)."""
    from lmlab.studies.induction_train import TrainSetting

    seeds = cfg.seeds or (cfg.seed,)
    cells = []
    for p in cfg.pools:
        for seed in seeds:
            name = setting_name(p) + (f"_seed{seed}" if cfg.seeds else "")
            cells.append(TrainCell(
                TrainSetting(name=name, pool_size=p or None, steps=cfg.steps,
                             save_every=cfg.save_every, eval_every=cfg.eval_every,
                             eval_cheap=cfg.eval_cheap, eval_full=cfg.eval_full,
                             num_layers=cfg.num_layers, seed=seed,
                             err_layout=cfg.err_layout),
                str(root / name), device))
    return cells


@dataclass(frozen=True)
class Result:
    """Everything the figures and the report need.

    Attributes:
        config: the config that ran.
        summary: the numbers of ``summary.json`` (see ``SUMMARY``).
        training: one row per setting: its training summary (measured folders: the folder,
            pool, seed and length read from its ``config.json``).
        measures: one row per (setting, checkpoint, method, rel_dist): the circuit
            measurements (``measures.csv``).
        errors: per setting, its error log (cheap estimates and full evaluations, ``full``
            true), as in its ``err_arr.json``.
        baseline: the random-subspace matching score at ranks 1..32 (of the first method).
        pool_sweep: one row per setting with a final OOD error: ``pool`` (inf: an infinite
            pool), ``seed`` and ``final_err_ood``.
        snapshots: per setting, ``W_qkov`` and ``QK0`` at its snapshot checkpoints (``setting``,
            ``rel_dist``, ``steps``, ``W_qkov`` (n, d, d), ``QK0`` (n, V, V)).
    """

    config: Config
    summary: dict[str, Any]
    training: pd.DataFrame
    measures: pd.DataFrame
    errors: dict[str, pd.DataFrame]
    baseline: np.ndarray
    pool_sweep: pd.DataFrame
    snapshots: list[dict[str, Any]] = field(default_factory=list)


def check(cfg: Config) -> None:
    """Fail before any work when nothing in ``checkpoints`` can be measured (one checkpoint of
    each setting is read), or, to train, when the sweep backend cannot run (ray not
    installed)."""
    if cfg.checkpoints:
        from lmlab.studies._induction_measure import folder_settings

        folder_settings(cfg.checkpoints, measure_config(cfg))
        return
    cfg.sweep.check_available()


def measure_config(cfg: Config) -> MeasureConfig:
    """The circuits' measurement config of the study's options."""
    from lmlab.circuits import MeasureConfig

    return MeasureConfig(r_sign=cfg.r_sign, argmax_axis=cfg.argmax_axis,
                         layernorm=cfg.layernorm, screenot_k=tuple(cfg.screenot_k),
                         position_ranks=tuple(cfg.ranks_plotted))


def run(cfg: Config, run_dir: RunDir) -> Result:
    """Train every setting (in parallel, resumable) — or take the run folders of
    ``checkpoints`` — and measure every checkpoint under every (method, rel_dist)."""
    from lmlab.studies._induction_measure import (
        folder_settings,
        measure_settings,
        pick_snapshots,
        read_errors,
        snapshots_of,
        summary_of,
        transition_step,
    )

    mcfg = measure_config(cfg)
    problems: list[str] = []
    if cfg.checkpoints:
        runs, problems = folder_settings(cfg.checkpoints)
        training = pd.DataFrame([{"setting": r.name, "run_folder": r.out_dir, "pool": r.pool,
                                  "seed": r.seed, "steps": r.steps} for r in runs])
        run_dir.update_meta({"data_source": f"checkpoints in {Path(cfg.checkpoints)}"})
    else:
        runs, training = _train(cfg, run_dir)
    run_dir.save_table("training.csv", training)
    start = time.perf_counter()
    measures, lacks = measure_settings(runs, mcfg, methods=cfg.method, rel_dists=cfg.rel_dist)
    problems = list(dict.fromkeys([*problems, *lacks]))
    names = set(measures["setting"])
    errors: dict[str, pd.DataFrame] = {}
    for r in runs:  # a setting that cannot be measured still shows its error log
        errors[r.name], problem = read_errors(r.out_dir)
        if problem and not any(p.startswith(f"{r.name}:") and "err_arr" in p
                               for p in problems):
            problems.append(f"{r.name}: {problem}")
    kept = [r for r in runs if r.name in names or len(errors[r.name])]
    errors = {r.name: errors[r.name] for r in kept}
    measured = [r for r in kept if r.name in names]
    snaps = {r.name: pick_snapshots(measures.loc[measures["setting"] == r.name, "step"],
                                    transition_step(errors[r.name]), cfg.snapshot_steps)
             for r in measured}
    snapshots, more = snapshots_of(measured, snaps, rel_dist=cfg.rel_dist[0], cfg=mcfg)
    measure_seconds = time.perf_counter() - start
    run_dir.save_table("measures.csv", measures)
    baseline = _baseline(measures, cfg.method[0])
    summary = summary_of(cfg, kept, errors, measures, baseline, measure_seconds,
                         [*problems, *more], snaps)
    return Result(cfg, summary, training, measures, errors, baseline, _pool_sweep(summary),
                  snapshots)


def _train(cfg: Config, run_dir: RunDir) -> tuple[list[SettingRun], pd.DataFrame]:
    """Train (or resume) every setting; its run folders and the training table."""
    from lmlab.runtime import resolve_device
    from lmlab.studies._induction_measure import SettingRun
    from lmlab.sweep import run_sweep

    root = Path(cfg.runs_dir) if cfg.runs_dir else run_dir.path / "settings"
    device = str(resolve_device(cfg.device))
    cells = cells_of(cfg, root, device)
    training = run_sweep(train_cell, cells, cfg.sweep, store=root / "sweep",
                         key=train_cell_key, desc="induction settings", device=device
                         ).drop(columns=["cell"], errors="ignore")
    return [SettingRun(c.name, c.out_dir, c.pool, c.setting.seed, cfg.steps)
            for c in cells], training


def _baseline(measures: pd.DataFrame, method: str) -> np.ndarray:
    """The random baseline of ``method`` at ranks 1..32: from the table where it was measured,
    else computed for d = 64."""
    from lmlab.circuits import random_baseline

    cols = [f"baseline_r{r}" for r in range(1, 33)]
    rows = measures[measures["method"] == method] if "method" in measures else measures
    if len(rows) and all(c in rows for c in cols):
        return rows[cols].iloc[0].to_numpy(dtype=np.float64)
    return np.asarray(random_baseline(64, list(range(1, 33)), method=method),  # type: ignore[arg-type]
                      dtype=np.float64)


def _pool_sweep(summary: dict[str, Any]) -> pd.DataFrame:
    """The final OOD error of every measured setting that has one, against its pool (inf:
    infinite)."""
    rows = [(float(info["pool"] or math.inf),
             float(info.get("seed") if info.get("seed") is not None
                   else summary.get("seed", 0)),
             info["final_err_ood"])
            for info in summary["settings"].values()
            if info["final_err_ood"] is not None and info.get("checkpoints", 1) > 0]
    return pd.DataFrame(rows, columns=["pool", "seed", "final_err_ood"], dtype=float)


def plot(result: Result) -> dict[str, Figure]:
    """Every figure of a finished run, from the ``Result`` alone: the source's five panels
    per setting (one row per method and rel_dist), the settings overlaid, the
    relative-distance sweep (with several distances), the W_qkov / QK0 heat maps, position
    matching and ScreeNOT ranks, and (with two settings or more) OOD error against the pool.

    >>> err = pd.DataFrame({"epoch": [-1, 19], "err_test": [0.97, 0.9], "err_ood": [0.98, 0.98],
    ...                     "full": [True, True]})
    >>> m = pd.DataFrame({"setting": "a", "step": [0, 20], "zscore": [0.1, 0.2],
    ...                   "mismatch": [0.9, 0.9], "match_r5": [0.4, 0.5]})
    >>> res = Result(Config.quick(), {"settings": {"a": {"pool": None}}}, pd.DataFrame(), m,
    ...              {"a": err}, np.linspace(0.1, 1, 32), _pool_sweep({"settings": {}}))
    >>> sorted(plot(res))
    ['overlay', 'setting_a']
    """
    from lmlab.studies._induction_report import all_figures

    return all_figures(result)


def report(result: Result, figures: dict[str, Figure]) -> Report:
    """The report of a finished run: what ran (or which folder was measured), the problems
    found, the table per setting, the figures."""
    from lmlab.studies._induction_report import build_report

    return build_report(result, figures)
