"""The callback protocol of lmlab's training loop.

A callback receives the :class:`TrainState` at the start of training, after every optimisation
step and at the end. Callbacks observe; they do not change the optimisation.

>>> class Count(Callback):
...     def __init__(self): self.n = 0
...     def on_step_end(self, state): self.n += 1
>>> c = Count(); c.on_step_end(TrainState(step=1)); c.n
1
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Callback", "TrainState", "Timed"]


@dataclass
class TrainState:
    """What a callback may look at.

    Attributes:
        step: optimisation steps completed so far (0 before the first).
        epoch: the current epoch (0-based).
        model: the model being trained.
        metrics: the latest scalar metrics (e.g. ``{"train_loss": 2.3}``).
    """

    step: int = 0
    epoch: int = 0
    model: Any = None
    metrics: dict[str, float] = field(default_factory=dict)


class Callback:
    """Base class: override the hooks you need; each default does nothing."""

    def on_train_begin(self, state: TrainState) -> None:
        """Called once before the first step."""

    def on_step_end(self, state: TrainState) -> None:
        """Called after every optimisation step."""

    def on_train_end(self, state: TrainState) -> None:
        """Called once after the last step."""


class Timed(Callback):
    """Forwards every hook to ``inner`` and measures the time it takes.

    Attributes:
        seconds: total time spent in ``inner``.
        calls: one record (hook, step, seconds) per call that took more than 1 ms.

    >>> t = Timed(Callback()); t.on_step_end(TrainState(step=1)); t.seconds >= 0
    True
    """

    def __init__(self, inner: Callback) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.calls: list[dict[str, Any]] = []

    def _timed(self, name: str, state: TrainState) -> None:
        start = time.perf_counter()
        getattr(self.inner, name)(state)
        dt = time.perf_counter() - start
        self.seconds += dt
        if dt > 1e-3:
            self.calls.append({"hook": name, "step": int(state.step), "seconds": dt})

    def on_train_begin(self, state: TrainState) -> None:  # noqa: D102
        self._timed("on_train_begin", state)

    def on_step_end(self, state: TrainState) -> None:  # noqa: D102
        self._timed("on_step_end", state)

    def on_train_end(self, state: TrainState) -> None:  # noqa: D102
        self._timed("on_train_end", state)
