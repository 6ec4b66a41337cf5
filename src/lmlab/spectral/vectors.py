"""Eigenvector localisation: how concentrated the singular vectors of a weight matrix are.

A delocalised (random-like) unit vector of length n spreads its mass over all n entries; a
localised one puts it on a few. Three per-vector metrics measure this (Martin & Mahoney, JMLR
22 (2021) 20-410, after arXiv:1810.01075):

* ``loc_ratio`` — localisation ratio ‖v‖₁ / ‖v‖∞: n for a flat vector, 1 for a basis vector;
* ``part_ratio`` — participation ratio ‖v‖₂ / ‖v‖₄: n^¼ for a flat vector, 1 for a basis vector;
* ``vec_entropy`` — weightwatcher's *discrete* entropy of the entries' magnitudes: a density
  histogram (100 bins) of |v| − mean|v|, plus 1e-10, normalised to probabilities p,
  then −Σ p ln p. High for spread-out magnitudes, low when most entries share one bin.

The vectors are the eigenvectors of the Gram matrix of the smaller side of each weight matrix
(W Wᴴ when W has no more rows than columns, else Wᴴ W — for a square W that is W Wᴴ, the left
singular vectors), pooled over a conv2d layer's slices and ordered by eigenvalue, as
weightwatcher 0.7.7's ``analyze(vectors=True)`` takes them. :func:`vector_columns` gives its 12
columns: the mean and variance of each metric over the *bulk* (eigenvalue below the power-law
xmin) and over the *tail* (at or above xmin). :func:`eigenvector_metrics` gives one row per
eigenvector — what weightwatcher's ``analyze_vectors()`` method was meant to produce (in 0.7.7
it raises ``AttributeError`` on a typo, ``frameword_layer``, before computing anything, and would
return ``None`` otherwise). :func:`vector_metrics` is its ``vector_metrics()`` for any vectors.

Differences from weightwatcher, on purpose:

* eigenvectors come from ``eigh`` of the (Hermitian) Gram matrix, not a general ``eig``
  (several times faster, real eigenvalues; the metrics ignore each vector's sign);
* the tail is the ``k`` eigenvectors of largest eigenvalue, with ``k`` the number of layer
  eigenvalues ≥ xmin — weightwatcher compares its ``eig`` eigenvalues with the xmin found on its
  SVD eigenvalues, so the eigenvector *at* xmin falls on either side by rounding (into the
  bulk on 3 of 11 tiny-GPT-2 layers, 6 of 16 Llama, 7 of 15 BERT; with its split, every
  column agrees to 1e-9);
* (near-)degenerate eigenvalues have no unique eigenvectors: any basis of the eigenspace is
  right, and ``eig`` and ``eigh`` pick different ones (an orthogonal W: per-vector metrics
  differ by up to 1e-5, their means by less);
* complex weights keep their imaginary part (Wᴴ, |v|); weightwatcher casts them to real;
* no power-law fit (xmin NaN) gives NaN columns and a reason — weightwatcher's xmin = −1
  puts every vector in the tail and reports NaN bulk statistics.

>>> import numpy as np
>>> table = eigenvector_metrics([np.eye(4)[:, :3] * [1.0, 2.0, 3.0]])
>>> table["eval"].tolist(), table["loc_ratio"].tolist()
([1.0, 4.0, 9.0], [1.0, 1.0, 1.0])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from lmlab.errors import LmlabError

__all__ = ["VECTOR_METRICS", "VECTOR_COLUMNS", "localization_ratio", "participation_ratio",
           "discrete_entropy", "eigenvector_metrics", "vector_columns", "vector_metrics"]

#: Per-eigenvector metrics, in the order weightwatcher computes them.
VECTOR_METRICS: tuple[str, ...] = ("vec_entropy", "loc_ratio", "part_ratio")
#: weightwatcher 0.7.7's ``vectors=True`` columns, in its (sorted) column order.
VECTOR_COLUMNS: tuple[str, ...] = tuple(sorted(
    f"{part}_{stat}_{metric}"
    for part in ("bulk", "tail") for stat in ("mean", "var") for metric in VECTOR_METRICS
))

_NUM_BINS = 100
_EPSILON = 1e-10  # weightwatcher's floor added to each histogram density


def _rows(V: np.ndarray) -> np.ndarray:
    """Magnitudes of a (K, n) batch of vectors (one per row), float64, C-contiguous."""
    A = np.abs(np.atleast_2d(np.asarray(V)))
    return np.ascontiguousarray(A, dtype=np.float64)


def localization_ratio(V: np.ndarray) -> np.ndarray:
    """‖v‖₁ / ‖v‖∞ of each row of ``V`` (n for a flat vector of length n, 1 for a basis vector).

    >>> localization_ratio(np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 3.0, 0.0, 0.0]]))
    array([4., 1.])
    """
    return _loc(_rows(V))


def _loc(A: np.ndarray) -> np.ndarray:
    return A.sum(axis=1) / A.max(axis=1)


def participation_ratio(V: np.ndarray) -> np.ndarray:
    """‖v‖₂ / ‖v‖₄ of each row of ``V`` (n^¼ for a flat vector of length n, 1 for a basis vector).

    >>> participation_ratio(np.array([[1.0] * 16, [0.0, 2.0] + [0.0] * 14]))
    array([2., 1.])
    """
    return _part(_rows(V))


def _part(A: np.ndarray) -> np.ndarray:
    A2 = A * A
    return np.sqrt(A2.sum(axis=1)) / np.sum(A2 * A2, axis=1) ** 0.25


def discrete_entropy(V: np.ndarray, num_bins: int = _NUM_BINS) -> np.ndarray:
    """weightwatcher's discrete entropy of each row of ``V``, all rows at once.

    Each row's magnitudes, centred (|v| − mean|v|), are binned into ``num_bins`` equal bins
    spanning their range (``np.histogram``'s rule, edge corrections included); the densities
    plus 1e-10 are normalised to probabilities p and −Σ p ln p is returned. A vector whose
    magnitudes are all equal has one occupied bin (entropy ≈ 0).

    >>> v = np.random.default_rng(0).standard_normal(400)
    >>> h = np.histogram(np.abs(v) - np.abs(v).mean(), bins=100, density=True)[0] + 1e-10
    >>> p = h / h.sum()
    >>> bool(np.isclose(discrete_entropy(v)[0], -np.sum(p * np.log(p)), rtol=1e-13))
    True
    """
    return _entropy(_rows(V), num_bins)


def _entropy(A: np.ndarray, num_bins: int = _NUM_BINS) -> np.ndarray:
    K, n = A.shape
    X = A - A.mean(axis=1, keepdims=True)  # (K, n)
    first, last = X.min(axis=1), X.max(axis=1)
    flat = first == last  # np.histogram widens an empty range to ±0.5
    first, last = np.where(flat, first - 0.5, first), np.where(flat, last + 0.5, last)
    edges = np.linspace(first, last, num_bins + 1, axis=1)  # (K, num_bins + 1)
    lo, step = first[:, None], ((last - first) / num_bins)[:, None]  # edge i = i·step + lo
    idx = (((X - lo) / (last - first)[:, None]) * num_bins).astype(np.intp)
    idx[idx == num_bins] -= 1
    idx -= X < idx * step + lo
    idx += (X >= (idx + 1) * step + lo) & (idx != num_bins - 1)
    flat_idx = (idx + num_bins * np.arange(K)[:, None]).ravel()
    counts = np.bincount(flat_idx, minlength=K * num_bins).reshape(K, num_bins)
    p = counts / np.diff(edges, axis=1) / n + _EPSILON  # density, floored
    p /= p.sum(axis=1, keepdims=True)
    return -np.sum(p * np.log(p), axis=1)


def _cast(W: np.ndarray) -> np.ndarray:
    """W through float32 (complex64) to float64 (complex128), as the ESD is computed."""
    if np.iscomplexobj(W):
        return np.asarray(W, dtype=np.complex64).astype(np.complex128)
    return np.asarray(W, dtype=np.float32).astype(np.float64)


def eigenvector_metrics(mats: Sequence[np.ndarray], *, scale: float = 1.0) -> pd.DataFrame:
    """One row per eigenvector of a layer: its eigenvalue and its three localisation metrics.

    Args:
        mats: the layer's matrices (``lmlab.spectral.esd.matrices_of``), one for dense layers,
            kh·kw slices for conv2d; any orientation, real or complex.
        scale: W is multiplied by this before the decomposition (conv2d: √(1/2)); it scales the
            eigenvalues by scale², never the (unit) eigenvectors.

    Returns:
        A DataFrame with columns ``eval``, ``vec_entropy``, ``loc_ratio``, ``part_ratio``,
        sorted by ascending eigenvalue (M·rf rows, pooled over slices).

    >>> t = eigenvector_metrics([np.ones((8, 4))])
    >>> t["eval"].round(12).tolist()[-1], t["loc_ratio"].round(12).tolist()[-1]
    (32.0, 4.0)
    """
    evals, metrics = [], []
    for W in mats:
        Wd = _cast(W)
        if Wd.ndim != 2 or min(Wd.shape) == 0:
            raise LmlabError(f"eigenvector metrics need non-empty 2-D matrices, got {Wd.shape}")
        # Gram matrix of the smaller side (a square W gives W Wᴴ, as weightwatcher takes it);
        # a real X.T @ X runs as a syrk (half the flops), which a .conj() copy would defeat
        Wh = Wd.conj().T if np.iscomplexobj(Wd) else Wd.T
        G = Wd @ Wh if Wd.shape[0] <= Wd.shape[1] else Wh @ Wd  # (m, m)
        ev, U = np.linalg.eigh(G)  # ascending; the columns of U are the eigenvectors
        A = _rows(U.T)  # (m, m): magnitudes, one eigenvector per row
        evals.append(ev * (scale * scale))
        metrics.append(np.stack([_entropy(A), _loc(A), _part(A)], axis=1))
    ev_all = np.concatenate(evals)
    order = np.argsort(ev_all, kind="stable")
    table = np.concatenate(metrics)[order]
    return pd.DataFrame({"eval": ev_all[order], **{name: table[:, i] for i, name in
                                                   enumerate(VECTOR_METRICS)}})


def _stats(table: pd.DataFrame, part: str) -> dict[str, float]:
    out = {}
    for name in VECTOR_METRICS:
        x = table[name].to_numpy()
        out[f"{part}_mean_{name}"] = float(np.mean(x)) if len(x) else math.nan
        out[f"{part}_var_{name}"] = float(np.var(x)) if len(x) else math.nan
    return out


def vector_columns(mats: Sequence[np.ndarray], evals: np.ndarray, xmin: float, *,
                   scale: float = 1.0, inverse: bool = False, table: pd.DataFrame | None = None
                   ) -> tuple[dict[str, float], str]:
    """weightwatcher's ``vectors=True`` columns for one layer: bulk and tail means/variances.

    Args:
        mats: the layer's matrices, as for :func:`eigenvector_metrics`.
        evals: the layer's sorted eigenvalues, as the power law was fitted to them.
        xmin: the fitted xmin (NaN when the fit failed).
        scale: W's scale before the ESD (conv2d: √(1/2)).
        inverse: ``evals`` are the inverse ESD (1/λ): the tail is then the eigenvectors of
            *smallest* λ (weightwatcher refuses ``vectors`` with ``inverse``).
        table: the layer's :func:`eigenvector_metrics`, if already computed (``mats`` and
            ``scale`` are then not used).

    Returns:
        ``(columns, reason)``: the 12 :data:`VECTOR_COLUMNS` and an empty reason, or NaN where
        undefined with the reason (no fit; an empty bulk or tail).

    >>> W = np.diag([1.0, 2.0, 3.0, 10.0])
    >>> cols, reason = vector_columns([W], np.array([1.0, 4.0, 9.0, 100.0]), 100.0)
    >>> cols["tail_mean_loc_ratio"], cols["bulk_var_part_ratio"], reason
    (1.0, 0.0, '')
    """
    nan_cols = dict.fromkeys(VECTOR_COLUMNS, math.nan)
    if not math.isfinite(xmin):
        return nan_cols, "vectors: no power-law xmin, so no bulk/tail split"
    if table is None:
        table = eigenvector_metrics(mats, scale=scale)
    if inverse:
        table = table.iloc[::-1]
    n_tail = int(np.count_nonzero(np.asarray(evals) >= xmin))
    split = len(table) - n_tail
    bulk, tail = table.iloc[:max(split, 0)], table.iloc[max(split, 0):]
    cols = {**_stats(bulk, "bulk"), **_stats(tail, "tail")}
    reason = ""
    if len(bulk) == 0 or len(tail) == 0:
        reason = f"vectors: empty {'bulk' if len(bulk) == 0 else 'tail'} at xmin={xmin:.4g}"
    return {c: cols[c] for c in VECTOR_COLUMNS}, reason


def _vector_list(vectors: Any) -> list[np.ndarray]:
    if isinstance(vectors, np.ndarray) and vectors.ndim == 2:
        return list(vectors)
    if isinstance(vectors, np.ndarray) and vectors.ndim == 1:
        return [vectors]
    if isinstance(vectors, (list, tuple)) and all(
            isinstance(v, np.ndarray) and v.ndim == 1 for v in vectors):
        return list(vectors)
    raise LmlabError("vectors must be a 1-D numpy array, a list of them, or a 2-D array with "
                     "one vector per row")


def vector_metrics(vectors: Any) -> pd.DataFrame:
    """weightwatcher's ``vector_metrics()``: localisation metrics of arbitrary vectors.

    Args:
        vectors: one 1-D array, a list of 1-D arrays (lengths may differ), or a 2-D array with
            one vector per row.

    Returns:
        One row per vector: ``length``; ``entropy`` — weightwatcher's ``vector_entropy``,
        exp(−‖v‖₂/2)/√(2π), which depends on the norm alone (0.24197 for any unit vector);
        ``discrete_entropy``, ``localization_ratio``, ``participation_ratio`` as in
        :func:`discrete_entropy` etc. (weightwatcher 0.7.7 files the discrete entropy under a
        misspelt ``discete_entropy`` column and leaves ``discrete_entropy`` empty.)

    Raises:
        LmlabError: anything else (weightwatcher returns -1).

    >>> vector_metrics(np.eye(3)[0])[["length", "localization_ratio"]].values.tolist()
    [[3.0, 1.0]]
    """
    rows = []
    for v in _vector_list(vectors):
        row = np.asarray(v)[None, :]
        rows.append(dict(
            length=float(v.shape[0]),
            entropy=float(np.exp(-np.linalg.norm(v) / 2) / np.sqrt(2.0 * np.pi)),
            discrete_entropy=float(discrete_entropy(row)[0]),
            localization_ratio=float(localization_ratio(row)[0]),
            participation_ratio=float(participation_ratio(row)[0]),
        ))
    return pd.DataFrame(rows, columns=["length", "entropy", "discrete_entropy",
                                       "localization_ratio", "participation_ratio"])
