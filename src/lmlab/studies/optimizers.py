"""Study `optimizers`: the same fine-tune with AdamW and with SGD (or any torch optimiser).

After a mini-study that fine-tunes gpt2 on a small WikiText-2 slice with AdamW and with SGD
(momentum 0.9) at the same learning rate: identical model, data, order and seed; per-iteration
training loss, validation perplexity per epoch (padding never scored), wall time. Claim under
test: at lr 1e-4 AdamW lowers the loss much faster than SGD, and SGD's loss is noisier.

With ``seeds = n`` every optimiser trains once per seed ``seed, seed + 1, …`` (the seed sets
the data order); the curves are means over seeds with a min–max band, and every number in the
table is a mean ± the sample standard deviation over seeds. The noise claim is measured by the
*loss noise* (:mod:`lmlab.train.noise`): the sample standard deviation of the step-to-step
changes of the training loss over the last ``noise_window`` steps of each run.

Commands::

    lmlab run optimizers --preset quick    # offline: smollm2-135m on real offline text
    lmlab run optimizers --preset paper    # gpt2, WikiText-2 slice (needs the hub + datasets)
    lmlab run optimizers --set optimizers=adamw,sgd,RMSprop
    lmlab run optimizers --preset quick --set seeds=3   # mean ± spread over seeds 42, 43, 44

>>> Config.paper().optimizers, Config.paper().train.lr
(('adamw', 'sgd'), 0.0001)
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from lmlab._files import file_kind, given_path
from lmlab.config import ranged, seed_field
from lmlab.errors import LmlabError
from lmlab.runs import Report, RunDir
from lmlab.studies._optimizers_report import (
    MEASURED,
    noise_text,
    over_seeds_text,
    rolling_noise,
    seeded,
    shown_table,
)
from lmlab.studies._seeds import check_seeds, over_seeds, seed_values, seeds_field
from lmlab.studies.pattern import Summary, SummaryKey
from lmlab.train.loop import TrainConfig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Read by the registry without importing this module.
STUDY = {"name": "optimizers", "order": 3,
         "description": ("AdamW vs SGD (or any torch optimiser) on the same fine-tune: "
                         "loss, perplexity, time"),
         "source": "optimizer/hooks mini-study; WikiText-2"}

__all__ = ["Config", "LinesData", "Result", "SUMMARY", "check", "check_lines_data",
           "drop_checkpoints", "load_lines_data", "plot", "report", "run", "train_fresh"]

# ``lmlab run ... --resume`` continues an interrupted run: each (optimiser, seed)'s training
# checkpoints every epoch (``train.checkpoint_every``).
RESUMES = True

#: The keys of ``summary.json``, their types and meaning (``<optimizer>``: each one that ran;
#: a value is the mean over seeds, ``*_std`` its sample standard deviation, null for one seed).
SUMMARY = Summary(
    SummaryKey("model", str, "the model reference"),
    SummaryKey("data_source", str, "the text trained and validated on"),
    SummaryKey("train_tokens", int, "tokens of the training split", headline=True),
    SummaryKey("val_tokens", int, "tokens of the validation split", headline=True),
    SummaryKey("seeds", int, "runs per optimiser, with seeds seed, seed + 1, …"),
    SummaryKey("noise_window", int, "W: the trailing loss changes the loss noise is taken over"),
    SummaryKey("<optimizer>.final_train_loss", float,
               "training loss of the last step (mean over seeds)", headline=True),
    SummaryKey("<optimizer>.final_train_loss_std", float,
               "its sample standard deviation over seeds (null for one seed)"),
    SummaryKey("<optimizer>.val_perplexity", float,
               "validation perplexity after the last epoch (mean over seeds)", headline=True),
    SummaryKey("<optimizer>.val_perplexity_std", float,
               "its sample standard deviation over seeds (null for one seed)"),
    SummaryKey("<optimizer>.loss_noise", float,
               "sample std of the last W step-to-step training-loss changes (mean over seeds)",
               headline=True),
    SummaryKey("<optimizer>.loss_noise_std", float,
               "its sample standard deviation over seeds (null for one seed)"),
    SummaryKey("<optimizer>.seconds", float,
               "wall time of that optimiser's training (mean over seeds)", headline=True),
    SummaryKey("<optimizer>.seconds_std", float,
               "its sample standard deviation over seeds (null for one seed)"),
    SummaryKey("<optimizer>.parameters", int, "parameters of the model trained"),
)


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
    max_tokens: int = ranged(128, 2, 8192, why="beyond the context of the models")
    budget: int = ranged(1024, 2, 10**7, why="the tokens of both splits are held in memory")


@dataclass(frozen=True)
class Config:
    """Optimisers to compare and the shared recipe (``train.optimizer`` is set per run).

    Attributes:
        model: the pretrained causal LM (an offline name, a model directory or a hub id).
        optimizers: the optimisers compared, each a fresh copy of the model (any
            ``torch.optim`` name, e.g. ``adamw``, ``sgd``, ``adam``, ``rmsprop``).
        data: the text lines and their token budget.
        train: the shared training recipe.
        device: ``auto`` (a GPU when there is one), ``cpu`` or ``cuda``.
        keep_checkpoints: keep the training checkpoints (weights + optimiser state, several
            hundred MB each) after the study has finished; they let an interrupted run resume
            with ``--resume`` and are deleted at the end otherwise.
        seed: seeds every variant's data order and new weights alike (the first seed with
            ``seeds`` > 1).
        seeds: runs per optimiser, with seeds ``seed``, ``seed + 1``, …, ``seed + seeds − 1``
            (1: one run each); curves show the mean and the min–max band over seeds, numbers
            the mean ± the sample standard deviation over seeds.
        noise_window: ``W``, the trailing step-to-step changes of the training loss whose
            sample standard deviation is the loss noise (all of a run's changes when it has
            fewer).
    """

    model: str = "gpt2"
    optimizers: tuple[str, ...] = ("adamw", "sgd")
    data: LinesData = field(default_factory=LinesData)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=5, batch_size=4, lr=1e-4, warmup_steps=0, schedule="constant",
        max_grad_norm=1.0, weight_decay=0.01))
    device: str = "auto"
    keep_checkpoints: bool = False
    seed: int = seed_field(42)
    seeds: int = seeds_field()
    noise_window: int = ranged(20, 2, 10**7, why="longer than any run")

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
        """Every optimiser name must be one the loop can drive; a batch must fit in memory."""
        from lmlab.train.loop import _optimizer_class

        if not self.optimizers:
            raise LmlabError("optimizers is empty; name at least one, e.g. adamw,sgd")
        for name in self.optimizers:
            _optimizer_class(name)
        check_seeds(self.seed, self.seeds)
        self.train.check_batch_tokens(self.data.max_tokens, "data.max_tokens")


@dataclass(frozen=True)
class Result:
    """Everything the figures and the report need.

    Attributes:
        config: the config that ran.
        history: one row per optimiser, seed and training step (``optimizer``, ``seed``,
            ``step``, ``loss``...).
        evals: one row per optimiser, seed and epoch (``optimizer``, ``seed``, ``epoch``,
            ``perplexity``...).
        table: one row per optimiser: the mean over seeds and ``*_std`` (sample standard
            deviation over seeds) of the final training loss, validation perplexity, loss
            noise and wall time; parameters (also ``optimizers.csv``).
        summary: the numbers of ``summary.json`` (see ``SUMMARY``).
        runs: one row per optimiser and seed: final training loss, validation perplexity,
            loss noise, wall time, parameters (also ``optimizer_seeds.csv``).
    """

    config: Config
    history: pd.DataFrame
    evals: pd.DataFrame
    table: pd.DataFrame
    summary: dict[str, Any]
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)


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

    if cfg.source == "wikitext2" and importlib.util.find_spec("datasets") is None:
        raise LmlabError("WikiText-2 needs the datasets library (pip install datasets) and the "
                         "hub; offline, use --set data.source=stdlib-docstrings or "
                         "--set data.source=file --set data.path=FILE")
    if cfg.path is not None and cfg.source != "file":
        raise LmlabError(f"data.path is set but data.source is {cfg.source}, which does not read "
                         "it; add --set data.source=file, or drop data.path")
    if cfg.source == "file":
        kind = file_kind(given_path(cfg.path or ""))
        if kind is not None:
            raise LmlabError(f"data.source=file needs an existing text file in data.path "
                             f"(got {cfg.path!r}: {kind})")


def check(cfg: Config) -> None:
    """Fail before any work when the model or the data cannot be used."""
    from lmlab.models.hf import check_model

    check_model(cfg.model)
    check_lines_data(cfg.data)


def train_fresh(model_ref: str, run_dir: RunDir, tag: dict[str, Any], tcfg: TrainConfig,
                train_ex: list[list[int]], val_ex: list[list[int]], *, collate: Any,
                device: Any, seed: int,
                within: Callable[[Any], AbstractContextManager[Any]] | None = None,
                ) -> tuple[Any, int]:
    """Train a fresh copy of ``model_ref`` from ``seed``, resumable, as one variant of a study.

    Every variant starts from the same weights, data and order. Its metrics carry ``tag``
    (e.g. ``{"optimizer": "sgd", "seed": 43}``) and its checkpoints go to
    ``checkpoints/<first value>/<key>-<value>/…`` (``checkpoints/sgd/seed-43``), so an
    interrupted run continues each variant and seed from its own last checkpoint.

    Args:
        model_ref: the model reference to load.
        run_dir: the study's run directory.
        tag: columns and their values for this variant's metrics rows; each value must be a
            safe folder name.
        tcfg: the training recipe.
        train_ex, val_ex: tokenised training and validation examples.
        collate: the batch collator.
        device: where to train.
        seed: seeds every RNG before the model is loaded.
        within: a context (e.g. an ablation) entered around training, given the model.

    Returns:
        The training result and the model's number of parameters.
    """
    from lmlab.models.hf import load_causal_lm
    from lmlab.runtime import seed_everything
    from lmlab.train import train
    from lmlab.train.checkpoint import checkpoint_step

    first, *rest = tag.items()
    seed_everything(seed)
    model, _ = load_causal_lm(model_ref, device=device)
    ckpt = run_dir.checkpoints_dir.joinpath(str(first[1]), *(f"{k}-{v}" for k, v in rest))
    run_dir.rewind_metrics(checkpoint_step(ckpt), **tag)  # a resumed run
    with within(model) if within is not None else nullcontext():
        res = train(model, train_ex, collate=collate, cfg=tcfg, eval_examples=val_ex,
                    device=device, progress=True, log=run_dir.metrics_sink(**tag),
                    checkpoint_dir=ckpt, resume=True)
    return res, sum(p.numel() for p in model.parameters())


def warm_up(model_ref: str, examples: list[list[int]], collate: Any, batch_size: int,
            device: Any) -> None:
    """On a GPU, one untimed forward and backward pass before the first timed run, so that the
    first optimiser's time does not include CUDA's start (its context, cuBLAS handles, kernel
    loading); nothing on other devices. The global random state is reseeded by each run."""
    if getattr(device, "type", device) != "cuda" or not examples:
        return
    import torch

    from lmlab.models.hf import load_causal_lm
    from lmlab.train.core import batch_to_device
    from lmlab.train.lm import loss_sum

    model, _ = load_causal_lm(model_ref, device=device)
    batch = batch_to_device(collate(examples[:batch_size]), device)
    loss_sum(model, batch).backward()
    torch.cuda.synchronize(device)


def drop_checkpoints(run_dir: RunDir, keep: bool) -> None:
    """Delete the training checkpoints of a finished run unless ``keep`` (they are only
    there to resume an interrupted run, and weigh several hundred MB each)."""
    if not keep:
        shutil.rmtree(run_dir.checkpoints_dir, ignore_errors=True)
        run_dir.checkpoints_dir.mkdir(exist_ok=True)


def run(cfg: Config, run_dir: RunDir) -> Result:
    """Train one fresh copy of the model per optimiser and seed; compare losses, perplexity,
    loss noise and time (means and spreads over seeds)."""
    from lmlab.data import CausalLMCollator
    from lmlab.models.hf import load_causal_lm
    from lmlab.runtime import resolve_device
    from lmlab.train.noise import loss_noise

    device = resolve_device(cfg.device)
    _, tokenizer = load_causal_lm(cfg.model)
    train_ex, val_ex, source = load_lines_data(cfg.data, tokenizer)
    run_dir.update_meta({"model": cfg.model, "data_source": source})
    collate = CausalLMCollator(pad_token_id=int(tokenizer.pad_token_id))
    histories, evals, runs = [], [], []
    summary: dict[str, Any] = {"model": cfg.model, "data_source": source,
                               "train_tokens": sum(map(len, train_ex)),
                               "val_tokens": sum(map(len, val_ex)), "seeds": cfg.seeds,
                               "noise_window": cfg.noise_window}
    warm_up(cfg.model, train_ex, collate, cfg.train.batch_size, device)
    for name in cfg.optimizers:  # a torch.optim name (validated): a safe folder name
        for seed in seed_values(cfg.seed, cfg.seeds):
            tcfg = dataclasses.replace(
                cfg.train, optimizer=name, seed=seed,
                weight_decay=cfg.train.weight_decay if name.lower() == "adamw" else 0.0)
            tag = {"optimizer": name, "seed": seed}
            res, n_params = train_fresh(cfg.model, run_dir, tag, tcfg, train_ex, val_ex,
                                        collate=collate, device=device, seed=seed)
            histories += [{**r, **tag} for r in res.history]
            evals += [{**e, **tag} for e in res.evals]
            runs.append({**tag, "final_train_loss": res.history[-1]["loss"],
                         "val_perplexity": res.evals[-1]["perplexity"],
                         "loss_noise": loss_noise([r["loss"] for r in res.history],
                                                  cfg.noise_window),
                         "seconds": round(res.seconds, 2), "parameters": n_params})
    drop_checkpoints(run_dir, cfg.keep_checkpoints)
    per_seed = pd.DataFrame(runs)
    table = over_seeds(per_seed, "optimizer", MEASURED)
    table["parameters"] = per_seed.groupby("optimizer", sort=False)["parameters"].first().values
    for row in table.to_dict("records"):
        summary[row["optimizer"]] = {k: _plain(row[k]) for k in row
                                     if k not in ("optimizer", "seeds")}
    run_dir.save_table("optimizers.csv", table)
    run_dir.save_table("optimizer_seeds.csv", per_seed)
    return Result(cfg, pd.DataFrame(histories), pd.DataFrame(evals), table, summary, per_seed)


def _plain(value: Any) -> Any:
    """A table cell as a JSON value: a plain int or float, NaN as None."""
    import numbers

    if pd.isna(value):
        return None
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def plot(result: Result) -> dict[str, Figure]:
    """Every figure of a finished comparison, from the ``Result`` alone: training loss and
    validation perplexity (mean over seeds, min–max band), and the loss noise."""
    from lmlab.plotting import captioned
    from lmlab.plotting.seeds import plot_band, plot_loss_noise

    cfg = result.config
    history, evals = seeded(result.history, cfg), seeded(result.evals, cfg)
    over = over_seeds_text(cfg)
    ax = plot_band(history, x="step", y="loss", by="optimizer")
    ax.set(xlabel="iteration", ylabel="training loss (mean token loss)",
           title="Training loss per iteration")
    figures = {"train_loss": captioned(ax, "Training loss per iteration." + over)}
    ax = plot_band(evals.assign(epoch=evals["epoch"] + 1), x="epoch", y="perplexity",
                   by="optimizer", marker="o")
    ax.set(xlabel="epoch", ylabel="validation perplexity", yscale="log",
           title="Validation perplexity per epoch (padding excluded)")
    figures["val_perplexity"] = captioned(ax, "Validation perplexity after each epoch." + over)
    if len(result.runs):
        figures["loss_noise"] = captioned(
            plot_loss_noise(rolling_noise(history, cfg.noise_window), result.runs,
                            by="optimizer", window=cfg.noise_window),
            f"Loss noise: the sample standard deviation of the last {cfg.noise_window} "
            "step-to-step changes of the training loss (fewer near the start). Left: along "
            "training" + (", mean over seeds with the min–max band" if cfg.seeds > 1 else "")
            + "; right: at the last step, each seed a dot"
            + (", the bar the mean ± one standard deviation over seeds." if cfg.seeds > 1
               else "."))
    return figures


def report(result: Result, figures: dict[str, Figure]) -> Report:
    """The report of a finished comparison."""
    cfg, s = result.config, result.summary
    rep = Report(f"Optimisers compared — {cfg.model}")
    rep.add_text(
        f"**{cfg.model}** fine-tuned on {s['train_tokens']} tokens of "
        f"{s['data_source']} ({s['val_tokens']} validation tokens), "
        f"{cfg.train.epochs} epochs, batch {cfg.train.batch_size}, lr {cfg.train.lr} "
        f"(constant: {cfg.train.schedule == 'constant'}), gradient clipping "
        f"{cfg.train.max_grad_norm}; the same seed, data and order for every optimiser "
        "(SGD with momentum 0.9 and no weight decay; AdamW with weight decay "
        f"{cfg.train.weight_decay})." + over_seeds_text(cfg, band=False))
    if len(result.runs):
        rep.add_text(noise_text(result))
    rep.add_table(shown_table(result.table),
                  caption="Final training loss, validation perplexity, loss noise, wall time"
                  + (" (mean ± standard deviation over seeds)" if cfg.seeds > 1 else ""))
    if cfg.seeds > 1 and len(result.runs):
        rep.add_table(result.runs, caption="Each run: optimiser and seed")
    rep.add_figures(figures, names=["train_loss", "val_perplexity", "loss_noise"])
    return rep
