"""The core shared by lmlab's training loops: checkpointed state, random states, NaN guard,
resume, progress bar.

A loop keeps only what is its own (how a step draws its data and updates the model, and how it
evaluates); this module does the rest the same way for all of them:

* :class:`TrainParts` turns the model, optimiser, scheduler, random states and the loop's
  counters into one dict of tensors and plain values, the content of a checkpoint, and puts a
  saved dict back (:func:`resume_from` does both halves of a restart from a file);
* :func:`rng_state` / :func:`restore_rng` capture and restore torch's (CPU, and each GPU's once
  CUDA is in use), NumPy's global and Python's ``random`` states, and the loop's own generators,
  as tensors and plain values, so checkpoints load with ``torch.load(..., weights_only=True)``;
* a checkpoint records the device type it was written on, and a resume on another device type
  is refused (the random streams and kernels differ, so the run would not continue the same);
* :func:`deterministic` switches on torch's deterministic algorithms for a run;
* :func:`check_finite` and :func:`check_finite_weights` stop training with a one-line
  :class:`~lmlab.errors.LmlabError` that names the step (and the member, and the last good
  checkpoint);
* :func:`progress_bar` is tqdm with the rate and the ETA.

>>> import numpy as np
>>> model = torch.nn.Linear(2, 1)
>>> parts = TrainParts(model, torch.optim.SGD(model.parameters(), lr=0.1),
...                    generators={"data": np.random.default_rng(0)})
>>> saved = parts.state(5, seen=40)
>>> a = (torch.rand(1).item(), parts.generators["data"].random())
>>> parts.restore(saved), saved["seen"]
(5, 40)
>>> (torch.rand(1).item(), parts.generators["data"].random()) == a
True
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmlab.errors import LmlabError
from lmlab.runtime import CUBLAS_WORKSPACE
from lmlab.train.checkpoint import load_checkpoint

__all__ = ["PRECISIONS", "Generator", "TrainParts", "rng_state", "restore_rng", "resume_from",
           "check_finite", "check_finite_norm", "check_finite_weights",
           "progress_bar", "deterministic", "matmul_precision", "autocast", "to_device",
           "batch_to_device"]

Generator = np.random.Generator | torch.Generator
"""A random stream a loop owns (its data order, its minibatches)."""


# ------------------------------------------------------------------------------ random states


def _plain(value: Any) -> Any:
    """NumPy arrays (anywhere in a state) as raw bytes in a uint8 tensor, with dtype and shape."""
    if isinstance(value, np.ndarray):
        raw = torch.from_numpy(np.ascontiguousarray(value).view(np.uint8).reshape(-1).copy())
        return {"ndarray": raw, "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _unplain(value: Any) -> Any:
    if isinstance(value, dict) and "ndarray" in value:
        raw = value["ndarray"].numpy().tobytes()
        return np.frombuffer(raw, dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()
    if isinstance(value, dict):
        return {k: _unplain(v) for k, v in value.items()}
    return value


def _generator_state(gen: Generator) -> Any:
    if isinstance(gen, torch.Generator):
        return gen.get_state()
    return _plain(gen.bit_generator.state)


def _set_generator_state(gen: Generator, state: Any) -> None:
    if isinstance(gen, torch.Generator):
        gen.set_state(state)
    else:
        gen.bit_generator.state = _unplain(state)


def rng_state(generators: Mapping[str, Generator] | None = None) -> dict[str, Any]:
    """Every random state a run draws from, as tensors and plain values.

    Args:
        generators: The loop's own streams, by name (NumPy or torch generators).

    Returns:
        ``torch`` (CPU ByteTensor), ``cuda`` (one ByteTensor per GPU, only when this process
        has started CUDA: reading them would otherwise open a CUDA context in a CPU run),
        ``numpy`` (the global legacy generator), ``python`` (``random``) and ``generators``.

    >>> state = rng_state(); a = torch.rand(2); restore_rng(state); torch.equal(a, torch.rand(2))
    True
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": _plain(keys), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "generators": {name: _generator_state(g) for name, g in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_cuda_rng(states: Sequence[torch.Tensor]) -> None:
    """Put back the saved GPUs' random states on the GPUs present (the first ones when this
    machine has fewer, which is said on stderr)."""
    present = torch.cuda.device_count()
    for index, saved in enumerate(states[:present]):
        torch.cuda.set_rng_state(saved, index)
    if len(states) > present:
        print(f"lmlab: the checkpoint holds the random states of {len(states)} GPUs and this "
              f"machine has {present}; restored those of the first {present}", file=sys.stderr)


