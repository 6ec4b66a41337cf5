"""ScreeNOT: MSE-optimal hard thresholding of singular values in unknown (correlated) noise.

Donoho, Gavish, Romanov, "ScreeNOT: exact MSE-optimal singular value thresholding in correlated
noise", Ann. Statist. 51 (2023) 122–148, arXiv:2009.12297. Written here from the method's
description, batched over stacks of matrices.

The method, for ``Y`` (``m × n``) with singular values ``y_1 ≥ … ≥ y_p``, ``p = min(m, n)``,
``γ = p / max(m, n)`` and an upper bound ``k`` on the signal rank:

1. **Pseudo-noise.** The top ``k`` singular values may carry signal, so they are replaced
   ("imputation", ``strategy="i"``) by an extrapolation of the bulk's upper edge. Near a
   square-root edge the ``j``-th largest noise value behaves like ``E − c j^(2/3)``; fitting
   ``c`` from ``y_{k+1}`` (``j = k``) and ``y_{2k+1}`` (``j = 2k``) and reading off ``j = l − 1``
   gives ``z_l = y_{k+1} + (y_{k+1} − y_{2k+1}) (1 − ((l − 1)/k)^(2/3)) / (2^(2/3) − 1)`` for
   ``l = 1..k``; this needs ``2k + 1 < p``. ``"w"`` (winsorisation) sets them to ``y_{k+1}``,
   ``"0"`` (transport to zero) to 0; both need ``k < p``.
2. **D-transform** of the pseudo-noise law ``F``: ``φ(y) = mean_i y / (y² − z_i²)``,
   ``φ_γ(y) = γ φ(y) + (1 − γ)/y``, ``D(y) = φ(y) φ_γ(y)``. A spike of strength ``x`` appears
   at ``y`` with ``D(y) = 1/x²`` and singular-vector cosines ``c_L² c_R² = 4 D² / (x⁴ D'²)``.
3. **Threshold.** Keeping component ``y`` costs ``y² − 2 x y c_L c_R`` more squared error than
   dropping it, so it is worth keeping iff ``Ψ(y) = −y D'(y) / D(y) < 4``. ``Ψ`` falls from
   ``+∞`` at the bulk edge to 2 at infinity; the threshold ``θ`` solves ``Ψ(θ) = 4`` (for white
   square noise this gives the known ``4/√3`` in units of the noise level).
4. **Rank** = number of singular values strictly above ``θ``.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> n = 200
>>> u, v = np.linalg.qr(rng.normal(size=(n, 3)))[0], np.linalg.qr(rng.normal(size=(n, 3)))[0]
>>> Y = u @ np.diag([10.0, 8.0, 6.0]) @ v.T + rng.normal(size=(n, n)) / np.sqrt(n)
>>> threshold, rank = screenot_rank(Y, k=10)
>>> int(rank)
3
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from lmlab.errors import LmlabError

__all__ = ["Strategy", "max_k", "pseudo_noise", "screenot_from_singular_values", "screenot_rank"]

Strategy = Literal["i", "w", "0"]
_PSI_TARGET = 4.0


def max_k(p: int, strategy: Strategy = "i") -> int:
    """The largest valid rank bound ``k`` for ``p = min(m, n)`` singular values.

    >>> max_k(64), max_k(64, "w")
    (31, 63)
    """
    if strategy == "i":
        return (p - 2) // 2      # 2k + 1 < p
    if strategy in ("w", "0"):
        return p - 1             # k < p
    raise LmlabError(f"strategy must be 'i' (imputation), 'w' (winsorisation) or '0' "
                     f"(transport to zero), got {strategy!r}")


def _check_k(k: int, p: int, strategy: Strategy) -> None:
    hi = max_k(p, strategy)
    rule = "2k + 1 < min(m, n)" if strategy == "i" else "k < min(m, n)"
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= hi:
        raise LmlabError(f"ScreeNOT k must be an integer in [0, {hi}] for strategy "
                         f"{strategy!r} with min(m, n) = {p} ({rule}); got {k!r}")


def pseudo_noise(s: np.ndarray, k: int, strategy: Strategy = "i") -> np.ndarray:
    """Pseudo-noise singular values: the top ``k`` of ``s`` replaced (step 1 above).

    Args:
        s: ``(..., p)`` singular values in any order.
        k: the rank bound.
        strategy: ``"i"``, ``"w"`` or ``"0"``.

    Returns:
        ``(..., p)`` in descending order.

    >>> pseudo_noise(np.array([9.0, 3.0, 2.0, 1.5, 1.0]), 1).round(3).tolist()
    [4.702, 3.0, 2.0, 1.5, 1.0]
    """
    s = np.asarray(s, dtype=np.float64)
    p = s.shape[-1]
    _check_k(k, p, strategy)
    z = -np.sort(-s, axis=-1)
    if k == 0:
        return z
    edge = z[..., k:k + 1]                            # y_{k+1}
    if strategy == "0":
        z[..., :k] = 0.0
    elif strategy == "w":
        z[..., :k] = edge
    else:
        gap = edge - z[..., 2 * k:2 * k + 1]          # y_{k+1} − y_{2k+1}
        j = np.arange(k) / k                          # (l − 1)/k for l = 1..k
        z[..., :k] = edge + gap * (1.0 - j ** (2.0 / 3.0)) / (2.0 ** (2.0 / 3.0) - 1.0)
    return -np.sort(-z, axis=-1)


def _psi(y: np.ndarray, z2: np.ndarray, gamma: float) -> np.ndarray:
    """``Ψ(y) = −y D'(y) / D(y)`` for pseudo-noise squares ``z2`` (..., p) at ``y`` (...)."""
    y = y[..., None]
    den = y * y - z2
    phi = (y / den).mean(axis=-1)
    dphi = (-(y * y + z2) / (den * den)).mean(axis=-1)
    y = y[..., 0]
    phig = gamma * phi + (1.0 - gamma) / y
    dphig = gamma * dphi - (1.0 - gamma) / (y * y)
    D = phi * phig
    dD = dphi * phig + phi * dphig
    return -y * dD / D


