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

    from lmlab.studies.induction_train import TrainSetting

#: Read by the registry without importing this module.
STUDY = {"name": "induction", "order": 7,
         "description": ("Induction heads: copying, pattern diversity, OOD generalisation "
                         "and QK–OV composition"),
         "source": "Song, Xu, Zhong, PNAS 2025"}

__all__ = ["Config", "Result", "SUMMARY", "TrainCell", "cells_of", "check", "plot", "report",
           "run", "setting_name", "train_cell"]

# ``lmlab run ... --resume`` continues an interrupted run: every setting checkpoints every
# ``save_every`` steps in ``<run>/settings``.
RESUMES = True

#: The keys of ``summary.json``, their types and meaning.
SUMMARY = Summary(
    SummaryKey("steps", int, "optimisation steps per setting"),
    SummaryKey("num_layers", int, "transformer layers"),
    SummaryKey("seed", int, "the training seed of every setting"),
    SummaryKey("conventions.R", str, "the rotary matrix R of the QK circuit (its rel_dist)"),
    SummaryKey("conventions.argmax_axis", str, "the token mismatch's argmax axis (row or col)"),
    SummaryKey("conventions.layernorm", str, "LayerNorm gains ignored or folded in"),
    SummaryKey("baseline_r5", float, "the QK–OV matching at rank 5 of random subspaces",
               headline=True),
    SummaryKey("measure_seconds", float,
               "the measurement pass over every checkpoint of every setting"),
    SummaryKey("settings", dict, "one entry per setting, by its name", headline=True),
    SummaryKey("settings.<name>.pool", int, "the pattern-pool size (null: infinite)"),
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
               "QK–OV subspace matching at rank 5, last checkpoint"),
    SummaryKey("settings.<name>.zscore_at_end", float,
               "diagonal z-score of W_qk W_ov, last checkpoint"),
    SummaryKey("settings.<name>.checkpoints", int, "checkpoints measured"),
)

_NAMES = {0: "infinite_pool_size", 100: "small_pool_size", 1000: "large_pool_size",
          740: "boundary_pool_size_740", 750: "boundary_pool_size_750"}


def setting_name(pool: int) -> str:
    """The authors' directory name of a pool size (0: an infinite pool)."""
    return _NAMES.get(pool, f"pool_size_{pool}")


MAX_CHECKPOINTS = 1000  # per setting (the paper's: 100)
_EVAL_WHY = "the test sets are held in memory and evaluated at every checkpoint"


