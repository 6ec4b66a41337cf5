"""Randomized ESD: the spectrum W would have without its correlations (correlation traps).

weightwatcher 0.7.7's ``analyze(randomize=True)`` shuffles the entries of each weight matrix —
which destroys every correlation between them and keeps their distribution — and compares the
spectrum of the shuffled matrix with the real one:

* a shuffled matrix is a random matrix, so its ESD should fill a Marchenko–Pastur bulk; an
  eigenvalue escaping that bulk is a **correlation trap**: a few unusually large entries that
  no shuffling can hide (``num_traps``, from an MP fit of the randomized ESD);
* the real ESD's spikes above the randomized one measure learned structure
  (``ww_softrank = max λ_rand / max λ``, ``ww_maxdist = max λ − max λ_rand``,
  ``rand_distance``: Jensen–Shannon distance between the two sorted spectra).

The columns (:data:`RANDOMIZE_COLUMNS`, weightwatcher's order) and how they are computed:

* the entries of every matrix (every conv slice) are permuted uniformly at random — drawn from
  the ``rng`` given — and the eigenvalues of WᵀW are pooled over the matrices; layers with
  fewer than 100 eigenvalues (M·rf < 100) pool 5 independent shuffles, as weightwatcher does,
  so that the fit has enough eigenvalues;
* ``max_rand_eval`` is the largest pooled randomized eigenvalue, the ``rand_*`` columns and
  ``num_traps`` (= ``rand_num_spikes``) are :func:`lmlab.spectral.mp.fit_mp` of the pooled
  randomized ESD (same N, M);
* ``rand_distance``, ``ww_softrank`` and ``ww_maxdist`` compare the real ESD with the first
  shuffle's ESD.

Differences from weightwatcher (each column has the same distribution; see the tests):

* weightwatcher draws a *second*, independent shuffle for the last three columns; lmlab uses the
  first one again — the same marginal distribution, one eigen-decomposition less per layer,
  and columns that agree with each other (with one shuffle, ``ww_softrank ·
  lambda_max == max_rand_eval``);
* the shuffles come from the seeded ``rng`` (weightwatcher: NumPy's global, unseeded state);
* eigenvalues come from the Gram matrix of the smaller side (:func:`lmlab.spectral.esd.spectrum_of`)
  rather than an SVD; complex weights are shuffled and analysed as complex (weightwatcher
  drops their imaginary part);
* an undefined column is NaN with a reason (weightwatcher writes -1).

>>> rng = np.random.default_rng(0)
>>> W = rng.standard_normal((600, 200)).astype(np.float32)
>>> W[0, 0] = 300.0  # one huge entry: a correlation trap that survives every shuffle
>>> evals = np.linalg.eigvalsh(W.astype(np.float64).T @ W.astype(np.float64))
>>> cols = randomize_columns([W], 600, 200, 1, 1.0, evals, rng)
>>> cols["num_traps"] >= 1, round(cols["ww_softrank"], 3)
(True, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lmlab.spectral.esd import matrices_of, spectrum_of
from lmlab.spectral.mp import fit_mp

if TYPE_CHECKING:
    from lmlab.spectral.options import AnalyzeOptions
    from lmlab.spectral.sources import LayerRef

__all__ = ["RANDOMIZE_COLUMNS", "RandomESD", "shuffled_spectra", "random_esd", "replicas_for",
           "randomize_columns", "jensen_shannon_distance", "randomized_evals_of_layer"]

#: weightwatcher 0.7.7's ``analyze(randomize=True)`` columns, in the order of its table
#: (alphabetical, like every column of weightwatcher's table after ``layer_id, name``).
RANDOMIZE_COLUMNS: tuple[str, ...] = (
    "max_rand_eval", "num_traps", "rand_W_scale", "rand_bulk_max", "rand_bulk_min",
    "rand_distance", "rand_mp_softrank", "rand_num_spikes", "rand_sigma_mp", "ww_maxdist",
    "ww_softrank",
)

#: Fewer eigenvalues than this: pool several shuffles (weightwatcher's rule).
SMALL_LAYER_EVALS = 100
SMALL_LAYER_REPLICAS = 5


def replicas_for(M: int, rf: int = 1) -> int:
    """Shuffles pooled for a layer with M·rf eigenvalues: 5 below 100, else 1.

    >>> replicas_for(64), replicas_for(768), replicas_for(16, rf=9)
    (5, 1, 1)
    """
    return SMALL_LAYER_REPLICAS if M * rf < SMALL_LAYER_EVALS else 1


def shuffled_spectra(mats: Sequence[np.ndarray], rng: np.random.Generator, *,
                     N: int | None = None, scale: float = 1.0,
                     replicas: int = 1) -> list[np.ndarray]:
    """Eigenvalues of WᵀW after shuffling the entries of each matrix, one array per replica.

    Args:
        mats: the layer's matrices (one for dense layers, kh·kw slices for conv2d).
        rng: source of the permutations.
        N: the larger matrix dimension (default: from the first matrix).
        scale: multiply W by this first (conv2d: √(1/2), as for the real ESD).
        replicas: independent shuffles.

    Returns:
        ``replicas`` sorted float64 arrays, each pooled over ``mats``.

    >>> W = np.arange(12.0).reshape(4, 3)
    >>> [round(float(e.sum()), 6) for e in shuffled_spectra([W], np.random.default_rng(0),
    ...                                                     replicas=2)]
    [506.0, 506.0]
    """
    out = []
    for _ in range(replicas):
        shuffled = [rng.permutation(W.ravel()).reshape(W.shape) for W in mats]
        out.append(spectrum_of(shuffled, N=N, scale=scale).evals)
    return out


def jensen_shannon_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon distance (natural log) between two non-negative vectors read as
    distributions (each normalised to sum 1), e.g. two sorted spectra of equal length.

    >>> d = jensen_shannon_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0]))  # disjoint
    >>> d == math.sqrt(math.log(2))
    True
    >>> jensen_shannon_distance(np.array([1.0, 2.0]), np.array([2.0, 4.0]))
    0.0
    """
    a = np.asarray(p, dtype=np.float64)
    b = np.asarray(q, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"spectra of different lengths: {a.shape} vs {b.shape}")
    a, b = a / np.sum(a), b / np.sum(b)
    mid = (a + b) / 2

    def kl(x: np.ndarray) -> float:
        pos = x > 0  # 0·log 0 = 0
        return float(np.sum(x[pos] * np.log(x[pos] / mid[pos])))

    return math.sqrt(max((kl(a) + kl(b)) / 2, 0.0))


