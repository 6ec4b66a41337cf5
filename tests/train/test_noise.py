"""The loss noise: the sample standard deviation of the last W step-to-step loss changes,
checked on sequences whose changes are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmlab.train.noise import loss_changes, loss_noise, rolling_loss_noise


@pytest.mark.parametrize("window", [2, 4, 10, 50])
def test_alternating_changes_of_size_c(window: int) -> None:
    """loss = 2, 2 + c, 2, 2 + c, …: every change is ±c, mean 0 over an even window, so the
    sample variance is W c² / (W − 1)."""
    c = 0.37
    losses = [2.0 + c * (i % 2) for i in range(101)]  # 100 changes
    assert loss_noise(losses, window) == pytest.approx(c * math.sqrt(window / (window - 1)))


def test_gaussian_increments_of_known_sigma() -> None:
    """A random walk with i.i.d. N(−0.01, 0.3²) increments: the loss noise over 20,000 changes
    is 0.3 within sampling error (the standard error of a sample std is σ / √(2n) ≈ 0.0015);
    the downward drift is not noise."""
    rng = np.random.default_rng(0)
    losses = 5.0 + np.cumsum(rng.normal(-0.01, 0.3, 20_001))
    assert loss_noise(losses, window=20_000) == pytest.approx(0.3, abs=0.006)


def test_a_straight_descent_has_no_noise() -> None:
    assert loss_noise(np.linspace(4.0, 1.0, 31), window=10) == pytest.approx(0.0, abs=1e-12)


def test_only_the_trailing_window_counts() -> None:
    """Wild changes early, a steady descent at the end: a window over the end sees no noise,
    a window over the whole run does."""
    losses = [5.0, 1.0, 6.0, 0.5, 4.0] + [3.0 - 0.1 * i for i in range(10)]
    assert loss_noise(losses, window=9) == pytest.approx(0.0, abs=1e-12)
    assert loss_noise(losses, window=100) > 1.0
    # the window of 10 reaches back to the change 4.0 -> 3.0 (−1.0) among nine of −0.1
    want = float(np.std([-1.0] + [-0.1] * 9, ddof=1))
    assert loss_noise(losses, window=10) == pytest.approx(want)
    assert want == pytest.approx(0.9 / math.sqrt(10))  # by hand: one outlier of 0.9


def test_short_runs_and_bad_windows() -> None:
    assert loss_noise([1.0, 2.0, 0.0], window=20) == pytest.approx(math.sqrt(4.5))  # Δ = 1, −2
    assert math.isnan(loss_noise([1.0, 2.0], window=20))  # one change: no spread
    assert math.isnan(loss_noise([], window=20))
    with pytest.raises(ValueError, match="window must be ≥ 2"):
        loss_noise([1.0, 2.0, 3.0], window=1)


def test_rolling_noise_ends_with_the_run_value() -> None:
    rng = np.random.default_rng(1)
    losses = rng.normal(size=40)
    rolling = rolling_loss_noise(losses, window=7)
    assert np.isnan(rolling[:2]).all() and not np.isnan(rolling[2:]).any()
    assert rolling[-1] == loss_noise(losses, window=7)
    assert rolling[20] == pytest.approx(np.std(np.diff(losses[13:21]), ddof=1))
    assert loss_changes(losses).shape == (39,)