@dataclass(frozen=True)
class Config:
    """The induction study.

    Attributes:
        pools: one training setting per pattern-pool size (0: a fresh pattern per sequence).
        steps: optimisation steps per setting (batch 50 of fresh sequences each).
        save_every: checkpoint (and full ID/OOD evaluation) interval.
        eval_every: interval of the cheap error estimates (``eval_cheap`` ID + OOD sequences).
        eval_cheap: sequences in each cheap ID and OOD estimate.
        eval_full: sequences in each full ID and OOD test set.
        num_layers: transformer layers (1: the control that cannot compose).
        seed: the training seed of every setting (the authors': 2026).
        ranks_plotted: the ranks r of the QK–OV matching panels.
        r_sign, argmax_axis, layernorm: measurement conventions of the QK–OV matching (the
            sign of r, the axis of the argmax, how layer norms enter; recorded with the
            results).
        runs_dir: where the settings' run folders go (default: ``<run>/settings``); a rerun with
            the same folder resumes each setting from its last checkpoint.
        sweep: how settings run in parallel (default: two processes, one thread each).
        device: ``cpu`` or ``cuda``.
    """

    pools: tuple[int, ...] = ranged((0, 100, 1000, 740, 750), 0, 10**6,
                                    why="the pool's segments are held in memory")
    steps: int = ranged(20_000, 1, 10**6, why="the error log keeps a row every eval_every steps")
    save_every: int = ranged(200, 1)
    eval_every: int = ranged(20, 1)
    eval_cheap: int = ranged(200, 1, 10**5, why=_EVAL_WHY)
    eval_full: int = ranged(2000, 1, 10**5, why=_EVAL_WHY)
    num_layers: int = ranged(2, 1, 64, why="every layer adds a block of the paper's width")
    seed: int = seed_field(2026)
    ranks_plotted: tuple[int, ...] = ranged((5, 10, 15, 20), 1, 32,
                                            why="the matching is measured up to rank 32")
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
        evaluation no larger than the full one; settings that validate; the CPU."""
        check_ranges(self)
        if not self.pools:
            raise LmlabError("pools is empty; name at least one pool size (0: infinite)")
        if len(set(self.pools)) != len(self.pools):
            raise LmlabError(f"pools has duplicates: {self.pools}")
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
        if self.device not in ("cpu", "auto"):
            raise LmlabError("the induction study trains on the CPU, one thread per setting; "
                             "set device=cpu")


@dataclass(frozen=True)
class TrainCell:
    """One setting to train, and the folder its run goes to."""

    setting: TrainSetting
    out_dir: str

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

    out = train_setting(cell.setting, cell.out_dir)
    return {"setting": cell.name, "pool": cell.pool, **{k: v for k, v in out.items()
                                                       if isinstance(v, (int, float, str))}}


def cells_of(cfg: Config, root: Path) -> list[TrainCell]:
    """One cell per pool size, each running into ``root/<setting name>``."""
    from lmlab.studies.induction_train import TrainSetting

    return [TrainCell(TrainSetting(name=setting_name(p), pool_size=p or None, steps=cfg.steps,
                                   save_every=cfg.save_every, eval_every=cfg.eval_every,
                                   eval_cheap=cfg.eval_cheap, eval_full=cfg.eval_full,
                                   num_layers=cfg.num_layers, seed=cfg.seed),
                      str(root / setting_name(p))) for p in cfg.pools]


@dataclass(frozen=True)
class Result:
    """Everything the figures and the report need.

    Attributes:
        config: the config that ran.
        summary: the numbers of ``summary.json`` (see ``SUMMARY``).
        training: one row per setting: its training summary.
        measures: one row per (setting, checkpoint): the circuit measurements.
        errors: per setting, its error log (cheap estimates and full evaluations, ``full``
            true), as in its ``err_arr.json``.
        baseline: the random-subspace matching score at ranks 1..32.
        pool_sweep: one row per setting with a final OOD error: ``pool`` (inf: an infinite
            pool) and ``final_err_ood``.
    """

    config: Config
    summary: dict[str, Any]
    training: pd.DataFrame
    measures: pd.DataFrame
    errors: dict[str, pd.DataFrame]
    baseline: np.ndarray
    pool_sweep: pd.DataFrame


def check(cfg: Config) -> None:
    """Fail before any work when the sweep backend cannot run (ray not installed)."""
    cfg.sweep.check_available()


def run(cfg: Config, run_dir: RunDir) -> Result:
    """Train every setting (in parallel, resumable) and measure every checkpoint."""
    from lmlab.circuits import MeasureConfig, measure_runs, random_baseline
    from lmlab.sweep import run_sweep

    root = Path(cfg.runs_dir) if cfg.runs_dir else run_dir.path / "settings"
    cells = cells_of(cfg, root)
    training = run_sweep(train_cell, cells, cfg.sweep, store=root / "sweep",
                         desc="induction settings").drop(columns=["cell"], errors="ignore")
    run_dir.save_table("training.csv", training)
    mcfg = MeasureConfig(r_sign=cfg.r_sign, argmax_axis=cfg.argmax_axis,  # type: ignore[arg-type]
                         layernorm=cfg.layernorm)  # type: ignore[arg-type]
    start = time.perf_counter()
    measures = measure_runs({c.name: c.out_dir for c in cells}, mcfg)
    measure_seconds = time.perf_counter() - start
    run_dir.save_table("measures.csv", measures)
    baseline = random_baseline(64, list(range(1, 33)))
    errors = {c.name: _errors(c.out_dir) for c in cells}
    summary = _summary(cfg, cells, errors, measures, baseline, measure_seconds)
    return Result(cfg, summary, training, measures, errors, np.asarray(baseline),
                  _pool_sweep(summary))


def _errors(out_dir: str) -> pd.DataFrame:
    """The run's error log: cheap estimates and the full evaluations (``full`` true)."""
    import json

    path = Path(out_dir) / "err_arr.json"
    if not path.is_file():
        return pd.DataFrame(columns=["epoch", "err_test", "err_ood", "full"])
    df = pd.DataFrame(json.loads(path.read_text()))
    if "full" not in df:
        df["full"] = False
    df["full"] = df["full"].fillna(False).astype(bool)
    return df


def _summary(cfg: Config, cells: list[TrainCell], errors: dict[str, pd.DataFrame],
             measures: pd.DataFrame, baseline: np.ndarray,
             measure_seconds: float) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for cell in cells:
        err = errors[cell.name]
        full = err[err["full"]].sort_values("epoch")
        below = full[full["err_ood"] < 0.5]
        m = measures[measures["setting"] == cell.name].sort_values("step")
        settings[cell.name] = {
            "pool": cell.pool or None,
            "transition_step": int(below["epoch"].iloc[0]) + 1 if len(below) else None,
            "final_err_id": float(full["err_test"].iloc[-1]) if len(full) else None,
            "final_err_ood": float(full["err_ood"].iloc[-1]) if len(full) else None,
            "final_err_id_nofloor": _last(full, "err_test_nofloor"),
            "final_err_ood_nofloor": _last(full, "err_ood_nofloor"),
            "match_r5_at_end": float(m["match_r5"].iloc[-1]) if len(m) else None,
            "zscore_at_end": float(m["zscore"].iloc[-1]) if len(m) else None,
            "checkpoints": len(m),
        }
    return {"steps": cfg.steps, "num_layers": cfg.num_layers, "seed": cfg.seed,
            "conventions": {"R": f"rotary R(rel_dist={cfg.r_sign:+d})",
                            "argmax_axis": cfg.argmax_axis, "layernorm": cfg.layernorm},
            "baseline_r5": float(baseline[4]), "measure_seconds": round(measure_seconds, 2),
            "settings": settings}


