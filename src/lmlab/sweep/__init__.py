"""Run many independent cells of a study: in-process, on a local process pool, or on Ray.

A *cell* is one configuration (typically a frozen dataclass or a dict); ``fn(cell)`` computes it
and returns one row (a dict) or several rows (a list of dicts). :func:`run_sweep` runs every cell,
shows a progress bar, and gathers the rows into one table with the cell's key in a ``cell``
column, in the order of the cells. With a ``store`` directory each finished cell is appended at
once to ``store/cells.jsonl`` (flushed and fsynced), so an interrupted sweep loses only the cells
that were running, and a rerun computes only the cells that are not stored yet.

Row values should be JSON scalars or lists: every row goes through
:func:`lmlab.runs.io.to_jsonable` (NumPy and torch values become numbers or lists, tuples
lists, unknown objects strings; NaN and infinities become ``None``, lmlab's one NaN policy, and
so NaN in a numeric column of the table), so a table is the same whether its cells were
computed now or read back from the store.

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

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from lmlab.config import check_ranges, ranged
from lmlab.errors import LmlabError
from lmlab.runs.io import to_jsonable
from lmlab.sweep._backends import RAY_HINT as RAY_HINT
from lmlab.sweep._backends import _one_line, _open_pool, _Outcome, _Pool
from lmlab.sweep._store import STORE_FILE as STORE_FILE
from lmlab.sweep._store import _Store

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SweepConfig", "cell_key", "run_sweep"]

BACKENDS = ("inprocess", "process", "ray")


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
    workers: int | None = ranged(None, 1, 1024, why="each worker is a process or a Ray task")
    address: str | None = None
    threads_per_worker: int = ranged(1, 1, 1024)

    def validate(self) -> None:
        """Check every field.

        Raises:
            LmlabError: Naming the field with a bad value.
        """
        check_ranges(self, "sweep.")
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

    def check_available(self) -> None:
        """Raise LmlabError before any work when the chosen backend cannot be imported."""
        import importlib.util

        if self.backend == "ray" and importlib.util.find_spec("ray") is None:
            raise LmlabError(RAY_HINT)


# --- cell keys --------------------------------------------------------------------------------


def cell_key(cell: Any) -> str:
    """The default key of a cell: 12 hex digits of the SHA-256 of its canonical JSON.

    The JSON is ``dataclasses.asdict(cell)`` for a dataclass, the mapping itself for a dict,
    normalised by :func:`lmlab.runs.io.to_jsonable` and written with sorted keys; so equal
    configs get equal keys in every process and every run.

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
        text = json.dumps(to_jsonable(plain), sort_keys=True, separators=(",", ":"),
                          allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise LmlabError(
            f"cannot make a key for cell {_short(cell)}: {exc}; pass key= to run_sweep"
        ) from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _short(obj: Any, limit: int = 80) -> str:
    text = " ".join(repr(obj).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- orchestration: run the cells, store them, gather the table -------------------------------


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
    device: str | None = None,
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
        device: Where the cells compute (``fn`` moves them there itself). On ``cuda``, a
            ``process`` pool has one worker (the cells share one GPU) and each Ray task
            requests ``1 / workers`` of a GPU (a whole one when ``workers`` is None).

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

    _check_options(cfg, on_error)
    cells = list(cells)
    keys = _distinct_keys(cells, key)
    sink = _Store(store) if store is not None else None
    try:
        results = _stored_results(sink, keys)
        todo = [(k, cell) for k, cell in zip(keys, cells, strict=True) if k not in results]
        bar = _progress_bar(len(cells), len(results), desc, progress)
        collector = _Collector(results, sink, bar, record=on_error == "record")
        _compute(fn, cfg, todo, collector, device)
    finally:
        if sink is not None:
            sink.close()
    if collector.failures:
        _raise_failure(collector.failures, cells, keys, len(results), sink)
    return _table(pd, keys, results, record=on_error == "record")


def _check_options(cfg: SweepConfig, on_error: str) -> None:
    if not isinstance(cfg, SweepConfig):
        raise TypeError(f"cfg must be a SweepConfig, got {type(cfg).__name__}")
    cfg.validate()
    if on_error not in ("raise", "record"):
        raise LmlabError(f"on_error must be 'raise' or 'record', got {on_error!r}")


def _distinct_keys(cells: list[Any], key: Callable[[Any], str] | None) -> list[str]:
    """Every cell's key, raising LmlabError on the first two cells that share one."""
    keys = [_key_of(cell, key) for cell in cells]
    seen: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k in seen:
            raise LmlabError(
                f"cells {seen[k]} and {i} have the same key {k!r}; "
                "make the cells distinct or pass a key= that tells them apart"
            )
        seen[k] = i
    return keys


def _key_of(cell: Any, key: Callable[[Any], str] | None) -> str:
    if key is None:
        return cell_key(cell)
    k = key(cell)
    if not isinstance(k, str) or not k:
        raise LmlabError(f"key() must return a non-empty string, got {k!r} for {_short(cell)}")
    return k


def _stored_results(sink: _Store | None, keys: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Lock the store and read back the rows of the cells of this sweep that it holds."""
    if sink is None:
        return {}
    sink.lock()
    stored = sink.load()
    return {k: stored[k] for k in keys if k in stored}


def _progress_bar(total: int, initial: int, desc: str, progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="cell", disable=not progress,
                dynamic_ncols=True)


@dataclass
class _Collector:
    """Takes each finished cell: ticks the bar, keeps and stores its rows, or notes the failure.

    Attributes:
        results: Cell key -> rows, filled in as cells finish (failed cells too with ``record``).
        sink: The store that finished cells are appended to, if any.
        bar: The progress bar.
        record: Give a failed cell an ``error`` row and go on (else note it and stop).
        failures: Failed cells and their outcomes, in the order they failed (without ``record``).
        failed: How many cells failed.
    """

    results: dict[str, list[dict[str, Any]]]
    sink: _Store | None
    bar: Any
    record: bool
    failures: list[tuple[str, _Outcome]] = field(default_factory=list)
    failed: int = 0

    def finish(self, k: str, outcome: _Outcome) -> bool:
        """Take the outcome of cell ``k``; False when no new cell should start."""
        self.bar.update(1)
        if outcome.rows is not None:
            if self.sink is not None:
                self.sink.append(k, outcome.rows, outcome.seconds)
            self.results[k] = outcome.rows
            return True
        self.failed += 1
        if self.record:
            self.results[k] = [{"error": outcome.error}]
            self.bar.set_postfix(failed=self.failed)
            return True
        self.failures.append((k, outcome))
        return False


def _compute(
    fn: Callable[[Any], Any], cfg: SweepConfig, todo: list[tuple[str, Any]], collector: _Collector,
    device: str | None = None,
) -> None:
    """Run the cells of ``todo`` on the backend's pool, handing each outcome to ``collector``."""
    try:
        if todo:
            with _open_pool(fn, cfg, len(todo), device) as pool:
                _drive(pool, todo, collector.finish)
                collector.bar.close()  # before the pool shuts down, so the bar's time is the work's
    finally:
        collector.bar.close()


def _raise_failure(
    failures: list[tuple[str, _Outcome]],
    cells: list[Any],
    keys: list[str],
    n_finished: int,
    sink: _Store | None,
) -> NoReturn:
    """Raise the one-line LmlabError of the first failed cell, its traceback as the cause."""
    key0, outcome = failures[0]
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    kept = (
        f"; {n_finished} finished cells are stored in {sink.directory}: rerun to resume"
        if sink is not None
        else ""
    )
    raise LmlabError(
        f"cell {key0} = {_short(cells[keys.index(key0)])} failed: {outcome.error}{more}{kept}"
    ) from _CellTraceback(outcome.traceback or outcome.error)


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
