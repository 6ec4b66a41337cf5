"""Run many independent cells of a study: in-process, on a local process pool, or on Ray.

A *cell* is one configuration (typically a frozen dataclass or a dict); ``fn(cell)`` computes it
and returns one row (a dict) or several rows (a list of dicts). :func:`run_sweep` runs every cell,
shows a progress bar, and gathers the rows into one table with the cell's key in a ``cell``
column, in the order of the cells. With a ``store`` directory each finished cell is appended at
once to ``store/cells.jsonl`` (flushed and fsynced), so an interrupted sweep loses only the cells
that were running, and a rerun computes only the cells that are not stored yet.

Row values should be JSON scalars or lists: every row goes through JSON (NumPy and torch values
become numbers or lists, tuples lists, unknown objects strings; NaN and infinities are kept, as
JSON's ``NaN``/``Infinity`` extension), so a table is the same whether its cells were computed
now or read back from the store.

>>> import tempfile
>>> def square(cell):  # process and ray workers need a function defined in a module
...     return {"y": cell["x"] ** 2}
>>> cells = [{"x": 1}, {"x": 2}]
>>> with tempfile.TemporaryDirectory() as store:
...     first = run_sweep(square, cells, store=store, progress=False)
...     again = run_sweep(square, cells + [{"x": 3}], store=store, progress=False)
>>> again["y"].tolist()
[1, 4, 9]
>>> again["cell"][0] == cell_key({"x": 1})
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import json
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from lmlab.errors import LmlabError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SweepConfig", "cell_key", "run_sweep"]

BACKENDS = ("inprocess", "process", "ray")
STORE_FILE = "cells.jsonl"
RAY_HINT = "the ray backend needs ray: pip install 'ray[default]'"
_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True)
class SweepConfig:
    """Where and how wide a sweep runs.

    Attributes:
        backend: ``"inprocess"`` (one cell after another in this process), ``"process"`` (a
            local pool of spawned processes) or ``"ray"`` (tasks on a Ray cluster).
        workers: Cells computed at once by ``process`` and ``ray`` (``None``: ``os.cpu_count()``
            for a local pool or a local Ray; every CPU of the cluster for a connected Ray).
        address: Ray only: ``None`` starts a local Ray instance for the sweep and stops it
            afterwards; ``"auto"`` or ``"ray://host:port"`` connects to a running cluster.
        threads_per_worker: torch and BLAS threads while a cell runs, on every backend (set in
            each worker before work starts; in-process, set for the sweep and then restored).

    >>> SweepConfig(backend="process", workers=2).validate()
    """

    backend: Literal["inprocess", "process", "ray"] = "inprocess"
    workers: int | None = None
    address: str | None = None
    threads_per_worker: int = 1

    def validate(self) -> None:
        """Check every field.

        Raises:
            LmlabError: Naming the field with a bad value.
        """
        if self.backend not in BACKENDS:
            raise LmlabError(
                f"unknown sweep backend {self.backend!r}; choose one of {', '.join(BACKENDS)}"
            )
        if self.workers is not None and not _positive_int(self.workers):
            raise LmlabError(
                f"sweep workers must be a positive integer or None, got {self.workers!r}"
            )
        if self.address is not None and (not isinstance(self.address, str) or not self.address):
            raise LmlabError(
                f"sweep address must be None, 'auto' or 'ray://host:port', got {self.address!r}"
            )
        if not _positive_int(self.threads_per_worker):
            raise LmlabError(
                "sweep threads_per_worker must be a positive integer, "
                f"got {self.threads_per_worker!r}"
            )


# --- keys and JSON ----------------------------------------------------------------------------


def _json_default(obj: Any) -> Any:
    """Plain values for what ``json`` does not know (used by keys and by stored rows)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # NumPy / torch arrays and scalars
        return obj.tolist()
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    return str(obj)


