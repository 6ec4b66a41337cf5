"""Study `ablation`: does attention matter? Train and evaluate with attention ablated.

After a mini-study that fine-tunes gpt2 with a forward hook on every attention module. Its hook
really replaced each attention sub-layer's output by zeros (tokens never mix), while its
docstring claimed "uniform attention"; here every ablation has an honest name
(:mod:`lmlab.hooks`): ``zero`` (the seed's), ``uniform`` (uniform causal pattern), ``mean``
(output replaced by its mean over a reference batch), ``previous-token``. The study trains the
baseline and each ablated model the same way (validation perplexity per epoch), and also
evaluates the *pretrained* model ablated with no training — all layers at once and one layer at
a time (a layer-importance chart).

Commands::

    lmlab run ablation --preset quick     # offline: smollm2-135m, modes zero and uniform
    lmlab run ablation --preset paper     # gpt2 + WikiText-2, the seed's zero ablation
    lmlab run ablation --set modes=zero,uniform,mean,previous-token

>>> Config.paper().modes
('zero',)
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from lmlab.errors import LmlabError
from lmlab.runs import Report, RunDir, write_report
from lmlab.studies.optimizers import LinesData, check_lines_data, load_lines_data
from lmlab.train.loop import TrainConfig

#: Read by the registry without importing this module.
STUDY = {"name": "ablation", "order": 4,
         "description": ("Attention ablations (zero, uniform, mean, previous-token): "
                         "trained and untrained"),
         "source": "optimizer/hooks mini-study; WikiText-2"}

__all__ = ["Config", "Result", "check", "run", "SUMMARY_KEYS", "MODE_MEANING"]

MODE_MEANING: dict[str, str] = {
    "zero": "each attention sub-layer's output replaced by zeros (residual path and MLP only; "
            "tokens never mix) — what the seed's hook really did",
    "uniform": "attention pattern replaced by a uniform pattern over the causal window",
    "mean": "attention output replaced by its mean over a reference batch",
    "previous-token": "each position attends only to the previous token",
}
# ``lmlab run ... --resume`` continues an interrupted run: each variant's training checkpoints
# every epoch (``train.checkpoint_every``).
RESUMES = True

SUMMARY_KEYS: dict[str, str] = {
    "baseline_perplexity": "validation perplexity of the baseline after training",
    "<mode>.perplexity": "validation perplexity after training with that ablation",
    "<mode>.untrained_perplexity": "the pretrained model ablated in every layer, no training",
    "untrained_baseline_perplexity": "the pretrained model, no ablation, no training",
    "importance_mode": "the mode of the per-layer chart",
}


@dataclass(frozen=True)
class Config:
    """Ablation modes, their targets and the shared training recipe."""

    model: str = "gpt2"
    modes: tuple[str, ...] = ("zero",)
    layers: tuple[int, ...] = ()
    heads: tuple[int, ...] = ()
    per_layer: bool = True
    data: LinesData = field(default_factory=LinesData)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=5, batch_size=4, lr=1e-4, warmup_steps=0, schedule="constant",
        max_grad_norm=1.0))
    device: str = "auto"
    # Training checkpoints (weights + optimiser state, several hundred MB each) let an
    # interrupted run resume with --resume; they are deleted once the study has finished.
    keep_checkpoints: bool = False
    seed: int = 42

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
        """Every mode must exist."""
        from lmlab.hooks import MODES

        for mode in self.modes:
            if mode not in MODES:
                raise LmlabError(f"unknown ablation mode '{mode}'; modes: {', '.join(MODES)}")
        if not self.modes:
            raise LmlabError("modes is empty; name at least one, e.g. zero")


@dataclass(frozen=True)
class Result:
    """Per-epoch evaluations of every variant, the per-layer importance, and the summary."""

    evals: pd.DataFrame
    importance: pd.DataFrame
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
    from lmlab.runtime import resolve_device, seed_everything
    from lmlab.train import evaluate_lm, train
    from lmlab.train.checkpoint import checkpoint_step

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
    if cfg.per_layer:
        from tqdm.auto import tqdm

        mode = cfg.modes[0]
        summary["importance_mode"] = mode
        for layer in tqdm(range(n_layers), desc=f"{mode} ablation per layer", unit="layer"):
            with ablate(model, mode, layers=[layer], heads=targets["heads"],
                        reference=reference if mode == "mean" else None):
                importance.append({"layer": layer, "mode": mode, "perplexity": ppl(model)})
    del model

    evals = []
    for variant in ("baseline", *cfg.modes):
        seed_everything(cfg.seed)
        model, _ = load_causal_lm(cfg.model, device=device)
        log = run_dir.metrics_sink(variant=variant)
        ckpt = run_dir.checkpoints_dir / variant
        run_dir.rewind_metrics(checkpoint_step(ckpt), variant=variant)  # a resumed run
        resume: dict[str, Any] = {"checkpoint_dir": ckpt, "resume": True}
        if variant == "baseline":
            res = train(model, train_ex, collate=collate, cfg=cfg.train, eval_examples=val_ex,
                        device=device, log=log, progress=True, **resume)
            summary["baseline_perplexity"] = res.evals[-1]["perplexity"]
        else:
            with ablate(model, variant, reference=reference if variant == "mean" else None,
                        **targets):
                res = train(model, train_ex, collate=collate, cfg=cfg.train,
                            eval_examples=val_ex, device=device, log=log, progress=True,
                            **resume)
            summary[variant]["perplexity"] = res.evals[-1]["perplexity"]
        evals += [{**e, "variant": variant} for e in res.evals]
        del model
    run_dir.save_summary(summary)
    if not cfg.keep_checkpoints:  # only there to resume an interrupted run
        shutil.rmtree(run_dir.checkpoints_dir, ignore_errors=True)
        run_dir.checkpoints_dir.mkdir(exist_ok=True)
    result = Result(pd.DataFrame(evals), pd.DataFrame(importance), summary)
    _report(cfg, result, run_dir)
    return result


def _report(cfg: Config, res: Result, run_dir: RunDir) -> None:
    from lmlab.plotting import figure_of, new_axes

    s = res.summary
    ax = new_axes()
    for variant, g in res.evals.groupby("variant", sort=False):
        ax.plot(g["epoch"] + 1, g["perplexity"], "o-", label=str(variant))
    ax.set(xlabel="epoch", ylabel="validation perplexity", yscale="log",
           title="Validation perplexity per epoch: baseline vs ablated")
    ax.legend(frameon=False)
    run_dir.save_figure(figure_of(ax), "perplexity")
    report = Report(f"Attention ablation — {cfg.model}")
    report.add_text(
        f"**{cfg.model}** on {s['data_source']}. Modes that ran: "
        + "; ".join(f"**{m}** — {MODE_MEANING[m]}" for m in cfg.modes)
        + (f". Layers: {list(cfg.layers)}" if cfg.layers else ". All layers")
        + (f", heads {list(cfg.heads)}." if cfg.heads else ", all heads."))
    rows = [{"variant": "baseline", "untrained_perplexity": s["untrained_baseline_perplexity"],
             "trained_perplexity": s["baseline_perplexity"]}]
    rows += [{"variant": m, "untrained_perplexity": s[m]["untrained_perplexity"],
              "trained_perplexity": s[m]["perplexity"]} for m in cfg.modes]
    table = pd.DataFrame(rows)
    run_dir.save_table("ablation.csv", table)
    report.add_table(table, caption="Validation perplexity without training (pretrained model) "
                                    "and after training the same way")
    report.add_figure("figures/perplexity.png", "Validation perplexity per epoch.")
    if len(res.importance):
        ax = new_axes((8.0, 4.0))
        ax.bar(res.importance["layer"], res.importance["perplexity"], color="#6baed6")
        ax.axhline(s["untrained_baseline_perplexity"], color="black", ls="--", lw=1,
                   label="no ablation")
        ax.set(xlabel="layer ablated (alone)", ylabel="validation perplexity", yscale="log",
               title=f"Layer importance: {s['importance_mode']} ablation of one layer, "
                     "no training")
        ax.legend(frameon=False)
        run_dir.save_figure(figure_of(ax), "layer_importance")
        run_dir.save_table("layer_importance.csv", res.importance)
        report.add_figure("figures/layer_importance.png",
                          "Perplexity of the pretrained model with one layer's attention "
                          "ablated: the higher, the more that layer's attention matters.")
    write_report(run_dir, report)
