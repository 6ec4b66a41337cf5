"""The charlm study's report: every experiment's numbers, tables and figures, from the saved
``Result`` alone (see :func:`lmlab.studies.charlm.report`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from lmlab.runs import Report
from lmlab.studies.charlm import DESCRIPTIONS, Result

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["build_report"]


def _loss_table(table: pd.DataFrame) -> pd.DataFrame:
    """The loss table as the report shows it: a description per model, losses to 4 places."""
    table = table.copy()
    table.insert(1, "what", table["model"].map(DESCRIPTIONS))
    for col in ("train", "dev", "test", "init_loss", "step0_loss"):
        table[col] = table[col].map(lambda v: "" if v != v else f"{v:.4f}")
    return table


def build_report(result: Result, figures: dict[str, Figure]) -> Report:
    """The report of a finished run: every experiment's numbers, tables and figures."""
    s, cfg = result.summary, result.config
    tr = cfg.mlp.train
    rep = Report("Character-level language models of names")
    rep.add_text(
        f"Words: **{s['data_source']}** — {s['words']['train']:,} train / "
        f"{s['words']['dev']:,} dev / {s['words']['test']:,} test words (split "
        f"`random.seed({cfg.data.split_seed})`), vocabulary of {s['vocab_size']} tokens "
        "('.' marks start and end). Losses are the mean cross-entropy per character in "
        "evaluation mode (BatchNorm with its running statistics).")
    rep.add_heading("E01 — the MLP with BatchNorm")
    rep.add_text(
        f"n_embd {cfg.mlp.n_embd}, hidden {cfg.mlp.n_hidden}, block {cfg.mlp.block_size}, "
        f"batch {tr.batch_size}, {tr.steps:,} steps, SGD lr {tr.lr} then {tr.lr_decayed} "
        f"after {tr.lr_decay_step:,}. **train {s['train_loss']:.4f} / dev {s['dev_loss']:.4f} / "
        f"test {s['test_loss']:.4f}** (reference on the lecture's 2018 file at 200,000 steps: "
        "2.0674 / 2.1057)" + (f"; lowest minibatch loss {s['min_batch_loss']:.4f}."
                               if s.get("min_batch_loss") is not None else "."))
    rep.add_table(_loss_table(result.table),
                  caption="Every model: losses per split, parameters, training time")
    rep.add_figures(figures, names=["loss_curves"])
    rep.add_heading("E02 — the initial loss")
    unscaled = s.get("init_loss_unscaled")
    rep.add_text(
        f"Loss at step 0 over the whole training split: **{s['init_loss_scaled']:.4f}** with "
        f"the last layer × 0.01, against −ln(1/{s['vocab_size']}) = {s['init_loss_uniform']:.4f}"
        + (f"; **{unscaled:.4f}** without the scaling — the confident wrong start of the "
           "hockey stick." if unscaled is not None else "."))
    rep.add_figures(figures, names=["first_steps", "tanh_init", "tanh_trained", "saturation",
                                    "update_ratio"])
    _report_checks(rep, result)
    return rep


def _report_checks(rep: Report, result: Result) -> None:
    """E03, the zero-init symmetry, BatchNorm folding, samples and speed."""
    s, names, tr = result.summary, list(result.config.mlp.variants), result.config.mlp.train
    rep.add_heading("E03 — direct connections")
    if "e03" in names:
        e01 = result.table.set_index("model").loc["mlp-e01"]
        e03 = result.table.set_index("model").loc["mlp-e03"]
        rep.add_text(f"logits = h·W2 + b2 + emb·W_skip (W_skip starts at 0): dev "
                     f"{e03['dev']:.4f} against E01's {e01['dev']:.4f} "
                     f"({int(e03['parameters'] - e01['parameters']):+,} parameters).")
    rep.add_heading("Zero initialisation — the symmetry is never broken")
    rep.add_text("With every weight zero, every hidden unit computes the same function and "
                 "receives the same gradient, so they stay identical however long training "
                 "runs (one distinct unit); only the output bias learns. E01 for contrast:")
    if s.get("zero_init_step0_loss") is not None:
        rep.add_text(f"Step 0 (the first minibatch): max |h| = {s['zero_init_h_max_abs']:g}, "
                     f"max |W1.grad| = {s['zero_init_W1_grad_max_abs']:g}, max |b2.grad| = "
                     f"{s['zero_init_b2_grad_max_abs']:.4f}, loss "
                     f"{s['zero_init_step0_loss']:.4f} = −ln(1/{s['vocab_size']}).")
    rep.add_table(result.symmetry, caption="How different the hidden units are after training")
    rep.add_heading("BatchNorm folding")
    rep.add_text(
        "W1' = γ·W1/σ and b' = β − γ·μ/σ (running μ, σ) replace W1 and the BatchNorm layer at "
        f"inference. On the dev split the folded layer's output differs from BatchNorm's by at "
        f"most **{s['bn_fold_max_abs_diff']:.2e}**, the logits by "
        f"{s['bn_fold_logits_max_abs_diff']:.2e} (float32 round-off).")
    rep.add_heading("Samples")
    for name, words in s["samples"].items():
        rep.add_text(f"**{name}**: " + ", ".join(words))
    rep.add_heading("Speed")
    rep.add_text(
        f"The {len(names)} MLP variants trained together as one fused ensemble: "
        f"{s['steps_per_second']:,.0f} steps/s ({s['member_steps_per_second']:,.0f} model-steps/s)"
        f", {s['mlp_seconds']:.0f} s for {tr.steps:,} steps of all of them.")
