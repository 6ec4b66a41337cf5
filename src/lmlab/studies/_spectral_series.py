"""The ``spectral`` study on a folder of checkpoints: α over a training run.

What is read how (:func:`read_as`): a path to a directory with model weights at its top is one
model; a directory without them but with checkpoint-named children (``step_N``,
``checkpoint-N``, ``ckpt_N.pt``, ...: :mod:`lmlab.spectral.series`) is a series; the config's
``read_as`` can force either. A series run keeps every finished checkpoint's rows in
``<run>/series/cells.jsonl`` as it completes, so ``--resume`` analyses only the checkpoints not
done yet — those an interruption left, those that could not be read, and new ones a training
run still going has written since (:func:`grown` tells the runner that a finished run has
more to do).

>>> t = pd.DataFrame({"step": [0, 0, 5, 9], "checkpoint": ["s0", "s0", "s5", "s9"],
...                   "alpha": [2.0, 4.0, 3.0, None],
...                   "status": ["success", "success", "success", "unreadable"],
...                   "reason": [None, None, None, "truncated"]})
>>> per_step(t)[["step", "n_layers", "alpha_mean", "read"]].values.tolist()
[[0, 2, 3.0, True], [5, 1, 3.0, True], [9, 0, nan, False]]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from lmlab.errors import LmlabError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from lmlab.runs import Report, RunDir

__all__ = ["STORE", "per_step", "plot_series", "read_as", "grown", "report_series",
           "run_series"]

STORE = "series"  # the folder under the run directory that keeps finished checkpoints


def read_as(setting: str, weights: Path | None) -> str:
    """``"model"`` or ``"series"``: how the weights at ``weights`` are read under ``setting``
    (``auto``, ``model`` or ``series``).

    Raises:
        LmlabError: ``series`` asked of a path that is no folder of checkpoints, or a folder
            that holds neither model weights nor checkpoints.
    """
    from lmlab.spectral.series import find_checkpoints, has_model_weights, no_checkpoints_error

    if setting == "model":
        return "model"
    if weights is None or not weights.is_dir():
        if setting == "series":
            raise LmlabError(f"read_as = series needs a folder of checkpoints, and {weights} "
                             "is not a folder; drop read_as or give the folder")
        return "model"
    if setting == "series" or not has_model_weights(weights):
        if not find_checkpoints(weights):
            raise no_checkpoints_error(weights)
        return "series"
    return "model"


def check_series(folder: Path, layers: tuple[str, ...], esd_layers: tuple[str, ...]) -> None:
    """Names in ``layers`` must name layers of the last checkpoint (when it can be read); a
    series draws no ESDs, so ``esd_layers`` is refused."""
    from lmlab.spectral.analyze import check_layer_names, split_filters
    from lmlab.spectral.series import find_checkpoints
    from lmlab.spectral.sources import iter_layers

    if esd_layers:
        raise LmlabError(f"esd_layers (--esd-layers) draws one model's ESDs, and {folder} is a "
                         "folder of checkpoints; drop it, or analyse one checkpoint on its own")
    keep, drop = split_filters(layers)
    if not (keep or drop):
        return
    try:
        refs = list(iter_layers(find_checkpoints(folder)[-1].path))
    except LmlabError:
        return  # an unreadable checkpoint gets its row in the table; the others are checked
    check_layer_names(keep or drop, refs, setting="layers (--layers)")


def run_series(cfg: Any, run_dir: RunDir, folder: Path, base: Path | None, device: str | None,
               options: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Analyse every checkpoint in ``folder`` (resuming from the run's store); the series table
    and the summary."""
    import time

    from lmlab.spectral import summarize
    from lmlab.spectral.series import UNREADABLE, analyze_series, find_checkpoints, series_keys
    from lmlab.sweep import SweepConfig

    start = time.perf_counter()
    checkpoints = find_checkpoints(folder)
    sweep: SweepConfig | None = cfg.sweep
    if cfg.threads is not None:
        sweep = SweepConfig(cfg.sweep.backend, cfg.sweep.workers, cfg.sweep.address, cfg.threads)
    elif cfg.sweep == SweepConfig(backend="process"):
        sweep = None  # the default: a pool only when the series is large enough to pay off
    table = analyze_series(checkpoints, options, sweep=sweep, store=run_dir.path / STORE,
                           layers=cfg.layers, base_model=base, device=device)
    seconds = time.perf_counter() - start
    steps = per_step(table)
    unread = steps[~steps["read"]]
    read = steps[steps["read"]]
    if read.empty:
        first = unread.iloc[0]
        raise LmlabError(f"none of the {len(unread)} checkpoints in {folder} could be read "
                         f"(first: {first.checkpoint}: {first.reason})")
    last = table[table["step"] == int(read["step"].iloc[-1])]
    stats = summarize(last)
    headline = ("alpha_mean", "alpha_median", "n_layers", "n_alpha_2_6", "n_alpha_lt_2",
                "n_alpha_gt_6", "n_failed", "n_skipped")
    summary = {"model": cfg.model, "weights": str(folder), "read_as": "series",
               "n_checkpoints": int(len(read)), "n_unreadable": int(len(unread)),
               "first_step": int(read["step"].iloc[0]), "last_step": int(read["step"].iloc[-1]),
               "alpha_mean_first": float(read["alpha_mean"].iloc[0]),
               **{k: stats[k] for k in headline},
               **{k: v for k, v in stats.items() if k not in headline},
               "seconds": round(seconds, 3)}
    done = [k for k, c in zip(series_keys(checkpoints), checkpoints, strict=True)
            if c.step in set(read["step"])]
    from lmlab.runs.io import atomic_write_json

    atomic_write_json(run_dir.path / STORE / "done.json", {"folder": str(folder), "done": done})
    if len(unread):
        names = ", ".join(f"{r.checkpoint} ({r.reason})" for r in unread.head(3).itertuples())
        more = f" and {len(unread) - 3} more" if len(unread) > 3 else ""
        print(f"lmlab: {len(unread)} of {len(steps)} checkpoints could not be read and were "
              f"skipped ({status_note(UNREADABLE)}): {names}{more}", file=sys.stderr)
    return table, summary