def restore_rng(state: Mapping[str, Any],
                generators: Mapping[str, Generator] | None = None) -> None:
    """Put back the random states of :func:`rng_state` (and of the named ``generators``).

    Raises:
        LmlabError: a named generator has no saved state.
    """
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        _restore_cuda_rng(list(state["cuda"]))
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], _unplain(np_state["keys"]), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    saved = state.get("generators", {})
    for name, gen in (generators or {}).items():
        if name not in saved:
            raise LmlabError(f"the checkpoint has no state of the random stream {name!r}; "
                             "delete it to start over")
        _set_generator_state(gen, saved[name])


# ---------------------------------------------------------------------- checkpointed state


@dataclass
class TrainParts:
    """What a checkpoint saves and a resume restores.

    Attributes:
        model: The model (None: its weights are saved elsewhere by the loop).
        optimizer: The optimiser.
        scheduler: The learning-rate scheduler, if any.
        generators: The loop's own random streams, by name.
        device_type: Where the run trains (``cpu``, ``cuda``); None: where the model's (or
            else the optimiser's) first parameter is.
    """

    model: torch.nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    generators: Mapping[str, Generator] = field(default_factory=dict)
    device_type: str | None = None

    def run_device_type(self) -> str:
        """The device type the run trains on (``cpu`` when there are no parameters)."""
        if self.device_type is not None:
            return self.device_type
        params: Iterable[torch.Tensor] = (
            self.model.parameters() if self.model is not None
            else (p for group in self.optimizer.param_groups for p in group["params"]))
        first = next(iter(params), None)
        return "cpu" if first is None else first.device.type

    def state(self, step: int, **counters: Any) -> dict[str, Any]:
        """The checkpoint of ``step``: the parts' state dicts, random states and ``counters``."""
        state: dict[str, Any] = {"step": int(step), "device_type": self.run_device_type()}
        if self.model is not None:
            state["model"] = self.model.state_dict()
        state["optimizer"] = self.optimizer.state_dict()
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        state["rng"] = rng_state(self.generators)
        return {**state, **counters}

    def restore(self, state: Mapping[str, Any],
                source: str | os.PathLike[str] = "the checkpoint") -> int:
        """Load a :meth:`state` back into the parts; return its step.

        Raises:
            LmlabError: ``state`` lacks a part (e.g. it was written by an older lmlab), or was
                written on another device type than this run's, naming ``source``.
        """
        needed = ["step", "optimizer", "rng"]
        if self.model is not None:
            needed.append("model")
        if self.scheduler is not None:
            needed.append("scheduler")
        missing = [k for k in needed if k not in state]
        missing += [f"rng.{k}" for k in ("torch", "numpy", "python")
                    if "rng" in state and k not in state["rng"]]
        if missing:
            raise LmlabError(f"{source} lacks {', '.join(missing)}: it was not written by this "
                             "version of lmlab; delete it to start over")
        saved, here = state.get("device_type"), self.run_device_type()
        if saved is not None and saved != here:  # older checkpoints carry none: taken as they are
            raise LmlabError(f"{source} was written by a run on {saved} and this run is on {here}; "
                             f"a run resumes on the device type it started on: resume with "
                             f"--device {saved} (or delete the checkpoint to start over)")
        if self.model is not None:
            self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"], self.generators)
        return int(state["step"])


