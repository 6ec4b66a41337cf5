"""Layers analysed on several cores at once, and the progress bar of an analysis.

BLAS threads inside one matrix speed a 4096-wide Gram matrix and its eigensolver up by only
about 1.3× from one core to two. Matrices are independent, so :func:`parallel_rows` gives each
core its own matrices instead: a pool of ``workers`` spawned processes, one BLAS thread each.
A worker is sent the layer's description and its loader — for a safetensors file the path and
the tensor name (:class:`~lmlab.spectral.blocks.SafetensorsTensor`), never the tensor — and
opens the file itself (the pages are shared through the page cache). Each worker holds one
matrix at a time, read block by block, so memory grows by one matrix's working set per worker
(about 0.4 GB for a 4096-wide matrix: its Gram matrix, an accumulation buffer and one block).
The rows are those of the serial route with one thread, in the same order.

:func:`choose_workers` applies the rule for ``workers=None`` (automatic): the pool is used
only when it clearly pays — every layer comes from a safetensors file, on the CPU eigh route
with no option that needs a whole matrix (``randomize``, ``vectors``, ``inverse``), no
``threads`` given, not itself running in a worker process, two cores or more, and at least
:data:`AUTO_WORK` units of work in all
(:func:`work_of`; about a minute on one core, so starting the workers costs a few percent at
most). Small models therefore stay serial.

>>> import torch
>>> from lmlab.spectral.options import AnalyzeOptions
>>> from lmlab.spectral.sources import iter_layers
>>> refs = list(iter_layers(torch.nn.Linear(64, 256)))
>>> choose_workers(None, refs, AnalyzeOptions())  # in memory: serial
1
>>> work_of(refs[0], AnalyzeOptions()) == 256 * 64**2 + 4 * 64**3
True
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from lmlab.errors import LmlabError
from lmlab.spectral.blocks import location_of
from lmlab.spectral.layer import dims_of, layer_row, skip_reason
from lmlab.spectral.options import AnalyzeOptions
from lmlab.spectral.sources import LayerRef

__all__ = ["AUTO_WORK", "Progress", "choose_workers", "parallel_rows", "usable_cores",
           "work_of"]

#: Work (:func:`work_of` units) above which ``workers=None`` uses every core: 1.5e12, about a
#: minute of one core's time (a 4096-wide float64 eigensolve weighs 4·M³ ≈ 2.7e11).
AUTO_WORK = 1.5e12


def work_of(ref: LayerRef, opts: AnalyzeOptions) -> float:
    """The relative cost of one layer: rf·(N·M² + 4·M³) — the Gram matrix (a syrk) and the
    eigensolver, which runs about 4× slower per M³ than the syrk per N·M² — or 0 for a layer
    the size rules skip."""
    N, M, rf = dims_of(ref)
    if skip_reason(N, M, rf, ref, opts):
        return 0.0
    return float(rf) * (float(N) * M * M + 4.0 * float(M) ** 3)


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _pool_ready(refs: Sequence[LayerRef], opts: AnalyzeOptions, device: Any) -> bool:
    """Whether every layer can be sent to a worker by its file name and tensor name."""
    on_cpu = device is None or getattr(device, "type", "cpu") == "cpu"
    return on_cpu and bool(refs) and all(location_of(r.load) is not None for r in refs)


def choose_workers(workers: int | None, refs: Sequence[LayerRef], opts: AnalyzeOptions, *,
                   device: Any = None, threads: int | None = None) -> int:
    """The number of worker processes for these layers (1: the serial route).

    Args:
        workers: what the caller asked for: ``None`` (automatic, see the module's rule), 1
            (serial) or more (a pool of that many, for layers read from safetensors files;
            other sources — models in memory, ``.pt`` files, ``base_model`` differences — run
            serially).
        refs: the layers to analyse.
        opts: the analysis options.
        device: the compute device (a GPU runs serially).
        threads: the ``threads`` given to the analysis (automatic mode stays serial then).

    Raises:
        LmlabError: ``workers`` is not a positive integer.
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise LmlabError(f"workers = {workers!r} must be a positive integer (1 = serial), or "
                         "None to decide from the model's size")
    if not _pool_ready(refs, opts, device):
        return 1
    todo = [r for r in refs if work_of(r, opts) > 0]
    if workers is not None:
        return max(1, min(workers, len(todo)))
    import multiprocessing

    blocked = opts.method == "eigh" and not (opts.inverse or opts.randomize or opts.vectors)
    cores = usable_cores()
    nested = multiprocessing.parent_process() is not None  # already a worker of some pool
    if not blocked or threads is not None or cores < 2 or nested:
        return 1
    if sum(work_of(r, opts) for r in todo) < AUTO_WORK:
        return 1
    return max(1, min(cores, len(todo)))


class Progress:
    """A tqdm bar over an analysis: advances by each layer's :func:`work_of`, so its ETA
    weighs a 32000-row embedding more than a small projection; its text says how many
    matrices are done, their rate, and the last one finished."""

    def __init__(self, refs: Sequence[LayerRef], opts: AnalyzeOptions, show: bool):
        from tqdm.auto import tqdm

        self._work = {id(r): work_of(r, opts) for r in refs}
        floor = max(1.0, sum(self._work.values()) * 1e-4)  # skipped layers still move the bar
        self._work = {k: max(v, floor) for k, v in self._work.items()}
        self.total, self.done_count = len(refs), 0
        self.total_work, self.work_done = sum(self._work.values()), 0.0
        self._start = time.perf_counter()
        self.bar = tqdm(total=self.total_work, desc="spectra", disable=not show,
                        leave=False, bar_format="{desc}: {percentage:3.0f}%|{bar}| "
                                                "[{elapsed}<{remaining}{postfix}]")

    def done(self, ref: LayerRef) -> None:
        """Mark one layer finished."""
        self.done_count += 1
        rate = self.done_count / max(time.perf_counter() - self._start, 1e-9)
        self.bar.set_postfix_str(f"{self.done_count}/{self.total} matrices, {rate:.2g}/s, "
                                 f"{ref.longname[-40:]}", refresh=False)
        self.work_done += self._work[id(ref)]
        self.bar.update(self._work[id(ref)])

    def close(self) -> None:
        """Remove the bar."""
        self.bar.close()


def _row_task(ref: LayerRef, opts: AnalyzeOptions, columns: tuple[str, ...]
              ) -> tuple[dict[str, Any], np.ndarray | None]:
    """One layer in a worker: the serial route's :func:`layer_row` itself."""
    return layer_row(ref, opts, columns=columns)


@contextlib.contextmanager
def _main_left_alone() -> Iterator[None]:
    """Start workers without re-running ``__main__`` in them: they need nothing from it, and a
    script that calls :func:`~lmlab.spectral.analyze` at top level (no ``if __name__ ==
    "__main__"`` guard) would otherwise start again in every spawned worker."""
    main = sys.modules.get("__main__")
    saved: dict[str, Any] = {k: main.__dict__[k] for k in ("__spec__", "__file__")
             if main is not None and k in main.__dict__}
    try:
        if main is not None:
            main.__spec__ = None
            main.__dict__.pop("__file__", None)
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)


