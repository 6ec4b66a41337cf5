"""lmlab's one training loop for language models: AdamW with warmup, callbacks, checkpoints,
resume, NaN guard, and data parallelism under torchrun.

The step and the evaluation are this module's; checkpoints, random states, resume, the NaN
guard and the progress bar are the training core's (:mod:`lmlab.train.core`).

The recipe follows Hugging Face Trainer's defaults where a study does not say otherwise: AdamW
(β = 0.9/0.999, ε = 1e-8) with weight decay on every parameter except biases and norm weights, a
linear warm-up then linear decay of the learning rate to 0, gradient clipping at norm 1.0, a
seeded shuffle per epoch. The loss of a step is the mean next-token loss over the *global* batch
(padding excluded), so a run on N processes gives the same loss curve as one process with the
same global batch (exactly, when dropout is off).

>>> import torch
>>> from lmlab.train.loop import TrainConfig, train
>>> class Tiny(torch.nn.Module):
...     def __init__(self):
...         super().__init__(); self.emb = torch.nn.Embedding(5, 5)
...     def forward(self, input_ids, attention_mask=None):
...         return type("Out", (), {"logits": self.emb(input_ids)})()
>>> def collate(b):
...     ids = torch.tensor(b); return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
...                                    "labels": ids}
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> result = train(Tiny(), [[1, 2, 3, 4]] * 8, collate=collate,
...                cfg=TrainConfig(batch_size=4, lr=0.5, warmup_steps=0, epochs=3))
>>> result.steps, result.history[-1]["loss"] < result.history[0]["loss"]
(6, True)
"""

from __future__ import annotations

import functools
import inspect
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from lmlab.config import check_ranges, ranged, seed_field
from lmlab.errors import LmlabError, first_line
from lmlab.train.callbacks import Callback, TrainState
from lmlab.train.checkpoint import latest_checkpoint, save_checkpoint
from lmlab.train.core import (
    TrainParts,
    autocast,
    batch_to_device,
    check_finite,
    check_finite_norm,
    check_finite_weights,
    deterministic,
    matmul_precision,
    progress_bar,
    resume_from,
)
from lmlab.train.distributed import DistContext, all_reduce_grads, all_reduce_sum
from lmlab.train.lm import evaluate_lm, loss_sum, scored_tokens

__all__ = ["READ_EVERY", "TrainConfig", "TrainResult", "train", "decay_groups",
           "build_optimizer", "supported_optimizers"]

Collate = Callable[[Sequence[Sequence[int]]], dict[str, torch.Tensor]]