def resume_from(path: str | os.PathLike[str] | None, parts: TrainParts) -> dict[str, Any] | None:
    """Restore ``parts`` from the checkpoint at ``path``; return it (None when there is none).

    Raises:
        LmlabError: the file cannot be read or is not a checkpoint.
    """
    if path is None or not Path(path).is_file():
        return None
    saved = load_checkpoint(path)
    parts.restore(saved, source=path)
    return saved


# ------------------------------------------------------------------------------- NaN guard


def _kept(checkpoint: str | os.PathLike[str] | None) -> str:
    return f" (the last good checkpoint is kept at {checkpoint})" if checkpoint else ""


def check_finite(losses: torch.Tensor | float, step: int, *, names: Sequence[str] = (),
                 hint: str = "lower the learning rate",
                 kept: str | os.PathLike[str] | None = None) -> None:
    """Stop training at the first NaN or infinite loss.

    Args:
        losses: A loss, or the losses of consecutive steps (``(steps,)``, or
            ``(members, steps)`` for several models trained together).
        step: The step of the first loss (as the loop counts its steps).
        names: The members' names.
        hint: What to do about it.
        kept: The last good checkpoint, if there is one.

    Raises:
        LmlabError: naming the member, the value and the step.

    >>> check_finite(torch.tensor([[0.5, 0.4], [0.6, float("inf")]]), 10, names=["a", "b"])
    Traceback (most recent call last):
    ...
    lmlab.errors.LmlabError: the training loss of b became inf at step 11; lower the learning rate
    """
    if isinstance(losses, float):
        if math.isfinite(losses):
            return
        losses = torch.tensor(losses, dtype=torch.float64)
    if bool(torch.isfinite(losses).all()):
        return
    table = losses if losses.dim() == 2 else losses.reshape(1, -1)  # (members, steps)
    member, offset = (~torch.isfinite(table)).nonzero()[0].tolist()
    who = f" of {names[member]}" if names else ""
    raise LmlabError(f"the training loss{who} became {float(table[member, offset])} at step "
                     f"{step + offset}{_kept(kept)}; {hint}")


def check_finite_norm(norm: float, loss: float, step: int, *,
                      kept: str | os.PathLike[str] | None = None) -> None:
    """Stop training when the gradient norm is NaN or infinite while the loss is finite: a
    fault of the model or the data, which a lower learning rate would not cure. ``norm`` is
    the total norm the step computed (clipping returns it), read back from the device.

    Raises:
        LmlabError: naming the norm, the step and the finite loss.

    >>> try:
    ...     check_finite_norm(float("nan"), 0.5, 3)
    ... except LmlabError as e:
    ...     print(str(e)[:73])
    the gradient norm became nan at step 3 while the training loss was finite
    """
    if not math.isfinite(norm):
        raise LmlabError(
            f"the gradient norm became {norm} at step {step} while the training loss was "
            f"finite ({loss:.4g}){_kept(kept)}: the model or the data give non-finite "
            "gradients (a NaN or infinite weight or input, or an overflow); check them — a "
            "lower learning rate will not help")


def check_finite_weights(model: torch.nn.Module, step: int, *,
                         hint: str = "lower the learning rate",
                         kept: str | os.PathLike[str] | None = None) -> None:
    """Stop training when a weight is NaN or infinite (before it is checkpointed).

    Raises:
        LmlabError: naming the step and the last good checkpoint.
    """
    flags = [torch.isfinite(p).all() for p in model.parameters()]
    if not flags or bool(torch.stack(flags).all()):  # one read from the device, not one each
        return
    raise LmlabError(f"the weights became NaN/Inf by step {step}; training stopped"
                     f"{_kept(kept)}; {hint}")


