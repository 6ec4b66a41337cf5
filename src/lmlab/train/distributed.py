"""Data parallelism without code changes: launched by ``torchrun`` the loop trains on every rank.

``torchrun --nproc_per_node=2 -m lmlab.cli run ...`` sets ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` then joins the process group
with the backend that fits the run's device (:func:`backend_for`: NCCL when it trains on CUDA,
gloo on the CPU, even on a machine with GPUs). A plain launch is one process of world size 1 and
touches nothing.

>>> ctx = setup()
>>> (ctx.rank, ctx.world_size, ctx.is_main)
(0, 1, True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistContext", "setup", "backend_for", "all_reduce_sum", "all_reduce_grads"]


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a data-parallel job.

    Attributes:
        rank: this process's index (0 … world_size−1).
        world_size: number of processes.
        local_rank: index on this machine (selects the GPU).
        backend: the process group's backend (``gloo`` or ``nccl``).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = "gloo"

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes files and prints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def device(self) -> torch.device:
        """Where the tensors this process reduces must be: its GPU under NCCL, else the CPU."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else \
            torch.device("cpu")


def backend_for(device: Any = None) -> str:
    """The process-group backend for a run on ``device``: ``nccl`` on CUDA, else ``gloo``.

    Args:
        device: The run's device (``cpu``, ``cuda``, ``cuda:N``, a ``torch.device``); None or
            ``auto``: CUDA when available.

    >>> backend_for("cpu"), backend_for("cuda:1"), backend_for(torch.device("cpu"))
    ('gloo', 'nccl', 'gloo')
    """
    if device is None or str(device).strip().lower() == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        kind = torch.device(str(device).strip().lower()).type
    return "nccl" if kind == "cuda" else "gloo"


def setup(device: Any = None) -> DistContext:
    """Join the process group described by torchrun's environment (or stay single).

    Args:
        device: The device the run trains on (see :func:`backend_for`); a CPU run uses gloo
            even where there are GPUs.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    backend = backend_for(device)
    if dist.is_initialized():
        backend = str(dist.get_backend())
    else:
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank=rank, world_size=world, local_rank=local, backend=backend)


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Sum a few scalars over all processes (identity when single), in float64 on the device
    the backend reduces on."""
    if not ctx.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_grads(params: list[torch.nn.Parameter], ctx: DistContext) -> None:
    """Sum gradients over processes in one flat buffer (each rank scales its loss by the
    global token count, so the sum is the gradient of the global mean)."""
    if not ctx.active:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n