MAX_BATCH_TOKENS = 2**14
"""The most tokens one batch may hold (8 × the paper presets' 8 × 256)."""


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation recipe.

    Attributes:
        epochs: passes over the training data.
        batch_size: the global batch (split across data-parallel processes).
        lr: peak learning rate (Hugging Face Trainer's default 5e-5).
        weight_decay: AdamW decay, on all parameters but biases and norm weights.
        warmup_steps: linear warm-up steps, then linear decay to 0.
        max_grad_norm: gradient clipping norm (none: no clipping).
        max_steps: stop after this many steps (none: all epochs; 0 is refused, not read as
            none).
        checkpoint_every: also checkpoint every this many steps (none: at epoch ends only).
        seed: seeds the data order (and, by the caller, the model).
        optimizer: ``adamw`` (default), ``sgd``, or any ``torch.optim`` class by name
            (``Adam``, ``RMSprop``, ...), built with ``lr`` and the decay groups; one whose step
            needs a closure (``LBFGS``) or sparse gradients (``SparseAdam``) is refused.
        momentum: SGD's momentum (used only by ``sgd``).
        schedule: ``linear`` (warm-up, then linear decay to 0) or ``constant`` (warm-up, then
            the peak rate).
        deterministic: torch's deterministic algorithms during training (on a GPU, a resumed
            run then continues bitwise as the uninterrupted run; it costs some GPU speed, and
            nothing measurable on the CPU); false: torch's fastest kernels.
        precision: ``fp32`` (default); ``bf16``: the training forward passes under bfloat16
            autocast (weights, gradients, optimiser state and the loss stay float32;
            evaluations run in float32, so perplexities compare across precisions);
            ``tf32``: float32 matrix products on a GPU's TF32 tensor cores (no change on the
            CPU). See :data:`lmlab.train.core.PRECISIONS`.
    """

    epochs: int = ranged(1, 1, 10_000, why="every epoch's steps are logged and kept in memory")
    batch_size: int = ranged(8, 1, 1024, why="a batch's activations are held in memory at once")
    lr: float = ranged(5e-5, 0, open_lo=True)
    weight_decay: float = ranged(0.01, 0)
    warmup_steps: int = ranged(20, 0)
    max_grad_norm: float | None = ranged(1.0, 0, open_lo=True)
    max_steps: int | None = ranged(None, 1, 10**7, why="every step's row is kept in memory")
    checkpoint_every: int | None = ranged(None, 1)
    seed: int = seed_field(42)
    optimizer: str = "adamw"
    momentum: float = ranged(0.9, 0, 1, open_hi=True)
    schedule: Literal["linear", "constant"] = "linear"
    deterministic: bool = True
    precision: Literal["fp32", "bf16", "tf32"] = "fp32"

    def validate(self) -> None:
        """Every value in its declared range; an optimiser the loop can drive."""
        check_ranges(self, "train.")
        _optimizer_class(self.optimizer)

    def check_batch_tokens(self, seq_len: int, seq_key: str) -> None:
        """Refuse a batch whose tokens (``batch_size × seq_len``) would not fit in memory: the
        logits alone are batch × length × vocabulary floats (13 GB for 2**16 tokens of
        GPT-2's vocabulary).

        Args:
            seq_len: the longest example, in tokens.
            seq_key: the config key that sets it, named in the error.
        """
        tokens = self.batch_size * seq_len
        if tokens > MAX_BATCH_TOKENS:
            raise LmlabError(f"train.batch_size × {seq_key} = {self.batch_size} × {seq_len} = "
                             f"{tokens} tokens per batch; at most {MAX_BATCH_TOKENS} fit in "
                             f"memory (the logits take tokens × vocabulary floats); lower "
                             f"train.batch_size or {seq_key}")


@dataclass
class TrainResult:
    """What training produced: per-step history, evaluations, steps, tokens and time."""

    history: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: no decay for biases and normalisation weights.

    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
    >>> groups = decay_groups(net, 0.1)
    >>> [len(g["params"]) for g in groups], [g["weight_decay"] for g in groups]
    ([1, 3], [0.1, 0.0])
    """
    no_decay_ids = set()
    for module in model.modules():
        is_norm = "norm" in type(module).__name__.lower()
        for name, p in module.named_parameters(recurse=False):
            if is_norm or name.endswith("bias"):
                no_decay_ids.add(id(p))
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if id(p) not in no_decay_ids]
    rest = [p for p in params if id(p) in no_decay_ids]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": rest, "weight_decay": 0.0}]


def _schedule(step: int, warmup: int, total: int, kind: str = "linear") -> float:
    if warmup > 0 and step < warmup:
        return step / warmup
    if kind == "constant":
        return 1.0
    return max(0.0, (total - step) / max(1, total - warmup))


_ALIASES = {"adamw": "AdamW", "sgd": "SGD", "adam": "Adam"}


def _optimizer_classes() -> dict[str, type]:
    return {n: c for n in dir(torch.optim) if isinstance(c := getattr(torch.optim, n), type)
            and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer}


def _construct(cls: Any, groups: list[dict[str, Any]], lr: float,
               momentum: float) -> torch.optim.Optimizer:
    """``cls`` over ``groups``: AdamW with β 0.9/0.999, ε 1e-8; SGD with ``momentum``."""
    if cls is torch.optim.AdamW:
        return cls(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)  # type: ignore[no-any-return]
    if cls is torch.optim.SGD:
        return cls(groups, lr=lr, momentum=momentum)  # type: ignore[no-any-return]
    return cls(groups, lr=lr)  # type: ignore[no-any-return]


@functools.cache
def _unusable(cls: type) -> str:
    """Why the training loop cannot drive ``cls`` ('' if it can): its step must run without a
    closure on dense gradients of a matrix and a bias, built as :func:`build_optimizer` does.
    The probe draws no random numbers."""
    if cls in (torch.optim.AdamW, torch.optim.SGD, torch.optim.Adam):
        return ""  # the usual ones: no probe (a first optimiser step imports much of torch)
    closure = inspect.signature(cls.step).parameters.get("closure")  # type: ignore[attr-defined]
    if closure is not None and closure.default is inspect.Parameter.empty:
        return "its step needs a closure that re-evaluates the loss"
    weight, bias = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = _construct(cls, [{"params": [weight], "weight_decay": 0.01},
                                   {"params": [bias], "weight_decay": 0.0}], 1e-3, 0.9)
            weight.grad, bias.grad = torch.ones(2, 2), torch.ones(2)
            opt.step()
    except Exception as exc:  # noqa: BLE001 - whatever torch raises, the optimiser is out
        return first_line(exc)
    return ""


