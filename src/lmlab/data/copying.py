"""The copying ("varied repetition") task of Song, Xu, Zhong (PNAS 2025): one segment, twice.

Every sequence has ``seq_len`` tokens drawn i.i.d. from a token law; a segment of length L is
written into it twice, at ``s1`` and ``s2`` with at least one background token between the
copies and at least one after the second. In distribution (ID) the tokens follow the law
(Zipf by default) and L is uniform in ``[rep_l, rep_h)``; out of distribution (OOD) every
token is uniform and L = ``ood_len``. With a pattern pool, ID segments are drawn from a fixed
pool of ``pool_size`` segments, so the ID test patterns are training patterns.

The error is measured as the authors do: greedy predictions at positions t in
``[s2 + 4, s2 + L)`` are compared with token t + 1. The last of those targets the token after
the copy, which is random, so even a perfect copier has an error floor (≈ 0.092 ID, ≈ 0.047
OOD); :func:`copy_mask` with ``floor_free=True`` drops that position.

>>> rng = np.random.default_rng(0)
>>> task = CopyTask()
>>> tokens, starts, lens = sample_batch(task, 4, rng)
>>> tokens.shape, starts.shape, lens.shape
((4, 64), (4, 2), (4,))
>>> s1, s2 = starts[0]; L = lens[0]
>>> bool((tokens[0, s1:s1 + L] == tokens[0, s2:s2 + L]).all())
True
>>> mask = copy_mask(starts, lens, 64, floor_free=True)
>>> error_rate(oracle_predictions(tokens, starts, lens), tokens, mask)
0.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from lmlab.config import check_ranges, ranged
from lmlab.errors import LmlabError

__all__ = [
    "DISTRIBUTIONS",
    "CopyTask",
    "copy_mask",
    "error_rate",
    "make_pool",
    "oracle_predictions",
    "sample_batch",
    "token_law",
]

Distr = Literal["zipf", "two-level", "unif"]
DISTRIBUTIONS: tuple[str, ...] = ("zipf", "two-level", "unif")


def token_law(name: Distr, V: int) -> np.ndarray:
    """The probabilities of the V tokens under a named law (the authors' ``make_distr``).

    ``"zipf"``: p_i ∝ 1/(i + 2.7) for i = 1..V, not shuffled (token 0 is the most frequent);
    ``"two-level"``: tokens 0..3 have 1/8 each, the other V − 4 share 1/2 equally;
    ``"unif"``: 1/V each.

    Args:
        name: The law.
        V: The vocabulary size (at least 5 for ``"two-level"``).

    Returns:
        A float64 array of shape (V,) summing to 1.

    Raises:
        LmlabError: On an unknown law or a vocabulary too small for it.

    >>> p = token_law("zipf", 64)
    >>> round(float(p[0]), 4), round(float(p[-1]), 4)
    (0.0889, 0.0049)
    """
    if isinstance(V, bool) or not isinstance(V, int) or V < 2:
        raise LmlabError(f"the vocabulary size must be an integer of at least 2 (got {V!r})")
    if name == "zipf":
        w = 1.0 / (np.arange(1, V + 1, dtype=np.float64) + 2.7)
        return w / w.sum()
    if name == "two-level":
        if V < 5:
            raise LmlabError(f"the two-level law needs vocab_size >= 5 (got {V})")
        p = np.full(V, 0.5 / (V - 4))
        p[:4] = 1.0 / 8.0
        return p
    if name == "unif":
        return np.full(V, 1.0 / V)
    raise LmlabError(f"unknown token law {name!r}; choose one of {', '.join(DISTRIBUTIONS)}")


@dataclass(frozen=True)
class CopyTask:
    """What defines the copying data.

    Attributes:
        vocab_size: V, the number of tokens (the runs use 64).
        seq_len: T, the length of every sequence.
        rep_l: the shortest ID segment.
        rep_h: one more than the longest ID segment (exclusive bound, as numpy's ``randint``).
        ood_len: the OOD segment length (longer than any ID segment).
        distr: the ID token law (``zipf``, ``two-level`` or ``unif``); OOD is always uniform.
        pool_size: the number of ID segments in the pattern pool, or None for a fresh segment
            per sequence ("infinite pool").

    >>> CopyTask(pool_size=100).validate()
    """

    vocab_size: int = ranged(64, 2, 100_000, why="the logits are vocab_size wide")
    seq_len: int = ranged(64, 4, 4096, why="attention costs seq_len² per head")
    rep_l: int = ranged(10, 1)
    rep_h: int = ranged(20, 2)
    ood_len: int = ranged(25, 1)
    distr: Distr = "zipf"
    pool_size: int | None = ranged(None, 1, 10**6, why="the pool's segments are held in memory")

    def validate(self) -> None:
        """Raise LmlabError naming the field that is out of range (the ranges are declared
        with the fields; the rules between them are checked here)."""
        for name in ("vocab_size", "seq_len", "rep_l", "rep_h", "ood_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise LmlabError(f"task.{name} must be an integer (got {value!r})")
        pool = self.pool_size
        if pool is not None and (isinstance(pool, bool) or not isinstance(pool, int)):
            raise LmlabError(f"task.pool_size must be a positive integer or None for an "
                             f"infinite pool (got {pool!r})")
        check_ranges(self, "task.")
        if self.rep_h <= self.rep_l:
            raise LmlabError(f"task.rep_h must be larger than rep_l={self.rep_l} (it is the "
                             f"exclusive upper bound of the segment length; got {self.rep_h})")
        longest = self.rep_h - 1
        if self.seq_len < 2 * longest + 2:
            raise LmlabError(f"task.seq_len={self.seq_len} is too short for two copies of a "
                             f"segment of length {longest} plus two background tokens; use "
                             f"seq_len >= {2 * longest + 2} or a smaller rep_h")
        if self.ood_len < 1 or self.seq_len < 2 * self.ood_len + 2:
            raise LmlabError(f"task.ood_len must be between 1 and {(self.seq_len - 2) // 2} for "
                             f"seq_len={self.seq_len} (got {self.ood_len})")
        if self.distr not in DISTRIBUTIONS:
            raise LmlabError(f"task.distr must be one of {', '.join(DISTRIBUTIONS)} "
                             f"(got {self.distr!r})")
        if self.distr == "two-level" and self.vocab_size < 5:
            raise LmlabError(f"task.vocab_size must be at least 5 for the two-level law "
                             f"(got {self.vocab_size})")


def make_pool(task: CopyTask, rng: np.random.Generator) -> list[np.ndarray]:
    """Draw the pattern pool: ``task.pool_size`` ID segments, made once per run.

    Lengths are uniform in ``[rep_l, rep_h)``, tokens i.i.d. from the task's law.

    Args:
        task: The task; ``pool_size`` must be set.
        rng: The generator to draw from.

    Returns:
        ``pool_size`` int64 arrays of the segment lengths.

    Raises:
        LmlabError: If the task is invalid or has no pool size.

    >>> pool = make_pool(CopyTask(pool_size=3), np.random.default_rng(0))
    >>> len(pool), all(10 <= len(s) < 20 for s in pool)
    (3, True)
    """
    task.validate()
    if task.pool_size is None:
        raise LmlabError("task.pool_size is None (infinite pool): there is no pool to make")
    p = token_law(task.distr, task.vocab_size)
    lens = rng.integers(task.rep_l, task.rep_h, size=task.pool_size)
    flat = rng.choice(task.vocab_size, size=int(lens.sum()), p=p).astype(np.int64)
    return list(np.split(flat, np.cumsum(lens)[:-1]))


def _pad(segments: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Segments -> (n, max length) zero-padded int64 array and their lengths."""
    lens = np.fromiter((len(s) for s in segments), dtype=np.int64, count=len(segments))
    out = np.zeros((len(segments), int(lens.max())), dtype=np.int64)
    for i, seg in enumerate(segments):
        out[i, : len(seg)] = seg
    return out, lens


def sample_batch(
    task: CopyTask,
    n: int,
    rng: np.random.Generator,
    *,
    pool: list[np.ndarray] | None = None,
    ood: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw n sequences, each with one segment written twice (vectorised).

    Placement (the authors' ``gen_repetition_data``): with r = T − 2L, two distinct integers
    g0 < g1 are drawn uniformly from {0, ..., r − 1}; the copies start at s1 = g0 and
    s2 = g1 + L. So s1 + L < s2 and s2 + L <= T − 1.

    Args:
        task: The task.
        n: The number of sequences.
        rng: The generator to draw from.
        pool: The pattern pool from :func:`make_pool`; required for ID data when
            ``task.pool_size`` is set (each sequence then uses a segment chosen uniformly from
            it, with a fresh background). Ignored for OOD data.
        ood: Uniform tokens and L = ``task.ood_len`` instead of the ID law and lengths.

    Returns:
        ``(tokens, starts, lens)``: int64 arrays of shapes (n, T), (n, 2) = [s1, s2] and (n,).

    Raises:
        LmlabError: If the task is invalid, n < 1, or a pool task has no pool.

    >>> tokens, starts, lens = sample_batch(CopyTask(), 2, np.random.default_rng(1), ood=True)
    >>> lens.tolist()
    [25, 25]
    """
    task.validate()
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise LmlabError(f"the number of sequences must be a positive integer (got {n!r})")
    T, V = task.seq_len, task.vocab_size
    p = None if ood else token_law(task.distr, V)
    if ood:
        tokens = rng.integers(0, V, size=(n, T), dtype=np.int64)
        lens = np.full(n, task.ood_len, dtype=np.int64)
        segs = rng.integers(0, V, size=(n, task.ood_len), dtype=np.int64)
    else:
        tokens = rng.choice(V, size=(n, T), p=p).astype(np.int64)
        if pool is None and task.pool_size is not None:
            raise LmlabError(f"task.pool_size={task.pool_size} needs its pattern pool: pass "
                             "pool=make_pool(task, rng), made once per run")
        if pool is not None:
            if len(pool) == 0:
                raise LmlabError("the pattern pool is empty; make it with make_pool")
            idx = rng.integers(0, len(pool), size=n)
            segs, lens = _pad([pool[i] for i in idx])
        else:
            lens = rng.integers(task.rep_l, task.rep_h, size=n).astype(np.int64)
            segs = rng.choice(V, size=(n, task.rep_h - 1), p=p).astype(np.int64)
    if int(lens.max()) * 2 + 2 > T:
        raise LmlabError(f"a pool segment of length {int(lens.max())} does not fit twice in "
                         f"seq_len={T}; make the pool with the same task")
    # Two distinct gaps from {0, ..., r-1}, uniform over unordered pairs.
    r = T - 2 * lens  # (n,), >= 2
    a = np.floor(rng.random(n) * r).astype(np.int64)
    b = np.floor(rng.random(n) * (r - 1)).astype(np.int64)
    b = b + (b >= a)
    g0, g1 = np.minimum(a, b), np.maximum(a, b)
    starts = np.stack([g0, g1 + lens], axis=1)  # (n, 2)
    pos = np.arange(T)[None, :]  # (1, T)
    width = segs.shape[1]
    for s in (starts[:, :1], starts[:, 1:]):
        off = pos - s  # (n, T): offset into the segment
        inside = (off >= 0) & (off < lens[:, None])
        src = np.take_along_axis(segs, np.clip(off, 0, width - 1), axis=1)  # (n, T)
        tokens = np.where(inside, src, tokens)
    return tokens, starts, lens


def copy_mask(
    starts: npt.ArrayLike,
    lens: npt.ArrayLike,
    T: int,
    *,
    burn: int = 4,
    floor_free: bool = False,
) -> np.ndarray:
    """Which prediction positions count for the copy error.

    Position t predicts token t + 1. The authors count t in ``[s2 + burn, s2 + L)``; the last
    one targets the token after the copy (random: an error floor even for a perfect copier).
    ``floor_free=True`` counts ``[s2 + burn, s2 + L − 1)`` instead.

    Args:
        starts: (n, 2) copy starts [s1, s2].
        lens: (n,) segment lengths.
        T: The sequence length.
        burn: The first ``burn`` predictions of the second copy are not counted.
        floor_free: Drop the last (floor) position.

    Returns:
        A bool array of shape (n, T − 1).

    >>> copy_mask(np.array([[0, 5]]), np.array([3]), 9, burn=1).astype(int).tolist()
    [[0, 0, 0, 0, 0, 0, 1, 1]]
    """
    starts = np.asarray(starts)
    lens = np.asarray(lens)
    s2 = starts[:, 1:2]  # (n, 1)
    end = s2 + lens[:, None] - (1 if floor_free else 0)
    t = np.arange(T - 1)[None, :]  # (1, T-1)
    return np.asarray((t >= s2 + burn) & (t < end))


def error_rate(pred: npt.ArrayLike, tokens: npt.ArrayLike, mask: npt.ArrayLike) -> float:
    """1 − correct/counted over the masked positions, pooled over the whole batch (authors).

    Args:
        pred: (n, T − 1) predicted next tokens (prediction at t is for token t + 1).
        tokens: (n, T) the sequences.
        mask: (n, T − 1) the counted positions (:func:`copy_mask`).

    Returns:
        The error rate in [0, 1].

    Raises:
        LmlabError: If the shapes disagree or no position is counted.

    >>> tokens = np.array([[1, 2, 3, 4]])
    >>> round(error_rate(np.array([[2, 3, 0]]), tokens, np.array([[True, True, True]])), 4)
    0.3333
    """
    pred = np.asarray(pred)
    tokens = np.asarray(tokens)
    mask = np.asarray(mask, dtype=bool)
    target = tokens[:, 1:]
    if pred.shape != target.shape or mask.shape != target.shape:
        raise LmlabError(f"predictions {pred.shape} and mask {mask.shape} must have the shape "
                         f"(n, T-1) = {target.shape} of the next tokens")
    counted = int(mask.sum())
    if counted == 0:
        raise LmlabError("no position is counted by the mask (segments shorter than the burn-in?)")
    correct = int(((pred == target) & mask).sum())
    return 1.0 - correct / counted


def oracle_predictions(
    tokens: npt.ArrayLike, starts: npt.ArrayLike, lens: npt.ArrayLike
) -> np.ndarray:
    """A perfect copier: inside the second copy it predicts the token that followed in the first.

    At t in ``[s2, s2 + L)`` the prediction is ``tokens[t − (s2 − s1) + 1]``; at the last
    position this is the token after the first copy, which matches the token after the second
    only by chance (the error floor). Elsewhere the prediction is −1 (no guess).

    Args:
        tokens: (n, T) the sequences.
        starts: (n, 2) copy starts [s1, s2].
        lens: (n,) segment lengths.

    Returns:
        (n, T − 1) int64 predictions.

    >>> tokens = np.array([[7, 1, 2, 9, 1, 2, 5]])
    >>> oracle_predictions(tokens, np.array([[1, 4]]), np.array([2])).tolist()
    [[-1, -1, -1, -1, 2, 9]]
    """
    tokens = np.asarray(tokens)
    starts = np.asarray(starts)
    lens = np.asarray(lens)
    n, T = tokens.shape
    t = np.arange(T - 1)[None, :]  # (1, T-1)
    s1, s2 = starts[:, :1], starts[:, 1:]
    inside = (t >= s2) & (t < s2 + lens[:, None])
    src = np.clip(t - (s2 - s1) + 1, 0, T - 1)
    copied = np.take_along_axis(tokens, src, axis=1)
    return np.where(inside, copied, -1).astype(np.int64)
