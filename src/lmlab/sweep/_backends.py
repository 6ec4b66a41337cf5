"""Where the cells of a sweep run: in-process, on a local process pool, or on Ray.

The functions that run in spawned processes or Ray workers (:func:`_run_cell`,
:func:`_set_worker_threads`, :func:`_ray_task`) live at module level here, so that workers can
import them as ``lmlab.sweep._backends``; ray is imported only when the ray backend is used.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from lmlab.errors import LmlabError
from lmlab.runs.io import to_jsonable

if TYPE_CHECKING:
    from lmlab.sweep import SweepConfig

RAY_HINT = "the ray backend needs ray: pip install 'ray[default]'"
_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


# --- error lines ------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# --- one cell, in whatever process runs it ----------------------------------------------------


class _Outcome(NamedTuple):
    """What a worker sends back: JSON-normalised rows, or an error line and its traceback."""

    rows: list[dict[str, Any]] | None
    seconds: float
    error: str | None = None
    traceback: str = ""


def _as_rows(result: Any) -> list[dict[str, Any]]:
    """``fn``'s result as a list of plain JSON rows (raising TypeError/ValueError if unfit)."""
    if isinstance(result, Mapping):
        rows = [result]
    elif isinstance(result, (list, tuple)) and all(isinstance(r, Mapping) for r in result):
        rows = list(result)
    else:
        raise TypeError(f"fn must return a dict or a list of dicts, got {type(result).__name__}")
    if any("cell" in row for row in rows):
        raise ValueError("fn returned a 'cell' column; run_sweep reserves it for the cell key")
    plain: list[dict[str, Any]] = to_jsonable(rows)
    return plain


def _run_cell(fn: Callable[[Any], Any], cell: Any) -> _Outcome:
    start = time.perf_counter()
    try:
        rows = _as_rows(fn(cell))
    except Exception as exc:
        return _Outcome(None, time.perf_counter() - start, _one_line(exc), traceback.format_exc())
    return _Outcome(rows, time.perf_counter() - start)


_worker_threads: int | None = None  # what _set_worker_threads last set in this process


def _set_worker_threads(n: int) -> None:
    """Thread counts for a worker: env vars for libraries loaded later, torch and BLAS now."""
    global _worker_threads
    if _worker_threads == n:
        return
    from lmlab.runtime import set_threads

    for var in _THREAD_VARS:
        os.environ[var] = str(n)
    set_threads(n)
    _worker_threads = n


def _ray_task(fn_blob: bytes, cell_blob: bytes, threads: int, paths: list[str]) -> _Outcome:
    """A Ray task: make the driver's modules importable, set threads, run one cell."""
    import pickle

    sys.path.extend(p for p in paths if p not in sys.path)
    _set_worker_threads(threads)
    try:
        fn, cell = pickle.loads(fn_blob), pickle.loads(cell_blob)
    except Exception as exc:
        return _Outcome(None, 0.0, f"cannot load fn or cell in a Ray worker: {_one_line(exc)}")
    return _run_cell(fn, cell)


# --- backends: submit cells, wait for some, collect outcomes ----------------------------------


class _Pool(Protocol):
    limit: int

    def submit(self, cell: Any) -> Any: ...

    def wait(self, handles: list[Any]) -> list[Any]: ...

    def outcome(self, handle: Any) -> _Outcome: ...


class _InProcess:
    """Runs each cell when it is submitted, under the sweep's thread count."""

    limit = 1

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn
        self._done: dict[int, _Outcome] = {}
        self._count = 0

    def submit(self, cell: Any) -> int:
        self._count += 1
        self._done[self._count] = _run_cell(self.fn, cell)
        return self._count

    def wait(self, handles: list[Any]) -> list[Any]:
        return handles

    def outcome(self, handle: Any) -> _Outcome:
        return self._done.pop(handle)


