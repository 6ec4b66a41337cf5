"""The torch route to eigenvalues, for GPUs (and CPUs without a fast LAPACK).

Same contract as :func:`lmlab.spectral.esd.spectrum_of`: eigenvalues of the Gram matrix of the
smaller side, computed with ``torch.linalg.eigvalsh`` on ``device``; a matrix whose smallest
eigenvalue sits at the numerical floor falls back to ``torch.linalg.svdvals`` (tall side).
Several matrices of one shape (conv2d slices) are decomposed as one batch. Complex weights go
through the Hermitian Gram matrix WᴴW (real eigenvalues ≥ 0), as in the NumPy route.

>>> import numpy as np, torch
>>> spectrum_of_torch([np.diag([2.0, 1.0])], device=torch.device("cpu")).evals
array([1., 4.])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lmlab.spectral.esd import Precision, Spectrum

__all__ = ["spectrum_of_torch"]

_GRAM_FLOOR = 1e3


def spectrum_of_torch(
    matrices: Sequence[np.ndarray],
    *,
    N: int | None = None,
    scale: float = 1.0,
    precision: Precision = "float64",
    device: torch.device | None = None,
) -> Spectrum:
    """Pooled eigenvalues of WᵀW over ``matrices``, computed with torch on ``device``."""
    dtype = torch.float64 if precision == "float64" else torch.float32
    device = device or torch.device("cpu")
    stored: type[np.generic]
    if any(np.iscomplexobj(m) for m in matrices):  # kept complex: the Gram matrix is WᴴW
        stored = np.complex64
        wide = torch.complex128 if dtype == torch.float64 else torch.complex64
    else:
        stored, wide = np.float32, dtype
    W = torch.stack([torch.as_tensor(np.asarray(m, dtype=stored)) for m in matrices])
    W = W.to(device=device, dtype=wide)  # (B, n, m)
    if W.shape[1] < W.shape[2]:
        W = W.transpose(1, 2)  # (B, N, M): tall
    if N is None:
        N = int(W.shape[1])
    if scale != 1.0:
        W = W * scale
    gram = W.mH @ W if W.is_complex() else W.transpose(1, 2) @ W  # (B, M, M), Hermitian
    ev = torch.linalg.eigvalsh(gram)  # (B, M) real, ascending
    floor = _GRAM_FLOOR * torch.finfo(dtype).eps * W.shape[2] * ev[:, -1].clamp(min=0)
    if bool((ev[:, 0] <= floor).any()):
        sv = torch.linalg.svdvals(W).flip(-1)
    else:
        sv = ev.sqrt()
    sv64 = sv.to("cpu", torch.float64).numpy()  # (B, M)
    tol = sv64.max(axis=1, keepdims=True) * N * np.finfo(np.float64).eps
    rank_loss = int(np.sum(sv64.shape[1] - np.count_nonzero(sv64 > tol, axis=1)))
    return Spectrum(
        evals=np.sort((sv64 * sv64).ravel()),
        sv_max=float(sv64.max()),
        sv_min=float(sv64.min(axis=1).max()),
        rank_loss=rank_loss,
    )
