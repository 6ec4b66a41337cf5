"""Study `spectral-compare`: α of two models (or a model and its fine-tune or LoRA adapter)
layer by layer.

Heavy-Tailed Self-Regularization (Martin & Mahoney, JMLR 2021) reads training quality from
each layer's power-law exponent α; comparing two models of the same architecture — a base and
its fine-tune, two checkpoints, a base and base + LoRA — shows *where* α moved. Both models are
analysed as ``lmlab spectral`` analyses one (weightwatcher 0.7.7's choices), layers are paired
by longname, and the run writes the paired table (α_A, α_B, Δα = α_B − α_A and the other
metrics), the layers without a partner, the mean-α bars with the 2 / 6 lines, Δα per layer,
by depth (block index) and by matrix type, and a report.

Either side may be an offline model name, a model directory, a ``.safetensors``/``.pt`` file
or a LoRA adapter directory. When exactly one side is an adapter it is merged into the other
(W + s·B·A): the comparison is then base against fine-tuned. Two adapters compare their
updates ΔW = s·B·A.

Commands::

    lmlab spectral compare BASE_DIR FINETUNED_DIR
    lmlab spectral compare smollm2-135m ./my_lora_adapter      # base vs base + LoRA
    lmlab run spectral-compare --set model_a=A --set model_b=B

The quick preset compares the offline MiniLM with itself (a check: every Δα is 0).

>>> cfg = Config.quick()
>>> cfg.model_a == cfg.model_b == 'all-minilm-l6-v2'
True
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from lmlab.config import ranged, seed_field
from lmlab.runs import Report, RunDir
from lmlab.studies.pattern import Summary, SummaryKey

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Read by the registry without importing this module.
STUDY = {"name": "spectral-compare", "order": 1,
         "description": ("α of two models, fine-tunes or LoRA adapters layer by layer: Δα by "
                         "layer, depth and matrix type"),
         "source": "Martin & Mahoney, JMLR 2021; weightwatcher 0.7.7"}

__all__ = ["Config", "Result", "SUMMARY", "check", "plot", "report", "run"]

RESUMES = False

#: |Δα| above this counts a layer as changed (identical matrices give exactly 0).
CHANGED = 1e-9

SUMMARY = Summary(
    SummaryKey("model_a", str, "model A (the reference)", headline=True),
    SummaryKey("model_b", str, "model B (compared with A)", headline=True),
    SummaryKey("mode", str, "models; base vs base + LoRA; or two LoRA updates"),
    SummaryKey("n_paired", int, "layers paired by longname", headline=True),
    SummaryKey("n_compared", int, "paired layers fitted in both models (Δα defined)"),
    SummaryKey("n_unpaired_a", int, "layers of A with no partner in B (listed)"),
    SummaryKey("n_unpaired_b", int, "layers of B with no partner in A (listed)"),
    SummaryKey("n_changed", int, "compared layers with |Δα| > 1e-9"),
    SummaryKey("alpha_mean_a", float, "mean α over A's fitted layers", headline=True),
    SummaryKey("alpha_mean_b", float, "mean α over B's fitted layers", headline=True),
    SummaryKey("delta_alpha_mean", float, "mean Δα = α_B − α_A over compared layers",
               headline=True),
    SummaryKey("delta_alpha_max_abs", float, "largest |Δα| over compared layers"),
    SummaryKey("layer_max_abs_delta", str, "the layer with the largest |Δα| ('' if none moved)"),
    SummaryKey("n_alpha_2_6_a", int, "A's fitted layers with 2 ≤ α ≤ 6"),
    SummaryKey("n_alpha_2_6_b", int, "B's fitted layers with 2 ≤ α ≤ 6"),
    SummaryKey("seconds", float, "wall time of both analyses"),
)


@dataclass(frozen=True)
class Config:
    """The two models and how to analyse them (the options of the ``spectral`` study).

    Attributes:
        model_a: model A: an offline model name, a model directory, a weights file, a LoRA
            adapter directory, or a hub id when the hub is reachable.
        model_b: model B, the same kinds; a LoRA adapter opposite a model is merged into it.
        method: ``eigh`` (Gram matrix, fast) or ``svd`` (weightwatcher's route).
        precision: ``float64`` (weightwatcher parity) or ``float32`` (fast mode).
        fit_mode: ``ww`` (weightwatcher's xmin search) or ``xmin_peak``.
        min_evals: skip matrices with fewer eigenvalues than this (a LoRA update: rank r).
        max_evals: skip matrices with more eigenvalues than this (weightwatcher: 15000).
        max_n: skip matrices with a side larger than this; ``none`` lifts the rule.
        layers: compare only these layers (ids, names, longnames or types, valid in both),
            or leave out those given as ``-name``; empty = all.
        table_format: ``csv``, ``json`` or ``parquet`` for the tables.
        threads: BLAS/torch threads (none = leave as is).
        device: ``auto``, ``cpu`` or ``cuda``.
        seed: recorded for completeness (the analysis is deterministic).
    """

    model_a: str = "all-minilm-l6-v2"
    model_b: str = "all-minilm-l6-v2"
    method: Literal["eigh", "svd"] = "eigh"
    precision: Literal["float64", "float32"] = "float64"
    fit_mode: Literal["ww", "xmin_peak"] = "ww"
    min_evals: int = ranged(8, 0)
    max_evals: int = ranged(15000, 0)
    max_n: int | None = ranged(50000, 1)
    layers: tuple[str, ...] = ()
    table_format: Literal["csv", "json", "parquet"] = "csv"
    threads: int | None = ranged(None, 1, 1024)
    device: str = "auto"
    seed: int = seed_field(0)

    @classmethod
    def quick(cls) -> Config:
        """The offline MiniLM against itself: a few seconds, every Δα = 0."""
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
        table: one row per paired layer (:func:`lmlab.spectral.compare.pair_tables`).
        unpaired: the layers with no partner (``side``, ``layer_id``, ``longname``,
            ``status``).
        table_a, table_b: the full per-layer tables of A and B.
        summary: the numbers of ``summary.json`` (see ``SUMMARY``).
    """

    config: Config
    table: pd.DataFrame
    unpaired: pd.DataFrame
    table_a: pd.DataFrame
    table_b: pd.DataFrame
    summary: dict[str, Any]


def _options(cfg: Config) -> Any:
    from lmlab.spectral.analyze import options_from

    return options_from(max_N=cfg.max_n, min_evals=cfg.min_evals, max_evals=cfg.max_evals,
                        method=cfg.method, precision=cfg.precision, fit_mode=cfg.fit_mode,
                        seed=cfg.seed)


def _sources(path_a: Path, path_b: Path) -> tuple[Any, Any, str]:
    """What to analyse on each side: an adapter opposite a model is merged into it."""
    from lmlab.spectral.adapters import is_adapter, merge_adapter

    ad_a, ad_b = is_adapter(path_a), is_adapter(path_b)
    if ad_b and not ad_a:
        return path_a, merge_adapter(path_a, path_b), "base vs base + LoRA (B merged into A)"
    if ad_a and not ad_b:
        return merge_adapter(path_b, path_a), path_b, "base + LoRA (A merged into B) vs base"
    if ad_a and ad_b:
        return path_a, path_b, "two LoRA updates ΔW = s·B·A"
    return path_a, path_b, "models"


def check(cfg: Config) -> None:
    """Fail before a run directory exists when a model cannot be found or read, or
    ``layers`` names no layer of one of them."""
    from lmlab.models.hf import check_model, ready_weights
    from lmlab.spectral.analyze import check_layer_names, split_filters
    from lmlab.spectral.sources import check_weights, iter_layers

    _options(cfg)
    for ref in (cfg.model_a, cfg.model_b):
        check_model(ref)
    paths = [ready_weights(ref) for ref in (cfg.model_a, cfg.model_b)]
    if any(p is None for p in paths):
        return
    a, b, _ = _sources(*paths)  # type: ignore[arg-type]
    for side, source in (("A", a), ("B", b)):
        check_weights(source)
        if cfg.layers:
            keep, drop = split_filters(cfg.layers)
            check_layer_names(keep or drop, list(iter_layers(source)),
                              setting=f"layers (--layers; model {side})")


def _label(ref: str) -> str:
    return Path(ref.rstrip("/")).name or ref


def run(cfg: Config, run_dir: RunDir) -> Result:
    """Analyse both models, pair their layers and write tables, figures and report."""
    from lmlab.models.hf import resolve_weights
    from lmlab.runtime import resolve_device
    from lmlab.spectral import analyze, summarize
    from lmlab.spectral.compare import pair_tables

    path_a, path_b = resolve_weights(cfg.model_a), resolve_weights(cfg.model_b)
    src_a, src_b, mode = _sources(path_a, path_b)
    device = resolve_device(cfg.device)
    run_dir.update_meta({"model": f"{cfg.model_a} vs {cfg.model_b}",
                         "data_source": f"A: {src_a}; B: {src_b}"})
    options = _options(cfg)
    kw: dict[str, Any] = dict(layers=list(cfg.layers) or None, threads=cfg.threads,
                              device=device if device.type != "cpu" else None, options=options)
    start = time.perf_counter()
    table_a = analyze(src_a, **kw)
    same = isinstance(src_a, Path) and isinstance(src_b, Path) and \
        src_a.resolve() == src_b.resolve()
    table_b = table_a.copy() if same else analyze(src_b, **kw)
    seconds = time.perf_counter() - start
    paired, unpaired = pair_tables(table_a, table_b)
    sa, sb = summarize(table_a), summarize(table_b)
    delta = paired["delta_alpha"].astype(float)
    finite = paired[delta.notna()]
    moved = delta[delta.abs() > CHANGED]
    worst = paired.loc[moved.abs().idxmax()] if len(moved) else None
    summary = {
        "model_a": cfg.model_a, "model_b": cfg.model_b, "mode": mode,
        "n_paired": len(paired), "n_compared": len(finite),
        "n_unpaired_a": int((unpaired["side"] == "A").sum()),
        "n_unpaired_b": int((unpaired["side"] == "B").sum()),
        "n_changed": int((delta.abs() > CHANGED).sum()),
        "alpha_mean_a": sa["alpha_mean"], "alpha_mean_b": sb["alpha_mean"],
        "delta_alpha_mean": float(delta.mean()) if len(finite) else float("nan"),
        "delta_alpha_max_abs": float(delta.abs().max()) if len(finite) else float("nan"),
        "layer_max_abs_delta": str(worst["longname"]) if worst is not None else "",
        "n_alpha_2_6_a": sa["n_alpha_2_6"], "n_alpha_2_6_b": sb["n_alpha_2_6"],
        "seconds": round(seconds, 3),
    }
    run_dir.save_table(f"compare.{cfg.table_format}", paired)
    run_dir.save_table(f"unpaired.{cfg.table_format}", unpaired)
    return Result(cfg, paired, unpaired, table_a, table_b, summary)


def plot(result: Result) -> dict[str, Figure]:
    """Every figure of a finished comparison, from the ``Result`` alone.

    >>> t = pd.DataFrame({"longname": ["h.0.q", "h.1.q"], "block": [0, 1], "matrix": ["q", "q"],
    ...                   "alpha_a": [3.0, 4.0], "alpha_b": [3.5, 4.0],
    ...                   "delta_alpha": [0.5, 0.0]})
    >>> s = {"alpha_mean_a": 3.5, "alpha_mean_b": 3.75}
    >>> sorted(plot(Result(Config(), t, pd.DataFrame(), t, t, s)))  # doctest: +NORMALIZE_WHITESPACE
    ['alpha_b_vs_a', 'delta_alpha_by_block', 'delta_alpha_by_layer', 'delta_alpha_by_matrix',
     'mean_alpha']
    """
    from lmlab.plotting import captioned
    from lmlab.plotting.finetune import plot_delta_alpha, plot_mean_alpha_bars
    from lmlab.plotting.spectral_compare import plot_alpha_a_vs_b, plot_delta_by_group
    from lmlab.spectral.compare import group_deltas

    cfg, s, t = result.config, result.summary, result.table
    la, lb = _label(cfg.model_a), _label(cfg.model_b)
    ax = plot_mean_alpha_bars({f"A: {la}"[:28]: s.get("alpha_mean_a"),
                               f"B: {lb}"[:28]: s.get("alpha_mean_b")})
    ax.set_title("Mean α of A and B")
    figures = {"mean_alpha": captioned(
        ax, "Mean α over each model's fitted layers; dashed lines: α = 2 and α = 6.")}
    d = t.dropna(subset=["delta_alpha"])
    per_layer = pd.DataFrame({"longname": d["longname"], "delta": d["delta_alpha"],
                              "kind": d["matrix"]})
    ax = plot_delta_alpha(per_layer)
    ax.set_ylabel("Δα = α(B) − α(A)")
    ax.set_title("Δα per layer (A's order)")
    figures["delta_alpha_by_layer"] = captioned(
        ax, "Δα = α(B) − α(A) of every layer fitted in both, coloured by matrix type.")
    for by, label in (("block", "block (depth)"), ("matrix", "matrix type")):
        ax = plot_delta_by_group(group_deltas(t, by), xlabel=label)
        figures[f"delta_alpha_by_{by}"] = captioned(
            ax, f"Mean Δα by {label} ± one standard deviation; thin line: min–max; "
                "n: layers." + (" '-': layers outside the blocks." if by == "block" else ""))
    figures["alpha_b_vs_a"] = captioned(
        plot_alpha_a_vs_b(t, label_a=la, label_b=lb),
        "α of B against α of A per layer; on the diagonal α did not move.")
    return figures


def report(result: Result, figures: dict[str, Figure]) -> Report:
    """The report of a finished comparison."""
    s, cfg = result.summary, result.config
    rep = Report(f"Spectral comparison — {cfg.model_a} vs {cfg.model_b}")
    rep.add_text(
        f"Power-law exponent α of every weight matrix of **A = {cfg.model_a}** and **B = "
        f"{cfg.model_b}** ({s['mode']}), computed with weightwatcher 0.7.7's choices (route: "
        f"{cfg.method}, {cfg.precision}; fit: {_options(cfg).fit_label}). Layers are paired "
        "by longname; Δα = α(B) − α(A) is defined where both fits succeeded.")
    rep.add_key_values({k: s[k] for k in (
        "n_paired", "n_compared", "n_changed", "n_unpaired_a", "n_unpaired_b", "alpha_mean_a",
        "alpha_mean_b", "delta_alpha_mean", "delta_alpha_max_abs", "layer_max_abs_delta",
        "n_alpha_2_6_a", "n_alpha_2_6_b", "seconds")}, caption="Headline figures")
    rep.add_figures(figures)
    cols = ["longname", "block", "matrix", "alpha_a", "alpha_b", "delta_alpha", "status_a",
            "status_b"]
    rep.add_table(result.table[cols], caption="Paired layers", max_rows=300)
    if len(result.unpaired):
        rep.add_text(f"{len(result.unpaired)} layer(s) have no partner of the same name in "
                     "the other model; they are listed here and left out of every Δ.")
        rep.add_table(result.unpaired, caption="Unpaired layers", max_rows=300)
    else:
        rep.add_text("Every layer of A has a partner in B and vice versa.")
    skipped = result.table[(result.table["status_a"] != "success")
                           | (result.table["status_b"] != "success")]
    if len(skipped):
        rep.add_text(f"{len(skipped)} paired layer(s) were skipped or not fitted in A or B "
                     "(the `reason` column of each model's table says why); they have no Δα.")
    return rep