def _last(df: pd.DataFrame, col: str) -> float | None:
    if col not in df or not len(df):
        return None
    value = float(df[col].iloc[-1])
    return None if math.isnan(value) else value


def _pool_sweep(summary: dict[str, Any]) -> pd.DataFrame:
    """The final OOD error of every setting that has one, against its pool (inf: infinite)."""
    rows = [(float(info["pool"] or math.inf), info["final_err_ood"])
            for info in summary["settings"].values() if info["final_err_ood"] is not None]
    return pd.DataFrame(rows, columns=["pool", "final_err_ood"], dtype=float)


def plot(result: Result) -> dict[str, Figure]:
    """Every figure of a finished run, from the ``Result`` alone: five panels per setting,
    the settings overlaid, and (with two settings or more) OOD error against the pool size.

    >>> err = pd.DataFrame({"epoch": [-1, 19], "err_test": [0.97, 0.9], "err_ood": [0.98, 0.98],
    ...                     "full": [True, True]})
    >>> m = pd.DataFrame({"setting": "a", "step": [0, 20], "zscore": [0.1, 0.2],
    ...                   "mismatch": [0.9, 0.9], "match_r5": [0.4, 0.5]})
    >>> res = Result(Config.quick(), {"settings": {"a": {"pool": None}}}, pd.DataFrame(), m,
    ...              {"a": err}, np.linspace(0.1, 1, 32), _pool_sweep({"settings": {}}))
    >>> sorted(plot(res))
    ['overlay', 'setting_a']
    """
    from lmlab.plotting import captioned
    from lmlab.plotting.induction import plot_overlay, plot_pool_sweep, plot_setting_panels

    cfg, measures = result.config, result.measures
    figures: dict[str, Figure] = {}
    for name, info in result.summary["settings"].items():
        fig = plot_setting_panels(result.errors[name], measures[measures["setting"] == name],
                                  result.baseline, ranks=cfg.ranks_plotted,
                                  title=f"{name} (pool {info['pool'] or '∞'})")
        figures[f"setting_{name}"] = captioned(
            fig, f"{name}: ID/OOD error (log step), diagonal z-score, QK–OV matching vs the "
                 "random baseline, token mismatch, embedding–OV matching.")
    figures["overlay"] = captioned(plot_overlay(result.errors, measures),
                                   "All settings: OOD error and QK–OV matching (r = 5) against "
                                   "steps.")
    if len(result.pool_sweep) > 1:
        pools = {float(p): float(e) for p, e in zip(result.pool_sweep["pool"],
                                                     result.pool_sweep["final_err_ood"],
                                                     strict=True)}
        figures["pool_sweep"] = captioned(
            plot_pool_sweep(pools, steps=cfg.steps),
            f"OOD error after {cfg.steps:,} steps against the pool size.")
    return figures


def report(result: Result, figures: dict[str, Figure]) -> Report:
    """The report of a finished run: what ran, the table per setting, the figures."""
    cfg, s = result.config, result.summary
    rep = Report("Induction heads, composition and OOD copying")
    rep.add_text(
        f"2-layer rotary attention-only transformer (d 64, vocabulary 64, one head per layer"
        f"{'' if cfg.num_layers == 2 else f'; here {cfg.num_layers} layers'}), copying task of "
        f"length 64 with a segment of 10–19 tokens written twice over a Zipf background; "
        f"OOD: uniform tokens, segment length 25. AdamW lr 1e-3, batch 50 fresh sequences, "
        f"{cfg.steps:,} steps, seed {cfg.seed}; checkpoints and full ID/OOD evaluations "
        f"({cfg.eval_full:,} sequences each) every {cfg.save_every} steps, cheap estimates "
        f"({cfg.eval_cheap} + {cfg.eval_cheap}) every {cfg.eval_every}. Errors use the authors' "
        "mask, whose floor for a perfect copier is 0.092 (ID) / 0.047 (OOD); the floor-free "
        "variant is in the table. Measurement conventions: "
        f"{s['conventions']['R']}, argmax over {cfg.argmax_axis}s, LayerNorm {cfg.layernorm}.")
    rows = [{"setting": k, **v} for k, v in s["settings"].items()]
    rep.add_table(pd.DataFrame(rows), caption=f"Per setting (random baseline at r = 5: "
                                              f"{s['baseline_r5']:.3f})")
    rep.add_figures(figures, names=[*(f"setting_{name}" for name in s["settings"]), "overlay",
                                    "pool_sweep"])
    rep.add_text(f"Measurement pass over every checkpoint of every setting: "
                 f"{s['measure_seconds']:.1f} s.")
    return rep
