"""The copying task: placement invariants, token laws, pools and the oracle's error floors."""

from __future__ import annotations

import time

import numpy as np
import pytest

from lmlab.data.copying import (
    CopyTask,
    copy_mask,
    error_rate,
    make_pool,
    oracle_predictions,
    sample_batch,
    token_law,
)
from lmlab.errors import LmlabError

T = 64


def check_invariants(tokens: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> None:
    n = len(tokens)
    assert tokens.shape == (n, T) and tokens.dtype == np.int64
    assert starts.shape == (n, 2) and lens.shape == (n,)
    assert tokens.min() >= 0 and tokens.max() < 64
    s1, s2 = starts[:, 0], starts[:, 1]
    assert (s1 >= 0).all()
    assert (s1 + lens < s2).all()  # at least one background token between the copies
    assert (s2 + lens <= T - 1).all()  # at least one after the second copy
    for x, a, b, L in zip(tokens, s1, s2, lens, strict=True):
        assert (x[a : a + L] == x[b : b + L]).all()


def test_id_invariants() -> None:
    tokens, starts, lens = sample_batch(CopyTask(), 3000, np.random.default_rng(0))
    check_invariants(tokens, starts, lens)
    assert set(lens.tolist()) == set(range(10, 20))


def test_ood_invariants_and_uniform_placement() -> None:
    tokens, starts, lens = sample_batch(CopyTask(), 9100, np.random.default_rng(1), ood=True)
    check_invariants(tokens, starts, lens)
    assert (lens == 25).all()
    # r = 64 - 50 = 14: the 91 pairs g0 < g1 from {0..13} all appear, about equally often.
    g0, g1 = starts[:, 0], starts[:, 1] - 25
    counts = np.bincount(g0 * 14 + g1, minlength=14 * 14).reshape(14, 14)
    upper = counts[np.triu_indices(14, k=1)]
    assert counts[np.tril_indices(14)].sum() == 0
    assert upper.min() > 50 and upper.max() < 150  # mean 100
    # OOD tokens are uniform.
    freq = np.bincount(tokens.ravel(), minlength=64) / tokens.size
    assert np.abs(freq - 1 / 64).max() < 0.002


def test_pool_invariants() -> None:
    task = CopyTask(pool_size=30)
    pool = make_pool(task, np.random.default_rng(2))
    assert len(pool) == 30 and all(10 <= len(s) < 20 for s in pool)
    tokens, starts, lens = sample_batch(task, 2000, np.random.default_rng(3), pool=pool)
    check_invariants(tokens, starts, lens)
    segments = {tuple(x[a : a + L]) for x, (a, _), L in zip(tokens, starts, lens, strict=True)}
    assert len(segments) <= 30
    assert segments <= {tuple(s) for s in pool}
    assert len(segments) == len({tuple(s) for s in pool})  # 2000 draws hit every segment


def test_pool_is_required_and_ood_ignores_it() -> None:
    task = CopyTask(pool_size=5)
    with pytest.raises(LmlabError, match="pool_size=5 needs its pattern pool"):
        sample_batch(task, 3, np.random.default_rng(0))
    _, _, lens = sample_batch(task, 3, np.random.default_rng(0), ood=True)
    assert (lens == 25).all()
    with pytest.raises(LmlabError, match="infinite pool"):
        make_pool(CopyTask(), np.random.default_rng(0))


def test_same_seed_same_batch() -> None:
    a = sample_batch(CopyTask(), 20, np.random.default_rng(7))
    b = sample_batch(CopyTask(), 20, np.random.default_rng(7))
    for u, v in zip(a, b, strict=True):
        assert (u == v).all()


def test_zipf_law() -> None:
    p = token_law("zipf", 64)
    assert p.sum() == pytest.approx(1.0)
    assert p[0] == pytest.approx(0.089, abs=5e-4)
    assert p[63] == pytest.approx(0.0049, abs=5e-5)
    assert (np.diff(p) < 0).all()  # not shuffled: token 0 most frequent
    assert -(p * np.log(p)).sum() == pytest.approx(3.80, abs=0.005)
    tokens, _, _ = sample_batch(CopyTask(), 2000, np.random.default_rng(4))
    assert np.mean(tokens == 0) == pytest.approx(p[0], abs=0.01)  # background + segments


def test_other_laws() -> None:
    p = token_law("two-level", 64)
    assert p.sum() == pytest.approx(1.0) and (p[:4] == 1 / 8).all()
    assert p[4:] == pytest.approx(np.full(60, 0.5 / 60))
    assert token_law("unif", 8) == pytest.approx(np.full(8, 1 / 8))
    with pytest.raises(LmlabError, match="unknown token law"):
        token_law("gauss", 8)  # type: ignore[arg-type]


def test_oracle_floors() -> None:
    """A perfect copier: ≈ 0.092 (ID, zipf) and ≈ 0.047 (OOD) under the authors' mask."""
    p = token_law("zipf", 64)
    rng = np.random.default_rng(5)
    for ood, expected in ((False, (1 - (p**2).sum()) / 10.5), (True, 63 / 64 / 21)):
        tokens, starts, lens = sample_batch(CopyTask(), 20000, rng, ood=ood)
        pred = oracle_predictions(tokens, starts, lens)
        err = error_rate(pred, tokens, copy_mask(starts, lens, T))
        assert err == pytest.approx(expected, abs=0.003)
        assert err == pytest.approx(0.092 if not ood else 0.047, abs=0.005)
        assert error_rate(pred, tokens, copy_mask(starts, lens, T, floor_free=True)) == 0.0


def test_mask_positions() -> None:
    starts, lens = np.array([[3, 20]]), np.array([12])
    mask = copy_mask(starts, lens, T)
    assert mask.shape == (1, T - 1)
    assert np.flatnonzero(mask[0]).tolist() == list(range(24, 32))
    nofloor = copy_mask(starts, lens, T, floor_free=True)
    assert np.flatnonzero(nofloor[0]).tolist() == list(range(24, 31))


def test_error_rate_pools_positions() -> None:
    tokens = np.zeros((2, 5), dtype=np.int64)
    pred = np.zeros((2, 4), dtype=np.int64)
    pred[0, 0] = 1  # one wrong out of 1 counted in row 0; 3 right in row 1
    mask = np.array([[1, 0, 0, 0], [1, 1, 1, 0]], dtype=bool)
    assert error_rate(pred, tokens, mask) == pytest.approx(1 / 4)  # not (1 + 0) / 2
    with pytest.raises(LmlabError, match="no position is counted"):
        error_rate(pred, tokens, np.zeros_like(mask))
    with pytest.raises(LmlabError, match="shape"):
        error_rate(pred[:, :3], tokens, mask)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"vocab_size": 1}, "vocab_size"),
        ({"rep_l": 0}, "rep_l"),
        ({"rep_h": 10}, "rep_h"),
        ({"seq_len": 30}, "seq_len"),
        ({"ood_len": 40}, "ood_len"),
        ({"distr": "zipff"}, "distr"),
        ({"pool_size": 0}, "pool_size"),
        ({"rep_l": 2.5}, "rep_l"),
    ],
)
def test_bad_task_names_the_field(change: dict, field: str) -> None:
    with pytest.raises(LmlabError, match=f"task.{field}"):
        CopyTask(**change).validate()
    with pytest.raises(LmlabError, match=f"task.{field}"):
        sample_batch(CopyTask(**change), 2, np.random.default_rng(0))


def test_sampling_is_vectorised_and_fast() -> None:
    task, rng = CopyTask(), np.random.default_rng(6)
    pool = make_pool(CopyTask(pool_size=1000), rng)
    times = []
    for kwargs in ({}, {"pool": pool}, {"ood": True}):
        for _ in range(30):
            t0 = time.perf_counter()
            sample_batch(task, 50, rng, **kwargs)  # type: ignore[arg-type]
            times.append(time.perf_counter() - t0)
    assert float(np.median(times)) < 0.002  # ~0.3 ms here; generous for a loaded machine
