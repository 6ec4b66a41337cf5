"""Test loss at every step where `finetune-spectral` tracks α, and the table that joins them.

The α trajectory alone says how the spectra moved; set against the held-out loss at the same
steps it says whether they moved with generalisation. :class:`TestLossTracker` evaluates the
test split at the tracked steps during training (the epoch ends are evaluated by the training
loop already and are not repeated); :func:`alpha_and_test_loss` joins the mean α of each
tracked step with the test loss measured at that step.

>>> trajectory = pd.DataFrame({"step": [0.0, 2.0, 4.0], "mean": [4.0, 3.9, 3.8]})
>>> tests = [{"step": 0, "loss": 3.0, "perplexity": 20.1},
...          {"step": 4, "loss": 2.5, "perplexity": 12.2}]
>>> alpha_and_test_loss(trajectory, tests).values.tolist()
[[0.0, 4.0, 3.0, 20.1, nan], [2.0, 3.9, nan, nan, nan], [4.0, 3.8, 2.5, 12.2, nan]]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pandas as pd

from lmlab.train.callbacks import Callback, TrainState

__all__ = ["KIND", "TestLossTracker", "alpha_and_test_loss"]

#: The ``kind`` of the test-loss rows in ``metrics.jsonl``.
KIND = "tracked_test"


class TestLossTracker(Callback):
    """Evaluate the test loss after the steps where α is tracked.

    Args:
        wants: whether a step is tracked (:meth:`lmlab.spectral.SpectralTracker.wants`).
        evaluate: scores the model on the test split; returns an object with ``loss``,
            ``perplexity`` and ``tokens`` (:func:`lmlab.train.evaluate_lm`).
        skip: whether a step is evaluated anyway (the loop's evaluation at an epoch's end).
        sink: receives each row (``kind`` :data:`KIND`), e.g. the run's ``log_metrics``.

    >>> from types import SimpleNamespace as NS
    >>> t = TestLossTracker(lambda s: s % 2 == 0, lambda m: NS(loss=1.0, perplexity=2.7,
    ...                     tokens=5), skip=lambda s: s == 4)
    >>> for step in range(1, 6):
    ...     t.on_step_end(TrainState(step=step))
    >>> [r["step"] for r in t.rows]
    [2]
    """

    __test__ = False  # not a pytest class, despite its name

    def __init__(self, wants: Callable[[int], bool], evaluate: Callable[[Any], Any], *,
                 skip: Callable[[int], bool] = lambda step: False,
                 sink: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.wants, self.evaluate, self.skip, self.sink = wants, evaluate, skip, sink
        self.rows: list[dict[str, Any]] = []

    def record(self, step: int, ev: Any, seconds: float | None = None) -> None:
        """Keep (and send to the sink) the evaluation ``ev`` of ``step``, once per step;
        ``seconds``: what it cost here (none: it was measured elsewhere)."""
        if any(r["step"] == step for r in self.rows):
            return
        row = {"kind": KIND, "step": int(step), "loss": float(ev.loss),
               "perplexity": float(ev.perplexity), "tokens": int(ev.tokens),
               "seconds": seconds}
        self.rows.append(row)
        if self.sink is not None:
            self.sink(row)

    def restore(self, metrics: pd.DataFrame) -> None:
        """Take back the rows an interrupted run logged (rows of other kinds are ignored)."""
        if metrics.empty or "kind" not in metrics:
            return
        for r in metrics[metrics["kind"] == KIND].to_dict("records"):
            seconds = r.get("seconds")
            self.rows.append({"kind": KIND, "step": int(r["step"]), "loss": float(r["loss"]),
                              "perplexity": float(r["perplexity"]), "tokens": int(r["tokens"]),
                              "seconds": None if pd.isna(seconds) else float(seconds)})

    def on_step_end(self, state: TrainState) -> None:  # noqa: D102
        step = int(state.step)
        if self.wants(step) and not self.skip(step) and all(r["step"] != step
                                                             for r in self.rows):
            import time

            start = time.perf_counter()
            ev = self.evaluate(state.model)
            self.record(step, ev, round(time.perf_counter() - start, 3))


def alpha_and_test_loss(trajectory: pd.DataFrame,
                        tests: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Mean α and test loss at every tracked step, one row per step.

    Args:
        trajectory: :func:`lmlab.spectral.tracker.alpha_by_step` (``step``, ``mean``, ...).
        tests: test evaluations (``step``, ``loss``, ``perplexity``, optionally ``seconds``);
            at a step evaluated twice the first one is kept (they are of the same weights).

    Returns:
        Columns ``step``, ``mean_alpha``, ``test_loss``, ``perplexity`` (NaN where a tracked
        step has no evaluation) and ``eval_seconds`` (the cost of an evaluation made only for
        the tracking; NaN for those the run makes anyway, before training and at epoch ends).
    """
    by_step: dict[int, Mapping[str, Any]] = {}
    for row in tests:
        by_step.setdefault(int(row["step"]), row)
    out = []
    for step, mean in zip(trajectory["step"], trajectory["mean"], strict=True):
        ev = by_step.get(int(step), {})
        seconds = ev.get("seconds")
        out.append({"step": float(step), "mean_alpha": float(mean),
                    "test_loss": float(ev.get("loss", math.nan)),
                    "perplexity": float(ev.get("perplexity", math.nan)),
                    "eval_seconds": math.nan if seconds is None else float(seconds)})
    return pd.DataFrame(out, columns=["step", "mean_alpha", "test_loss", "perplexity",
                                      "eval_seconds"])
