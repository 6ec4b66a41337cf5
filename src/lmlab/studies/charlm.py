"""Study `charlm`: character-level language models of names — the MLP with BatchNorm, its
initialisation, direct connections, zero-init symmetry, BatchNorm folding, and two larger models.

After the makemore exercise sheet (Bengio et al. 2003's MLP on a names list, lecture parts 3–5)
and makemore's transformer. Claims under test: with Kaiming-scaled W1, a 0.01-scaled last layer
and BatchNorm, the sheet's MLP reaches dev loss ≈ 2.11 (2.1057 on the lecture's 2018 file); the
step-0 loss is −ln(1/27) = 3.2958 with the scaling and far higher without; zero initialisation
never breaks the symmetry of the hidden units; folding BatchNorm into W1 changes nothing but
round-off; a hierarchical (WaveNet-style) MLP or a small transformer gets below 2.00.

The MLP variants (E01, E03 and the initialisations) train together as one fused ensemble, the
same mathematics as training each alone and several times faster on a CPU.

Commands::

    lmlab run charlm --preset quick                  # ~1 min: every experiment, short training
    lmlab run charlm --preset paper                  # the sheet's 200,000 steps, and beyond
    lmlab run charlm --set data.path=names.txt       # any newline-separated word file

>>> cfg = Config.paper()
>>> cfg.mlp.train.steps, cfg.mlp.train.lr_decay_step, cfg.mlp.variants[0]
(200000, 100000, 'e01')
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lmlab.config import check_ranges, ranged, seed_field
from lmlab.data.names import SSA_YEARS
from lmlab.errors import LmlabError
from lmlab.models.char_mlp import MLPVariant
from lmlab.runs import Report, RunDir
from lmlab.studies.pattern import Summary, SummaryKey
from lmlab.train.sampled import MEMORY_WHY, StepConfig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Read by the registry without importing this module.
STUDY = {"name": "charlm", "order": 5,
         "description": ("Character-level names models: MLP, BatchNorm, init, folding, "
                         "WaveNet, transformer"),
         "source": "makemore exercise sheet (Bengio et al. 2003); SSA names"}

__all__ = ["Config", "MLPConfig", "NamesData", "Result", "SUMMARY", "TransformerConfig",
           "VARIANTS", "WaveNetConfig", "check", "plot", "report", "run"]

VARIANTS: dict[str, MLPVariant] = {
    "e01": MLPVariant("e01"),
    "e03": MLPVariant("e03", direct=True),
    "unscaled": MLPVariant("unscaled", last_layer_scale=1.0),
    "zero": MLPVariant("zero", init="zero"),
    "bn-gaussian": MLPVariant("bn-gaussian", init="gaussian"),
    "nobn": MLPVariant("nobn", batchnorm=False),
    "nobn-gaussian": MLPVariant("nobn-gaussian", init="gaussian", batchnorm=False),
    "lecture2": MLPVariant("lecture2", init="gaussian", last_layer_scale=1.0, batchnorm=False),
}
"""The MLP variants: E01 (the sheet's model), E03 (+ direct connections), the last layer not
scaled, every weight zero, W1 ~ N(0, 1) without the Kaiming scale (with BatchNorm: harmless),
without BatchNorm with Kaiming W1 or with W1 ~ N(0, 1) (tanh saturates), and the MLP of
lecture part 2 (no BatchNorm, every parameter N(0, 1): C, W1, b1, W2 and b2; its biases are
drawn by ``_charlm_phases.lecture2_biases``). ``lecture2`` is not trained by default
(``mlp.variants`` names it: ``--set mlp.variants=e01,lecture2``)."""

DEFAULT_VARIANTS = tuple(v for v in VARIANTS if v != "lecture2")
"""The variants trained unless ``mlp.variants`` says otherwise."""

DESCRIPTIONS: dict[str, str] = {
    "mlp-e01": "the sheet's MLP: BatchNorm, Kaiming W1, last layer × 0.01",
    "mlp-e03": "E01 + direct connections emb → logits",
    "mlp-unscaled": "E01 with the last layer not scaled",
    "mlp-zero": "every weight zero",
    "mlp-bn-gaussian": "E01 with W1 ~ N(0, 1) (no Kaiming scale)",
    "mlp-nobn": "no BatchNorm, Kaiming W1, b1",
    "mlp-nobn-gaussian": "no BatchNorm, W1 ~ N(0, 1): tanh saturated",
    "mlp-lecture2": "lecture part 2: no BatchNorm, every parameter N(0, 1)",
    "wavenet": "hierarchical MLP, block 8 (lecture part 5)",
    "transformer": "causal transformer over whole words (makemore)",
}

# ``lmlab run ... --resume`` continues an interrupted run: each trained phase (the MLP ensemble,
# the WaveNet, the transformer) is kept in ``checkpoints/trained-<phase>.pt`` and not trained
# again; a phase cut short starts over.
RESUMES = True

_MODEL_KEYS = ("train", "dev", "test", "parameters", "seconds")

#: The keys of ``summary.json``, their types and meaning.
SUMMARY = Summary(
    SummaryKey("data_source", str, "where the words came from"),
    SummaryKey("vocab_size", int, "tokens in the vocabulary, the boundary '.' included"),
    SummaryKey("words", dict, "words per split"),
    SummaryKey("words.<split>", int, "words in one split (train, dev, test)"),
    SummaryKey("train_loss", float, "the E01 MLP's train loss (evaluation mode)"),
    SummaryKey("dev_loss", float, "the E01 MLP's dev loss (evaluation mode)", headline=True),
    SummaryKey("test_loss", float, "the E01 MLP's test loss (evaluation mode)"),
    SummaryKey("init_loss_scaled", float,
               "E01's loss at step 0 over the training split (last layer × 0.01)", headline=True),
    SummaryKey("init_loss_uniform", float, "−ln(1/vocab_size), the loss of a uniform prediction"),
    SummaryKey("bn_fold_max_abs_diff", float,
               "largest absolute difference of the folded and the BatchNorm layer's output on "
               "the dev split (E01)"),
    SummaryKey("bn_fold_logits_max_abs_diff", float,
               "the same for the logits"),
    SummaryKey("steps_per_second", float,
               "fused MLP ensemble: steps per second (all members in each step)"),
    SummaryKey("member_steps_per_second", float, "the same times the number of members"),
    SummaryKey("mlp_seconds", float, "wall time of the MLP ensemble's training"),
    SummaryKey("symmetry", list, "per member: how different its hidden units are after training"),
    SummaryKey("init_loss_unscaled", float,
               "the step-0 loss with the last layer not scaled (null: variant not trained)"),
    SummaryKey("init_loss_zero", float,
               "the step-0 loss with every weight zero (null: variant not trained)"),
    SummaryKey("min_batch_loss", float,
               "E01's lowest minibatch training loss over all steps (the sheet prints it)"),
    *(SummaryKey(f"zero_init_{key}", float, f"zero init, first minibatch: {doc} (null: "
                 "variant not trained)") for key, doc in (
        ("h_max_abs", "max |h| after tanh (0: h all zero)"),
        ("W1_grad_max_abs", "max |dL/dW1|, autograd (0: no hidden unit moves)"),
        ("b2_grad_max_abs", "max |dL/db2| (not 0: only the output bias learns)"),
        ("step0_loss", "the loss, −ln(1/vocab_size)"))),
    SummaryKey("dev_loss_best", float, "the lowest dev loss of all models", headline=True),
    SummaryKey("best_model", str, "the model with the lowest dev loss", headline=True),
    SummaryKey("models", dict, "per model (mlp-<variant>, wavenet, transformer): its numbers"),
    *(SummaryKey(f"models.<model>.{k}", tp, f"per model: {doc}") for k, tp, doc in (
        ("train", float, "train loss"), ("dev", float, "dev loss"), ("test", float, "test loss"),
        ("parameters", int, "trainable parameters"), ("seconds", float, "training seconds"))),
    SummaryKey("samples", dict, "generated words of E01 and of the best model", headline=True),
    SummaryKey("samples.<model>", list, "the words generated by one model"),
)


@dataclass(frozen=True)
class NamesData:
    """The words.

    Attributes:
        path: a newline-separated word file (empty lines skipped); none: the SSA names.
        year: the SSA year when no path is given (the lecture's file is 2018's).
        chars: a fixed vocabulary (e.g. ``abcdefghijklmnopqrstuvwxyz``); a word with any other
            character is an error. None: the vocabulary is every character of the words.
        split_seed: ``random.seed`` of the 80/10/10 word split.
    """

    path: str | None = None
    year: int = ranged(2017, *SSA_YEARS, why="the years of the offline SSA table: "
                       f"{SSA_YEARS[0]}–{SSA_YEARS[1]}")
    chars: str | None = None
    split_seed: int = seed_field(42)


@dataclass(frozen=True)
class MLPConfig:
    """The MLP ensemble: shape, which variants, and the sheet's recipe.

    Attributes:
        n_embd: the size of each character's embedding.
        n_hidden: hidden units.
        block_size: characters of context.
        variants: the variants trained together (see docs/charlm.md for each).
        train: the optimisation recipe.
    """

    n_embd: int = ranged(10, 1, 1024, why=MEMORY_WHY)
    n_hidden: int = ranged(200, 1, 16384, why=MEMORY_WHY)
    block_size: int = ranged(3, 1, 64, why="names are far shorter than 64 characters")
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    train: StepConfig = field(default_factory=StepConfig)


@dataclass(frozen=True)
class WaveNetConfig:
    """The hierarchical MLP of lecture part 5 (76K parameters).

    Attributes:
        enabled: train it.
        n_embd: the size of each character's embedding.
        n_hidden: hidden units of each level.
        block_size: characters of context (a power of two: pairs are fused level by level).
        train: the optimisation recipe.
    """

    enabled: bool = True
    n_embd: int = ranged(24, 1, 1024, why=MEMORY_WHY)
    n_hidden: int = ranged(128, 1, 16384, why=MEMORY_WHY)
    block_size: int = ranged(8, 2, 64, why="names are far shorter than 64 characters")
    train: StepConfig = field(default_factory=lambda: StepConfig(
        steps=200_000, lr_decay_step=150_000, diag_every=0))


@dataclass(frozen=True)
class TransformerConfig:
    """makemore's small causal transformer over whole words (≈ 200K parameters).

    20,000 steps: on the 2017 names its dev loss bottoms out near 2.00 around 20–24K steps of
    this recipe and rises after (it overfits 26K training words).

    Attributes:
        enabled: train it.
        n_layer: transformer blocks.
        n_head: attention heads per block (they divide ``n_embd``).
        n_embd: the width of the residual stream.
        train: the optimisation recipe.
    """

    enabled: bool = True
    n_layer: int = ranged(4, 1, 64, why=MEMORY_WHY)
    n_head: int = ranged(4, 1, 64, why=MEMORY_WHY)
    n_embd: int = ranged(64, 1, 4096, why=MEMORY_WHY)
    train: StepConfig = field(default_factory=lambda: StepConfig(
        steps=20_000, lr=5e-4, lr_decay_step=None, optimizer="adamw", weight_decay=0.01,
        diag_every=0))


@dataclass(frozen=True)
class Config:
    """The charlm study.

    Attributes:
        data: the words and their split.
        mlp: the MLP ensemble (the exercise sheet's variants).
        wavenet: the hierarchical MLP.
        transformer: the small transformer.
        samples: names sampled from each trained model.
        seed: seeds every initialisation and minibatch stream.
        device: ``auto`` (a GPU when there is one), ``cpu`` or ``cuda``.
        threads: torch's CPU thread count while the study runs: its steps are many tiny
            operations, which gain nothing from more threads and slow down many-fold when
            another process holds a core (none: leave torch's setting alone).
    """

    data: NamesData = field(default_factory=NamesData)
    mlp: MLPConfig = field(default_factory=MLPConfig)
    wavenet: WaveNetConfig = field(default_factory=WaveNetConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    samples: int = ranged(20, 0, 100_000, why="names are sampled one character at a time")
    seed: int = seed_field(2147483647)
    device: str = "auto"
    threads: int | None = ranged(1, 1, 1024)

    @classmethod
    def paper(cls) -> Config:
        """The sheet's setting: 200,000 steps of batch 32, lr 0.1 then 0.01 after 100,000."""
        return cls()

    @classmethod
    def quick(cls) -> Config:
        """Every experiment with short training (about a minute on 2 CPU cores)."""
        base = cls()
        return cls(
            mlp=dataclasses.replace(base.mlp, train=StepConfig(
                steps=20_000, lr_decay_step=10_000, diag_every=200)),
            wavenet=dataclasses.replace(base.wavenet, train=StepConfig(
                steps=8_000, lr_decay_step=6_000, diag_every=0)),
            transformer=dataclasses.replace(base.transformer, train=dataclasses.replace(
                base.transformer.train, steps=1_000)))

    def validate(self) -> None:
        """Cross-field rules: known variants, a halving WaveNet context, dividing heads, memory."""
        m, w, t, k = self.mlp, self.wavenet, self.transformer, len(self.mlp.variants)
        if unknown := [v for v in m.variants if v not in VARIANTS]:
            raise LmlabError(f"unknown MLP variant(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(VARIANTS)}")
        if "e01" not in m.variants:
            raise LmlabError("mlp.variants must include e01 (the sheet's model)")
        if m.train.optimizer != "sgd":
            raise LmlabError("mlp.train.optimizer must be sgd (the fused ensemble's update)")
        for name in ("mlp", "wavenet", "transformer"):  # the rules below divide by the sizes
            check_ranges(getattr(self, name), name + ".")
        if w.enabled and w.block_size & (w.block_size - 1):
            raise LmlabError(f"wavenet.block_size must be a power of 2 (got {w.block_size}): "
                             "pairs of positions are fused level by level")
        if t.enabled and t.n_embd % t.n_head:
            raise LmlabError(f"transformer.n_embd={t.n_embd} must be a multiple of "
                             f"transformer.n_head={t.n_head} (each head gets n_embd / n_head)")
        V = len(set(self.data.chars)) + 1 if self.data.chars else 27  # 27: the SSA names'
        m.train.check_memory("mlp", k * m.n_embd * (V + m.block_size * m.n_hidden)
                             + k * m.n_hidden * V, k * (m.block_size * m.n_embd + 4 * m.n_hidden))
        if w.enabled:
            w.train.check_memory("wavenet", V * w.n_embd + 2 * w.n_embd * w.n_hidden + w.n_hidden
                                 * (V + (w.block_size.bit_length() - 2) * 2 * w.n_hidden),
                                 w.block_size * (w.n_embd + 4 * w.n_hidden))
        if t.enabled:  # words taken as 32 characters long
            t.train.check_memory("transformer", 2 * V * t.n_embd + 12 * t.n_layer * t.n_embd**2,
                                 32 * t.n_layer * (16 * t.n_embd + 96 * t.n_head))


@dataclass(frozen=True)
class Result:
    """Everything the figures and the report need.

    Attributes:
        config: the config that ran.
        table: one row per model: model, train/dev/test loss (evaluation mode), parameters,
            seconds, init_loss (MLPs: step 0 over the training split) and step0_loss.
        curves: model -> its training loss at every step (``mlp-<variant>``, ``wavenet``,
            ``transformer``).
        diagnostics: the MLP ensemble's diagnostics per member and recorded step (tanh
            saturation, gradient std, update-to-data ratios); empty when none were recorded.
        update_ratio: E01's update-to-data ratios: step, member (the weight C, W1, W2), ud.
        tanh: tanh histograms of the MLP members (see ``_charlm_phases.tanh_histogram``), at
            initialisation (``when == "init"``) and after training (``"trained"``).
        symmetry: how different the hidden units of each MLP member are after training.
        summary: the numbers of ``summary.json`` (see ``SUMMARY``).
    """

    config: Config
    table: pd.DataFrame
    curves: dict[str, np.ndarray]
    diagnostics: pd.DataFrame
    update_ratio: pd.DataFrame
    tanh: pd.DataFrame
    symmetry: pd.DataFrame
    summary: dict[str, Any]


def check(cfg: Config) -> None:
    """Fail before any work when the words cannot be used."""
    from lmlab.studies._charlm_train import load_words

    load_words(cfg.data)


def run(cfg: Config, run_dir: RunDir) -> Result:
    """Train the MLP ensemble, the WaveNet and the transformer, and run every check.

    Writes the checkpoints, the metrics, ``losses.csv`` (after each phase) and
    ``mlp_diagnostics.csv``; the runner saves the ``Result``, the summary, figures and report.
    """
    from lmlab.runtime import limit_threads
    from lmlab.train.core import deterministic

    with limit_threads(cfg.threads), deterministic():  # a resumed run ends with the same numbers
        return _run(cfg, run_dir)


def _run(cfg: Config, run_dir: RunDir) -> Result:
    import torch

    from lmlab.runtime import resolve_device, seed_everything
    from lmlab.studies._charlm_phases import ModelPhase, run_mlp, run_transformer, run_wavenet
    from lmlab.studies._charlm_train import load_words, sample

    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    words = load_words(cfg.data)
    run_dir.metrics_path.unlink(missing_ok=True)  # a resumed run logs every curve again
    run_dir.update_meta({"data_source": words.source})
    mlp = run_mlp(cfg.mlp, [VARIANTS[v] for v in cfg.mlp.variants], cfg.seed, words, device,
                  run_dir)
    rows = list(mlp.rows)
    run_dir.save_table("losses.csv", pd.DataFrame(rows))  # an interrupted run keeps these
    phases: dict[str, ModelPhase] = {}
    if cfg.wavenet.enabled:
        phases["wavenet"] = run_wavenet(cfg.wavenet, cfg.seed, words, device, run_dir)
        rows.append(phases["wavenet"].row)
        run_dir.save_table("losses.csv", pd.DataFrame(rows))
    if cfg.transformer.enabled:
        phases["transformer"] = run_transformer(cfg.transformer, cfg.seed, words, device,
                                                run_dir)
        rows.append(phases["transformer"].row)
        run_dir.save_table("losses.csv", pd.DataFrame(rows))
    table = pd.DataFrame(rows)
    best = table.loc[table["dev"].idxmin()]
    summary: dict[str, Any] = {
        "data_source": words.source, "vocab_size": words.vocab.size,
        "words": {"train": len(words.train), "dev": len(words.dev), "test": len(words.test)},
        **mlp.summary, "dev_loss_best": float(best["dev"]), "best_model": str(best["model"]),
        "models": {r["model"]: {k: r[k] for k in _MODEL_KEYS} for r in rows}}
    samplers = {"e01": mlp.sampler_for("e01"), **{n: p.sampler for n, p in phases.items()}}
    best_name = summary["best_model"].removeprefix("mlp-")
    if best_name in mlp.names and best_name not in samplers:  # another MLP variant won
        samplers[best_name] = mlp.sampler_for(best_name)
    gen = torch.Generator().manual_seed(cfg.seed)
    summary["samples"] = {name: sample(fn, cfg.samples, gen, words.vocab)
                          for name, fn in samplers.items() if name in ("e01", best_name)}
    curves = {**mlp.curves, **{n: p.curve for n, p in phases.items()}}
    return Result(cfg, table, curves, mlp.diagnostics, mlp.update_ratio, mlp.tanh,
                  mlp.symmetry, summary)


def plot(result: Result) -> dict[str, Figure]:
    """Every figure of a finished run, from the ``Result`` alone.

    >>> curve = np.linspace(3.3, 2.1, 100, dtype=np.float32)
    >>> summary = {"init_loss_uniform": 3.2958}
    >>> result = Result(Config(mlp=MLPConfig(variants=("e01",))), pd.DataFrame(),
    ...                 {"mlp-e01": curve}, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(
    ...                     {"when": ["init", "trained"], "member": "e01", "tanh": 0.0,
    ...                      "density": 1.0, "mean": 0.0, "std": 0.5, "saturated": 0.0}),
    ...                 pd.DataFrame(), summary)
    >>> sorted(plot(result))
    ['first_steps', 'loss_curves', 'tanh_init', 'tanh_trained']
    """
    from lmlab.plotting import captioned
    from lmlab.plotting.charlm import (
        plot_diagnostic,
        plot_first_steps,
        plot_loss_curves,
        plot_tanh_hist,
    )

    names = list(result.config.mlp.variants)
    steps = max(len(c) for c in result.curves.values())
    smooth = max(1, min(1000, steps // 50))
    first: dict[str, np.ndarray] = {
        n: result.curves[f"mlp-{n}"] for n in ("e01", "unscaled", "zero", "nobn-gaussian")
        if n in names}
    tanh = result.tanh
    figures = {
        "loss_curves": captioned(plot_loss_curves(result.curves, smooth=smooth),
                                 f"Training loss of every model (log10, mean of {smooth} steps)."),
        "first_steps": captioned(plot_first_steps(
            first, steps=min(1000, steps), uniform=result.summary["init_loss_uniform"]),
            "Minibatch losses of the first steps."),
        "tanh_init": captioned(plot_tanh_hist(
            tanh[tanh["when"] == "init"],
            title="tanh activations at initialisation (2,000 training contexts)"),
            "tanh outputs at initialisation: without BatchNorm and without the Kaiming scale "
            "(nobn-gaussian) most units saturate; with BatchNorm the scale of W1 does not "
            "matter (bn-gaussian)."),
        "tanh_trained": captioned(plot_tanh_hist(
            tanh[tanh["when"] == "trained"],
            title="tanh activations after training (evaluation mode)"),
            "tanh outputs after training."),
    }
    if not result.diagnostics.empty:
        figures["saturation"] = captioned(plot_diagnostic(
            result.diagnostics, "tanh_saturation", ylabel="share of |tanh| > 0.97",
            title="tanh saturation during training"), "Share of saturated tanh units per step.")
        figures["update_ratio"] = captioned(plot_diagnostic(
            result.update_ratio, "ud", ylabel="log10 std(lr·grad) / std(weight)", hline=-3.0,
            title="Update-to-data ratio per weight (E01); dashed: 1e-3"),
            "Update-to-data ratios of E01.")
    return figures


def report(result: Result, figures: dict[str, Figure]) -> Report:
    """The report of a finished run: every experiment's numbers, tables and figures
    (written in :mod:`lmlab.studies._charlm_report`)."""
    from lmlab.studies._charlm_report import build_report

    return build_report(result, figures)
