"""ESD-level options of weightwatcher 0.7.7's ``analyze()``: detX/ERG, the inverse ESD, W's
normalisation before the ESD (``glorot_fix``, ``conv2d_norm``) and ``tolerance``.

**detX** (``detX=True``, alias ``ERG=True``). Rescale the n eigenvalues so that they sum to n
(λ̃ = n·λ/Σλ) and walk down from the largest: the tail is the shortest run of largest
eigenvalues whose product first falls below 1 — the det X = 1 condition of the Exact
Renormalisation Group view of heavy-tailed layers. Since the λ̃ average 1, the product of the
top ones first grows (λ̃ > 1) then shrinks; by the AM–GM inequality the product of all of them is
below 1 unless all are equal, so a crossing always exists. :func:`detx_columns` gives
weightwatcher's five columns:

* ``detX_num`` = ``num_ERG_spikes``: the tail's size; ``ERG_gap`` = ``detX_num − num_pl_spikes``;
* ``detX_val``: the smallest tail eigenvalue, λ_idx, in the ESD's units;
* ``detX_val_unrescaled``: the same eigenvalue *rescaled*, λ̃_idx (weightwatcher's naming is
  the reverse of what the value is; the name is kept for drop-in parity).

It is computed from cumulative log-sums (O(n), no overflow) where weightwatcher multiplies the
tail afresh for each candidate (O(n²); a product above 1e308 overflows and never falls below 1).
Where the crossing needs every eigenvalue (the product of all but the smallest is still ≥ 1)
weightwatcher's loop stops one short and reports ``detX_num = n`` with ``detX_val`` = λ₁;
lmlab reports n with λ₀. Fewer than two eigenvalues or all equal: NaN with a reason
(weightwatcher: 0 and λ₀).

**inverse** (``inverse=True``): the ESD of W⁻¹ (W's pseudo-inverse), i.e. 1/λ of each nonzero
eigenvalue; every metric and fit then runs on it. weightwatcher inverts inside its per-slice
loop, so for a conv2d layer it inverts the already-inverted pooled eigenvalues again at each
slice (only alternate slices end up inverted); lmlab inverts all. Zero eigenvalues (exact rank
loss) have no inverse and are dropped (weightwatcher keeps +inf). With ``inverse`` the smallest
eigenvalues lead: compute the ESD with ``method="svd"`` (on all-MiniLM-L6-v2 the Gram route
leaves 1/λmin 7e-8 off weightwatcher's, the SVD route ≤ 1e-15).

**glorot_fix / conv2d_norm**: W is multiplied by a scalar before the ESD (:func:`weight_scale`).
``conv2d_norm`` (default True) scales conv2d kernels by √(1/2); False leaves them as stored.
``glorot_fix`` is meant to undo Glorot initialisation, W / κ with κ = √(2 / ((N+M)·rf)), so
that a Glorot-initialised layer has unit-variance entries; it replaces ``conv2d_norm``. In
weightwatcher 0.7.7 it does nothing: ``analyze()`` stores it under ``glorot_fit`` and reads
``glorot_fix`` (and forcing the key crashes, since its helper returns a tuple).

**tolerance** (default 1e-6): ``weak_rank_loss`` is the number of eigenvalues strictly below it
(of the inverse ESD when ``inverse``); a falsy tolerance (0, None) means the default.

>>> import numpy as np
>>> cols, reason = detx_columns(np.array([0.1, 0.3, 1.6, 2.0]), num_pl_spikes=2)
>>> cols["detX_num"], cols["detX_val"], cols["ERG_gap"], reason
(3, 0.3, 1, '')
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lmlab.errors import LmlabError

__all__ = ["DETX_COLUMNS", "WEAK_RANK_TOLERANCE", "detx_constraint", "detx_columns",
           "inverse_evals", "weight_scale", "weak_rank_loss"]

#: weightwatcher 0.7.7's ``detX=True`` columns, in its (sorted) column order.
DETX_COLUMNS: tuple[str, ...] = ("ERG_gap", "detX_num", "detX_val", "detX_val_unrescaled",
                                 "num_ERG_spikes")
#: weightwatcher's default ``tolerance`` for ``weak_rank_loss``.
WEAK_RANK_TOLERANCE = 1e-6

_LAYER_TYPES = ("dense", "conv1d", "conv2d", "embedding")


def detx_constraint(evals: np.ndarray) -> tuple[int, int]:
    """The det X = 1 tail of a sorted spectrum: ``(size, index of its smallest eigenvalue)``.

    Args:
        evals: eigenvalues sorted ascending (any positive scale: they are rescaled to mean 1).

    Returns:
        ``(n − idx, idx)`` with idx the largest index whose tail product Π_{j ≥ idx} λ̃_j < 1.

    Raises:
        LmlabError: fewer than two eigenvalues, or all equal (no crossing exists).

    >>> detx_constraint(np.array([1.0, 2.0, 3.0, 10.0]))  # λ̃ = 0.25, 0.5, 0.75, 2.5
    (3, 1)
    """
    ev = np.asarray(evals, dtype=np.float64)
    n = ev.size
    if n < 2 or not ev[0] < ev[-1]:
        raise LmlabError(f"detX needs at least two distinct sorted eigenvalues, got {n} "
                         "(all equal or unsorted)")
    with np.errstate(divide="ignore"):
        logs = np.log(ev * (n / np.sum(ev)))  # log λ̃ (−inf for a zero eigenvalue)
    tail_logs = np.cumsum(logs[::-1])[::-1]  # tail_logs[i] = Σ_{j ≥ i} log λ̃_j
    below = np.flatnonzero(tail_logs < 0.0)
    idx = int(below[-1]) if below.size else 0
    return n - idx, idx


def detx_columns(evals: np.ndarray, num_pl_spikes: float | None = None
                 ) -> tuple[dict[str, Any], str]:
    """weightwatcher's ``detX=True`` columns for one layer.

    Args:
        evals: the layer's sorted eigenvalues (after any scaling or inversion).
        num_pl_spikes: the power-law tail's size, for ``ERG_gap`` (None or NaN: no fit).

    Returns:
        ``(columns, reason)``: the :data:`DETX_COLUMNS` and an empty reason, or NaN where
        undefined with the reason.
    """
    try:
        num, idx = detx_constraint(evals)
    except LmlabError as e:
        return dict.fromkeys(DETX_COLUMNS, math.nan), f"detX undefined: {e}"
    ev = np.asarray(evals, dtype=np.float64)
    spikes = math.nan if num_pl_spikes is None else float(num_pl_spikes)
    has_fit = math.isfinite(spikes)
    cols = dict(
        ERG_gap=num - int(spikes) if has_fit else math.nan,
        detX_num=num,
        detX_val=float(ev[idx]),
        detX_val_unrescaled=float(ev[idx] * (ev.size / np.sum(ev))),
        num_ERG_spikes=num,
    )
    return cols, "" if has_fit else "ERG_gap: no power-law fit"


def inverse_evals(evals: np.ndarray) -> tuple[np.ndarray, int]:
    """The inverse ESD: ``(sorted 1/λ of the nonzero eigenvalues, number of zeros dropped)``.

    >>> inverse_evals(np.array([0.0, 0.5, 2.0, 4.0]))
    (array([0.25, 0.5 , 2.  ]), 1)
    """
    ev = np.asarray(evals, dtype=np.float64)
    nonzero = ev[ev > 0.0]
    return np.sort(1.0 / nonzero), int(ev.size - nonzero.size)


def weight_scale(N: int, M: int, rf: int, layer_type: str, *, glorot_fix: bool = False,
                 conv2d_norm: bool = True) -> float:
    """The scalar W is multiplied by before its ESD.

    Args:
        N, M, rf: the layer's dimensions (N ≥ M) and receptive field (kh·kw; 1 if not conv2d).
        layer_type: ``dense``, ``conv1d``, ``conv2d`` or ``embedding``.
        glorot_fix: undo Glorot initialisation: √((N+M)·rf / 2) (takes precedence).
        conv2d_norm: scale conv2d kernels by √(1/2) (weightwatcher's default).

    Returns:
        The scale (1.0 when no option applies); pass it to ``spectrum_of(..., scale=)``.

    >>> weight_scale(64, 32, 1, "dense"), weight_scale(64, 32, 9, "conv2d") ** 2
    (1.0, 0.5000000000000001)
    >>> weight_scale(96, 32, 1, "dense", glorot_fix=True)
    8.0
    """
    if layer_type not in _LAYER_TYPES:
        raise LmlabError(f"unknown layer type {layer_type!r}; expected one of "
                         f"{', '.join(_LAYER_TYPES)}")
    if min(N, M, rf) < 1:
        raise LmlabError(f"weight_scale needs positive N, M, rf, got {N}, {M}, {rf}")
    if glorot_fix:
        return math.sqrt((N + M) * rf / 2.0)
    if conv2d_norm and layer_type == "conv2d":
        return math.sqrt(0.5)
    return 1.0


def weak_rank_loss(evals: np.ndarray, tolerance: float | None = WEAK_RANK_TOLERANCE) -> int:
    """Number of eigenvalues strictly below ``tolerance`` (0 or None: the default 1e-6).

    >>> weak_rank_loss(np.array([0.0, 1e-7, 1e-6, 1.0])), weak_rank_loss([0.5, 2.0], 1.0)
    (2, 1)
    """
    tol = tolerance if tolerance else WEAK_RANK_TOLERANCE
    return int(np.count_nonzero(np.asarray(evals) < tol))
