"""Study `optimizers`: the same fine-tune with AdamW and with SGD (or any torch optimiser).

After a mini-study that fine-tunes gpt2 on a small WikiText-2 slice with AdamW and with SGD
(momentum 0.9) at the same learning rate: identical model, data, order and seed; per-iteration
training loss, validation perplexity per epoch (padding never scored), wall time. Claim under
test: at lr 1e-4 AdamW lowers the loss much faster than SGD.

Commands::

    lmlab run optimizers --preset quick    # offline: smollm2-135m on real offline text
    lmlab run optimizers --preset paper    # gpt2, WikiText-2 slice (needs the hub + datasets)
    lmlab run optimizers --set optimizers=adamw,sgd,RMSprop

>>> Config.paper().optimizers, Config.paper().train.lr
(('adamw', 'sgd'), 0.0001)
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from lmlab.errors import LmlabError
from lmlab.runs import Report, RunDir, write_report
from lmlab.train.loop import TrainConfig

#: Read by the registry without importing this module.
STUDY = {"name": "optimizers", "order": 3,
         "description": ("AdamW vs SGD (or any torch optimiser) on the same fine-tune: "
                         "loss, perplexity, time"),
         "source": "optimizer/hooks mini-study; WikiText-2"}

__all__ = ["Config", "LinesData", "Result", "check", "check_lines_data", "run", "SUMMARY_KEYS",
           "load_lines_data"]

# ``lmlab run ... --resume`` continues an interrupted run: each optimiser's training checkpoints
# every epoch (``train.checkpoint_every``).
RESUMES = True

SUMMARY_KEYS: dict[str, str] = {
    "model": "the model reference",
    "data_source": "the text trained and validated on",
    "<optimizer>.final_train_loss": "training loss of the last step",
    "<optimizer>.val_perplexity": "validation perplexity after the last epoch",
    "<optimizer>.seconds": "wall time of that optimiser's training",
}


@dataclass(frozen=True)
class LinesData:
    """A small corpus of lines (the source's protocol).

    Attributes:
        source: ``wikitext2`` (train / validation splits through ``datasets``; online),
            ``stdlib-docstrings`` (offline real prose; the first lines train, the next
            validate), or ``file`` (``path``: the first lines train, the next validate).
        path: a UTF-8 text file for ``source = file``.
        max_tokens: tokens per line (truncated).
        budget: tokens collected per split.
    """

    source: Literal["wikitext2", "stdlib-docstrings", "file"] = "wikitext2"
    path: str | None = None
    max_tokens: int = 128
    budget: int = 1024


@dataclass(frozen=True)
class Config:
    """Optimisers to compare and the shared recipe (``train.optimizer`` is set per run)."""

    model: str = "gpt2"
    optimizers: tuple[str, ...] = ("adamw", "sgd")
    data: LinesData = field(default_factory=LinesData)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=5, batch_size=4, lr=1e-4, warmup_steps=0, schedule="constant",
        max_grad_norm=1.0, weight_decay=0.01))
    device: str = "auto"
    # Training checkpoints (weights + optimiser state, several hundred MB each) let an
    # interrupted run resume with --resume; they are deleted once the study has finished.
    keep_checkpoints: bool = False
    seed: int = 42

    @classmethod
    def paper(cls) -> Config:
        """The source's protocol: gpt2, WikiText-2 (~1,024 tokens per split, lines ≤ 128
        tokens), batch 4, clip 1.0, 5 epochs, lr 1e-4 for AdamW and for SGD (momentum 0.9)."""
        return cls()

    @classmethod
    def quick(cls) -> Config:
        """Offline: smollm2-135m on the standard library's docstrings, 3 epochs."""
        base = cls()
        return cls(model="smollm2-135m", data=LinesData(source="stdlib-docstrings"),
                   train=dataclasses.replace(base.train, epochs=3))

    def validate(self) -> None:
        """Every optimiser name must exist."""
        from lmlab.train.loop import _optimizer_class

        if not self.optimizers:
            raise LmlabError("optimizers is empty; name at least one, e.g. adamw,sgd")
        for name in self.optimizers:
            _optimizer_class(name)


@dataclass(frozen=True)
class Result:
    """Per-step losses and per-epoch evaluations of every optimiser, and the summary."""

    history: pd.DataFrame
    evals: pd.DataFrame
    summary: dict[str, Any]


def load_lines_data(cfg: LinesData, tokenizer: Any) -> tuple[list[list[int]], list[list[int]], str]:
    """(train examples, validation examples, source name) under the token-budget protocol."""
    from lmlab.data import (
        STDLIB_DOCSTRINGS_SOURCE,
        WIKITEXT2_SOURCE,
        stdlib_docstrings,
        text_file_lines,
        token_budget,
        wikitext2_lines,
    )

    kw = {"max_tokens": cfg.max_tokens, "budget": cfg.budget}
    if cfg.source == "wikitext2":
        return (token_budget(wikitext2_lines("train"), tokenizer, **kw),
                token_budget(wikitext2_lines("validation"), tokenizer, **kw), WIKITEXT2_SOURCE)
    if cfg.source == "file":
        if not cfg.path:
            raise LmlabError("data.source=file needs --set data.path=FILE")
        lines, name = text_file_lines(cfg.path), f"text file {cfg.path}"
    else:
        lines, name = stdlib_docstrings(), STDLIB_DOCSTRINGS_SOURCE
    train = token_budget(lines, tokenizer, **kw)
    rest = lines[_lines_used(lines, train):]
    return train, token_budget(rest, tokenizer, **kw), name


