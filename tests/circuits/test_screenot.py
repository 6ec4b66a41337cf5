"""ScreeNOT: planted rank recovery, the white-noise threshold, k range, batching."""

from __future__ import annotations

import numpy as np
import pytest

from lmlab.circuits.screenot import max_k, pseudo_noise, screenot_rank
from lmlab.errors import LmlabError


def _planted(m: int, n: int, svals: list[float], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = len(svals)
    u = np.linalg.qr(rng.normal(size=(m, r)))[0]
    v = np.linalg.qr(rng.normal(size=(n, r)))[0]
    return u @ np.diag(svals) @ v.T + rng.normal(size=(m, n)) / np.sqrt(max(m, n))


@pytest.mark.parametrize(("m", "n"), [(64, 64), (300, 300), (150, 300)])
def test_recovers_planted_rank(m: int, n: int) -> None:
    for seed in range(3):
        Y = _planted(m, n, [12.0, 9.0, 7.0, 5.0], seed)
        for k in (5, 10, min(20, max_k(min(m, n)))):
            threshold, rank = screenot_rank(Y, k)
            assert int(rank) == 4, (m, n, seed, k, float(threshold))


def test_white_noise_threshold_is_four_over_root_three() -> None:
    n = 400
    Y = np.random.default_rng(0).normal(size=(n, n)) / np.sqrt(n)   # bulk edge 2
    threshold, rank = screenot_rank(Y, 10)
    assert int(rank) == 0
    assert float(threshold) == pytest.approx(4 / np.sqrt(3), rel=0.02)


def test_k_out_of_range_names_the_range() -> None:
    Y = np.random.default_rng(0).normal(size=(64, 64))
    assert max_k(64) == 31
    screenot_rank(Y, 31)
    for bad in (32, -1, 2.5):
        with pytest.raises(LmlabError, match=r"\[0, 31\]"):
            screenot_rank(Y, bad)  # type: ignore[arg-type]
    with pytest.raises(LmlabError, match=r"\[0, 63\]"):
        screenot_rank(Y, 64, strategy="w")
    with pytest.raises(LmlabError, match="strategy"):
        screenot_rank(Y, 3, strategy="x")  # type: ignore[arg-type]


def test_batched_equals_one_at_a_time_and_strategies() -> None:
    stack = np.stack([_planted(64, 64, [10.0] * (i + 1), i) for i in range(3)])
    t, r = screenot_rank(stack, 10)
    assert t.shape == r.shape == (3,)
    for i in range(3):
        ti, ri = screenot_rank(stack[i], 10)
        assert float(ti) == pytest.approx(float(t[i]), rel=1e-10) and int(ri) == int(r[i])
    assert r.tolist() == [1, 2, 3]


def test_other_strategies_on_a_larger_matrix() -> None:
    # winsorisation and transport to zero bias the threshold down as k/p grows (they remove
    # mass from the bulk edge), so they need k ≪ p; imputation is the default for that reason
    Y = _planted(300, 300, [10.0, 8.0, 6.0], 0)
    for strategy in ("i", "w", "0"):
        assert int(screenot_rank(Y, 5, strategy=strategy)[1]) == 3


def test_pseudo_noise_imputation_extrapolates_the_edge() -> None:
    # noise values on the curve E − c j^(2/3): imputation recovers the removed top exactly
    j = np.arange(40)
    s = 5.0 - 0.3 * j ** (2 / 3)
    s_obs = s.copy()
    s_obs[:4] += 10.0                                          # signal on the top 4
    np.testing.assert_allclose(pseudo_noise(s_obs, 4), s, atol=1e-12)