def supported_optimizers() -> list[str]:
    """The ``torch.optim`` classes the training loop can drive, by name.

    >>> "AdamW" in supported_optimizers(), "LBFGS" in supported_optimizers()
    (True, False)
    """
    return sorted(n for n, c in _optimizer_classes().items() if not _unusable(c))


def _optimizer_class(name: str) -> Any:
    """``adamw``/``sgd`` or a ``torch.optim`` class name the loop can drive; an unknown or
    unusable name (a closure or sparse gradients needed) is a one-line error."""
    cls = _optimizer_classes().get(_ALIASES.get(name.lower(), name))
    use = f"use adamw, sgd or one of: {', '.join(supported_optimizers())}"
    if cls is None:
        raise LmlabError(f"unknown optimizer '{name}'; {use}")
    problem = _unusable(cls)
    if problem:
        raise LmlabError(f"optimizer '{name}' cannot train here ({problem}); {use}")
    return cls


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg`` over :func:`decay_groups` (AdamW with β 0.9/0.999,
    ε 1e-8; SGD with ``cfg.momentum``)."""
    cls = _optimizer_class(cfg.optimizer)
    return _construct(cls, decay_groups(model, cfg.weight_decay), cfg.lr, cfg.momentum)


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    return torch.randperm(n, generator=g).tolist()


READ_EVERY = 50
"""How many steps a run on a GPU queues before it reads their losses and gradient norms back
(one wait for the device per this many steps instead of three per step)."""


@dataclass
class _Unread:
    """A step whose loss and gradient norm are still on the device."""

    row: dict[str, Any]
    loss: torch.Tensor
    norm: torch.Tensor


@dataclass
class _FineTune:
    """One run of :func:`train`: its step and its evaluation; the core does the rest."""

    model: Any
    examples: Sequence[Sequence[int]]
    collate: Collate
    cfg: TrainConfig
    ctx: DistContext
    parts: TrainParts
    params: list[torch.nn.Parameter]
    steps_per_epoch: int
    total: int
    device: Any = None
    eval_examples: Sequence[Sequence[int]] | None = None
    checkpoint_dir: Path | None = None
    callbacks: Sequence[Callback] = ()
    log: Callable[[dict[str, Any]], None] | None = None
    read_every: int = 1
    result: TrainResult = field(default_factory=TrainResult)
    step: int = 0
    unread: list[_Unread] = field(default_factory=list)
    last_loss: float | None = None

    def resume(self) -> None:
        """Continue from ``checkpoint_dir/last.pt`` when it exists."""
        if self.checkpoint_dir is None:
            return
        saved = resume_from(latest_checkpoint(self.checkpoint_dir), self.parts)
        if saved is not None:
            self.step = int(saved["step"])
            self.result.history, self.result.evals = saved["history"], saved["evals"]
            self.result.tokens, self.result.seconds = int(saved["tokens"]), float(saved["seconds"])

    def train_step(self) -> dict[str, Any]:
        """One optimisation step on this rank's share of the next global batch.

        The step's loss and gradient norm stay on the device until :meth:`read_back` (every
        step on the CPU, under data parallelism or with callbacks; otherwise every
        ``read_every`` steps and before an evaluation or a checkpoint). They are read, and
        checked for NaN/Inf, before the step's update whenever they are read at that step.
        """
        cfg, ctx, optimizer = self.cfg, self.ctx, self.parts.optimizer
        epoch, offset = divmod(self.step, self.steps_per_epoch)
        ids = _epoch_order(len(self.examples), cfg.seed, epoch)[
            offset * cfg.batch_size : (offset + 1) * cfg.batch_size]
        local = [self.examples[i] for i in ids[ctx.rank :: ctx.world_size]]
        t0 = time.perf_counter()
        on_host = self.collate(local) if local else None
        # tokens counted on the host, before the copy: no read from the device
        n_local = scored_tokens(on_host["labels"]) if on_host is not None else 0
        batch = batch_to_device(on_host, self.device) if on_host is not None else None
        (n_global,) = all_reduce_sum([float(n_local)], ctx)
        optimizer.zero_grad(set_to_none=True)
        summed = torch.zeros(())
        if batch is not None:
            with autocast(cfg.precision, self.parts.run_device_type()):
                summed = loss_sum(self.model, batch)
            (summed / max(n_global, 1.0)).backward()
        all_reduce_grads(self.params, ctx)
        if ctx.active:
            (total_loss,) = all_reduce_sum([float(summed.detach())], ctx)
            loss = torch.tensor(total_loss / max(n_global, 1.0), dtype=torch.float64)
        else:
            loss = summed.detach().double() / max(n_global, 1.0)
        if cfg.max_grad_norm is not None:  # the norm before clipping
            norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
        else:
            grads = [p.grad for p in self.params if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        lr = self.parts.scheduler.get_last_lr()[0]
        row = {"kind": "train", "step": self.step + 1, "epoch": epoch, "loss": None, "lr": lr,
               "tokens": int(n_global)}  # the loss is filled in when read back
        self.unread.append(_Unread(row, loss, norm))
        self.result.seconds += time.perf_counter() - t0
        if self._read_now():
            self.read_back()
        t0 = time.perf_counter()
        optimizer.step()
        self.parts.scheduler.step()
        self.step += 1
        self.result.tokens += int(n_global)
        self.result.seconds += time.perf_counter() - t0
        return row

    def _read_now(self) -> bool:
        """Whether the queued steps are read back now: when a row is due (every step on the
        CPU, under data parallelism, or for callbacks) or before an evaluation or checkpoint."""
        done = self.step + 1
        every = self.cfg.checkpoint_every
        return (len(self.unread) >= self.read_every or self.ctx.active or bool(self.callbacks)
                or done % self.steps_per_epoch == 0 or done == self.total
                or bool(every and done % every == 0))

    def read_back(self) -> None:
        """Read the queued steps' losses and gradient norms in one transfer (the wait for the
        device is timed with training), stop at the first non-finite one, and log the rows."""
        if not self.unread:
            return
        t0 = time.perf_counter()
        where = self.unread[0].norm.device  # the loss of a torchrun step is on the host
        values = torch.stack([torch.stack([u.loss.double().to(where), u.norm.double().to(where)])
                              for u in self.unread]).tolist()
        self.result.seconds += time.perf_counter() - t0
        for u, (loss, norm) in zip(self.unread, values, strict=True):
            step = u.row["step"]
            check_finite(loss, step, hint="try a lower train.lr", kept=self._kept())
            check_finite_norm(norm, loss, step, kept=self._kept())
            u.row["loss"] = loss
            self.result.history.append(u.row)
            self.emit(u.row)
            self.last_loss = loss
        self.unread = []

    def after_step(self, row: dict[str, Any]) -> None:
        """Callbacks; at an epoch's end an evaluation; a checkpoint when one is due."""
        if self.callbacks:  # with callbacks every step is read back at once
            self.notify("on_step_end", TrainState(
                step=self.step, epoch=row["epoch"], model=self.model,
                metrics={"train_loss": row["loss"]}))
        end_of_epoch = self.step % self.steps_per_epoch == 0 or self.step == self.total
        if end_of_epoch and self.eval_examples is not None:
            self.evaluate(row["epoch"])
        every = self.cfg.checkpoint_every
        if end_of_epoch or (every and self.step % every == 0):
            self.checkpoint()

    def evaluate(self, epoch: int) -> None:
        """Loss and perplexity on the evaluation examples."""
        assert self.eval_examples is not None
        ev = evaluate_lm(self.model, self.eval_examples, self.collate,
                         batch_size=self.cfg.batch_size, device=self.device, ctx=self.ctx)
        self.model.train()
        row = {"kind": "eval", "step": self.step, "epoch": epoch, "loss": ev.loss,
               "perplexity": ev.perplexity, "tokens": ev.tokens}
        self.result.evals.append(row)
        self.emit(row)

    def checkpoint(self) -> None:
        """Save the run's state (main process), unless the weights are no longer finite."""
        if self.checkpoint_dir is None or not self.ctx.is_main:
            return
        check_finite_weights(self.model, self.step, hint="try a lower train.lr",
                             kept=self._kept())
        r = self.result
        save_checkpoint(self.checkpoint_dir, self.parts.state(
            self.step, history=r.history, evals=r.evals, tokens=r.tokens, seconds=r.seconds))

    def _kept(self) -> Path | None:
        return None if self.checkpoint_dir is None else latest_checkpoint(self.checkpoint_dir)

    def emit(self, row: dict[str, Any]) -> None:
        if self.log is not None and self.ctx.is_main:
            self.log(row)

    def notify(self, hook: str, state: TrainState) -> None:
        if self.ctx.is_main:
            for cb in self.callbacks:
                getattr(cb, hook)(state)