def cell_key(cell: Any) -> str:
    """The default key of a cell: 12 hex digits of the SHA-256 of its canonical JSON.

    The JSON is ``dataclasses.asdict(cell)`` for a dataclass, the mapping itself for a dict,
    with sorted keys; so equal configs get equal keys in every process and every run.

    Args:
        cell: A dataclass instance, a dict, or any JSON-able value.

    Returns:
        A string such as ``'b3c0b9b0a4e3'``.

    Raises:
        LmlabError: If the cell cannot be written as JSON (pass ``key=`` to :func:`run_sweep`).

    >>> cell_key({"lr": 0.1, "seed": 0}) == cell_key({"seed": 0, "lr": 0.1})
    True
    >>> len(cell_key({"lr": 0.1}))
    12
    """
    is_instance = dataclasses.is_dataclass(cell) and not isinstance(cell, type)
    plain = dataclasses.asdict(cell) if is_instance else cell
    try:
        text = json.dumps(plain, sort_keys=True, separators=(",", ":"), default=_json_default)
    except (TypeError, ValueError) as exc:
        raise LmlabError(
            f"cannot make a key for cell {_short(cell)}: {exc}; pass key= to run_sweep"
        ) from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _short(obj: Any, limit: int = 80) -> str:
    text = " ".join(repr(obj).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    plain: list[dict[str, Any]] = json.loads(json.dumps(rows, default=_json_default))
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


# --- the store --------------------------------------------------------------------------------


class _Store:
    """``cells.jsonl`` in a directory: one ``{"key", "seconds", "rows"}`` line per finished cell.

    A torn last line (a crash mid-write) is ignored and cut off before the next append; a
    corrupt line elsewhere is skipped with a warning. Either way that cell is computed again.
    A lock file keeps two sweeps from writing the same store at once (where ``fcntl`` exists).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser()
        self.path = self.directory / STORE_FILE
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LmlabError(
                f"cannot create the sweep store {self.directory}: {exc.strerror or exc}; "
                "choose a writable directory"
            ) from None
        self._good_size: int | None = None  # bytes before a torn last line, if there is one
        self._fd: int | None = None
        self._lock: Any = None

    def lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # not on this platform: no protection against a second writer
            return
        try:
            self._lock = open(self.directory / ".lock", "a")  # noqa: SIM115 - until close()
        except OSError:  # a read-only store can still be read; appending will say what is wrong
            return
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise LmlabError(
                f"the sweep store {self.directory} is in use by another sweep; "
                "wait for it or use another store"
            ) from None

    def load(self) -> dict[str, list[dict[str, Any]]]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise LmlabError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        good = data.rfind(b"\n") + 1  # a torn tail after the last newline is ignored
        self._good_size = good if good < len(data) else None
        done: dict[str, list[dict[str, Any]]] = {}
        for number, line in enumerate(data[:good].split(b"\n")[:-1], start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key, rows = record["key"], record["rows"]
                if not isinstance(key, str) or not isinstance(rows, list):
                    raise TypeError
            except (ValueError, TypeError, KeyError):
                warnings.warn(
                    f"skipped corrupt line {number} of {self.path}; that cell will be recomputed",
                    stacklevel=3,
                )
                continue
            done[key] = rows
        return done

    def append(self, key: str, rows: list[dict[str, Any]], seconds: float) -> None:
        line = json.dumps({"key": key, "seconds": round(seconds, 6), "rows": rows}) + "\n"
        data = line.encode("utf-8")
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
                if self._good_size is not None:  # drop the torn last line before appending
                    os.ftruncate(self._fd, self._good_size)
                from lmlab.runs.io import _fsync_dir

                _fsync_dir(self.directory)
            while data:
                data = data[os.write(self._fd, data) :]
            os.fsync(self._fd)
        except OSError as exc:
            raise LmlabError(
                f"cannot append to {self.path} ({exc.strerror or exc}); "
                "check that the store is writable and the disk is not full"
            ) from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None


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
    """Ray tasks of one CPU each; ``fn`` and the cells travel by cloudpickle."""

    def __init__(self, fn: Callable[[Any], Any], cfg: SweepConfig, workers: int | None) -> None:
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
            self.task = ray.remote(num_cpus=1)(_ray_task)
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
def _open_pool(fn: Callable[[Any], Any], cfg: SweepConfig, n_cells: int) -> Iterator[_Pool]:
    """The backend's pool; closed on exit (and torn down at once on Ctrl-C)."""
    if cfg.backend == "inprocess":
        from lmlab.runtime import limit_threads

        with limit_threads(cfg.threads_per_worker):
            yield _InProcess(fn)
        return
    pool: _ProcessPool | _RayPool
    if cfg.backend == "process":
        workers = min(cfg.workers or os.cpu_count() or 1, n_cells)
        pool = _ProcessPool(fn, workers, cfg.threads_per_worker)
    else:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise LmlabError(RAY_HINT) from None
        workers_ray = cfg.workers
        if cfg.address is None:  # a local Ray gets as many CPUs as there are workers
            workers_ray = min(cfg.workers or os.cpu_count() or 1, n_cells)
        pool = _RayPool(fn, cfg, workers_ray)
    interrupted = True
    try:
        yield pool
        interrupted = False
    finally:
        pool.close(interrupted)


class _CellTraceback(Exception):
    """The traceback of a failed cell, chained under the one-line LmlabError."""


def _drive(
    pool: _Pool,
    todo: list[tuple[str, Any]],
    finish: Callable[[str, _Outcome], bool],
) -> None:
    """Keep up to ``pool.limit`` cells running; ``finish`` returns False to stop submitting."""
    queue = iter(todo)
    running: dict[Any, str] = {}
    go_on = True
    while True:
        while go_on and len(running) < pool.limit:
            item = next(queue, None)
            if item is None:
                break
            key, cell = item
            try:
                running[pool.submit(cell)] = key
            except Exception as exc:  # e.g. a broken pool: this and the queued cells fail
                go_on = False
                failure = _Outcome(None, 0.0, f"not run: {_one_line(exc)}")
                for k in [key, *(k for k, _ in queue)]:
                    if not finish(k, failure):
                        break
        if not running:
            return
        for handle in pool.wait(list(running)):
            key = running.pop(handle)
            go_on = finish(key, pool.outcome(handle)) and go_on


def run_sweep(
    fn: Callable[[Any], dict[str, Any] | list[dict[str, Any]]],
    cells: Sequence[Any],
    cfg: SweepConfig = SweepConfig(),  # noqa: B008 - frozen, so a shared default is safe
    *,
    store: str | os.PathLike[str] | None = None,
    key: Callable[[Any], str] | None = None,
    progress: bool = True,
    desc: str = "sweep",
    on_error: Literal["raise", "record"] = "raise",
) -> pd.DataFrame:
    """Compute ``fn(cell)`` for every cell and gather the rows into one table.

    Args:
        fn: Takes one cell, returns a dict (one row) or a list of dicts (several rows). For the
            ``process`` and ``ray`` backends it must be picklable: a module-level function
            (cells too must be picklable).
        cells: The configurations, e.g. frozen dataclasses or dicts; keys must be distinct.
        cfg: Backend, workers and threads.
        store: A directory that keeps finished cells (``cells.jsonl``); cells already there are
            not computed again. The store is keyed by cell only: use a new one when ``fn``
            changes.
        key: A stable string id per cell (default :func:`cell_key`).
        progress: Show a tqdm bar (cells done / total, rate, ETA).
        desc: The bar's label.
        on_error: ``"raise"`` stops at the first failed cell (cells already running finish and
            are stored; no new ones start); ``"record"`` goes on and gives each failed cell one
            row with its message in an ``error`` column (``None`` elsewhere). Failed cells are
            never stored, so a rerun tries them again.

    Returns:
        One row per result row, in the order of ``cells``: a ``cell`` column with the key,
        then ``fn``'s columns.

    Raises:
        LmlabError: On a bad config or cell keys, when ray is needed but missing, or (with
            ``on_error="raise"``) when a cell fails: one line naming the cell key and the error;
            the worker's traceback is chained as the cause.

    >>> def double(cell):
    ...     return [{"i": i, "y": 2 * cell["x"]} for i in range(2)]
    >>> table = run_sweep(double, [{"x": 1}, {"x": 5}], key=lambda c: f"x{c['x']}",
    ...                   progress=False)
    >>> table.values.tolist()
    [['x1', 0, 2], ['x1', 1, 2], ['x5', 0, 10], ['x5', 1, 10]]
    """
    import pandas as pd
    from tqdm.auto import tqdm

    if not isinstance(cfg, SweepConfig):
        raise TypeError(f"cfg must be a SweepConfig, got {type(cfg).__name__}")
    cfg.validate()
    if on_error not in ("raise", "record"):
        raise LmlabError(f"on_error must be 'raise' or 'record', got {on_error!r}")
    cells = list(cells)
    keys = [_key_of(cell, key) for cell in cells]
    seen: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k in seen:
            raise LmlabError(
                f"cells {seen[k]} and {i} have the same key {k!r}; "
                "make the cells distinct or pass a key= that tells them apart"
            )
        seen[k] = i

    results: dict[str, list[dict[str, Any]]] = {}
    failures: list[tuple[str, _Outcome]] = []
    failed = 0
    sink = _Store(store) if store is not None else None
    try:
        if sink is not None:
            sink.lock()
            stored = sink.load()
            results.update((k, stored[k]) for k in keys if k in stored)
        todo = [(k, cell) for k, cell in zip(keys, cells, strict=True) if k not in results]
        bar = tqdm(total=len(cells), initial=len(results), desc=desc, unit="cell",
                   disable=not progress, dynamic_ncols=True)

        def finish(k: str, outcome: _Outcome) -> bool:
            nonlocal failed
            bar.update(1)
            if outcome.rows is not None:
                if sink is not None:
                    sink.append(k, outcome.rows, outcome.seconds)
                results[k] = outcome.rows
                return True
            failed += 1
            if on_error == "record":
                results[k] = [{"error": outcome.error}]
                bar.set_postfix(failed=failed)
                return True
            failures.append((k, outcome))
            return False

        try:
            if todo:
                with _open_pool(fn, cfg, len(todo)) as pool:
                    _drive(pool, todo, finish)
                    bar.close()  # before the pool shuts down, so the bar's time is the work's
        finally:
            bar.close()
    finally:
        if sink is not None:
            sink.close()
    if failures:
        key0, outcome = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        kept = (
            f"; {len(results)} finished cells are stored in {sink.directory}: rerun to resume"
            if sink is not None
            else ""
        )
        raise LmlabError(
            f"cell {key0} = {_short(cells[seen[key0]])} failed: {outcome.error}{more}{kept}"
        ) from _CellTraceback(outcome.traceback or outcome.error)
    return _table(pd, keys, results, record=on_error == "record")


def _key_of(cell: Any, key: Callable[[Any], str] | None) -> str:
    if key is None:
        return cell_key(cell)
    k = key(cell)
    if not isinstance(k, str) or not k:
        raise LmlabError(f"key() must return a non-empty string, got {k!r} for {_short(cell)}")
    return k


def _table(
    pd: Any, keys: list[str], results: Mapping[str, list[dict[str, Any]]], record: bool
) -> pd.DataFrame:
    records: list[dict[str, Any]] = []
    for k in keys:
        for row in results[k]:
            full = {"cell": k, **row}
            if record:
                full.setdefault("error", None)
            records.append(full)
    if not records:
        return pd.DataFrame(columns=["cell", "error"] if record else ["cell"])
    table: pd.DataFrame = pd.DataFrame.from_records(records)
    return table