# ------------------------------------------------------------------------- deterministic mode

@contextlib.contextmanager
def deterministic(enabled: bool = True, *, warn_only: bool = False) -> Iterator[None]:
    """Run the block with torch's deterministic algorithms; restore the previous mode after.

    On a GPU the same inputs then give bitwise the same numbers run after run, which a resumed
    run needs to continue as the uninterrupted run would: ``torch.use_deterministic_algorithms``
    picks deterministic kernels (``index_add_``, scatter/gather backward) and makes an
    operation without one raise, and ``CUBLAS_WORKSPACE_CONFIG`` (set here when unset, and by
    :func:`lmlab.runtime.resolve_device` as soon as a run resolves to CUDA, since cuBLAS reads
    it once) fixes cuBLAS's reduction order. On the CPU it changes nothing measurable.

    Args:
        enabled: False: leave torch's mode as it is.
        warn_only: Warn instead of raising at an operation that has no deterministic kernel.

    >>> with deterministic():
    ...     torch.are_deterministic_algorithms_enabled()
    True
    >>> torch.are_deterministic_algorithms_enabled()
    False
    """
    if not enabled:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    set_env = "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    if set_env:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        if set_env:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


# ---------------------------------------------------------------------------- host to device


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``tensor`` (on the host) on ``device``: on CUDA copied from pinned memory without
    blocking the host, so the copy queues behind the kernels already launched instead of
    waiting for them; elsewhere a plain copy (none on the CPU).

    >>> to_device(torch.ones(2), "cpu").device.type
    'cpu'
    """
    device = torch.device(device)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def batch_to_device(batch: dict[str, torch.Tensor],
                    device: torch.device | str | None) -> dict[str, torch.Tensor]:
    """Every tensor of a collated batch on ``device`` by :func:`to_device` (``None``: the
    batch as it is).

    >>> batch_to_device({"input_ids": torch.ones(1, 2)}, "cpu")["input_ids"].device.type
    'cpu'
    """
    return batch if device is None else {k: to_device(v, device) for k, v in batch.items()}


# ------------------------------------------------------------------------------- precision

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "tf32")
"""The arithmetic a training run can use: ``fp32`` (float32 everywhere, the default), ``bf16``
(the forward pass under bfloat16 autocast; weights, gradients, optimiser state and the loss
stay float32) and ``tf32`` (float32 matrix products on a GPU's TF32 tensor cores: a 10-bit
mantissa inside the product; nothing changes on the CPU)."""


@contextlib.contextmanager
def matmul_precision(precision: str, device_type: str) -> Iterator[None]:
    """Run the block with TF32 matrix products and convolutions when ``precision`` is ``tf32``
    and the run is on CUDA; the previous settings are restored after. Otherwise nothing.

    >>> with matmul_precision("tf32", "cuda"):
    ...     torch.get_float32_matmul_precision()
    'high'
    >>> torch.get_float32_matmul_precision()
    'highest'
    """
    if precision != "tf32" or device_type != "cuda":
        yield
        return
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


def autocast(precision: str, device_type: str) -> contextlib.AbstractContextManager[Any]:
    """The context a forward pass runs in: bfloat16 autocast for ``bf16`` (on the CPU too),
    nothing for ``fp32`` and ``tf32``.

    >>> with autocast("bf16", "cpu"):
    ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
    torch.bfloat16
    """
    if precision == "bf16":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------- progress bar


def progress_bar(total: int, *, desc: str, initial: int = 0, enabled: bool = True,
                 leave: bool = True) -> Any:
    """A tqdm bar over steps, with the rate and the ETA; a context manager that closes it.

    Args:
        total: Steps of the whole run.
        desc: The label.
        initial: Steps already done (a resumed run).
        enabled: False: a silent bar (every call still works).
        leave: Keep the bar on screen when it closes.
    """
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", mininterval=1.0,
                disable=not enabled, leave=leave)
