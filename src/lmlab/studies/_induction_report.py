"""The figures and the report of the `induction` study, drawn from its saved ``Result`` alone.

Per setting: the source's five panels (one figure per matching method, one row per rotary
distance) and, with several distances, the relative-distance sweep. For all settings (in groups
of ``GROUP`` rows): the overlay of OOD error and matching, the heat maps of W_qkov and QK0 at the
snapshot checkpoints, position matching and ScreeNOT ranks over training, and OOD error against
the pool size.

>>> [_chunks(list("abcdefgh"), 3)]
[[['a', 'b', 'c'], ['d', 'e', 'f'], ['g', 'h']]]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from lmlab.runs import Report
    from lmlab.studies.induction import Result

__all__ = ["GROUP", "all_figures", "build_report"]

GROUP = 6
"""Settings per grouped figure (heat maps, ranks)."""

T = TypeVar("T")


def _chunks(items: Sequence[T], n: int) -> list[list[T]]:
    return [list(items[i:i + n]) for i in range(0, len(items), n)]


def _numbered(stem: str, i: int) -> str:
    return stem if i == 0 else f"{stem}_{i + 1}"


def _tag(method: str, rel_dist: int) -> str:
    return f"{method} matching, " + ("R = I" if rel_dist == 0 else f"rotary distance {rel_dist}")


def figure_stem(name: str) -> str:
    """A setting's name as part of a figure's file name.

    >>> figure_stem("pool 100/a")
    'pool_100_a'
    """
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "setting"


def all_figures(result: Result) -> dict[str, Figure]:
    """``{name: captioned figure}`` of a finished run, in the report's order."""
    from lmlab.plotting import captioned
    from lmlab.plotting.induction import (
        option_rows,
        plot_circuit_matrices,
        plot_circuit_ranks,
        plot_overlay,
        plot_pool_sweep,
        plot_rel_dist_sweep,
        plot_setting_panels,
    )
    from lmlab.studies._induction_measure import primary_rows

    cfg, measures, summary = result.config, result.measures, result.summary
    names = [k for k, v in summary["settings"].items() if v.get("checkpoints", 1) > 0]
    pairs = option_rows(measures)
    methods = list(dict.fromkeys(m for m, _ in pairs))
    figures: dict[str, Figure] = {}
    for name in names:
        info, stem = summary["settings"][name], figure_stem(name)
        m = measures[measures["setting"] == name]
        for method in methods:
            rows = [(mm, t) for mm, t in pairs if mm == method]
            key = f"setting_{stem}" + ("" if len(methods) == 1 else f"_{method}")
            fig = plot_setting_panels(result.errors.get(name, _no_errors()), m, result.baseline,
                                      ranks=cfg.ranks_plotted, rows=rows,
                                      title=f"{name} (pool {info.get('pool') or '∞'})")
            figures[key] = captioned(
                fig, f"{name}, {method} matching: ID/OOD error (log step), diagonal z-score, "
                     "QK–OV matching vs the random baseline (dashed), token mismatch, "
                     "embedding–OV matching; one row per rotary distance "
                     f"({', '.join('R = I' if t == 0 else str(t) for _, t in rows)}).")
    main = primary_rows(measures, cfg)
    primary = _tag(cfg.method[0], cfg.rel_dist[0])
    figures["overlay"] = captioned(
        plot_overlay(result.errors, main),
        f"All settings: OOD error and QK–OV matching (r = 5; {primary}) against steps.")
    if "rel_dist" in measures and measures["rel_dist"].nunique() > 1:
        for name in names:
            snaps = summary["settings"][name].get("snapshot_steps") or []
            figures[f"distance_{figure_stem(name)}"] = captioned(
                plot_rel_dist_sweep(measures[measures["setting"] == name], snapshot_steps=snaps,
                                    ranks=cfg.ranks_plotted, title=name),
                f"{name}: the relative-distance sweep. Top rows: diagonal z-score, token "
                "mismatch and QK–OV matching (one line per rank; dashed: random) against the "
                f"rotary distance at checkpoints {', '.join(f'{s:,}' for s in snaps)} "
                "(before, at and after the transition unless chosen with snapshot_steps). "
                "Bottom rows: the same over training, one line per distance.")
    with_maps = [s for s in result.snapshots if len(s.get("steps", ())) > 0]
    for i, group in enumerate(_chunks(with_maps, GROUP)):
        figures[_numbered("matrices", i)] = captioned(
            plot_circuit_matrices(group),
            "Heat maps of W_qkov = W_qk W_ov (d × d, residual basis) and QK0 = E W_qk W_ov Eᵀ "
            "(V × V, token basis; a bright diagonal = an induction head that matches tokens) "
            f"at the snapshot checkpoints ({primary}).")
    if any(c.startswith(("pos_match_", "rank_")) for c in main.columns):
        for i, chunk in enumerate(_chunks(names, GROUP)):
            figures[_numbered("circuits", i)] = captioned(
                plot_circuit_ranks(main, chunk, ranks=cfg.ranks_plotted,
                                   screenot_k=cfg.screenot_k),
                "Over training: how much layer 0's W_q and W_k write where rotary encodes "
                "position (solid) and read the embedding's token directions (dashed), one "
                "colour per rank, dotted: random; their top singular values; the ScreeNOT ranks "
                "of layer-0 W_q, W_k, E, normalised E and of W_qk, W_ov (one line style per "
                f"bound k). {primary}.")
    if len(result.pool_sweep) > 1:
        figures["pool_sweep"] = captioned(
            plot_pool_sweep(result.pool_sweep, steps=int(summary.get("steps", cfg.steps))),
            f"OOD error after {int(summary.get('steps', cfg.steps)):,} steps against the pool "
            "size (mean ± s.e. over seeds; the numbers: seeds whose OOD error is below 0.5).")
    return figures


