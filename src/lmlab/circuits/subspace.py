"""Subspace matching, its random baseline, the rotary R matrix, diagonal z-score, token mismatch.

Every function works on stacks: leading dimensions ``(...)`` are batch dimensions (one entry per
checkpoint, say), so a whole training run is measured with one batched NumPy call.

* :func:`subspace_matching`: the largest principal cosine (``method="largest"``) or the RMS of
  all ``r`` principal cosines (``"mean"``) between two ``r``-dimensional subspaces given by
  orthonormal columns.
* :func:`matching_curve`: the same statistic for many ranks from one cross-Gram matrix
  ``Aᵀ B``.
* :func:`random_baseline`: the expected score for two Haar-random ``r``-dimensional subspaces
  of R^d (cached in memory and on disk).
* :func:`rotary_R`: the matrix ``R`` with ``⟨Rot(m) q, Rot(m + t) k⟩ = qᵀ R k`` for rotary
  embedding on consecutive coordinate pairs.
* :func:`diagonal_zscore` and :func:`token_mismatch`: how identity-like a circuit is, in the
  residual basis and in the token basis.

>>> import numpy as np
>>> Q = np.linalg.qr(np.random.default_rng(0).normal(size=(8, 8)))[0]
>>> round(float(subspace_matching(Q, Q, 3)), 12)   # a subspace matches itself
1.0
>>> round(float(subspace_matching(Q[:, :3], Q[:, 3:6], 3)), 12)  # orthogonal subspaces
0.0
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Literal

import numpy as np

from lmlab import runtime
from lmlab.errors import LmlabError, first_line
from lmlab.runs.io import atomic_write_with

__all__ = [
    "Method",
    "diagonal_zscore",
    "matching_curve",
    "random_baseline",
    "rotary_R",
    "subspace_matching",
    "token_mismatch",
]

Method = Literal["largest", "mean"]
_BASELINE_CACHE: dict[tuple[int, int, int, str], np.ndarray] = {}
_CACHE_HINT = f"pass another cache_dir or set {runtime.CACHE_ENV} to a writable directory"


def _check_method(method: str) -> None:
    if method not in ("largest", "mean"):
        raise LmlabError(f"method must be 'largest' or 'mean', got {method!r}")


def matching_curve(C: np.ndarray, ranks: tuple[int, ...] | list[int] | range,
                   method: Method = "largest") -> np.ndarray:
    """Matching scores for several ranks from the cross-Gram matrix ``C = Aᵀ B``.

    For orthonormal ``A``, ``B`` (``d × p``), the principal cosines between ``span A[:, :r]``
    and ``span B[:, :r]`` are the singular values of ``C[:r, :r]``.

    Args:
        C: ``(..., p, q)`` with ``p, q ≥ max(ranks)``.
        ranks: the ranks ``r`` to evaluate.
        method: ``"largest"`` (σ_max) or ``"mean"`` (RMS of the ``r`` singular values).

    Returns:
        ``(..., len(ranks))``.

    >>> C = np.diag([1.0, 0.5, 0.0])
    >>> matching_curve(C, [1, 2, 3]).tolist()
    [1.0, 1.0, 1.0]
    >>> np.round(matching_curve(C, [1, 2, 3], "mean") ** 2, 4).tolist()
    [1.0, 0.625, 0.4167]
    """
    _check_method(method)
    C = np.asarray(C, dtype=np.float64)
    rs = [int(r) for r in ranks]
    if rs and (min(rs) < 1 or max(rs) > min(C.shape[-2:])):
        raise LmlabError(f"ranks must lie in [1, {min(C.shape[-2:])}], got {min(rs)}..{max(rs)}")
    out = np.empty(C.shape[:-2] + (len(rs),))
    for i, r in enumerate(rs):
        block = C[..., :r, :r]
        if method == "mean":    # RMS of the singular values = ‖block‖_F / √r
            out[..., i] = np.sqrt(np.einsum("...ij,...ij->...", block, block) / r)
        else:                   # σ_max² = λ_max(blockᵀ block); eigvalsh is cheaper than an SVD
            gram = np.swapaxes(block, -1, -2) @ block
            lam = np.linalg.eigvalsh(gram)[..., -1]
            out[..., i] = np.sqrt(np.clip(lam, 0.0, None))
    return out


def subspace_matching(A: np.ndarray, B: np.ndarray, r: int,
                      method: Method = "largest") -> np.ndarray:
    """Generalised cosine between ``span A[..., :r]`` and ``span B[..., :r]``.

    ``σ_max(A[..., :r]ᵀ B[..., :r])`` (``"largest"``: cosine of the smallest principal angle) or
    the RMS of all ``r`` principal cosines (``"mean"``). Columns are assumed orthonormal
    (singular vectors); the score lies in ``[0, 1]``.

    Args:
        A: ``(..., d, ≥r)``.
        B: ``(..., d, ≥r)``; broadcasts against ``A`` in the batch dimensions.
        r: the subspace dimension.
        method: ``"largest"`` or ``"mean"``.

    Returns:
        ``(...)``.

    >>> I = np.eye(4)
    >>> float(subspace_matching(I[:, :2], I[:, [1, 2]], 2))   # they share e_1
    1.0
    >>> round(float(subspace_matching(I[:, :2], I[:, [1, 2]], 2, "mean")), 4)
    0.7071
    """
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    if A.shape[-2] != B.shape[-2]:
        raise LmlabError(f"A and B live in different spaces: {A.shape[-2]} vs {B.shape[-2]} rows")
    if r < 1 or r > min(A.shape[-1], B.shape[-1]):
        raise LmlabError(f"r must lie in [1, {min(A.shape[-1], B.shape[-1])}], got {r}")
    C = np.swapaxes(A[..., :r], -1, -2) @ B[..., :r]
    return matching_curve(C, [r], method)[..., 0]


def _haar_orthogonal(d: int, draws: int, seed: int) -> np.ndarray:
    """``draws`` Haar-distributed orthogonal ``d × d`` matrices (QR of Gaussians, sign-fixed)."""
    g = np.random.default_rng(seed).standard_normal((draws, d, d))
    q, rr = np.linalg.qr(g)
    signs = np.sign(np.diagonal(rr, axis1=-2, axis2=-1))
    signs[signs == 0] = 1.0
    return q * signs[..., None, :]


def _baseline_file(root: Path, d: int, draws: int, seed: int, method: str) -> Path:
    suffix = "" if method == "largest" else f"_{method}"
    return root / "circuits" / f"subspace_baseline_d{d}_draws{draws}_seed{seed}{suffix}.npy"


def _read_baseline(path: Path, d: int) -> np.ndarray | None:
    """The baseline table cached in ``path``, or None to compute it again.

    Read as numbers only (``allow_pickle=False``: nothing in the file can run code). A file
    that is there but cannot be used is named in a warning, and the table is computed again.
    """
    if not path.is_file():
        return None
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, EOFError):  # pickled objects, empty, truncated, or not an .npy file
        reason = "it is not a complete array of numbers"
    except OSError as exc:
        reason = first_line(exc)
    else:
        if isinstance(loaded, np.ndarray) and loaded.shape == (d,) and loaded.dtype.kind == "f":
            return loaded
        reason = f"it does not hold the {d} numbers of this baseline"
    warnings.warn(f"ignored the cache file {path} ({reason}); computing the baseline again",
                  stacklevel=3)  # _read_baseline <- random_baseline <- its caller
    return None


def random_baseline(d: int, ranks: tuple[int, ...] | list[int] | range, draws: int = 1000,
                    seed: int = 0, cache_dir: str | Path | None = None, *,
                    method: Method = "largest", disk: bool = True) -> np.ndarray:
    """Mean matching score of two independent Haar-random ``r``-dimensional subspaces of R^d.

    For Haar-random orthogonal ``Q_a``, ``Q_b`` the product ``Q_aᵀ Q_b`` is again Haar, so the
    score at rank ``r`` is the statistic of the top-left ``r × r`` block of one Haar matrix;
    the same ``draws`` matrices serve all ranks (a deterministic function of ``seed``).

    Values are kept in memory and, with ``disk=True``, in
    ``<cache_dir>/circuits/subspace_baseline_d{d}_draws{draws}_seed{seed}.npy`` (one entry per
    rank ``1..d``, NaN where not yet computed); ``cache_dir`` defaults to
    :func:`lmlab.runtime.cache_dir`.

    Args:
        d: ambient dimension.
        ranks: ranks ``r`` in ``[1, d]``.
        draws: number of random draws averaged.
        seed: seed of the draws.
        cache_dir: root of the on-disk cache.
        method: ``"largest"`` or ``"mean"`` (see :func:`subspace_matching`).
        disk: read and write the on-disk cache.

    Returns:
        ``(len(ranks),)`` mean scores.

    >>> b = random_baseline(64, [1, 10], draws=200, disk=False)
    >>> [round(float(x), 1) for x in b]
    [0.1, 0.7]
    """
    _check_method(method)
    rs = [int(r) for r in ranks]
    if d < 1 or draws < 1:
        raise LmlabError(f"d and draws must be positive, got d={d}, draws={draws}")
    if rs and (min(rs) < 1 or max(rs) > d):
        raise LmlabError(f"ranks must lie in [1, {d}], got {min(rs)}..{max(rs)}")
    key = (d, draws, seed, method)
    table = _BASELINE_CACHE.get(key)
    path: Path | None = None
    if disk:
        if cache_dir is None:
            cache_dir = runtime.cache_dir()
        path = _baseline_file(Path(cache_dir), d, draws, seed, method)
        if table is None:
            table = _read_baseline(path, d)
    if table is None:
        table = np.full(d, np.nan)
    todo = sorted({r for r in rs if math.isnan(table[r - 1])})
    if todo:
        table = table.copy()
        C = _haar_orthogonal(d, draws, seed)
        table[np.array(todo) - 1] = matching_curve(C, todo, method).mean(axis=0)
        if path is not None:
            atomic_write_with(path, lambda handle: np.save(handle, table, allow_pickle=False),
                              hint=_CACHE_HINT)
    _BASELINE_CACHE[key] = table
    return table[np.array(rs, dtype=int) - 1] if rs else np.empty(0)


def rotary_R(d: int, rel_dist: int, theta: float = 10000.0, sign: int = 1) -> np.ndarray:
    """Rotary relative-position matrix ``R`` (``d × d``) for interleaved coordinate pairs.

    Rotary embedding treats coordinates ``(2i, 2i+1)`` as one complex number and multiplies it
    by ``exp(i · pos · θ_i)``, ``θ_i = theta^(−2i/d)``. With ``t = sign · rel_dist`` = key
    position − query position, ``⟨Rot(m) q, Rot(m + t) k⟩ = qᵀ R k`` where ``R`` is
    block-diagonal with 2×2 blocks ``[[cos tθ_i, −sin tθ_i], [sin tθ_i, cos tθ_i]]``.
    ``sign=+1`` is the authors' ``R[t]`` (query at 0, key at ``t``); ``sign=-1`` gives ``Rᵀ``
    (key ``rel_dist`` positions *before* the query, as under a causal mask).

    Args:
        d: even dimension.
        rel_dist: the relative distance ``≥ 0``.
        theta: rotary base.
        sign: ``+1`` or ``-1``.

    >>> R = rotary_R(4, 1, theta=10000.0)
    >>> np.round(R[:2, :2], 4).tolist()
    [[0.5403, -0.8415], [0.8415, 0.5403]]
    >>> bool(np.allclose(rotary_R(4, 3, sign=-1), rotary_R(4, 3).T))
    True
    """
    if d < 2 or d % 2:
        raise LmlabError(f"rotary needs an even dimension d >= 2, got {d}")
    if sign not in (1, -1):
        raise LmlabError(f"sign must be +1 or -1, got {sign}")
    t = sign * rel_dist
    angles = t * theta ** (-2.0 * np.arange(d // 2) / d)
    c, s = np.cos(angles), np.sin(angles)
    R = np.zeros((d, d))
    even, odd = np.arange(0, d, 2), np.arange(1, d, 2)
    R[even, even], R[even, odd] = c, -s
    R[odd, even], R[odd, odd] = s, c
    return R


def diagonal_zscore(W: np.ndarray) -> np.ndarray:
    """``(mean(diag W) − mean(W)) / std(W)`` over all entries (``ddof=0``), batched.

    Args:
        W: ``(..., d, d)``.

    Returns:
        ``(...)``.

    >>> W = np.eye(4)
    >>> round(float(diagonal_zscore(W)), 4)   # (1 − 1/4) / sqrt(3/16)
    1.7321
    """
    W = np.asarray(W, dtype=np.float64)
    if W.ndim < 2 or W.shape[-1] != W.shape[-2]:
        raise LmlabError(f"diagonal_zscore needs square matrices, got shape {W.shape}")
    diag = np.diagonal(W, axis1=-2, axis2=-1).mean(axis=-1)
    flat = W.reshape(W.shape[:-2] + (-1,))
    return (diag - flat.mean(axis=-1)) / flat.std(axis=-1)


def token_mismatch(E: np.ndarray, W_qk: np.ndarray, W_ov: np.ndarray,
                   axis: Literal["row", "col"] = "row") -> np.ndarray:
    """Fraction of tokens whose best match under ``M = E W_qk W_ov Eᵀ`` is another token.

    ``M[i, j]`` is the layer-1 score of a query token ``i`` against a key position whose layer-0
    head copied token ``j``. ``axis="row"``: fraction of ``i`` with ``argmax_j M[i, j] ≠ i``;
    ``"col"``: fraction of ``j`` with ``argmax_i M[i, j] ≠ j``. 0 is a perfect token matcher,
    ≈ ``1 − 1/V`` is random.

    Args:
        E: ``(..., V, d)`` token embedding.
        W_qk: ``(..., d, d)``.
        W_ov: ``(..., d, d)``.
        axis: ``"row"`` or ``"col"``.

    Returns:
        ``(...)``.

    >>> E = np.eye(3)
    >>> float(token_mismatch(E, np.eye(3), np.eye(3)))
    0.0
    >>> round(float(token_mismatch(E, np.eye(3), np.roll(np.eye(3), 1, 0))), 4)
    1.0
    """
    if axis not in ("row", "col"):
        raise LmlabError(f"axis must be 'row' or 'col', got {axis!r}")
    E = np.asarray(E, dtype=np.float64)
    M = E @ np.asarray(W_qk, dtype=np.float64) @ np.asarray(W_ov, dtype=np.float64) \
        @ np.swapaxes(E, -1, -2)
    best = M.argmax(axis=-1 if axis == "row" else -2)
    return (best != np.arange(M.shape[-1])).mean(axis=-1)
