"""The torch route to eigenvalues, for GPUs: the NumPy route's numbers, computed on ``device``.

Same contract and the same choices as :func:`lmlab.spectral.esd.spectrum_of`:

* ``method="eigh"``: ``torch.linalg.eigvalsh`` of the Gram matrix of the smaller side, then
  :func:`~lmlab.spectral.esd.gram_check` — the one rule both routes follow — decides per
  matrix: a smallest eigenvalue at the numerical floor takes ``torch.linalg.svdvals`` of W
  itself, one near it a refined σmin (:func:`~lmlab.spectral.esd.smallest_singular_value`;
  on a GPU R of a QR taken on the device, M×M, is the only thing that goes to the host);
* ``method="svd"``: ``torch.linalg.svdvals`` of W;
* ``precision="float64"`` (default): the NumPy route's eigenvalues to rounding (~1e-12
  relative for the largest, the same α, xmin and σmin); ``"float32"``: the fast mode (on
  consumer GPUs float64 runs at 1/64 of the float32 rate), eigenvalues to ~1e-5 relative for
  the largest and no checks on the smallest.

Weights go through float32 first (bf16/fp16 weights are widened exactly), as in the NumPy
route. Several matrices of one shape (conv2d slices) are decomposed as one batch. Complex
weights go through the Hermitian Gram matrix WᴴW (real eigenvalues ≥ 0); one whose smallest
eigenvalue is not safely above the floor takes the SVD, as in the NumPy route.

>>> import numpy as np, torch
>>> spectrum_of_torch([np.diag([2.0, 1.0])], device=torch.device("cpu")).evals
array([1., 4.])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lmlab.spectral.esd import (
    Method,
    Precision,
    Spectrum,
    _rank_loss,
    gram_check,
    smallest_singular_value,
)

__all__ = ["spectrum_of_torch"]


def _as_tensor(m: Any, complex_: bool) -> torch.Tensor:
    """One matrix as a float32 (complex64) CPU or device tensor, never dropping an imaginary
    part."""
    if isinstance(m, torch.Tensor):
        return m.detach().to(torch.complex64 if complex_ else torch.float32)
    return torch.as_tensor(np.asarray(m, dtype=np.complex64 if complex_ else np.float32))


def _is_complex(m: Any) -> bool:
    return m.is_complex() if isinstance(m, torch.Tensor) else bool(np.iscomplexobj(m))


def _svdvals(W: torch.Tensor) -> np.ndarray:
    """Singular values of one matrix (or a batch), ascending, float64 on the host."""
    return torch.linalg.svdvals(W).flip(-1).to("cpu", torch.float64).numpy()


def _refined_sv_min(W: torch.Tensor) -> float | None:
    """σmin of one tall matrix by the NumPy route's refinement. On the CPU NumPy takes the QR
    itself (the NumPy route's exact numbers); elsewhere R (M×M) of a QR on the device does."""
    N, M = W.shape
    A = W if N == M or W.device.type == "cpu" else torch.linalg.qr(W, mode="r").R
    return smallest_singular_value(A.to("cpu").numpy())


def spectrum_of_torch(
    matrices: Sequence[Any],
    *,
    N: int | None = None,
    scale: float = 1.0,
    method: Method = "eigh",
    precision: Precision = "float64",
    device: torch.device | None = None,
) -> Spectrum:
    """Pooled eigenvalues of WᵀW over ``matrices``, computed with torch on ``device``.

    Args:
        matrices: the layer's matrices (NumPy arrays or tensors, any float dtype), each
            (N, M) or (M, N), all of one shape.
        N: the larger dimension, used by the rank tolerance (default: from the matrices).
        scale: multiply W by this before the decomposition (conv2d: √(1/2)).
        method: ``"eigh"`` (Gram matrix) or ``"svd"``, as in the NumPy route.
        precision: ``"float64"`` (the NumPy route's numbers) or ``"float32"`` (fast mode).
        device: where to compute (default CPU).

    Returns:
        The pooled :class:`~lmlab.spectral.esd.Spectrum`.
    """
    dtype = torch.float64 if precision == "float64" else torch.float32
    device = device or torch.device("cpu")
    complex_ = any(_is_complex(m) for m in matrices)
    wide = (torch.complex128 if dtype == torch.float64 else torch.complex64) if complex_ else dtype
    W = torch.stack([_as_tensor(m, complex_).to(device) for m in matrices]).to(wide)  # (B, n, m)
    if W.shape[1] < W.shape[2]:
        W = W.transpose(1, 2)  # (B, N, M): tall
    if N is None:
        N = int(W.shape[1])
    if scale != 1.0:
        W = W * scale
    if method == "svd":
        sv = _svdvals(W)  # (B, M)
    else:
        gram = W.mH @ W if complex_ else W.transpose(1, 2) @ W  # (B, M, M), Hermitian
        ev = torch.linalg.eigvalsh(gram)  # (B, M) real, ascending
        del gram
        ends = ev[:, [0, -1]].to("cpu", torch.float64).numpy()  # (B, 2): one sync
        sv = ev.clamp(min=0).sqrt().to("cpu", torch.float64).numpy().copy()
        for i, (lo, hi) in enumerate(ends):
            check = gram_check(float(lo), float(hi), precision)
            if check == "svd" or (complex_ and check == "refine"):
                sv[i] = _svdvals(W[i])
            elif check == "refine":
                refined = _refined_sv_min(W[i])
                if refined is None:
                    sv[i] = _svdvals(W[i])
                else:
                    sv[i, 0] = refined
    return Spectrum(
        evals=np.sort((sv * sv).ravel()),
        sv_max=float(sv.max()),
        sv_min=float(sv.min(axis=1).max()),
        rank_loss=sum(_rank_loss(row, N) for row in sv),
    )
