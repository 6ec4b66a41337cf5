"""Track per-layer α during training: a callback for lmlab's training loop.

At chosen steps the tracker analyses the model in memory and records one row per layer
(``step``, ``layer_id``, ``longname``, ``layer_type``, ``alpha``, ``D``, ``xmin``, ``status``)
in its own table and, when given a sink (a :class:`~lmlab.runs.RunDir` or any callable taking a
list of dicts), in the run's metrics table with ``kind = "spectral"``.

The spectra are computed where the model trains: a model on a GPU takes the torch route on
its device (the NumPy route's numbers in float64; ``precision="float32"`` for cheap
tracking), a model on the CPU the NumPy route, unless ``device=`` is given.

>>> import torch
>>> from lmlab.train import TrainState
>>> model = torch.nn.Sequential(torch.nn.Linear(32, 64))
>>> tracker = SpectralTracker(every=2)
>>> for step in range(5):
...     tracker.on_step_end(TrainState(step=step, model=model))
>>> sorted(tracker.frame()["step"].unique().tolist())
[0, 2, 4]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pandas as pd

from lmlab.spectral.analyze import analyze
from lmlab.train.callbacks import Callback, TrainState

__all__ = ["SpectralTracker", "TRACKED_COLUMNS", "alpha_by_step"]

TRACKED_COLUMNS = ("layer_id", "longname", "layer_type", "alpha", "D", "xmin", "status")


class SpectralTracker(Callback):
    """Record per-layer α at chosen training steps.

    Args:
        steps: explicit steps at which to analyse.
        every: also analyse every ``every`` steps (step 0 included).
        at_begin, at_end: analyse before training starts / after it ends.
        sink: where rows go besides the tracker's own table: a run directory (its
            ``log_metrics``) or a callable taking a list of row dicts.
        **analyze_kwargs: passed to :func:`lmlab.spectral.analyze` (e.g. ``layers``,
            ``precision="float32"`` for cheap tracking; ``device``, default the model's).
    """

    def __init__(
        self,
        steps: Iterable[int] = (),
        every: int | None = None,
        *,
        at_begin: bool = True,
        at_end: bool = True,
        sink: Any = None,
        **analyze_kwargs: Any,
    ) -> None:
        if every is not None and every <= 0:
            raise ValueError("every must be a positive number of steps")
        self.steps = set(int(s) for s in steps)
        self.every = every
        self.at_begin, self.at_end = at_begin, at_end
        self._sink: Callable[[list[dict[str, Any]]], None] | None = (
            getattr(sink, "log_metrics", None) or sink
        )
        self._kwargs: dict[str, Any] = {"progress": False, **analyze_kwargs}
        self._rows: list[dict[str, Any]] = []
        self._done: set[int] = set()

    def wants(self, step: int) -> bool:
        """True when ``step`` is one of the tracked steps."""
        return step in self.steps or (self.every is not None and step % self.every == 0)

    def record(self, step: int, model: Any) -> pd.DataFrame:
        """Analyse ``model`` now and record its rows under ``step`` (once per step)."""
        kwargs = self._kwargs
        if "device" not in kwargs:
            kwargs = {**kwargs, "device": _device_of(model)}
        df = analyze(model, **kwargs)
        if step in self._done:
            return df
        self._done.add(step)
        rows = [
            {"kind": "spectral", "step": int(step), **_plain(r)}
            for r in df[list(TRACKED_COLUMNS)].to_dict("records")
        ]
        self._rows.extend(rows)
        if self._sink is not None:
            self._sink(rows)
        return df

    def restore(self, rows: pd.DataFrame) -> int:
        """Take back rows recorded before an interruption (e.g. the run's metrics).

        Rows of ``kind == "spectral"`` are kept as if recorded here, and their steps are not
        analysed (nor sent to the sink) again, so a resumed run ends with the same table as
        an uninterrupted one.

        Args:
            rows: A table with at least ``kind`` and ``step`` columns; other kinds are ignored.

        Returns:
            The number of steps restored.
        """
        if rows.empty or "kind" not in rows or "step" not in rows:
            return 0
        mine = rows[rows["kind"] == "spectral"]
        cols = ["kind", "step", *TRACKED_COLUMNS]
        for rec in mine.reindex(columns=cols).to_dict("records"):
            rec["step"] = int(rec["step"])
            self._rows.append(_plain(rec))
        steps = {int(s) for s in mine["step"]}
        self._done |= steps
        return len(steps)

    def on_train_begin(self, state: TrainState) -> None:  # noqa: D102
        if self.at_begin:
            self.record(state.step, state.model)

    def on_step_end(self, state: TrainState) -> None:  # noqa: D102
        if self.wants(state.step):
            self.record(state.step, state.model)

    def on_train_end(self, state: TrainState) -> None:  # noqa: D102
        if self.at_end:
            self.record(state.step, state.model)

    def frame(self) -> pd.DataFrame:
        """All recorded rows: one per (step, layer)."""
        return pd.DataFrame(self._rows, columns=["kind", "step", *TRACKED_COLUMNS])


def _device_of(model: Any) -> Any:
    """The device of a model's first parameter when it is not the CPU (None otherwise: the
    NumPy route)."""
    parameters = getattr(model, "parameters", None)
    if parameters is None:
        return None
    first = next(iter(parameters()), None)
    if first is None or first.device.type == "cpu":
        return None
    return first.device


def _plain(row: Mapping[str, Any]) -> dict[str, Any]:
    """Row values as plain Python scalars (JSON-safe; NaN stays a float)."""
    out = {}
    for k, v in row.items():
        out[k] = v.item() if hasattr(v, "item") else (None if v is pd.NA else v)
    return out


def alpha_by_step(tracked: pd.DataFrame) -> pd.DataFrame:
    """α of every fitted layer at every tracked step, one row per step, and their mean.

    Args:
        tracked: a :class:`SpectralTracker` table (step, longname, alpha, status, ...).

    Returns:
        Columns ``step``, ``mean`` (over the layers fitted at that step), then one column per
        layer, in name order.

    >>> import pandas as pd
    >>> t = pd.DataFrame({"step": [0, 0, 5, 5], "longname": ["a", "b", "a", "b"],
    ...                   "alpha": [2.0, 4.0, 3.0, 5.0], "status": ["success"] * 4})
    >>> alpha_by_step(t).values.tolist()
    [[0.0, 3.0, 2.0, 4.0], [5.0, 4.0, 3.0, 5.0]]
    """
    import pandas as pd

    ok = tracked[tracked["status"] == "success"]
    if ok.empty:
        return pd.DataFrame({"step": [], "mean": []})
    wide = ok.pivot_table(index="step", columns="longname", values="alpha")
    out = pd.DataFrame({"step": wide.index.astype(float), "mean": wide.mean(axis=1).to_numpy()})
    return pd.concat([out, wide.reset_index(drop=True)], axis=1)