def _threshold(z: np.ndarray, gamma: float, iters: int = 200) -> np.ndarray:
    """Root of ``Ψ(θ) = 4`` above the pseudo-noise edge, by batched bisection."""
    z2 = z * z
    edge = z.max(axis=-1)
    zero = edge <= 0
    scale = np.where(zero, 1.0, edge)
    lo = scale * (1.0 + 1e-12)
    hi = scale * 2.0
    for _ in range(200):                          # grow hi until Ψ(hi) < 4
        bad = (_psi(hi, z2, gamma) >= _PSI_TARGET) & ~zero
        if not bad.any():
            break
        hi = np.where(bad, hi * 2.0, hi)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        above = _psi(mid, z2, gamma) >= _PSI_TARGET  # still too close to the bulk
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
        if np.all(hi - lo <= 1e-13 * hi):
            break
    return np.where(zero, 0.0, 0.5 * (lo + hi))


def screenot_from_singular_values(s: np.ndarray, shape: tuple[int, int], k: int,
                                  strategy: Strategy = "i") -> tuple[np.ndarray, np.ndarray]:
    """ScreeNOT threshold and rank from singular values already computed.

    Args:
        s: ``(..., p)`` singular values of matrices of shape ``shape``.
        shape: ``(m, n)`` of the matrices (sets ``γ``).
        k: upper bound on the signal rank (see :func:`max_k`).
        strategy: ``"i"``, ``"w"`` or ``"0"``.

    Returns:
        ``(threshold, rank)``, each of shape ``(...)``.

    >>> t, r = screenot_from_singular_values(np.array([50.0] + [1.0] * 9), (10, 10), 2)
    >>> int(r)
    1
    """
    m, n = shape
    p = min(m, n)
    s = np.asarray(s, dtype=np.float64)
    if s.shape[-1] != p:
        raise LmlabError(f"expected {p} singular values for a {m}×{n} matrix, got {s.shape[-1]}")
    z = pseudo_noise(s, k, strategy)
    theta = _threshold(z, p / max(m, n))
    rank = (s > theta[..., None]).sum(axis=-1)
    return theta, rank


def screenot_rank(Y: np.ndarray, k: int,
                  strategy: Strategy = "i") -> tuple[np.ndarray, np.ndarray]:
    """ScreeNOT hard threshold and the number of singular values above it.

    Args:
        Y: ``(m, n)`` or a stack ``(..., m, n)``.
        k: upper bound on the signal rank; an integer in ``[0, (min(m, n) − 2) // 2]`` for
            ``"i"`` (``2k + 1 < min(m, n)``; 31 for 64×64), ``[0, min(m, n) − 1]`` otherwise.
        strategy: ``"i"`` (imputation, default), ``"w"`` (winsorisation), ``"0"`` (transport
            to zero).

    Returns:
        ``(threshold, rank)`` of shape ``(...)`` (0-d arrays for one matrix).

    Raises:
        LmlabError: ``k`` outside its valid range (the message names the range).

    >>> t, r = screenot_rank(np.eye(64) * 0, 5)
    >>> float(t), int(r)
    (0.0, 0)
    """
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim < 2:
        raise LmlabError(f"screenot_rank needs a matrix, got shape {Y.shape}")
    m, n = Y.shape[-2:]
    _check_k(k, min(m, n), strategy)
    s = np.linalg.svd(Y, compute_uv=False)
    return screenot_from_singular_values(s, (m, n), k, strategy)
