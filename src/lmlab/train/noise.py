"""How noisy a training-loss curve is: the spread of its step-to-step changes.

For a loss sequence ``loss_1 … loss_T`` the changes are ``Δ_t = loss_t − loss_{t−1}``
(``t = 2 … T``). The *loss noise* at step ``t`` over a trailing window of ``W`` changes is the
sample standard deviation (``ddof = 1``) of ``Δ_{t−W+1} … Δ_t``; the loss noise of a run is that
value at its last step. A run with fewer than ``W`` changes uses all of them; one with fewer
than two changes has no loss noise (NaN). The mean change is removed by the standard deviation,
so a steady descent is not noise; what is left is how much one step's loss jumps around the
trend (different batches, an optimiser's overshoots).

>>> round(loss_noise([5.0, 4.0, 5.0, 4.0, 5.0], window=4), 4)  # Δ = −1, +1, −1, +1: √(4/3)
1.1547
>>> loss_noise([3.0, 2.5, 2.0, 1.5], window=10)      # a straight descent: no noise
0.0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["loss_changes", "loss_noise", "rolling_loss_noise"]


def loss_changes(losses: Sequence[float] | np.ndarray) -> np.ndarray:
    """The step-to-step changes ``Δ_t = loss_t − loss_{t−1}`` (one fewer than the losses).

    >>> loss_changes([3.0, 2.0, 2.5]).tolist()
    [-1.0, 0.5]
    """
    return np.diff(np.asarray(losses, dtype=float))


def loss_noise(losses: Sequence[float] | np.ndarray, window: int) -> float:
    """The sample standard deviation of the last ``window`` loss changes; NaN with fewer
    than two changes.

    Args:
        losses: the training loss at each step, in step order.
        window: ``W``, the number of trailing changes (≥ 2); a shorter run uses all of its own.

    Returns:
        ``std(Δ_{T−W+1} … Δ_T, ddof=1)``.

    Raises:
        ValueError: ``window`` < 2.

    >>> round(loss_noise([0.0, 1.0, 0.0, 1.0, 0.0], window=2), 4)  # Δ = …, −1, +1, −1
    1.4142
    """
    if window < 2:
        raise ValueError(f"window must be ≥ 2, got {window}")
    changes = loss_changes(losses)[-window:]
    if len(changes) < 2:
        return float("nan")
    return float(np.std(changes, ddof=1))


def rolling_loss_noise(losses: Sequence[float] | np.ndarray, window: int) -> np.ndarray:
    """The loss noise at every step: entry ``i`` uses the changes up to step ``i`` (the last
    ``window`` of them, fewer near the start; NaN until two changes exist). Its last entry is
    :func:`loss_noise`.

    >>> np.round(rolling_loss_noise([0.0, 1.0, 0.0, 1.0], window=2), 4).tolist()
    [nan, nan, 1.4142, 1.4142]
    """
    values = np.asarray(losses, dtype=float)
    return np.array([loss_noise(values[: i + 1], window) for i in range(len(values))])