class _ProcessPool:
    """A ``ProcessPoolExecutor`` of spawned workers (torch and fork do not mix)."""

    def __init__(self, fn: Callable[[Any], Any], workers: int, threads: int) -> None:
        import multiprocessing
        import pickle
        from concurrent.futures import ProcessPoolExecutor

        try:
            pickle.dumps(fn)
        except Exception as exc:
            raise LmlabError(
                f"fn cannot be sent to worker processes ({_one_line(exc)}); "
                "define it at module level in an importable module"
            ) from None
        self.fn = fn
        self.limit = 2 * workers  # keep every worker busy while results are stored
        self.executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_set_worker_threads,
            initargs=(threads,),
        )

    def submit(self, cell: Any) -> Any:
        return self.executor.submit(_run_cell, self.fn, cell)

    def wait(self, handles: list[Any]) -> list[Any]:
        from concurrent.futures import FIRST_COMPLETED, wait

        return list(wait(handles, return_when=FIRST_COMPLETED).done)

    def outcome(self, handle: Any) -> _Outcome:
        try:
            result: _Outcome = handle.result()
        except Exception as exc:  # a worker died, or a cell could not be pickled
            return _Outcome(None, 0.0, _one_line(exc), traceback.format_exc())
        return result

    def close(self, interrupted: bool) -> None:
        self.executor.shutdown(wait=not interrupted, cancel_futures=True)


class _RayPool:
    """Ray tasks of one CPU (and ``gpus`` of a GPU) each; ``fn`` and the cells travel by
    cloudpickle."""

    def __init__(self, fn: Callable[[Any], Any], cfg: SweepConfig, workers: int | None,
                 gpus: float = 0.0) -> None:
        import logging

        import ray
        from ray import cloudpickle

        self.ray = ray
        self.threads = cfg.threads_per_worker
        self.paths = list(sys.path)
        self.started = False
        if not ray.is_initialized():
            options: dict[str, Any] = {"num_cpus": workers} if cfg.address is None else {}
            try:
                ray.init(
                    address=cfg.address,
                    include_dashboard=False,
                    log_to_driver=False,
                    ignore_reinit_error=True,
                    logging_level=logging.WARNING,
                    **options,
                )
            except Exception as exc:
                where = "a local Ray" if cfg.address is None else f"Ray at {cfg.address}"
                raise LmlabError(f"cannot start or reach {where}: {_one_line(exc)}") from None
            self.started = True  # so this call also shuts it down (or disconnects)
        try:
            if workers is None:
                workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
            self.limit = 2 * workers
            self.task = ray.remote(num_cpus=1, num_gpus=gpus)(_ray_task)
            self.cloudpickle = cloudpickle
            self.fn_ref = ray.put(cloudpickle.dumps(fn))
        except BaseException:
            self.close(interrupted=True)
            raise
        self.running: set[Any] = set()

    def submit(self, cell: Any) -> Any:
        blob = self.cloudpickle.dumps(cell)
        ref = self.task.remote(self.fn_ref, blob, self.threads, self.paths)
        self.running.add(ref)
        return ref

    def wait(self, handles: list[Any]) -> list[Any]:
        ready, _ = self.ray.wait(handles, num_returns=1)
        return list(ready)

    def outcome(self, handle: Any) -> _Outcome:
        self.running.discard(handle)
        try:
            result: _Outcome = self.ray.get(handle)
        except Exception as exc:  # the worker died or the task could not run
            return _Outcome(None, 0.0, _one_line(exc), traceback.format_exc())
        return _Outcome(*result)

    def close(self, interrupted: bool) -> None:
        if interrupted:
            for ref in getattr(self, "running", ()):
                self.ray.cancel(ref, force=True)
        if self.started:
            self.ray.shutdown()


@contextlib.contextmanager
def _open_pool(fn: Callable[[Any], Any], cfg: SweepConfig, n_cells: int,
               device: str | None = None) -> Iterator[_Pool]:
    """The backend's pool; closed on exit (and torn down at once on Ctrl-C). On a ``cuda``
    device a process pool has one worker and a Ray task asks for ``1 / workers`` of a GPU."""
    gpu = device is not None and str(device).startswith("cuda")
    if cfg.backend == "inprocess":
        from lmlab.runtime import limit_threads

        with limit_threads(cfg.threads_per_worker):
            yield _InProcess(fn)
        return
    pool: _ProcessPool | _RayPool
    if cfg.backend == "process":
        workers = 1 if gpu else min(cfg.workers or os.cpu_count() or 1, n_cells)
        pool = _ProcessPool(fn, workers, cfg.threads_per_worker)
    else:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise LmlabError(RAY_HINT) from None
        workers_ray = cfg.workers
        if cfg.address is None:  # a local Ray gets as many CPUs as there are workers
            workers_ray = min(cfg.workers or os.cpu_count() or 1, n_cells)
        share = (1.0 / workers_ray if workers_ray else 1.0) if gpu else 0.0
        pool = _RayPool(fn, cfg, workers_ray, share)
    interrupted = True
    try:
        yield pool
        interrupted = False
    finally:
        pool.close(interrupted)