def _lines_used(lines: list[str], taken: list[list[int]]) -> int:
    """How many of ``lines`` (blank or too short ones included) produced ``taken``."""
    used, count = 0, 0
    for line in lines:
        used += 1
        if line.strip():
            count += 1
        if count >= len(taken):
            break
    return used


def check_lines_data(cfg: LinesData) -> None:
    """Fail before any work when the data source cannot be used."""
    import importlib.util
    from pathlib import Path

    if cfg.source == "wikitext2" and importlib.util.find_spec("datasets") is None:
        raise LmlabError("WikiText-2 needs the datasets library (pip install datasets) and the "
                         "hub; offline, use --set data.source=stdlib-docstrings or "
                         "--set data.source=file --set data.path=FILE")
    if cfg.source == "file" and not (cfg.path and Path(cfg.path).expanduser().is_file()):
        raise LmlabError(f"data.source=file needs an existing text file in data.path "
                         f"(got {cfg.path!r})")


def check(cfg: Config) -> None:
    """Fail before any work when the model or the data cannot be used."""
    from lmlab.models.hf import check_model

    check_model(cfg.model)
    check_lines_data(cfg.data)


def run(cfg: Config, run_dir: RunDir) -> Result:
    """Train one fresh copy of the model per optimiser; compare losses, perplexity, time."""
    from lmlab.data import CausalLMCollator
    from lmlab.models.hf import load_causal_lm
    from lmlab.runtime import resolve_device, seed_everything
    from lmlab.train import train
    from lmlab.train.checkpoint import checkpoint_step

    device = resolve_device(cfg.device)
    _, tokenizer = load_causal_lm(cfg.model)
    train_ex, val_ex, source = load_lines_data(cfg.data, tokenizer)
    run_dir.update_meta({"model": cfg.model, "data_source": source})
    collate = CausalLMCollator(pad_token_id=int(tokenizer.pad_token_id))
    histories, evals = [], []
    summary: dict[str, Any] = {"model": cfg.model, "data_source": source,
                               "train_tokens": sum(map(len, train_ex)),
                               "val_tokens": sum(map(len, val_ex))}
    for name in cfg.optimizers:
        seed_everything(cfg.seed)
        model, _ = load_causal_lm(cfg.model, device=device)
        tcfg = dataclasses.replace(
            cfg.train, optimizer=name, seed=cfg.seed,
            weight_decay=cfg.train.weight_decay if name.lower() == "adamw" else 0.0)
        ckpt = run_dir.checkpoints_dir / name  # a torch.optim name (validated): a safe folder
        run_dir.rewind_metrics(checkpoint_step(ckpt), optimizer=name)  # a resumed run
        res = train(model, train_ex, collate=collate, cfg=tcfg, eval_examples=val_ex,
                    device=device, progress=True, log=run_dir.metrics_sink(optimizer=name),
                    checkpoint_dir=ckpt, resume=True)
        histories += [{**r, "optimizer": name} for r in res.history]
        evals += [{**e, "optimizer": name} for e in res.evals]
        summary[name] = {"final_train_loss": res.history[-1]["loss"],
                         "val_perplexity": res.evals[-1]["perplexity"],
                         "seconds": round(res.seconds, 2),
                         "parameters": sum(p.numel() for p in model.parameters())}
        del model
    run_dir.save_summary(summary)
    if not cfg.keep_checkpoints:  # only there to resume an interrupted run
        shutil.rmtree(run_dir.checkpoints_dir, ignore_errors=True)
        run_dir.checkpoints_dir.mkdir(exist_ok=True)
    result = Result(pd.DataFrame(histories), pd.DataFrame(evals), summary)
    _report(cfg, result, run_dir)
    return result


def _report(cfg: Config, res: Result, run_dir: RunDir) -> None:
    from lmlab.plotting import figure_of, new_axes

    ax = new_axes()
    for name, g in res.history.groupby("optimizer", sort=False):
        ax.plot(g["step"], g["loss"], lw=1.2, label=str(name))
    ax.set(xlabel="iteration", ylabel="training loss (mean token loss)",
           title="Training loss per iteration")
    ax.legend(frameon=False)
    run_dir.save_figure(figure_of(ax), "train_loss")
    ax = new_axes()
    for name, g in res.evals.groupby("optimizer", sort=False):
        ax.plot(g["epoch"] + 1, g["perplexity"], "o-", label=str(name))
    ax.set(xlabel="epoch", ylabel="validation perplexity", yscale="log",
           title="Validation perplexity per epoch (padding excluded)")
    ax.legend(frameon=False)
    run_dir.save_figure(figure_of(ax), "val_perplexity")
    table = pd.DataFrame([{"optimizer": n, **res.summary[n]} for n in cfg.optimizers])
    run_dir.save_table("optimizers.csv", table)
    report = Report(f"Optimisers compared — {cfg.model}")
    report.add_text(
        f"**{cfg.model}** fine-tuned on {res.summary['train_tokens']} tokens of "
        f"{res.summary['data_source']} ({res.summary['val_tokens']} validation tokens), "
        f"{cfg.train.epochs} epochs, batch {cfg.train.batch_size}, lr {cfg.train.lr} "
        f"(constant: {cfg.train.schedule == 'constant'}), gradient clipping "
        f"{cfg.train.max_grad_norm}; the same seed, data and order for every optimiser "
        "(SGD with momentum 0.9 and no weight decay; AdamW with weight decay "
        f"{cfg.train.weight_decay}).")
    report.add_table(table, caption="Final training loss, validation perplexity, wall time")
    report.add_figure("figures/train_loss.png", "Training loss per iteration.")
    report.add_figure("figures/val_perplexity.png", "Validation perplexity after each epoch.")
    write_report(run_dir, report)