def train(
    model: Any,
    train_examples: Sequence[Sequence[int]],
    *,
    collate: Collate,
    cfg: TrainConfig,
    eval_examples: Sequence[Sequence[int]] | None = None,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    device: Any = None,
    log: Callable[[dict[str, Any]], None] | None = None,
    ctx: DistContext | None = None,
    progress: bool = False,
    read_every: int | None = None,
) -> TrainResult:
    """Train a causal LM on tokenised examples; evaluate after each epoch.

    Args:
        model: returns ``.logits`` (B, T, V) from ``input_ids`` and ``attention_mask``.
        train_examples, eval_examples: token-id lists (any lengths; ``collate`` pads).
        collate: turns a list of examples into ``input_ids``/``attention_mask``/``labels``.
        cfg: the recipe.
        callbacks: see :class:`~lmlab.train.Callback` (run on the main process only).
        checkpoint_dir: where ``last.pt`` goes (main process); none = no checkpoints.
        resume: continue from ``checkpoint_dir/last.pt`` when it exists.
        log: receives one dict per step (``kind="train"``) and per evaluation (``"eval"``).
        ctx: the data-parallel context (default: single process).
        progress: show a progress bar.
        read_every: read the steps' losses back from the device (and check them for NaN/Inf)
            every this many steps, and always before an evaluation or a checkpoint (default:
            every step on the CPU, :data:`READ_EVERY` on a GPU). A non-finite loss is still
            named by its step; the run stops at most this many steps later.

    Checkpoints hold CPU tensors and the device type of the run; a resume on another device
    type is refused. Training runs in :func:`~lmlab.train.core.deterministic` mode unless
    ``cfg.deterministic`` is false.

    Raises:
        LmlabError: no training data, an unreadable checkpoint (or one written on another
            device type), or a non-finite loss (the last good checkpoint is kept).
    """
    ctx = ctx or DistContext()
    if len(train_examples) == 0:
        raise LmlabError("no training examples: the dataset is empty after filtering")
    steps_per_epoch = math.ceil(len(train_examples) / cfg.batch_size)
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    params = [p for p in model.parameters() if p.requires_grad]
    parts = _parts(model, cfg, total)
    if read_every is None:
        read_every = 1 if parts.run_device_type() == "cpu" else READ_EVERY
    run = _FineTune(model, train_examples, collate, cfg, ctx, parts, params,
                    steps_per_epoch, total, device, eval_examples,
                    None if checkpoint_dir is None else Path(checkpoint_dir), callbacks, log,
                    max(1, read_every))
    with deterministic(cfg.deterministic), matmul_precision(cfg.precision,
                                                            parts.run_device_type()):
        if resume:
            run.resume()
        if run.step == 0:
            run.notify("on_train_begin", TrainState(step=0, epoch=0, model=model))
        model.train()
        with progress_bar(run.total, initial=run.step, desc="train",
                          enabled=progress and ctx.is_main) as bar:
            while run.step < run.total:
                row = run.train_step()
                bar.update(1)
                if run.last_loss is not None:
                    bar.set_postfix(loss=f"{run.last_loss:.3f}", refresh=False)
                run.after_step(row)
    run.result.steps = run.step
    model.eval()
    run.notify("on_train_end", TrainState(step=run.step,
                                          epoch=(run.step - 1) // run.steps_per_epoch,
                                          model=model))
    return run.result


def _parts(model: Any, cfg: TrainConfig, total: int) -> TrainParts:
    """The optimiser of ``cfg`` and its warm-up/decay schedule over ``total`` steps."""
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _schedule(s, cfg.warmup_steps, total, cfg.schedule))
    return TrainParts(model, optimizer, scheduler)
