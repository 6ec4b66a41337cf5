"""Weight matrices to eigenvalues: the empirical spectral density (ESD).

The ESD of an N×M weight matrix W (N ≥ M) is the set of M eigenvalues of WᵀW, i.e. the squared
singular values of W, **not** divided by N (weightwatcher's convention). Two routes give them:

* ``method="eigh"`` (default): ``eigvalsh`` of the M×M Gram matrix of the smaller side — several
  times faster than an SVD and, in float64, the same α to ~1e-12;
* ``method="svd"``: singular values of W itself (weightwatcher's route; most accurate for the
  smallest eigenvalues). It needs W whole in float64: N·M·8 bytes (1 GiB for 32000×4096).

A matrix too large for one block (:mod:`~lmlab.spectral.blocks`) takes the eigh route without
ever being copied whole: :func:`gram_of_blocks` sums BᵀB over float64 row blocks of its tall
side, and :func:`spectrum_of_gram` takes the eigenvalues; the rare matrix that needs the
SVD (a possible rank loss) or a refined σmin uses R of a blocked QR (RᵀR = WᵀW, M×M) in place
of W, as accurate as an SVD of W itself. Memory: the M×M Gram matrix, one accumulation buffer
of the same size, and one block.

Weights are cast to float32 and then to the compute precision (float64 by default), exactly as
weightwatcher does. Conv2d kernels (out, in, kh, kw) are split into kh·kw slices whose
eigenvalues are pooled, after scaling W by √(1/2).

>>> import numpy as np
>>> W = np.diag([3.0, 2.0, 1.0])
>>> spectrum_of([W]).evals
array([1., 4., 9.])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from lmlab.spectral.blocks import MatrixBlocks

__all__ = ["Spectrum", "matrices_of", "spectrum_of", "gram_of_blocks", "spectrum_of_gram",
           "Method", "Precision", "GramCheck", "gram_check", "smallest_singular_value"]

Method = Literal["eigh", "svd"]
Precision = Literal["float64", "float32"]
GramCheck = Literal["sqrt", "refine", "svd"]

# In multiples of eps·λmax (the Gram route's noise on an eigenvalue): below _RANK_SAFE a
# smallest eigenvalue may hide a rank loss (use the SVD); below _SVMIN_SAFE its square root
# σmin is refined through the inverse (keeps σmin within ~1e-9 of the SVD's).
_RANK_SAFE = 1e3
_SVMIN_SAFE = 1e6
_POWER_STEPS = 100


def gram_check(ev_min: float, ev_max: float, precision: Precision = "float64") -> GramCheck:
    """What a Gram route does with its eigenvalues (the NumPy and torch routes both ask here).

    In float64 the Gram route resolves eigenvalues only to ~eps·λmax. A smallest one near
    that noise could hide a rank loss: ``"svd"`` (take the singular values of W itself). One
    well above the noise but small enough that its square root loses digits of σmin:
    ``"refine"`` (σmin alone, through the inverse). Otherwise — and always in the float32
    fast mode, which trades small-eigenvalue accuracy — ``"sqrt"``.

    >>> gram_check(1.0, 4.0), gram_check(1e-12, 4.0), gram_check(1e-20, 4.0)
    ('sqrt', 'refine', 'svd')
    >>> gram_check(1e-20, 4.0, "float32")
    'sqrt'
    """
    if precision != "float64":
        return "sqrt"
    noise = np.finfo(np.float64).eps * max(float(ev_max), 0.0)
    if ev_min <= _RANK_SAFE * noise:
        return "svd"
    return "refine" if ev_min <= _SVMIN_SAFE * noise else "sqrt"


@dataclass(frozen=True)
class Spectrum:
    """Eigenvalues of one layer and the singular-value facts derived alongside.

    Attributes:
        evals: sorted eigenvalues of WᵀW (pooled over conv slices), float64.
        sv_max: largest singular value.
        sv_min: smallest singular value (for pooled slices: the largest of the slice minima,
            as weightwatcher reports it).
        rank_loss: number of singular values at or below the numerical rank tolerance.
    """

    evals: np.ndarray
    sv_max: float
    sv_min: float
    rank_loss: int


def matrices_of(
    weight: np.ndarray, layer_type: str
) -> tuple[list[np.ndarray], int, int, int]:
    """Split a layer's weight tensor into the matrices whose spectra are pooled.

    Args:
        weight: the weight as a float32 array (2-D, or 4-D for conv2d).
        layer_type: ``dense``, ``conv1d``, ``embedding`` or ``conv2d``.

    Returns:
        ``(matrices, N, M, rf)`` with N ≥ M the matrix dimensions and rf the receptive field.

    >>> mats, N, M, rf = matrices_of(np.zeros((4, 3, 2, 2), np.float32), "conv2d")
    >>> len(mats), N, M, rf
    (4, 4, 3, 4)
    """
    if layer_type != "conv2d":
        if weight.ndim != 2:
            raise ValueError(f"expected a 2-D weight for a {layer_type} layer, got {weight.shape}")
        return [weight], int(max(weight.shape)), int(min(weight.shape)), 1
    if weight.ndim != 4:
        raise ValueError(f"expected a 4-D conv2d kernel, got shape {weight.shape}")
    n, m, kh, kw = weight.shape
    if n + m >= kh + kw:  # channels last in weightwatcher's wording: (out, in, kh, kw)
        mats = [weight[:, :, i, j] for i in range(kh) for j in range(kw)]
        rf = kh * kw
    else:  # kernel stored (kh, kw, out, in)
        mats = [weight[i, j, :, :] for i in range(n) for j in range(m)]
        rf = n * m
    mats = [w.T if w.shape[0] < w.shape[1] else w for w in mats]
    N, M = mats[0].shape
    return mats, int(N), int(M), int(rf)


def smallest_singular_value(W: np.ndarray, *, upper: bool = False) -> float | None:
    """σmin of a tall or square float64 W as 1/σmax(W⁻¹) (None if it does not settle).

    Accurate to about eps·κ relatively — like an SVD — where the Gram route is accurate only
    to about eps·κ². Costs an inverse (of R from a QR when W is tall) and a few power steps.
    ``upper=True`` says W is square and upper triangular (R of a QR): each step then takes two
    triangular solves with it, and no inverse (two more M×M arrays) is formed.

    >>> print(f"{smallest_singular_value(np.diag([3.0, 2.0, 0.5])):.6f}")
    0.500000
    >>> print(f"{smallest_singular_value(np.triu(np.ones((3, 3))), upper=True):.6f}")
    0.554958
    """
    N, M = W.shape
    if upper:
        from scipy.linalg import solve_triangular

        if not np.all(np.isfinite(np.diag(W))) or np.any(np.diag(W) == 0):
            return None

        def apply(v: np.ndarray) -> np.ndarray:  # (RᵀR)⁻¹ v, two triangular solves
            return solve_triangular(W, solve_triangular(W, v, trans="T"))  # type: ignore[no-any-return]
    else:
        A = W if N == M else np.linalg.qr(W, mode="r")  # RᵀR = WᵀW
        try:
            inv = np.linalg.inv(A)
        except np.linalg.LinAlgError:
            return None

        def apply(v: np.ndarray) -> np.ndarray:
            return inv.T @ (inv @ v)  # type: ignore[no-any-return]
    x = np.random.default_rng(0).standard_normal(size=(M,))
    x /= np.linalg.norm(x)
    previous = 0.0
    for _ in range(_POWER_STEPS):
        y = apply(x)  # (WᵀW)⁻¹ x
        mu = float(x @ y)  # Rayleigh quotient -> σmax(W⁻¹)² = 1/σmin²
        if not np.isfinite(mu) or mu <= 0:
            return None
        x = y / np.linalg.norm(y)
        if abs(mu - previous) <= 1e-15 * mu:
            return 1.0 / np.sqrt(mu)
        previous = mu
    return None


def _singular_values(W: np.ndarray, method: Method) -> np.ndarray:
    """Singular values of W (ascending).

    NumPy's LAPACK is used for the heavy calls, not SciPy's: the two ship separate OpenBLAS
    thread pools, and alternating between them lets the idle pool's spinning threads steal
    the busy one's cores on a small machine (measured: up to 2× slower with 2 threads).
    """
    if method == "svd":
        return np.sort(np.linalg.svd(W, compute_uv=False))
    small = W if W.shape[0] >= W.shape[1] else W.T  # (N, M) with M the smaller side
    if np.iscomplexobj(small):  # Hermitian Gram matrix WᴴW: real eigenvalues ≥ 0
        return _complex_singular_values(small)
    ev = np.linalg.eigvalsh(small.T @ small)  # (M,) ascending; the product runs as a syrk
    check = gram_check(ev[0], ev[-1], "float64" if ev.dtype == np.float64 else "float32")
    if check == "svd":
        return _singular_values(W, "svd")
    sv = np.sqrt(np.clip(ev, 0.0, None))
    if check == "refine":
        refined = smallest_singular_value(small)
        if refined is None:
            return _singular_values(W, "svd")
        sv[0] = refined
    return sv


def _complex_singular_values(small: np.ndarray) -> np.ndarray:
    """Singular values of a tall complex W from ``eigvalsh(WᴴW)`` (ascending).

    The eigenvalues of the Hermitian Gram matrix are real and ≥ 0 (tiny negative round-off
    is clipped); a smallest one near the numerical floor takes the SVD, as for real W.
    """
    ev = np.linalg.eigvalsh(small.conj().T @ small)  # (M,) real, ascending
    if gram_check(ev[0], ev[-1], "float64" if ev.dtype == np.float64 else "float32") != "sqrt":
        return np.sort(np.linalg.svd(small, compute_uv=False))
    return np.sqrt(np.clip(ev, 0.0, None))


def _rank_loss(sv: np.ndarray, N: int) -> int:
    tol = np.max(sv) * N * np.finfo(sv.dtype).eps
    return int(len(sv) - np.count_nonzero(sv > tol))


def _cast(W: np.ndarray, precision: Precision) -> np.ndarray:
    """W through float32 to the compute precision (complex64 to complex128 for complex W)."""
    if np.iscomplexobj(W):
        wide = np.complex128 if precision == "float64" else np.complex64
        return np.asarray(W, dtype=np.complex64).astype(wide)
    dtype = np.float64 if precision == "float64" else np.float32
    return np.asarray(W, dtype=np.float32).astype(dtype)


def gram_of_blocks(blocks: MatrixBlocks, *, scale: float = 1.0,
                   precision: Precision = "float64",
                   on_block: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
    """The M×M Gram matrix TᵀT of the tall side, summed over row blocks in float64 (float32
    in the fast mode); each float32 block is shown to ``on_block`` first (weight checks).

    >>> from lmlab.spectral.blocks import TensorBlocks
    >>> W = np.arange(12.0).reshape(4, 3)
    >>> G = gram_of_blocks(TensorBlocks(W, block_bytes=3 * 8))  # one row per block
    >>> bool(np.allclose(G, W.T @ W))
    True
    """
    dtype: type[np.floating[Any]] = np.float64 if precision == "float64" else np.float32
    gram: np.ndarray | None = None
    buffer: np.ndarray | None = None
    for block in blocks.tall_blocks():
        if on_block is not None:
            on_block(block)
        B: np.ndarray = block.astype(dtype)
        if scale != 1.0:
            B = np.multiply(B, scale, dtype=B.dtype)
        if gram is None:
            gram = B.T @ B  # runs as a syrk
        else:
            if buffer is None:
                buffer = np.empty_like(gram)
            np.matmul(B.T, B, out=buffer)
            gram += buffer
        del B, block
    assert gram is not None
    return gram


def _blocked_r(blocks: MatrixBlocks, scale: float) -> np.ndarray:
    """R (M×M) of a QR of the tall side taken block by block: RᵀR = TᵀT, σ(R) = σ(T).

    Each step factors [R; block] in place (LAPACK ``geqrf`` on a Fortran-ordered stack), so
    at most the stack and one R are held: about 2·M²·8 bytes plus a block, not the four M×M
    arrays of stacking and a copying QR."""
    from scipy.linalg import lapack

    R: np.ndarray | None = None
    for block in blocks.tall_blocks():
        k = 0 if R is None else R.shape[0]
        stack = np.empty((k + block.shape[0], block.shape[1]), dtype=np.float64, order="F")
        if R is not None:
            stack[:k] = R
            R = None  # freed before the factorisation
        stack[k:] = block
        if scale != 1.0:
            stack[k:] *= scale
        qr, _, _, info = lapack.dgeqrf(stack, overwrite_a=True)
        if info != 0:
            raise ValueError(f"QR failed (LAPACK info {info})")
        R = np.triu(qr[: min(qr.shape)])
        del qr, stack
    assert R is not None
    return R


def spectrum_of_gram(gram: np.ndarray, blocks: MatrixBlocks, *, N: int | None = None,
                     scale: float = 1.0) -> Spectrum:
    """The :class:`Spectrum` of one matrix from its Gram matrix (:func:`gram_of_blocks`),
    with the checks of the eigh route: a smallest eigenvalue at the numerical floor takes
    the SVD, one near it a refined σmin, both from R of a blocked QR (read again from
    ``blocks``). ``gram`` is consumed: emptied once its eigenvalues are taken (when it owns
    its memory), so that it and R are never held at once.

    >>> from lmlab.spectral.blocks import TensorBlocks
    >>> blocks = TensorBlocks(np.diag([3.0, 2.0, 1.0]))
    >>> spectrum_of_gram(gram_of_blocks(blocks), blocks).evals
    array([1., 4., 9.])
    """
    N = blocks.N if N is None else N
    ev = np.linalg.eigvalsh(gram)
    if gram.flags.owndata:  # consumed: its memory is free before R (M×M as well) is formed
        gram.resize(0, refcheck=False)
    check = gram_check(ev[0], ev[-1], "float64" if ev.dtype == np.float64 else "float32")
    if check == "svd":
        sv = np.sort(np.linalg.svd(_blocked_r(blocks, scale), compute_uv=False))
    else:
        sv = np.sqrt(np.clip(ev, 0.0, None))
        if check == "refine":
            R = _blocked_r(blocks, scale)
            refined = smallest_singular_value(R, upper=True)
            if refined is None:
                sv = np.sort(np.linalg.svd(R, compute_uv=False))
            else:
                sv[0] = refined
    sv = sv.astype(np.float64)
    return Spectrum(evals=np.sort(sv * sv), sv_max=float(np.max(sv)), sv_min=float(np.min(sv)),
                    rank_loss=_rank_loss(sv, N))


def spectrum_of(
    matrices: Sequence[np.ndarray],
    *,
    N: int | None = None,
    scale: float = 1.0,
    method: Method = "eigh",
    precision: Precision = "float64",
) -> Spectrum:
    """Eigenvalues of WᵀW pooled over ``matrices`` (one matrix for dense layers).

    Args:
        matrices: the layer's matrices, each (N, M) or (M, N).
        N: the larger dimension, used by the rank tolerance (default: from the first matrix).
        scale: multiply W by this before the decomposition (conv2d: √(1/2)).
        method: ``"eigh"`` (Gram matrix, fast) or ``"svd"`` (weightwatcher's route).
        precision: ``"float64"`` (default, exact parity) or ``"float32"`` (fast mode).

    Returns:
        The pooled :class:`Spectrum`.
    """
    if N is None:
        N = int(max(matrices[0].shape))
    all_evals: list[np.ndarray] = []
    sv_max, sv_min, rank_loss = 0.0, 0.0, 0
    for W in matrices:
        Wd = _cast(W, precision)
        if scale != 1.0:
            Wd = np.multiply(Wd, scale, dtype=Wd.dtype)
        sv = _singular_values(Wd, method).astype(np.float64)
        all_evals.append(sv * sv)
        sv_max = max(sv_max, float(np.max(sv)))
        sv_min = max(sv_min, float(np.min(sv)))
        rank_loss += _rank_loss(sv, N)
    evals = np.sort(np.concatenate(all_evals))
    return Spectrum(evals=evals, sv_max=sv_max, sv_min=sv_min, rank_loss=rank_loss)