@dataclass(frozen=True)
class RandomESD:
    """The randomized ESD of one layer and weightwatcher's ``randomize`` columns.

    Attributes:
        rand_evals: the pooled randomized eigenvalues (sorted; all replicas).
        columns: :data:`RANDOMIZE_COLUMNS` → value (NaN where undefined).
        reason: why some columns are NaN; empty when all are defined.
    """

    rand_evals: np.ndarray
    columns: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


def random_esd(mats: Sequence[np.ndarray], N: int, M: int, rf: int, scale: float,
               evals: np.ndarray, rng: np.random.Generator) -> RandomESD:
    """Shuffle a layer's matrices and compute weightwatcher's ``randomize`` columns.

    Args:
        mats: the layer's matrices as :func:`lmlab.spectral.esd.matrices_of` returns them.
        N, M, rf: the layer's dimensions (N ≥ M) and receptive field.
        scale: the factor the real ESD was computed with (conv2d: √(1/2), else 1).
        evals: the layer's sorted eigenvalues of WᵀW (not divided by N).
        rng: source of the shuffles.

    Returns:
        A :class:`RandomESD`.
    """
    reps = shuffled_spectra(mats, rng, N=N, scale=scale, replicas=replicas_for(M, rf))
    pooled = np.sort(np.concatenate(reps))
    first = reps[0]
    ev = np.asarray(evals, dtype=np.float64)
    fit = fit_mp(pooled, N, M)
    cols: dict[str, Any] = {c: math.nan for c in RANDOMIZE_COLUMNS}
    cols["max_rand_eval"] = float(pooled[-1]) if pooled.size else math.nan
    mp_cols = fit.columns(prefix="rand_")
    cols.update(mp_cols)
    cols["num_traps"] = mp_cols["rand_num_spikes"]
    reasons = [fit.reason] if fit.reason else []
    lam_max = float(np.max(ev)) if ev.size else 0.0
    if ev.size == first.size and lam_max > 0 and first.size and first[-1] > 0:
        cols["rand_distance"] = jensen_shannon_distance(ev, first)
        cols["ww_softrank"] = float(first[-1]) / lam_max
        cols["ww_maxdist"] = lam_max - float(first[-1])
    else:
        reasons.append(f"randomize: cannot compare {ev.size} eigenvalues (max {lam_max:g}) "
                       f"with {first.size} randomized ones")
    return RandomESD(rand_evals=pooled, columns=cols, reason="; ".join(reasons))


def randomize_columns(mats: Sequence[np.ndarray], N: int, M: int, rf: int, scale: float,
                      evals: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """weightwatcher's ``analyze(randomize=True)`` columns (:data:`RANDOMIZE_COLUMNS`) for a
    layer; see :func:`random_esd` for the arguments and the reason of any NaN.

    >>> W = np.random.default_rng(1).standard_normal((300, 100))
    >>> ev = np.linalg.eigvalsh(W.T @ W)
    >>> cols = randomize_columns([W], 300, 100, 1, 1.0, ev, np.random.default_rng(2))
    >>> tuple(cols) == RANDOMIZE_COLUMNS, cols["num_traps"]
    (True, 0)
    """
    return random_esd(mats, N, M, rf, scale, evals, rng).columns


def randomized_evals_of_layer(ref: LayerRef, opts: AnalyzeOptions,
                              rng: np.random.Generator | None = None) -> np.ndarray:
    """The pooled randomized ESD of one layer (weightwatcher's ``get_ESD(random=True)``).

    The layer's matrices are prepared as for its real ESD (conv2d: scaled by √½ unless
    ``opts.conv2d_norm`` is off) and shuffled :func:`replicas_for` times; ``rng`` defaults to
    one seeded by ``opts.seed`` and the layer id, as in :func:`lmlab.spectral.layer.layer_row`.

    >>> import torch
    >>> from lmlab.spectral.options import AnalyzeOptions
    >>> from lmlab.spectral.sources import iter_layers
    >>> (ref,) = iter_layers(torch.nn.Linear(40, 120))
    >>> randomized_evals_of_layer(ref, AnalyzeOptions()).shape  # 40 < 100: 5 shuffles
    (200,)
    """
    from lmlab.spectral import extras
    from lmlab.spectral.layer import _to_numpy

    mats, N, M, rf = matrices_of(_to_numpy(ref.load()), ref.layer_type)
    mats, scale = extras.prepared_matrices(mats, N, M, rf, ref.layer_type, opts)
    if rng is None:
        rng = np.random.default_rng([opts.seed, ref.layer_id])
    reps = shuffled_spectra(mats, rng, N=N, scale=scale, replicas=replicas_for(M, rf))
    return np.sort(np.concatenate(reps))
