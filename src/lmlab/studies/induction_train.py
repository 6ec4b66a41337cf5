"""Training side of the `induction` study: one resumable run ("setting") in the authors' layout.

After Song, Xu, Zhong, "Out-of-distribution generalization via composition: a lens through
induction heads in Transformers" (PNAS 122, 2025; arXiv 2408.09503) and the protocol of their
synthetic experiments: the 2-layer rotary attention-only transformer
(:mod:`lmlab.models.rotary_tf`) learns the copying task (:mod:`lmlab.data.copying`) from a fresh
batch of 50 sequences per step (segments from a pattern pool if one is set), AdamW on all
parameters, the ``ConstantLR`` default quirk (lr / 3 for the first 5 steps), next-token
cross-entropy at every position, dropout on in training and off in evaluation.

Files in ``out_dir`` (names and keys as the authors', so their notebook code reads them):

* ``config.json``: the authors' config keys where meaningful, plus lmlab's own settings;
* ``ckpt_0.pt`` (initial weights) and ``ckpt_{k}.pt`` every ``save_every`` steps (state dicts),
  ``ckpt.pt`` = the final weights;
* ``err_arr.json``: a list of ``{"epoch", "loss_train", "err_train", "loss_test", "err_test",
  "loss_ood", "err_ood"}``. ``epoch = k − 1`` belongs to the weights after k steps (those of
  ``ckpt_k.pt``). Every ``eval_every`` steps an entry on a fixed cheap subset (the first
  ``eval_cheap`` ID and OOD test sequences); at every checkpoint step, instead, an entry on the
  full test sets marked ``"full": true`` with the floor-free errors ``err_test_nofloor``,
  ``err_ood_nofloor``. The initial weights get a full entry with ``epoch = −1`` (and
  ``loss_train = err_train = null``: there is no training batch yet). The authors evaluated
  the full sets after every step, which costs ~5 s per step on a CPU. With
  ``err_layout="authors"`` (and ``eval_every=1``) ``err_arr.json`` is instead the authors' dense
  layout — one record per step with their seven keys, so ``err_arr[k − 1]`` belongs to
  ``ckpt_k.pt`` as their notebook expects — and the full evaluations (with ``epoch = −1``) go to
  ``err_full.json`` (:mod:`lmlab.studies._induction_errlog`);
* ``test.pth`` / ``test_ood.pth``: ``[tokens, lens, starts]`` int64 tensors;
* ``train_state.pt``: optimiser, scheduler, random states and step at the last checkpoint
  (written by the training core, :mod:`lmlab.train.core`; tensors and plain values only). A
  second call on the same ``out_dir`` resumes from there and ends with the same weights as an
  uninterrupted run; a finished run is not trained again. A ``train_state.pt`` written before
  this layout is refused (delete it, or the run directory, to start over).

Seeds: ``seed`` seeds the model initialisation and dropout (torch) and, through independent
NumPy streams, the pattern pool, the ID test set, the OOD test set and the training batches.

Device: :func:`train_setting` trains on ``device`` (``cpu``, ``cuda``, ``cuda:N``). The model is
initialised on the CPU and moved there (the same initial weights on every device); every batch
is drawn on the CPU and copied there. The loop reads nothing back from the device between
evaluations: the losses of the steps since the last evaluation are checked for NaN/Inf at the
next one (the error still names the first bad step). ``config.json`` records the device type
(the authors' ``device`` key); checkpoints hold CPU tensors; a run resumes only on the device
type it started on. On CUDA, dropout draws from the GPU's random stream, whose state
``train_state.pt`` keeps with the others (:func:`lmlab.train.core.rng_state`). Training runs in
:func:`lmlab.train.core.deterministic` mode, so a resumed run continues as the uninterrupted
one would on a GPU too.

>>> import tempfile
>>> s = TrainSetting("tiny", pool_size=None, steps=4, save_every=2, eval_every=1,
...                  eval_cheap=10, eval_full=20)
>>> with tempfile.TemporaryDirectory() as tmp:
...     summary = train_setting(s, tmp)
...     sorted(p.name for p in Path(tmp).glob("ckpt*"))
['ckpt.pt', 'ckpt_0.pt', 'ckpt_2.pt', 'ckpt_4.pt']
>>> summary["steps_done"], 0.5 < summary["err_ood"] <= 1.0
(4, True)
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from lmlab.config import check_ranges, config_diff, ranged, seed_field
from lmlab.data.copying import CopyTask, make_pool, sample_batch
from lmlab.errors import LmlabError
from lmlab.models.rotary_tf import RotaryConfig, TFModel, load_state
from lmlab.runs.io import atomic_save_torch, atomic_write_json
from lmlab.runtime import limit_threads, resolve_device
from lmlab.studies._induction_errlog import (
    ERR_KEYS,
    ErrLayout,
    EvalSet,
    entry,
    err_files,
    read_err_files,
)
from lmlab.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    read_torch,
    save_checkpoint,
    to_cpu,
)
from lmlab.train.core import (
    TrainParts,
    check_finite,
    check_finite_weights,
    deterministic,
    progress_bar,
    to_device,
)

__all__ = ["ERR_KEYS", "PAPER_SETTINGS", "TrainSetting", "run_config", "train_setting"]

_STATE = "train_state.pt"


@dataclass(frozen=True)
class TrainSetting:
    """One training run.

    Attributes:
        name: The setting's name (the authors' ``out_dir`` leaf, e.g. ``infinite_pool_size``).
        pool_size: Pattern-pool size, None for infinite; overrides ``task.pool_size`` (and is
            checked against its range).
        steps: Optimiser steps (the authors' ``num_epoch``).
        batch_size: Fresh sequences per step.
        lr, betas, eps, weight_decay: AdamW on all parameters.
        save_every: Steps between checkpoints (and full evaluations); must divide ``steps``.
        eval_every: Steps between cheap evaluations.
        eval_cheap: ID and OOD sequences of the cheap evaluation (a prefix of the test sets).
        eval_full: ID and OOD test sequences.
        seed: Seeds everything (the authors' 2026).
        num_layers: Transformer blocks (1 for the control run).
        mlp: Add the MLP sub-block (off in the paper's runs).
        task: The copying task.
        constant_lr_quirk: lr / 3 for the first 5 steps, as ``ConstantLR(opt)`` with its
            default arguments does in the authors' code; False for a constant lr.
        err_layout: ``"lmlab"`` (sparse ``err_arr.json``) or ``"authors"`` (one record per
            step, exactly the authors' keys; needs ``eval_every = 1``); see
            :mod:`lmlab.studies._induction_errlog`.

    >>> TrainSetting("small_pool_size", pool_size=100).resolved_task.pool_size
    100
    """

    name: str
    pool_size: int | None
    steps: int = ranged(20_000, 1, 10**6, why="the error log keeps a row every eval_every steps")
    batch_size: int = ranged(50, 1, 4096, why="a batch's activations are held in memory at once")
    lr: float = ranged(1e-3, 0, open_lo=True)
    betas: tuple[float, float] = ranged((0.9, 0.98), 0, 1, open_hi=True)
    eps: float = ranged(1e-9, 0, open_lo=True)
    weight_decay: float = ranged(5e-4, 0)
    save_every: int = ranged(200, 1)
    eval_every: int = ranged(20, 1)
    eval_cheap: int = ranged(200, 1, 10**5, why="the test sets are held in memory")
    eval_full: int = ranged(5000, 1, 10**5, why="the test sets are held in memory")
    seed: int = seed_field(2026)
    num_layers: int = ranged(2, 1, 64, why="every layer adds a block of the paper's width")
    mlp: bool = False
    task: CopyTask = CopyTask()
    constant_lr_quirk: bool = True
    err_layout: ErrLayout = "lmlab"

    @property
    def resolved_task(self) -> CopyTask:
        """The task with this setting's pool size."""
        return dataclasses.replace(self.task, pool_size=self.pool_size)

    def model_config(self) -> RotaryConfig:
        """The architecture: the paper's, with this task's V and T and the setting's depth."""
        return RotaryConfig(vocab_size=self.task.vocab_size, max_seq_len=self.task.seq_len,
                            num_layers=self.num_layers, mlp=self.mlp)

    def validate(self) -> None:
        """Raise LmlabError naming the field that is out of range (the ranges are declared
        with the fields)."""
        if not isinstance(self.name, str) or not self.name.strip():
            raise LmlabError(f"setting.name must be a non-empty string (got {self.name!r})")
        for field in ("steps", "batch_size", "save_every", "eval_every", "eval_cheap",
                      "eval_full", "num_layers", "seed"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                raise LmlabError(f"setting.{field} must be an integer (got {value!r})")
        if len(self.betas) != 2:
            raise LmlabError(f"setting.betas must be two numbers in [0, 1) (got {self.betas})")
        check_ranges(self, "setting.")
        if self.steps % self.save_every:
            raise LmlabError(f"setting.save_every={self.save_every} must divide "
                             f"steps={self.steps} (the last checkpoint is the final weights)")
        if self.eval_cheap > self.eval_full:
            raise LmlabError(f"setting.eval_cheap={self.eval_cheap} must not exceed "
                             f"eval_full={self.eval_full} (the cheap set is a prefix)")
        if self.err_layout not in ("lmlab", "authors"):
            raise LmlabError(f"setting.err_layout must be 'lmlab' or 'authors' (got "
                             f"{self.err_layout!r})")
        if self.err_layout == "authors" and self.eval_every != 1:
            raise LmlabError(f"err_layout='authors' writes one err_arr.json record per step: set "
                             f"eval_every=1 (got {self.eval_every})")
        self.resolved_task.validate()
        self.model_config().validate()


PAPER_SETTINGS: tuple[TrainSetting, ...] = (
    TrainSetting("infinite_pool_size", pool_size=None),
    TrainSetting("small_pool_size", pool_size=100),
    TrainSetting("large_pool_size", pool_size=1000),
    TrainSetting("boundary_pool_size_740", pool_size=740),
    TrainSetting("boundary_pool_size_750", pool_size=750),
    TrainSetting("one_layer_infinite_pool_size", pool_size=None, num_layers=1),
)
"""The runs of the authors' ``run.sh`` (block ``out_phase_progress_long``) and the 1-layer
control; 20,000 steps each, checkpoints every 200 (``n_save = 100``)."""


def run_config(setting: TrainSetting, out_dir: str | os.PathLike[str],
               device: torch.device | str = "cpu") -> dict[str, Any]:
    """The ``config.json`` of a run: the authors' keys where meaningful, then lmlab's.

    Unused authors' keys (``sample_size, sig, fancy_opt, use_wd, wandb_log``) and plotting
    ones are left out. ``device`` is the type of the device the run trains on.

    >>> cfg = run_config(TrainSetting("x", pool_size=100), "runs/x", device="cuda:1")
    >>> cfg["pool_size"], cfg["num_epoch"], cfg["n_save"], cfg["rotary_theta"], cfg["device"]
    (100, 20000, 100, 10000.0, 'cuda')
    """
    task, model = setting.resolved_task, setting.model_config()
    return {
        "seed": setting.seed,
        "vocab_size": model.vocab_size,
        "d_model": model.d_model,
        "ff_dim": model.ff_dim,
        "num_heads": model.num_heads,
        "num_layers": model.num_layers,
        "linear_attn": False,
        "residual": True,
        "mlp": model.mlp,
        "dropout": model.dropout,
        "norm": True,
        "output_norm": False,
        "pos": "rotary",
        "rotary_theta": model.rotary_theta,
        "max_seq_len": model.max_seq_len,
        "sample_size_test": setting.eval_full,
        "regime": "varied repetition",
        "distr": task.distr,
        "rep_l": task.rep_l,
        "rep_h": task.rep_h,
        "ood_len_pattern": task.ood_len,
        "pool_size": task.pool_size,
        "device": torch.device(device).type,
        "schedule": "constant" if setting.constant_lr_quirk else "none",
        "fresh_sample": True,
        "label_smoothing": 0.0,
        "lr": setting.lr,
        "wd": setting.weight_decay,
        "batch_size": setting.batch_size,
        "num_epoch": setting.steps,
        "n_save": setting.steps // setting.save_every,
        "up_to_first_save": False,
        "ignore_segment": 1,
        "ignore_burning": 4,
        "out_dir": os.fspath(out_dir),
        # lmlab's own settings
        "name": setting.name,
        "seq_len": task.seq_len,
        "betas": list(setting.betas),
        "eps": setting.eps,
        "save_every": setting.save_every,
        "eval_every": setting.eval_every,
        "eval_cheap": setting.eval_cheap,
        "eval_full": setting.eval_full,
        "constant_lr_quirk": setting.constant_lr_quirk,
        # only when not the default, so that runs written before the key resume
        **({"err_layout": setting.err_layout} if setting.err_layout != "lmlab" else {}),
    }


class _Run:
    """One call of :func:`train_setting`: its step and its evaluation; checkpoints, random
    states, the NaN guard and the progress bar are the training core's
    (:mod:`lmlab.train.core`)."""

    def __init__(self, setting: TrainSetting, out: Path, device: torch.device) -> None:
        self.setting, self.out, self.task = setting, out, setting.resolved_task
        self.device = device
        self.config = run_config(setting, out, device)
        pool_ss, test_ss, ood_ss, train_ss = np.random.SeedSequence(setting.seed).spawn(4)
        task = self.task
        self.pool = make_pool(task, np.random.default_rng(pool_ss)) if task.pool_size else None
        self.test_np = sample_batch(task, setting.eval_full, np.random.default_rng(test_ss),
                                    pool=self.pool)
        self.ood_np = sample_batch(task, setting.eval_full, np.random.default_rng(ood_ss),
                                   ood=True)
        self.test, self.ood = EvalSet(*self.test_np), EvalSet(*self.ood_np)
        self.cheap = (self.test.head(setting.eval_cheap), self.ood.head(setting.eval_cheap))

        torch.manual_seed(setting.seed)
        self.model = TFModel(setting.model_config()).to(device)  # initialised on the CPU
        opt = torch.optim.AdamW(self.model.parameters(), lr=setting.lr, betas=setting.betas,
                                eps=setting.eps, weight_decay=setting.weight_decay)
        # ConstantLR(opt) with default arguments: factor 1/3 for the first 5 steps.
        sched = (torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0 / 3.0, total_iters=5)
                 if setting.constant_lr_quirk else None)
        # the weights go to ckpt_{k}.pt (the authors' files), the rest to train_state.pt
        self.train_rng = np.random.default_rng(train_ss)
        self.parts = TrainParts(None, opt, sched, {"train": self.train_rng})
        self.state_path = out / _STATE
        self.err_arr: list[dict[str, Any]] = []
        self.seconds_eval = 0.0
        self.pending: list[torch.Tensor] = []  # the losses since the last check, on the device
        self.pending_from = 0  # the step of pending[0]

    def start(self) -> int:
        """Resume from the last checkpoint, or write the fixed files and checkpoint 0."""
        if self.state_path.is_file():
            return self._resume()
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out / "config.json", self.config)
        for name, (tokens, starts, lens) in (("test.pth", self.test_np),
                                             ("test_ood.pth", self.ood_np)):
            atomic_save_torch(self.out / name, [torch.from_numpy(tokens), torch.from_numpy(lens),
                                                torch.from_numpy(starts)])
        self.err_arr = [entry(-1, self.model, None, self.test, self.ood, full=True)]
        self.checkpoint(0)
        return 0

    def _resume(self) -> int:
        state = load_checkpoint(self.state_path)
        saved_config = state.get("config", {})
        diff = config_diff(saved_config, self.config, ignore=("out_dir", "device"))
        if diff:
            raise LmlabError(f"{self.out} holds a run of another setting "
                             f"({'; '.join(diff[:4])}); choose another out_dir or delete it")
        start = int(state["step"])
        again = f"delete {self.state_path} to start the run over"
        was = saved_config.get("device", "cpu") if isinstance(saved_config, dict) else "cpu"
        if was != self.device.type:
            raise LmlabError(f"{self.out} was trained on {was} and this run is on "
                             f"{self.device.type}: a run resumes on the device type it started "
                             f"on; set device={was}, or {again}")
        ckpt = self.out / f"ckpt_{start}.pt"
        if not ckpt.is_file():
            raise LmlabError(f"cannot resume {self.out} at step {start}: {ckpt.name} is "
                             f"missing; {again}")
        weights = read_torch(ckpt, advice=again)
        if not isinstance(weights, dict):
            raise LmlabError(f"cannot resume {self.out} at step {start}: {ckpt} does not hold "
                             f"a state dict; {again}")
        saved_arr = read_err_files(self.out, self.setting.err_layout, start, again)
        try:
            load_state(self.model, weights)
        except LmlabError:  # the setting was checked above: the file is a foreign one
            raise LmlabError(f"cannot resume from {ckpt}: its weights do not fit the "
                             f"setting's model; {again}") from None
        self.parts.restore(state, source=self.state_path)
        self.err_arr = [e for e in saved_arr if e["epoch"] < start]
        return start

    def checkpoint(self, step: int) -> None:
        """Weights, ``err_arr.json``, then the training state (the commit marker)."""
        check_finite_weights(self.model, step, hint="lower lr or check the setting",
                             kept=latest_checkpoint(self.out, _STATE))
        atomic_save_torch(self.out / f"ckpt_{step}.pt", to_cpu(self.model.state_dict()))
        self.write_errors()
        save_checkpoint(self.out, self.parts.state(step, config=self.config), name=_STATE)

    def write_errors(self) -> None:
        """The error log, in the setting's layout."""
        for name, content in err_files(self.err_arr, self.setting.err_layout).items():
            atomic_write_json(self.out / name, content)

    def train_step(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One AdamW step on a fresh batch (``step`` = updates after it); returns the batch."""
        opt, sched = self.parts.optimizer, self.parts.scheduler
        batch = sample_batch(self.task, self.setting.batch_size, self.train_rng, pool=self.pool)
        x = to_device(torch.from_numpy(batch[0]), self.device)  # (B, T)
        logits = self.model(x)  # (B, T, V)
        V = self.task.vocab_size
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, V), x[:, 1:].reshape(-1))
        if not self.pending:
            self.pending_from = step
        self.pending.append(loss.detach())  # checked at the next evaluation: no sync here
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        return batch

    def check_losses(self) -> None:
        """Raise at the first NaN/Inf training loss since the last check (one host read)."""
        if self.pending:
            losses, self.pending = torch.stack(self.pending), []
            check_finite(losses, self.pending_from, names=[f"setting {self.setting.name}"],
                         hint="lower lr or check the setting", kept=self.state_path)

    def evaluate(self, step: int, batch: tuple[np.ndarray, np.ndarray, np.ndarray]
                 ) -> dict[str, Any]:
        """The ``err_arr`` entry of the weights after ``step`` steps: on the full test sets
        (then a checkpoint) every ``save_every`` steps, else on their cheap prefixes."""
        self.check_losses()
        t0 = time.perf_counter()
        full = step % self.setting.save_every == 0
        test, ood = (self.test, self.ood) if full else self.cheap
        self.err_arr.append(entry(step - 1, self.model, EvalSet(*batch), test, ood, full=full))
        if full:
            self.checkpoint(step)
        self.seconds_eval += time.perf_counter() - t0
        return self.err_arr[-1]

    def finish(self, start: int, end: int) -> bool:
        """Write what lies beyond the last checkpoint, and ``ckpt.pt`` once the run is done."""
        self.check_losses()
        if end > start and end % self.setting.save_every:
            self.write_errors()
        finished = end == self.setting.steps
        if finished:
            atomic_save_torch(self.out / "ckpt.pt", to_cpu(self.model.state_dict()))
        return finished

    def summary(self, start: int, end: int, seconds: float, seconds_loop: float
                ) -> dict[str, Any]:
        """What :func:`train_setting` returns."""
        n = end - start
        last_full = next(e for e in reversed(self.err_arr) if e.get("full"))
        return {
            "name": self.setting.name,
            "out_dir": os.fspath(self.out),
            "steps": self.setting.steps,
            "start_step": start,
            "steps_done": end,
            "finished": end == self.setting.steps,
            **{k: last_full[k] for k in ("epoch", "loss_test", "err_test", "err_ood",
                                         "err_test_nofloor", "err_ood_nofloor")},
            "seconds": seconds,
            "seconds_eval": self.seconds_eval,
            "steps_per_s": n / seconds if n else float("nan"),
            "train_steps_per_s": n / (seconds_loop - self.seconds_eval) if n else float("nan"),
        }


def train_setting(
    setting: TrainSetting,
    out_dir: str | os.PathLike[str],
    *,
    progress: bool = False,
    stop_after: int | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Train one setting into ``out_dir``, resuming from its last checkpoint if there is one.

    Runs with one torch/BLAS thread (restored afterwards): on this 2-core machine more threads
    make the small matrices several times slower; run settings in parallel instead. Seeds (and
    so changes) torch's global random state, which dropout draws from.

    Args:
        setting: What to train.
        out_dir: The run directory (created if missing).
        progress: Show a tqdm bar with the rate, ETA and the latest errors.
        stop_after: Stop once this many steps are done in total (to split a run; the next call
            resumes from the last checkpoint at or before it).
        device: Where the model trains (``cpu``, ``cuda``, ``cuda:N``; ``auto``: CUDA when
            available); an unavailable GPU is a one-line error.

    Returns:
        A summary: ``name, out_dir, steps, start_step, steps_done, finished``, the last full
        evaluation (``epoch, loss_test, err_test, err_ood, err_test_nofloor,
        err_ood_nofloor``), ``seconds`` (wall, this call), ``seconds_eval``,
        ``steps_per_s`` (including evaluation) and ``train_steps_per_s`` (without).

    Raises:
        LmlabError: On an invalid setting, a ``train_state.pt`` of a different setting in
            ``out_dir``, an unreadable state, or a non-finite loss (naming the step).
    """
    setting.validate()
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(
            stop_after, int) or stop_after < 0):
        raise LmlabError(f"stop_after must be a non-negative integer (got {stop_after!r})")
    out = Path(out_dir)
    dev = resolve_device(device)
    with limit_threads(1), deterministic():  # a resumed run continues bitwise, also on a GPU
        return _train(setting, out, progress=progress, stop_after=stop_after, device=dev)


def _train(setting: TrainSetting, out: Path, *, progress: bool,
           stop_after: int | None, device: torch.device) -> dict[str, Any]:
    t_start = time.perf_counter()
    run = _Run(setting, out, device)
    start = run.start()
    end = setting.steps if stop_after is None else min(setting.steps, max(stop_after, start))
    t_loop = time.perf_counter()
    run.model.train()
    with progress_bar(setting.steps, initial=start, desc=setting.name, enabled=progress) as bar:
        for step in range(start + 1, end + 1):  # step = number of updates after this one
            batch = run.train_step(step)
            if step % setting.save_every == 0 or step % setting.eval_every == 0:
                last = run.evaluate(step, batch)
                bar.set_postfix(err_test=f"{last['err_test']:.3f}",
                                err_ood=f"{last['err_ood']:.3f}", refresh=False)
            bar.update(1)
    t_loop = time.perf_counter() - t_loop
    run.finish(start, end)
    return run.summary(start, end, time.perf_counter() - t_start, t_loop)