def _portable(ref: LayerRef) -> LayerRef:
    """``ref`` with a loader a worker can unpickle: the file path and the tensor name."""
    import dataclasses

    where = location_of(ref.load)
    return ref if where is None else dataclasses.replace(ref, load=where)


def parallel_rows(refs: Sequence[LayerRef], opts: AnalyzeOptions, columns: tuple[str, ...],
                  workers: int, *, done: dict[int, dict[str, Any]] | None = None,
                  progress: Progress | None = None,
                  ) -> list[tuple[dict[str, Any], np.ndarray | None]]:
    """``layer_row`` of every layer on ``workers`` spawned processes (one BLAS thread each),
    largest layers first; results in the order of ``refs``. ``done`` gives rows already known
    by position (they are not sent to a worker).

    Raises:
        whatever :func:`~lmlab.spectral.layer.layer_row` raises in a worker (the first one).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from lmlab.sweep._backends import _set_worker_threads

    done = done or {}
    out: list[tuple[dict[str, Any], np.ndarray | None] | None] = [None] * len(refs)
    for i, row in done.items():
        out[i] = (row, None)
        if progress is not None:
            progress.done(refs[i])
    order = sorted((i for i in range(len(refs)) if i not in done),
                   key=lambda i: -work_of(refs[i], opts))
    executor = ProcessPoolExecutor(max_workers=workers,
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_set_worker_threads, initargs=(1,))
    finished = False
    try:
        with _main_left_alone():  # workers start as tasks are submitted
            futures = {executor.submit(_row_task, _portable(refs[i]), opts, columns): i
                       for i in order}
        for future in as_completed(futures):
            i = futures[future]
            out[i] = future.result()
            if progress is not None:
                progress.done(refs[i])
        finished = True
    finally:
        executor.shutdown(wait=finished, cancel_futures=not finished)
    return [r for r in out if r is not None]


def analysed_rows(refs: Sequence[LayerRef], opts: AnalyzeOptions, columns: tuple[str, ...], *,
                  missing: dict[int, str], device: Any = None, show: bool = False,
                  keep_esds: bool = False, workers: int | None = 1,
                  threads: int | None = None,
                  ) -> tuple[list[dict[str, Any]], dict[int, np.ndarray]]:
    """The rows of ``refs`` (serially, or on the pool :func:`choose_workers` picks) with a
    :class:`Progress` bar, and the eigenvalues by ``layer_id`` with ``keep_esds``. A layer in
    ``missing`` (layer_id -> reason) is listed as skipped."""
    from lmlab.spectral.layer import base_row

    done: dict[int, dict[str, Any]] = {}
    for i, ref in enumerate(refs):
        if ref.layer_id in missing:
            done[i] = base_row(ref, *dims_of(ref), opts, columns)
            done[i].update(status="skipped", reason=missing[ref.layer_id])
    n = choose_workers(workers, [r for i, r in enumerate(refs) if i not in done], opts,
                       device=device, threads=threads)
    progress = Progress(refs, opts, show)
    try:
        if n > 1:
            results = parallel_rows(refs, opts, columns, n, done=done, progress=progress)
        else:
            results = []
            for i, ref in enumerate(refs):
                results.append((done[i], None) if i in done
                               else layer_row(ref, opts, columns=columns, device=device))
                progress.done(ref)
    finally:
        progress.close()
    esds = {ref.layer_id: evals for ref, (_, evals) in zip(refs, results, strict=True)
            if keep_esds and evals is not None}
    return [row for row, _ in results], esds