def status_note(status: str) -> str:
    """Where the table records a skipped checkpoint."""
    return f"their rows in the table have status '{status}' and the reason; --resume retries them"


def per_step(table: pd.DataFrame) -> pd.DataFrame:
    """One row per checkpoint: step, checkpoint, fitted layers, mean and median α, layers with
    2 ≤ α ≤ 6, whether it was read, and why not."""
    rows = []
    for (step, name), group in table.groupby(["step", "checkpoint"], sort=True):
        ok = group[group["status"] == "success"]["alpha"].astype(float)
        unread = (group["status"] == "unreadable").any()
        rows.append({"step": int(step), "checkpoint": name, "n_layers": int(len(ok)),
                     "alpha_mean": float(ok.mean()) if len(ok) else float("nan"),
                     "alpha_median": float(ok.median()) if len(ok) else float("nan"),
                     "n_alpha_2_6": int(((ok >= 2) & (ok <= 6)).sum()),
                     "read": not unread,
                     "reason": str(group["reason"].iloc[0]) if unread else ""})
    return pd.DataFrame(rows, columns=["step", "checkpoint", "n_layers", "alpha_mean",
                                       "alpha_median", "n_alpha_2_6", "read", "reason"])


def plot_series(model: str, table: pd.DataFrame) -> dict[str, Figure]:
    """The figures of a series: mean α over steps, the layer × step heatmap, α per layer over
    steps, and α per layer at the last step read."""
    from lmlab.plotting import captioned, plot_alpha_by_layer, plot_alpha_over_training
    from lmlab.plotting.spectral_series import plot_alpha_heatmap, plot_alpha_mean_over_steps
    from lmlab.spectral.tracker import alpha_by_step

    read = table[table["status"] != "unreadable"]
    last = int(read["step"].max()) if len(read) else None
    figures = {
        "alpha_mean_over_steps": captioned(
            plot_alpha_mean_over_steps(table, title=f"mean α over training — {model}"),
            "Mean α over the fitted layers at every checkpoint; the band holds the middle half "
            "of the layers; dotted lines at α = 2 and 6; red × = a checkpoint not read."),
        "alpha_heatmap": captioned(
            plot_alpha_heatmap(table, title=f"α per layer and step — {model}"),
            "α of every layer (rows, in depth order) at every checkpoint (columns)."),
        "alpha_over_steps": captioned(
            plot_alpha_over_training(alpha_by_step(read)),
            "α of each layer (thin lines, at most 30) and their mean (thick) against the step."),
    }
    if last is not None:
        figures["alpha_by_layer"] = captioned(
            plot_alpha_by_layer(read[read["step"] == last],
                                title=f"α per layer at step {last} — {model}"),
            f"α of every layer at the last checkpoint read (step {last}); the band marks "
            "2 ≤ α ≤ 6.")
    return figures


def report_series(rep: Report, s: dict[str, Any], table: pd.DataFrame,
                  figures: dict[str, Figure], how: str) -> Report:
    """The blocks of a series report (``how``: the analysis settings, one phrase)."""
    steps = per_step(table)
    rep.add_text(
        f"Read as **a folder of checkpoints** (`{s['weights']}`): {s['n_checkpoints']} "
        f"checkpoint(s) analysed, steps {s['first_step']} to {s['last_step']}, each with "
        f"{how}. The table has one row per layer per step (`step` and `checkpoint` columns). "
        f"Mean α went from {s['alpha_mean_first']:.3g} at the first step to "
        f"{s['alpha_mean']:.3g} at the last; the headline figures below are those of the last "
        "checkpoint read.")
    rep.add_key_values(
        {k: s[k] for k in ("n_checkpoints", "n_unreadable", "first_step", "last_step",
                           "alpha_mean_first", "alpha_mean", "alpha_median", "n_layers",
                           "n_alpha_2_6", "n_alpha_lt_2", "n_alpha_gt_6", "seconds")},
        caption="Headline figures (α at the last checkpoint read)")
    rep.add_figures(figures)
    rep.add_table(steps, caption="Per checkpoint", max_rows=500)
    unread = steps[~steps["read"]]
    if len(unread):
        rep.add_text(
            f"**{len(unread)} checkpoint(s) could not be read and were skipped**: "
            + "; ".join(f"`{r.checkpoint}` (step {r.step}): {r.reason}"
                        for r in unread.itertuples())
            + ". They are left out of every figure; `lmlab spectral ... --resume` tries them "
            "again.")
    return rep


def grown(run_dir: RunDir) -> bool:
    """Whether a finished series run's folder now holds checkpoints it has not analysed (new
    ones, rewritten ones, or ones it could not read): ``--resume`` then analyses those. A run
    that is not a series, or whose record cannot be read, has not grown."""
    import json

    from lmlab.spectral.series import find_checkpoints, series_keys

    done_file = run_dir.path / STORE / "done.json"
    try:
        record = json.loads(done_file.read_text(encoding="utf-8"))
        now = set(series_keys(find_checkpoints(record["folder"])))
    except (LmlabError, OSError, ValueError, KeyError, TypeError):
        return False
    return bool(now - set(record.get("done", [])))