def _no_errors() -> pd.DataFrame:
    return pd.DataFrame({"epoch": pd.Series(dtype=float), "err_test": pd.Series(dtype=float),
                         "err_ood": pd.Series(dtype=float), "full": pd.Series(dtype=bool)})


def build_report(result: Result, figures: dict[str, Figure]) -> Report:
    """The report of a finished run: what ran (or which folder was measured), the problems
    found, the table per setting, the figures."""
    from lmlab.runs import Report

    cfg, s = result.config, result.summary
    rep = Report("Induction heads, composition and OOD copying")
    conv = s.get("conventions", {})
    options = (f"Measured with {', '.join(conv.get('method', ['largest']))} matching at rotary "
               f"distance(s) {', '.join(map(str, conv.get('rel_dist', [1])))} (0: R = I), "
               f"ScreeNOT bounds k = {', '.join(map(str, conv.get('screenot_k', [])))}; "
               f"{conv.get('R', '')}, argmax over {cfg.argmax_axis}s, LayerNorm "
               f"{cfg.layernorm}; the per-setting values at the end use "
               f"{conv.get('primary', 'the first option')}.")
    if cfg.checkpoints:
        rep.add_text(
            f"Checkpoints measured without training: {len(s['settings'])} setting(s) found in "
            f"`{s.get('source', cfg.checkpoints)}`. Errors are those of each folder's "
            f"err_arr.json (the authors' mask: a perfect copier's floor is 0.092 ID / 0.047 "
            f"OOD). {options}")
    else:
        rep.add_text(
            f"2-layer rotary attention-only transformer (d 64, vocabulary 64, one head per "
            f"layer{'' if cfg.num_layers == 2 else f'; here {cfg.num_layers} layers'}), "
            f"copying task of length 64 with a segment of 10–19 tokens written twice over a "
            f"Zipf background; OOD: uniform tokens, segment length 25. AdamW lr 1e-3, batch 50 "
            f"fresh sequences, {cfg.steps:,} steps, seed "
            f"{', '.join(map(str, cfg.seeds)) if cfg.seeds else cfg.seed}; checkpoints and "
            f"full ID/OOD evaluations ({cfg.eval_full:,} sequences each) every "
            f"{cfg.save_every} steps, cheap estimates ({cfg.eval_cheap} + {cfg.eval_cheap}) "
            f"every {cfg.eval_every}. Errors use the authors' mask, whose floor for a perfect "
            "copier is 0.092 (ID) / 0.047 (OOD); the floor-free variant is in the table. "
            + options)
    problems = s.get("problems") or []
    unmeasured = [k for k, v in s["settings"].items() if v.get("checkpoints", 1) == 0]
    if unmeasured:
        problems = [*problems, f"not measured, errors only (in the overlay): "
                                f"{', '.join(unmeasured)}"]
    if problems:
        rep.add_text("Problems found (what could be measured was measured):\n\n"
                     + "\n".join(f"- {p}" for p in problems))
    rows = [{"setting": k, **{c: v for c, v in info.items() if c != "snapshot_steps"}}
            for k, info in s["settings"].items()]
    rep.add_table(pd.DataFrame(rows), caption=f"Per setting (random baseline at r = 5, "
                                              f"{cfg.method[0]} matching: "
                                              f"{s['baseline_r5']:.3f})")
    rep.add_figures(figures)
    rep.add_text(f"Measurement pass over every checkpoint of every setting: "
                 f"{s['measure_seconds']:.1f} s.")
    return rep
