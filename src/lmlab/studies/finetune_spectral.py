"""Study `finetune-spectral`: fine-tune a causal LM and watch its layer spectra.

After the homework "Spectral Analysis of Fine-tuned Language Models": fine-tune a pretrained
causal LM on IR-Triplets (inductive-reasoning triplets) and measure every layer's power-law
exponent α (Martin & Mahoney, JMLR 2021; weightwatcher's estimator) before, during and after
training, with the test loss and perplexity at the same steps. Claim under test: fine-tuning
moves α, and layers in 2 ≤ α ≤ 6 are "healthy" — a heuristic whose limits the report states.
Any text of the user's trains as well: ``data.path`` takes IR-Triplets-style JSON records, JSON
Lines (with ``data.template``) or plain text (``data.format``).

Commands::

    lmlab run finetune-spectral --preset quick     # offline: smollm2-135m, a few minutes on CPU
    lmlab run finetune-spectral --preset paper     # the homework: distilgpt2, 500 samples
    lmlab run finetune-spectral --set data.path=ir_triplets.json --set train.epochs=2
    lmlab run finetune-spectral --preset quick --set data.path=notes.txt --set data.format=lines
    lmlab run finetune-spectral --preset quick --set data.path=qa.jsonl \
        --set data.template='Q: {question} A: {answer}'

Under ``torchrun --nproc_per_node=N`` the same command trains data-parallel.

>>> cfg = Config.paper()
>>> (cfg.model, cfg.data.n_samples, cfg.data.max_length, cfg.train.batch_size)
('distilgpt2', 500, 256, 8)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from lmlab._files import file_kind, given_path
from lmlab.config import ranged, seed_field
from lmlab.data.ir_triplets import IR_TRIPLETS_URL
from lmlab.errors import LmlabError
from lmlab.runs import Report, RunDir
from lmlab.studies._finetune_answers import (
    answer_sentences,
    homework_answers,
    mean_train_loss,
    trainable_params,
)
from lmlab.studies._finetune_data import texts as _texts
from lmlab.studies._finetune_tracking import TestLossTracker, alpha_and_test_loss
from lmlab.studies.pattern import Summary, SummaryKey
from lmlab.train.callbacks import Timed
from lmlab.train.loop import TrainConfig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Read by the registry without importing this module.
STUDY = {"name": "finetune-spectral", "order": 2,
         "description": ("Fine-tune a causal LM; α per layer before, during and after, with "
                         "perplexity"),
         "source": "spectral fine-tuning homework; IR-Triplets (InductiveSLM)"}

__all__ = ["Config", "DataConfig", "SpectralConfig", "Result", "SUMMARY", "check",
           "delta_alpha", "interpret", "matrix_kind", "plot", "report", "run"]

# ``lmlab run ... --resume`` continues an interrupted run: the training loop checkpoints every
# epoch (and every ``train.checkpoint_every`` steps).
RESUMES = True

#: The keys of ``summary.json``, their types and meaning.
SUMMARY = Summary(
    SummaryKey("model", str, "the model reference fine-tuned"),
    SummaryKey("n_layers", int, "layers with a power-law fit before and after"),
    SummaryKey("mean_alpha_pre", float, "mean α before fine-tuning", headline=True),
    SummaryKey("mean_alpha_post", float, "mean α after fine-tuning", headline=True),
    SummaryKey("good_layers_pre", int, "layers with 2 ≤ α ≤ 6 before"),
    SummaryKey("good_layers_post", int, "layers with 2 ≤ α ≤ 6 after"),
    SummaryKey("test_loss", float,
               "mean token loss on the test split after fine-tuning (padding excluded)",
               headline=True),
    SummaryKey("perplexity", float, "exp(test_loss)", headline=True),
    SummaryKey("train_seconds", float, "wall time of the optimisation steps"),
    SummaryKey("test_loss_pre", float, "test loss before fine-tuning"),
    SummaryKey("perplexity_pre", float, "perplexity before fine-tuning"),
    SummaryKey("data_source", str, "the text the model was trained on"),
    SummaryKey("n_train", int, "training examples"),
    SummaryKey("n_test", int, "test examples"),
    SummaryKey("steps", int, "optimisation steps"),
    SummaryKey("tokens_per_second", float, "training tokens per second"),
    SummaryKey("tracking_seconds", float, "time spent in spectral tracking during training"),
    SummaryKey("params", int, "trainable parameters of the model fine-tuned (tied ones once)"),
    SummaryKey("train_loss_mean", float,
               "mean of the per-step training losses (HF Trainer's training_loss)"),
    SummaryKey("alpha_mean_in_2_6_before", bool, "2 ≤ mean α ≤ 6 before fine-tuning (Q1b)"),
    SummaryKey("alpha_mean_in_2_6_after", bool, "2 ≤ mean α ≤ 6 after fine-tuning (Q1b)"),
    SummaryKey("top_delta_alpha_layers", list, "the 3 layers of largest |Δα|, largest first"),
    SummaryKey("top_delta_alpha", list, "their signed Δα = α after − α before"),
    SummaryKey("alpha_ppl_same_direction", bool,
               "mean α and perplexity both rose or both fell (null: one did not move)"),
)


@dataclass(frozen=True)
class DataConfig:
    """Where the text comes from and how it is split.

    Attributes:
        source: ``ir-triplets`` (the file in ``path``, or the cached download of ``url``),
            ``stdlib-docstrings`` (real offline English prose), or ``auto``: ``path`` if given,
            else a cached IR-Triplets download, else the standard-library docstrings.
        path: a local file: IR-Triplets or other JSON records, JSON Lines, or plain text
            (see ``format``).
        format: how ``path`` is read: ``json`` (a list of records), ``jsonl`` (one object per
            line), ``lines`` (one document per line), ``paragraphs`` (documents separated by
            blank lines), or ``auto``: by the extension (.json, .jsonl), else by the content
            (see :mod:`lmlab.data.user_text`).
        url: where IR-Triplets is downloaded from (once, then cached). The default is pinned
            to one commit and checked against its known SHA-256; another URL is trusted on
            first use, and the report says its data was not checked.
        template: how a JSON or JSON Lines record becomes text (fields in braces).
        n_samples: records drawn with ``random.seed(seed); random.sample(...)`` (none: all).
        test_fraction: the first share of the sample is the test split.
        max_length: tokens per example (truncated).
        seed: the sampling seed.
    """

    source: Literal["auto", "ir-triplets", "stdlib-docstrings"] = "ir-triplets"
    path: str | None = None
    format: Literal["auto", "json", "jsonl", "lines", "paragraphs"] = "auto"
    url: str = IR_TRIPLETS_URL
    template: str = "Context: {Training Observations}\n\nQuestion: {Question}\n\nAnswer: {Answer}"
    n_samples: int | None = ranged(500, 2, 10**7, why="the records are held in memory")
    test_fraction: float = ranged(0.2, 0, 1, open_lo=True, open_hi=True)
    max_length: int = ranged(256, 2, 8192, why="beyond the context of the models")
    seed: int = seed_field(42)


@dataclass(frozen=True)
class SpectralConfig:
    """Spectral tracking during training.

    Attributes:
        track_every: analyse every this many steps (and before and after training).
        precision: ``float64`` (weightwatcher parity) or ``float32`` (cheaper tracking).
    """

    track_every: int = ranged(10, 1)
    precision: Literal["float64", "float32"] = "float64"


@dataclass(frozen=True)
class Config:
    """The study's configuration (``--set model=...``, ``--set train.lr=...``).

    Attributes:
        model: the causal LM to fine-tune: an offline name (``smollm2-135m``), a model
            directory, or a Hugging Face hub id when the hub is reachable.
        data: the records and their split.
        train: the fine-tuning recipe.
        spectral: how α is measured before, during and after.
        device: ``auto`` (a GPU when there is one), ``cpu`` or ``cuda``.
        seed: seeds the model's new weights, the data order and dropout.
    """

    model: str = "distilgpt2"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    spectral: SpectralConfig = field(default_factory=SpectralConfig)
    device: str = "auto"
    seed: int = seed_field(42)

    @classmethod
    def paper(cls) -> Config:
        """The homework: distilgpt2 on 500 IR-Triplets samples, max_length 256, 1 epoch, batch
        8, warm-up 20, weight decay 0.01, seed 42."""
        return cls()

    @classmethod
    def quick(cls) -> Config:
        """Offline: smollm2-135m on 96 examples of real text, a few minutes on 2 CPU cores."""
        return cls(
            model="smollm2-135m",
            data=DataConfig(source="auto", n_samples=120, max_length=128),
            train=TrainConfig(warmup_steps=2),
            spectral=SpectralConfig(track_every=6),
        )

    def validate(self) -> None:
        """One batch of ``data.max_length`` tokens must fit in memory."""
        self.train.check_batch_tokens(self.data.max_length, "data.max_length")


@dataclass(frozen=True)
class Result:
    """Everything the figures and the report need.

    Attributes:
        config: the config that ran.
        pre: one row per layer before fine-tuning (weightwatcher's columns).
        post: the same after fine-tuning.
        tracked: α per layer at every tracked step (a ``SpectralTracker`` table).
        trajectory: the same, one row per step, with the mean over layers
            (:func:`lmlab.spectral.tracker.alpha_by_step`).
        delta: Δα per layer fitted before and after, in depth order (:func:`delta_alpha`).
        stages: one row per stage (pre-trained, fine-tuned): mean α, good layers, test loss,
            perplexity.
        history: the training log, one row per step.
        evals: the test evaluations, one row per epoch.
        summary: the numbers of ``summary.json`` (see ``SUMMARY``).
        tracking: mean α, test loss and perplexity at every tracked step
            (:func:`~lmlab.studies._finetune_tracking.alpha_and_test_loss`); empty for runs
            saved before it was measured.
    """

    config: Config
    pre: pd.DataFrame
    post: pd.DataFrame
    tracked: pd.DataFrame
    trajectory: pd.DataFrame
    delta: pd.DataFrame
    stages: pd.DataFrame
    history: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    summary: dict[str, Any]
    tracking: pd.DataFrame = field(default_factory=pd.DataFrame)


# ----------------------------------------------------------------------------- data


# ----------------------------------------------------------------------------- run


def check(cfg: Config) -> None:
    """Fail before any work when the model reference or the data file cannot be used."""

    from lmlab.models.hf import check_model

    check_model(cfg.model)
    if cfg.data.path is not None:
        path = given_path(cfg.data.path)
        kind = file_kind(path)
        if kind == "missing":
            raise LmlabError(f"no such data file: {path}; check data.path")
        if kind is not None:
            raise LmlabError(f"the data file {path} is {kind}; give a text, JSON or JSON Lines "
                             "file in data.path")
    elif cfg.data.format != "auto":
        raise LmlabError(f"data.format={cfg.data.format} describes the file in data.path, and "
                         "none is given; add --set data.path=FILE")
    _texts(cfg.data)  # a file too small to split fails here, before any run directory


def _stage_row(stage: str, df: pd.DataFrame, loss: float, ppl: float) -> dict[str, Any]:
    from lmlab.spectral import summarize

    s = summarize(df)
    return {"stage": stage, "mean_alpha": s["alpha_mean"], "good_layers": s["n_alpha_2_6"],
            "alpha_lt_2": s["n_alpha_lt_2"], "alpha_gt_6": s["n_alpha_gt_6"],
            "test_loss": loss, "perplexity": ppl}


def run(cfg: Config, run_dir: RunDir) -> Result:
    """Fine-tune ``cfg.model`` with α tracking; write the per-layer and summary tables.

    Under torchrun every process analyses the model before and after training (only the main
    one tracks α during training and writes to ``run_dir``), so each returns a whole Result.
    """
    from lmlab.data import CausalLMCollator, tokenize_texts
    from lmlab.models.hf import load_causal_lm
    from lmlab.runtime import resolve_device
    from lmlab.spectral import SpectralTracker
    from lmlab.spectral.tracker import alpha_by_step
    from lmlab.train import evaluate_lm, setup, train
    from lmlab.train.checkpoint import checkpoint_step

    device = resolve_device(cfg.device)
    ctx = setup(device)  # gloo for a CPU run even where there are GPUs
    train_texts, test_texts, source = _texts(cfg.data)
    model, tokenizer = load_causal_lm(cfg.model, device=device)
    if ctx.is_main:
        run_dir.update_meta({"model": cfg.model, "data_source": source})
    train_ex = tokenize_texts(train_texts, tokenizer, cfg.data.max_length)
    test_ex = tokenize_texts(test_texts, tokenizer, cfg.data.max_length)
    collate = CausalLMCollator(pad_token_id=int(tokenizer.pad_token_id))
    pre_eval = evaluate_lm(model, test_ex, collate, batch_size=cfg.train.batch_size,
                           device=device, ctx=ctx)
    tracker = SpectralTracker(every=cfg.spectral.track_every, at_begin=False, at_end=False,
                              sink=run_dir if ctx.is_main else None,
                              precision=cfg.spectral.precision)
    # the test loss at every tracked step; the loop itself evaluates at each epoch's end
    per_epoch = math.ceil(len(train_ex) / cfg.train.batch_size)
    total = cfg.train.max_steps or cfg.train.epochs * per_epoch
    tests = TestLossTracker(
        tracker.wants,
        lambda m: evaluate_lm(m, test_ex, collate, batch_size=cfg.train.batch_size,
                              device=device),  # callbacks run on the main process alone
        skip=lambda step: step % per_epoch == 0 or step == total,
        sink=run_dir.log_metrics if ctx.is_main else None)
    if ctx.is_main:  # a resumed run: keep what was logged up to its checkpoint
        run_dir.rewind_metrics(checkpoint_step(run_dir.checkpoints_dir))
        logged = run_dir.read_metrics()
        tracker.restore(logged)
        tests.restore(logged)
    pre = tracker.record(0, model)
    tests.record(0, pre_eval)
    timed = Timed(tracker)
    result = train(model, train_ex, collate=collate, cfg=cfg.train, eval_examples=test_ex,
                   callbacks=[timed, tests], checkpoint_dir=run_dir.checkpoints_dir,
                   resume=True, device=device, log=run_dir.log_metrics if ctx.is_main else None,
                   ctx=ctx, progress=True)
    post = tracker.record(result.steps, model)
    final = result.evals[-1]
    summary = _summary(cfg, pre, post, pre_eval, final, result, source, len(train_ex),
                       len(test_ex), timed.seconds)
    stages = pd.DataFrame([
        _stage_row("pre-trained", pre, pre_eval.loss, pre_eval.perplexity),
        _stage_row("fine-tuned", post, summary["test_loss"], summary["perplexity"]),
    ])
    run_dir.save_table("spectra_pre.csv", pre)
    run_dir.save_table("spectra_post.csv", post)
    run_dir.save_table("summary_table.csv", stages)
    tracked = tracker.frame()
    trajectory = alpha_by_step(tracked)
    tracking = alpha_and_test_loss(trajectory, [*tests.rows, *result.evals])
    if ctx.is_main:
        run_dir.save_table("alpha_test_loss.csv", tracking)
    delta = delta_alpha(pre, post)
    summary.update(params=trainable_params(model), train_loss_mean=mean_train_loss(result.history),
                   **homework_answers(stages, delta))
    return Result(cfg, pre, post, tracked, trajectory, delta, stages,
                  result.history, result.evals, summary, tracking)


def _summary(cfg: Config, pre: pd.DataFrame, post: pd.DataFrame, pre_eval: Any,
             final: dict[str, Any], result: Any, source: str, n_train: int, n_test: int,
             tracking_seconds: float) -> dict[str, Any]:
    from lmlab.spectral import summarize

    s_pre, s_post = summarize(pre), summarize(post)
    return {
        "model": cfg.model,
        "n_layers": int(min(s_pre["n_layers"], s_post["n_layers"])),
        "mean_alpha_pre": s_pre["alpha_mean"], "mean_alpha_post": s_post["alpha_mean"],
        "good_layers_pre": s_pre["n_alpha_2_6"], "good_layers_post": s_post["n_alpha_2_6"],
        "test_loss": final["loss"], "perplexity": final["perplexity"],
        "train_seconds": round(result.seconds, 2),
        "test_loss_pre": pre_eval.loss, "perplexity_pre": pre_eval.perplexity,
        "data_source": source, "n_train": n_train, "n_test": n_test, "steps": result.steps,
        "tokens_per_second": round(result.tokens / max(result.seconds, 1e-9), 1),
        "tracking_seconds": round(tracking_seconds, 2),
    }


def matrix_kind(longname: str) -> str:
    """The matrix type of a layer from its module path (its last component).

    >>> matrix_kind("model.layers.3.self_attn.q_proj"), matrix_kind("transformer.wte")
    ('q_proj', 'wte')
    """
    return str(longname).split(".")[-1]


def delta_alpha(pre: pd.DataFrame, post: pd.DataFrame) -> pd.DataFrame:
    """Δα = α(after) − α(before) of every layer fitted both times, in depth order.

    Returns:
        One row per layer: ``layer_id``, ``longname``, ``alpha_pre``, ``alpha_post``,
        ``delta`` and ``kind`` (:func:`matrix_kind`).

    >>> pre = pd.DataFrame({"layer_id": [2, 1], "longname": ["a.v", "a.q"],
    ...                     "alpha": [5.0, 3.0], "status": ["success"] * 2})
    >>> d = delta_alpha(pre, pre.assign(alpha=[5.5, 2.5]))
    >>> d[["longname", "delta", "kind"]].values.tolist()
    [['a.q', -0.5, 'q'], ['a.v', 0.5, 'v']]
    """
    cols = ["layer_id", "longname", "alpha"]
    a = pre[pre["status"] == "success"][cols]
    b = post[post["status"] == "success"][cols]
    merged = a.merge(b, on=["layer_id", "longname"], suffixes=("_pre", "_post"))
    merged = merged.sort_values("layer_id").reset_index(drop=True)
    merged["delta"] = merged["alpha_post"] - merged["alpha_pre"]
    merged["kind"] = merged["longname"].map(matrix_kind)
    return merged


# ----------------------------------------------------------------------------- report


def interpret(delta: pd.DataFrame, threshold: float = 0.1) -> str:
    """A short reading of how α moved: which layers, which way, and what the band means.

    Args:
        delta: the per-layer table of :func:`delta_alpha`.
        threshold: a layer "moved" when ``|Δα|`` exceeds this.

    >>> pre = pd.DataFrame({"layer_id": [1, 2], "longname": ["a.q", "a.v"],
    ...                     "alpha": [3.0, 5.0], "status": ["success"] * 2})
    >>> post = pre.assign(alpha=[2.5, 5.02])
    >>> "1 of 2 layers moved by more than 0.1" in interpret(delta_alpha(pre, post))
    True
    """
    m = delta
    if m.empty:
        return "No layer had a power-law fit both before and after training."
    moved = m[m["delta"].abs() > threshold]
    lines = [f"Mean α went from {m['alpha_pre'].mean():.3f} to {m['alpha_post'].mean():.3f} "
             f"(Δ = {m['delta'].mean():+.3f}); {len(moved)} of {len(m)} layers moved by more "
             f"than {threshold}."]
    if (m["delta"] != 0).any():
        down = m.nsmallest(3, "delta")
        up = m.nlargest(3, "delta")
        fell = [f"{r.longname} ({r.delta:+.3f})" for r in down.itertuples() if r.delta < 0]
        rose = [f"{r.longname} ({r.delta:+.3f})" for r in up.itertuples() if r.delta > 0]
        if fell:
            lines.append("Largest decreases (heavier tails, more correlated structure): "
                         + ", ".join(fell) + ".")
        if rose:
            lines.append("Largest increases (lighter tails, closer to random): "
                         + ", ".join(rose) + ".")
        by_kind = m.groupby("kind")["delta"].mean().sort_values()
        lines.append("Mean Δα by matrix type: " + ", ".join(
            f"{k} {v:+.3f}" for k, v in by_kind.items()) + ".")
    lines.append(
        "The 2 ≤ α ≤ 6 band is an empirical heuristic from Heavy-Tailed Self-Regularization: "
        "well-trained layers of many models fall in it, α < 2 is read as over-fitting and α > 6 "
        "as a layer that has learnt little. It is not a test: α of small matrices and of short "
        "tails is noisy (see σ in the tables), quantised weights shift it, and a few hundred "
        "fine-tuning steps at a small learning rate usually move it only slightly.")
    return "\n\n".join(lines)


def plot(result: Result) -> dict[str, Figure]:
    """Every figure of a finished fine-tune, from the ``Result`` alone."""
    from lmlab.plotting import captioned, plot_alpha_over_training
    from lmlab.plotting.finetune import (
        plot_alpha_and_test_loss,
        plot_delta_alpha,
        plot_loss_curves,
        plot_mean_alpha_bars,
    )

    s = result.summary
    means = {"pre-trained": s["mean_alpha_pre"], "fine-tuned": s["mean_alpha_post"]}
    return {
        "mean_alpha": captioned(
            plot_mean_alpha_bars(means),
            "Mean α before and after fine-tuning; dashed lines at α = 2 and 6."),
        "delta_alpha": captioned(plot_delta_alpha(result.delta),
                                 "Δα per layer in depth order, coloured by matrix type."),
        "alpha_over_training": captioned(
            plot_alpha_over_training(result.trajectory),
            "α per layer during training (thin) and their mean (thick)."),
        "loss": captioned(plot_loss_curves(result.history, result.evals),
                          "Training loss per step and test loss after each epoch."),
        "alpha_test_loss": captioned(
            plot_alpha_and_test_loss(result.tracking),
            "Mean α over layers (left axis) and held-out test loss (right axis) at every "
            "step where α was measured; each axis spans its own range."),
    }


def report(result: Result, figures: dict[str, Figure]) -> Report:
    """The report of a finished fine-tune."""
    cfg, s = result.config, result.summary
    rep = Report(f"Fine-tuning and layer spectra — {cfg.model}")
    rep.add_text(
        f"**{cfg.model}** fine-tuned on {s['n_train']} examples of {s['data_source']} "
        f"({s['n_test']} held out), {s['steps']} steps of batch {cfg.train.batch_size}; "
        f"α per layer by weightwatcher's estimator before, every {cfg.spectral.track_every} "
        "steps, and after training.")
    rep.add_table(result.stages,
                  caption="Summary (test loss = mean token loss, padding excluded)")
    rep.add_key_values({k.key: s[k.key] for k in SUMMARY if k.key in s}, caption="summary.json")
    rep.add_figures(figures, names=["mean_alpha", "delta_alpha", "alpha_over_training",
                                    "alpha_test_loss", "loss"])
    if not result.tracking.empty:
        extra = result.tracking.get("eval_seconds", pd.Series(dtype=float)).dropna()
        rep.add_table(result.tracking, caption=(
            "Mean α and test loss at every tracked step; eval_seconds: the evaluations made "
            f"only for this table ({len(extra)}, {extra.sum():.1f} s in all; the others are "
            "the run's own, before training and at epoch ends)"))
    rep.add_heading("The homework's questions")
    for sentence in answer_sentences(result.stages, result.delta, result.history,
                                     params=s.get("params")):
        rep.add_text(sentence)
    rep.add_heading("Interpretation")
    rep.add_text(interpret(result.delta))
    return rep
