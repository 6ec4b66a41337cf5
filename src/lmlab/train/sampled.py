"""The step loop of small models trained on randomly drawn minibatches (the makemore recipe):
every step draws ``batch_size`` rows with replacement, one SGD or AdamW step, a step-decayed
learning rate, every loss kept, a NaN guard and a progress bar (those two from the training
core, :mod:`lmlab.train.core`).

Two routes share the loop: :func:`train_ensemble` drives a model with a fused ``step(X, Y, lr)``
(:class:`lmlab.models.char_mlp.CharMLPEnsemble`, several members per step), and
:func:`train_module` any ``nn.Module`` by autograd. Minibatches come from ``generator``: the
numbers of one ``torch.randint`` per step, the lecture's stream (drawn a chunk of steps at a
time, see :func:`batch_indices`), so a run is reproducible from its seed.

>>> import torch
>>> from lmlab.models.char_mlp import CharMLPEnsemble, MLPShape, MLPVariant
>>> ens = CharMLPEnsemble(MLPShape(vocab_size=5, n_hidden=8), [MLPVariant("a")])
>>> X = torch.randint(0, 5, (100, 3)); Y = X[:, 0]   # learnable: predict the first char
>>> res = train_ensemble(ens, X, Y, StepConfig(steps=300, lr=0.5, lr_decay_step=None))
>>> res.losses.shape, bool(res.losses[0, -50:].mean() < res.losses[0, :50].mean())
(torch.Size([1, 300]), True)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from lmlab.config import check_ranges, ranged
from lmlab.errors import LmlabError
from lmlab.train.core import check_finite, progress_bar, to_device

__all__ = ["MAX_MEMORY", "MEMORY_WHY", "FusedModel", "StepConfig", "StepResult",
           "batch_indices", "train_ensemble", "train_module"]


MAX_MEMORY = 8 * 2**30
"""The most memory a model of a step loop may need (see :meth:`StepConfig.check_memory`)."""
MEMORY_WHY = (f"with the other sizes and the batch, the model must fit in "
              f"{MAX_MEMORY // 2**30} GiB")
"""What the upper bound of a model size is for (said in errors and ``lmlab study show``)."""


@dataclass(frozen=True)
class StepConfig:
    """The recipe of a step loop.

    Attributes:
        steps: optimisation steps.
        batch_size: rows per minibatch, drawn with replacement (two at least: BatchNorm needs
            them).
        lr: learning rate until ``lr_decay_step``.
        lr_decay_step: from this step on the rate is ``lr_decayed`` (none: constant ``lr``).
        lr_decayed: the rate after the decay step.
        optimizer: ``sgd`` (plain, no momentum) or ``adamw``.
        weight_decay: AdamW's decoupled decay.
        betas: AdamW's betas (β1, β2).
        diag_every: record diagnostics (activations, gradient and update-to-data ratios) every
            this many steps (0: never).
        check_every: check the loss for NaN/Inf every this many steps.
    """

    steps: int = ranged(200_000, 1, 10**7, why="the loss of every step is kept in memory")
    batch_size: int = ranged(32, 2, 4096, why="a batch's activations are held in memory at once")
    lr: float = ranged(0.1, 0, open_lo=True)
    lr_decay_step: int | None = ranged(100_000, 0)
    lr_decayed: float = ranged(0.01, 0, open_lo=True)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    weight_decay: float = ranged(0.0, 0)
    betas: tuple[float, float] = ranged((0.9, 0.99), 0, 1, open_hi=True)
    diag_every: int = ranged(1000, 0)
    check_every: int = ranged(500, 1)

    def validate(self) -> None:
        """Every value in its declared range; a known optimiser."""
        check_ranges(self)
        if self.optimizer not in ("sgd", "adamw"):
            raise LmlabError(f"optimizer must be sgd or adamw (got {self.optimizer!r})")

    def check_memory(self, model: str, parameters: int, per_row: int) -> None:
        """Refuse a model that would need more than ``MAX_MEMORY`` bytes while it trains:
        float32 weights, gradients and optimiser state (4 copies of ``parameters``) and the
        activations of one batch (``per_row`` floats a row).

        Args:
            model: the config section of the model, named in the error.
            parameters: the model's (estimated) parameters.
            per_row: its (estimated) activations per row of a batch.
        """
        need = 4 * (4 * parameters + self.batch_size * per_row)
        if need > MAX_MEMORY:
            raise LmlabError(f"the {model} would need about {need / 2**30:.1f} GiB while it "
                             f"trains (weights, gradients, optimiser state, one batch); at most "
                             f"{MAX_MEMORY // 2**30} GiB: lower its sizes or "
                             f"{model}.train.batch_size")

    def lr_at(self, step: int) -> float:
        """The learning rate of ``step`` (0-based)."""
        if self.lr_decay_step is not None and step >= self.lr_decay_step:
            return self.lr_decayed
        return self.lr


@dataclass
class StepResult:
    """What a step loop produced.

    Attributes:
        losses: (members, steps) training loss of every step (float32, on the CPU).
        diagnostics: tidy rows recorded every ``diag_every`` steps.
        seconds: wall time of the loop.
        steps_per_second: steps of the whole model (all members) per second.
    """

    losses: Tensor
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    steps_per_second: float = 0.0


class FusedModel(Protocol):
    """A model that trains itself one minibatch at a time."""

    @property
    def names(self) -> list[str]: ...  # noqa: D102

    def step(self, X: Tensor, Y: Tensor, lr: float) -> Tensor: ...  # noqa: D102


def batch_indices(n: int, batch_size: int, steps: int, generator: torch.Generator, *,
                  device: torch.device | str = "cpu", chunk: int = 500) -> Iterator[Tensor]:
    """The minibatch rows of ``steps`` steps, one ``(batch_size,)`` tensor per step on
    ``device``: the same numbers as one ``torch.randint(0, n, (batch_size,))`` per step.

    The rows are drawn on the CPU ``chunk`` steps at a time and copied to the device in one
    (pinned, non-blocking, on CUDA) transfer per chunk rather than one per step. torch's CPU
    generator fills a tensor element by element, so a chunk holds exactly the per-step draws
    one after the other; no more than ``steps`` steps are drawn, so ``generator`` ends in the
    state the per-step draws leave it in.

    >>> g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    >>> chunked = torch.stack(list(batch_indices(10, 4, 5, g1, chunk=2)))
    >>> per_step = torch.stack([torch.randint(0, 10, (4,), generator=g2) for _ in range(5)])
    >>> torch.equal(chunked, per_step), torch.equal(g1.get_state(), g2.get_state())
    (True, True)
    """
    done = 0
    while done < steps:
        k = min(chunk, steps - done)
        rows = torch.randint(0, n, (k, batch_size), generator=generator)
        yield from to_device(rows, device).unbind(0)
        done += k


def _loop(step_fn: Callable[[Tensor, Tensor, float], Tensor], names: list[str], X: Tensor,
          Y: Tensor, cfg: StepConfig, generator: torch.Generator,
          diag_fn: Callable[[int, float], list[dict[str, Any]]] | None, progress: bool,
          desc: str) -> StepResult:
    cfg.validate()
    if X.shape[0] != Y.shape[0] or X.shape[0] == 0:
        raise LmlabError(f"inputs and targets must be non-empty and equally long "
                         f"(got {X.shape[0]} and {Y.shape[0]})")
    losses = torch.empty((len(names), cfg.steps), dtype=torch.float32, device=X.device)
    diagnostics: list[dict[str, Any]] = []
    n, checked = X.shape[0], 0
    draws = batch_indices(n, cfg.batch_size, cfg.steps, generator, device=X.device,
                          chunk=cfg.check_every)
    start = time.perf_counter()
    with progress_bar(cfg.steps, desc=desc, enabled=progress, leave=False) as bar:
        for i in range(cfg.steps):
            ix = next(draws)
            lr = cfg.lr_at(i)
            losses[:, i] = step_fn(X[ix], Y[ix], lr)
            if diag_fn is not None and cfg.diag_every and (i % cfg.diag_every == 0
                                                             or i == cfg.steps - 1):
                diagnostics += diag_fn(i, lr)
            if (i + 1) % cfg.check_every == 0 or i == cfg.steps - 1:
                # checked in chunks: a check waits for the device, so not every step
                check_finite(losses[:, checked : i + 1], checked, names=names,
                             hint=f"lower the learning rate (lr={cfg.lr_at(checked)}) or "
                                  "check the data")
                bar.update(i + 1 - checked)
                checked = i + 1
    seconds = time.perf_counter() - start
    return StepResult(losses.cpu(), diagnostics, seconds, cfg.steps / max(seconds, 1e-9))


def train_ensemble(model: FusedModel, X: Tensor, Y: Tensor, cfg: StepConfig, *,
                   generator: torch.Generator | None = None,
                   diag_fn: Callable[[int, float], list[dict[str, Any]]] | None = None,
                   progress: bool = False, desc: str = "train") -> StepResult:
    """Train a fused model (all its members at once) for ``cfg.steps`` steps of SGD.

    ``generator`` draws the minibatches (default: the model's ``batch_generator`` if it has
    one, else a generator seeded with 0); ``diag_fn(step, lr)`` returns rows to record.
    """
    if cfg.optimizer != "sgd":
        raise LmlabError("the fused MLP ensemble trains with plain SGD; set optimizer=sgd")
    gen = generator or getattr(model, "batch_generator", None) or torch.Generator().manual_seed(0)
    return _loop(model.step, model.names, X, Y, cfg, gen, diag_fn, progress, desc)


def train_module(model: torch.nn.Module, X: Tensor, Y: Tensor, cfg: StepConfig, *,
                 loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
                 generator: torch.Generator | None = None, name: str = "model",
                 progress: bool = False) -> StepResult:
    """Train an ``nn.Module`` by autograd with SGD or AdamW (``loss_fn(logits, Y)``, default
    cross-entropy); the model is left in training mode."""
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    params = [p for p in model.parameters() if p.requires_grad]
    opt: torch.optim.Optimizer
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=1e-8,
                                weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr)
    model.train()

    def step(xb: Tensor, yb: Tensor, lr: float) -> Tensor:
        for group in opt.param_groups:
            group["lr"] = lr
        loss = loss_fn(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    gen = generator or torch.Generator().manual_seed(0)
    return _loop(step, [name], X, Y, cfg, gen, None, progress, name)

