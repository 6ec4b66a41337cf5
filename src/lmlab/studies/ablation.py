"""Study `ablation`: does attention matter? Train and evaluate with attention ablated.

After a mini-study that fine-tunes gpt2 with a forward hook on every attention module. Its hook
really replaced each attention sub-layer's output by zeros (tokens never mix), while its
docstring claimed "uniform attention"; here every ablation has an honest name
(:mod:`lmlab.hooks`): ``zero`` (the seed's), ``uniform`` (uniform causal pattern), ``mean``
(output replaced by its mean over a reference batch), ``previous-token``. The study trains the
baseline and each ablated model the same way (validation perplexity per epoch), and also
evaluates the *pretrained* model ablated with no training — all layers at once and one layer at
a time (a layer-importance chart).

The untrained measurements are deterministic given the model (the ``mean`` mode's reference
batch is the first training batch). Training depends on the seed, which sets the data order:
with ``seeds = n`` each variant trains once per seed ``seed, seed + 1, …``, the perplexity
curves show the mean over seeds with a min–max band, and the trained perplexities are the mean
± the sample standard deviation over seeds.

Commands::

    lmlab run ablation --preset quick     # offline: smollm2-135m, modes zero and uniform
    lmlab run ablation --preset paper     # gpt2 + WikiText-2, the seed's zero ablation
    lmlab run ablation --set modes=zero,uniform,mean,previous-token
    lmlab run ablation --preset quick --set seeds=3   # training repeated with seeds 42, 43, 44

>>> Config.paper().modes
('zero',)
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from lmlab.config import ranged, seed_field
from lmlab.errors import LmlabError
from lmlab.runs import Report, RunDir
from lmlab.studies._seeds import check_seeds, over_seeds, seed_values, seeds_field, spread_text
from lmlab.studies.optimizers import (
    LinesData,
    check_lines_data,
    drop_checkpoints,
    load_lines_data,
    train_fresh,
)
from lmlab.studies.pattern import Summary, SummaryKey
from lmlab.train.loop import TrainConfig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Read by the registry without importing this module.
STUDY = {"name": "ablation", "order": 4,
         "description": ("Attention ablations (zero, uniform, mean, previous-token): "
                         "trained and untrained"),
         "source": "optimizer/hooks mini-study; WikiText-2"}

__all__ = ["Config", "MODE_MEANING", "Result", "SUMMARY", "check", "plot", "report", "run"]

MODE_MEANING: dict[str, str] = {
    "zero": "each attention sub-layer's output replaced by zeros (residual path and MLP only; "
            "tokens never mix) — what the seed's hook really did",
    "uniform": "attention pattern replaced by a uniform pattern over the causal window",
    "mean": "attention output replaced by its mean over a reference batch",
    "previous-token": "each position attends only to the previous token",
}
# ``lmlab run ... --resume`` continues an interrupted run: each (variant, seed)'s training
# checkpoints every epoch (``train.checkpoint_every``).
RESUMES = True

#: The keys of ``summary.json``, their types and meaning (``<mode>``: each mode that ran).
SUMMARY = Summary(
    SummaryKey("model", str, "the model reference"),
    SummaryKey("data_source", str, "the text trained and validated on"),
    SummaryKey("untrained_baseline_perplexity", float,
               "the pretrained model, no ablation, no training", headline=True),
    SummaryKey("<mode>.untrained_perplexity", float,
               "the pretrained model ablated in every layer, no training", headline=True),
    SummaryKey("importance_mode", str,
               "the mode of the per-layer chart (null with per_layer=false)"),
    SummaryKey("seeds", int, "trainings per variant, with seeds seed, seed + 1, …"),
    SummaryKey("baseline_perplexity", float,
               "validation perplexity of the baseline after training (mean over seeds)",
               headline=True),
    SummaryKey("baseline_perplexity_std", float,
               "its sample standard deviation over seeds (null for one seed)"),
    SummaryKey("<mode>.perplexity", float,
               "validation perplexity after training with that ablation (mean over seeds)",
               headline=True),
    SummaryKey("<mode>.perplexity_std", float,
               "its sample standard deviation over seeds (null for one seed)"),
)


@dataclass(frozen=True)
class Config:
    """Ablation modes, their targets and the shared training recipe.

    Attributes:
        model: the pretrained causal LM (an offline name, a model directory or a hub id).
        modes: the ablations compared: ``zero``, ``uniform``, ``mean``, ``previous-token``.
        layers: the layers ablated (empty: every layer).
        heads: the heads ablated in those layers (empty: every head).
        per_layer: also measure each layer alone ablated, without training (the layer
            importance chart).
        data: the text lines and their token budget.
        train: the shared training recipe.
        device: ``auto`` (a GPU when there is one), ``cpu`` or ``cuda``.
        keep_checkpoints: keep the training checkpoints (weights + optimiser state, several
            hundred MB each) after the study has finished; they let an interrupted run resume
            with ``--resume`` and are deleted at the end otherwise.
        seed: seeds every variant's data order and new weights alike (the first seed with
            ``seeds`` > 1).
        seeds: trainings per variant, with seeds ``seed``, ``seed + 1``, …,
            ``seed + seeds − 1`` (1: one each); the untrained measurements do not depend on
            the seed and run once.
    """

    model: str = "gpt2"
    modes: tuple[str, ...] = ("zero",)
    layers: tuple[int, ...] = ranged((), 0)
    heads: tuple[int, ...] = ranged((), 0)
    per_layer: bool = True
    data: LinesData = field(default_factory=LinesData)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=5, batch_size=4, lr=1e-4, warmup_steps=0, schedule="constant",
        max_grad_norm=1.0))
    device: str = "auto"
    keep_checkpoints: bool = False
    seed: int = seed_field(42)
    seeds: int = seeds_field()

    @classmethod
    def paper(cls) -> Config:
        """The seed: gpt2, WikiText-2 slice, batch 4, clip 1.0, 5 epochs, AdamW lr 1e-4, the
        zero ablation in every layer."""
        return cls()

    @classmethod
    def quick(cls) -> Config:
        """Offline: smollm2-135m on ~512 tokens per split of the standard library's
        docstrings, zero and uniform, 2 epochs."""
        base = cls()
        return cls(model="smollm2-135m", modes=("zero", "uniform"),
                   data=LinesData(source="stdlib-docstrings", budget=512),
                   train=dataclasses.replace(base.train, epochs=2))

    def validate(self) -> None:
        """Every mode must exist; a batch must fit in memory."""
        from lmlab.hooks import MODES

        for mode in self.modes:
            if mode not in MODES:
                raise LmlabError(f"unknown ablation mode '{mode}'; modes: {', '.join(MODES)}")
        if not self.modes:
            raise LmlabError("modes is empty; name at least one, e.g. zero")
        self.train.check_batch_tokens(self.data.max_tokens, "data.max_tokens")
        check_seeds(self.seed, self.seeds)


@dataclass(frozen=True)
class Result:
    """Everything the figures and the report need.

    Attributes:
        config: the config that ran.
        evals: one row per variant (baseline and each mode), seed and epoch, with
            ``perplexity``.
        importance: one row per layer: perplexity of the pretrained model with that layer
            alone ablated (empty with ``per_layer = false``).
        table: one row per variant: perplexity untrained and after training (the mean over
            seeds, and ``trained_perplexity_std``, the sample standard deviation over seeds)
            (also ``ablation.csv``).
        summary: the numbers of ``summary.json`` (see ``SUMMARY``).
    """

    config: Config
    evals: pd.DataFrame
    importance: pd.DataFrame
    table: pd.DataFrame
    summary: dict[str, Any]


def check(cfg: Config) -> None:
    """Fail before any work when the model or the data cannot be used."""
    from lmlab.models.hf import check_model

    check_model(cfg.model)
    check_lines_data(cfg.data)


def run(cfg: Config, run_dir: RunDir) -> Result:
    """Untrained ablations (all layers, and per layer), then training per variant."""
    from lmlab.data import CausalLMCollator
    from lmlab.hooks import ablate, locate
    from lmlab.models.hf import load_causal_lm
    from lmlab.runtime import resolve_device
    from lmlab.train import evaluate_lm

    device = resolve_device(cfg.device)
    model, tokenizer = load_causal_lm(cfg.model, device=device)
    n_layers = locate(model).dims.n_layers
    train_ex, val_ex, source = load_lines_data(cfg.data, tokenizer)
    run_dir.update_meta({"model": cfg.model, "data_source": source,
                         "ablation_modes": list(cfg.modes)})
    collate = CausalLMCollator(pad_token_id=int(tokenizer.pad_token_id))
    reference = {k: v.to(device) for k, v in collate(train_ex[: cfg.train.batch_size]).items()
                 if k in ("input_ids", "attention_mask")}
    targets = {"layers": list(cfg.layers) or None, "heads": list(cfg.heads) or None}

    def ppl(m: Any) -> float:
        return evaluate_lm(m, val_ex, collate, batch_size=cfg.train.batch_size,
                           device=device).perplexity

    summary: dict[str, Any] = {"model": cfg.model, "data_source": source,
                               "untrained_baseline_perplexity": ppl(model)}
    for mode in cfg.modes:
        with ablate(model, mode, reference=reference if mode == "mean" else None, **targets):
            summary[mode] = {"untrained_perplexity": ppl(model)}
    importance = []
    summary["importance_mode"] = cfg.modes[0] if cfg.per_layer else None
    if cfg.per_layer:
        from tqdm.auto import tqdm

        mode = cfg.modes[0]
        for layer in tqdm(range(n_layers), desc=f"{mode} ablation per layer", unit="layer"):
            with ablate(model, mode, layers=[layer], heads=targets["heads"],
                        reference=reference if mode == "mean" else None):
                importance.append({"layer": layer, "mode": mode, "perplexity": ppl(model)})
    del model

    evals, trained = [], []
    for variant in ("baseline", *cfg.modes):
        within = None if variant == "baseline" else functools.partial(
            ablate, mode=variant, layers=targets["layers"], heads=targets["heads"],
            reference=reference if variant == "mean" else None)
        for seed in seed_values(cfg.seed, cfg.seeds):
            tag = {"variant": variant, "seed": seed}
            res, _ = train_fresh(cfg.model, run_dir, tag, dataclasses.replace(cfg.train, seed=seed),
                                 train_ex, val_ex, collate=collate, device=device, seed=seed,
                                 within=within)
            trained.append({**tag, "perplexity": res.evals[-1]["perplexity"]})
            evals += [{**e, **tag} for e in res.evals]
    for row in over_seeds(pd.DataFrame(trained), "variant", ["perplexity"]).to_dict("records"):
        mean, std = row["perplexity"], None if pd.isna(row["perplexity_std"]) else row[
            "perplexity_std"]
        if row["variant"] == "baseline":
            summary["baseline_perplexity"], summary["baseline_perplexity_std"] = mean, std
        else:
            summary[row["variant"]].update(perplexity=mean, perplexity_std=std)
    summary["seeds"] = cfg.seeds
    drop_checkpoints(run_dir, cfg.keep_checkpoints)
    table = _perplexity_table(cfg, summary)
    importance_df = pd.DataFrame(importance)
    run_dir.save_table("ablation.csv", table)
    if len(importance_df):
        run_dir.save_table("layer_importance.csv", importance_df)
    return Result(cfg, pd.DataFrame(evals), importance_df, table, summary)


def _perplexity_table(cfg: Config, s: dict[str, Any]) -> pd.DataFrame:
    """One row per variant: perplexity untrained and after training."""
    def nan_for_none(value: float | None) -> float:
        return float("nan") if value is None else value

    rows = [{"variant": "baseline", "untrained_perplexity": s["untrained_baseline_perplexity"],
             "trained_perplexity": s["baseline_perplexity"],
             "trained_perplexity_std": nan_for_none(s["baseline_perplexity_std"])}]
    rows += [{"variant": m, "untrained_perplexity": s[m]["untrained_perplexity"],
              "trained_perplexity": s[m]["perplexity"],
              "trained_perplexity_std": nan_for_none(s[m]["perplexity_std"])} for m in cfg.modes]
    return pd.DataFrame(rows)


def plot(result: Result) -> dict[str, Figure]:
    """Every figure of a finished ablation study, from the ``Result`` alone."""
    from lmlab.plotting import captioned
    from lmlab.plotting.finetune import plot_layer_importance
    from lmlab.plotting.seeds import plot_band

    s, cfg = result.summary, result.config
    evals = result.evals if "seed" in result.evals else result.evals.assign(seed=cfg.seed)
    ax = plot_band(evals.assign(epoch=evals["epoch"] + 1), x="epoch", y="perplexity",
                   by="variant", marker="o")
    ax.set(xlabel="epoch", ylabel="validation perplexity", yscale="log",
           title="Validation perplexity per epoch: baseline vs ablated")
    figures = {"perplexity": captioned(ax, "Validation perplexity per epoch." + (
        f" Mean over {cfg.seeds} seeds ({cfg.seed} to {cfg.seed + cfg.seeds - 1}); the band "
        "spans their minimum to maximum." if cfg.seeds > 1 else ""))}
    if len(result.importance):
        figures["layer_importance"] = captioned(
            plot_layer_importance(result.importance, s["untrained_baseline_perplexity"],
                                  s["importance_mode"]),
            "Perplexity of the pretrained model with one layer's attention ablated: the "
            "higher, the more that layer's attention matters.")
    return figures


def report(result: Result, figures: dict[str, Figure]) -> Report:
    """The report of a finished ablation study."""
    cfg, s = result.config, result.summary
    rep = Report(f"Attention ablation — {cfg.model}")
    rep.add_text(
        f"**{cfg.model}** on {s['data_source']}. Modes that ran: "
        + "; ".join(f"**{m}** — {MODE_MEANING[m]}" for m in cfg.modes)
        + (f". Layers: {list(cfg.layers)}" if cfg.layers else ". All layers")
        + (f", heads {list(cfg.heads)}." if cfg.heads else ", all heads."))
    rep.add_table(_shown_table(result.table, cfg.seeds),
                  caption="Validation perplexity without training (pretrained model) and after "
                  "training the same way" + (f" (mean ± standard deviation over {cfg.seeds} "
                                             "seeds, which set the data order)"
                                             if cfg.seeds > 1 else ""))
    rep.add_figures(figures, names=["perplexity", "layer_importance"])
    return rep


def _shown_table(table: pd.DataFrame, seeds: int) -> pd.DataFrame:
    """The table as the report shows it: with seeds, the trained perplexity as ``mean ± std``.
    """
    if seeds == 1 or "trained_perplexity_std" not in table:
        return table.drop(columns=["trained_perplexity_std"], errors="ignore")
    cells = [spread_text(m, sd) for m, sd in zip(table["trained_perplexity"],
                                                 table["trained_perplexity_std"], strict=True)]
    return table.drop(columns=["trained_perplexity_std"]).assign(trained_perplexity=cells)
