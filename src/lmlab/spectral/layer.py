"""One layer → one row: size rules, weight checks, spectrum, fit, norm metrics and the extra
analyses an :class:`~lmlab.spectral.options.AnalyzeOptions` asks for.

>>> import torch
>>> from lmlab.spectral.options import AnalyzeOptions
>>> from lmlab.spectral.sources import iter_layers
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> ref = next(iter_layers(torch.nn.Linear(64, 256)))
>>> row, evals = layer_row(ref, AnalyzeOptions())
>>> row["status"], row["num_evals"], len(evals)
('success', 64, 64)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from lmlab.spectral.blocks import MatrixBlocks, blocks_of
from lmlab.spectral.detx import weak_rank_loss
from lmlab.spectral.esd import Spectrum, gram_of_blocks, matrices_of, spectrum_of, spectrum_of_gram
from lmlab.spectral.options import AnalyzeOptions
from lmlab.spectral.sources import LayerRef

__all__ = ["layer_row", "dims_of", "skip_reason", "torch_route_on_cpu", "OVER_TRAINED",
           "UNDER_TRAINED"]

_EPSILON = 1e-10
OVER_TRAINED, UNDER_TRAINED = 2.0, 6.0


def dims_of(ref: LayerRef) -> tuple[int, int, int]:
    """(N, M, rf) from the weight shape alone, before loading it."""
    shape = ref.shape
    if ref.layer_type == "conv2d" and len(shape) == 4:
        n, m, kh, kw = shape
        if n + m >= kh + kw:
            return max(n, m), min(n, m), kh * kw
        return max(kh, kw), min(kh, kw), n * m
    if len(shape) != 2:
        return 0, 0, 1
    return max(shape), min(shape), 1


def skip_reason(N: int, M: int, rf: int, ref: LayerRef, opts: AnalyzeOptions) -> str:
    """Why weightwatcher's size rules skip this layer ('' when they do not)."""
    if ref.layer_type != "conv2d" and len(ref.shape) != 2:
        return f"unsupported weight shape {ref.shape} for a {ref.layer_type} layer"
    if opts.min_evals and M * rf < opts.min_evals:
        return f"too small: {M * rf} eigenvalues < min_evals {opts.min_evals}"
    if opts.max_evals and M * rf > opts.max_evals:
        return f"too large: {M * rf} eigenvalues > max_evals {opts.max_evals}"
    if opts.max_N is not None and N > opts.max_N:
        return f"N = {N} > max_N {opts.max_N} (weightwatcher's rule; lift it with max_N=None)"
    return ""


def base_row(ref: LayerRef, N: int, M: int, rf: int, opts: AnalyzeOptions,
             columns: tuple[str, ...]) -> dict[str, Any]:
    """A row with every column present (NaN where not computed)."""
    row: dict[str, Any] = {c: np.nan for c in columns}
    row.update(
        layer_id=ref.layer_id, name=ref.name, longname=ref.longname, layer_type=ref.layer_type,
        N=N, M=M, rf=rf, Q=(N / M if M > 0 else -1.0), has_esd=False, warning="",
        reason="", fit_mode=opts.fit_label,
    )
    return row


def _matrix_entropy(sv: np.ndarray, rank: int) -> float:
    evals = sv * sv
    p = evals / np.sum(evals) + _EPSILON
    return float(-np.sum(p * np.log(p)) / np.log(rank + _EPSILON))


def _esd_metrics(spec: Spectrum, N: int, tolerance: float) -> dict[str, Any]:
    """weightwatcher's ESD and norm columns (those that do not depend on the fit)."""
    evals = spec.evals
    norm = float(np.sum(evals))
    spectral_norm = float(np.max(evals))
    sv = np.sqrt(evals)
    rank = int(np.count_nonzero(sv > np.max(sv) * N * np.finfo(sv.dtype).eps))
    return dict(
        has_esd=True, num_evals=len(evals), sv_max=spec.sv_max, sv_min=spec.sv_min,
        rank_loss=spec.rank_loss, weak_rank_loss=weak_rank_loss(evals, tolerance),
        lambda_max=spectral_norm, norm=norm, log_norm=math.log10(norm),
        spectral_norm=spectral_norm, log_spectral_norm=math.log10(spectral_norm),
        stable_rank=norm / spectral_norm, matrix_rank=rank, entropy=_matrix_entropy(sv, rank),
    )


def _fit_metrics(evals: np.ndarray, fit: Any, log_spectral_norm: float) -> dict[str, Any]:
    """The power-law columns, or a failed status with the fit's reason."""
    if fit.status != "success":
        return dict(status="failed", reason=f"power-law fit failed: {fit.reason}")
    alpha = fit.alpha
    with np.errstate(over="ignore", divide="ignore"):
        log_alpha_norm = float(np.log10(np.sum(evals**alpha)))
    return dict(
        alpha=alpha, xmin=fit.xmin, xmax=fit.xmax, D=fit.D, sigma=fit.sigma,
        num_pl_spikes=int(fit.num_pl_spikes), alpha_weighted=alpha * log_spectral_norm,
        log_alpha_norm=log_alpha_norm, status="success",
        warning=("over-trained" if alpha < OVER_TRAINED
                 else "under-trained" if alpha > UNDER_TRAINED else ""),
    )


def _to_numpy(tensor: Any) -> np.ndarray:
    """float32 (complex64 for complex weights: the imaginary part is kept, never dropped)."""
    import torch

    t = tensor.detach().to("cpu")
    if t.is_complex():
        return t.to(torch.complex64).numpy()
    return t.float().numpy()


def _energy(flat: np.ndarray) -> float:
    """Σ|w|² in one pass (NaN/Inf propagate; zero means an all-zero matrix)."""
    if np.iscomplexobj(flat):
        return float(np.vdot(flat, flat).real)
    return float(np.dot(flat, flat))


def _weights_problem(W: np.ndarray) -> str:
    flat = W.ravel()
    energy = _energy(flat)
    if not math.isfinite(energy):
        bad = int(flat.size - np.count_nonzero(np.isfinite(flat)))
        if bad:
            return f"weights contain {bad} NaN/Inf values"
    elif energy == 0.0:
        return "all-zero weight matrix"
    return ""


_TORCH_ON_CPU = False  # set by torch_route_on_cpu()


@contextlib.contextmanager
def torch_route_on_cpu() -> Iterator[None]:
    """Within the block, ``device="cpu"`` computes spectra on the torch route, the one a GPU
    takes, instead of NumPy's: to compare the two routes on a machine without a GPU. It acts
    in this process only (keep ``workers=1``).

    >>> import torch
    >>> from lmlab.spectral import analyze
    >>> w = torch.nn.Linear(64, 32)
    >>> with torch_route_on_cpu():
    ...     a = analyze(w, device="cpu", progress=False, workers=1)
    >>> b = analyze(w, device="cpu", progress=False, workers=1)
    >>> bool(abs(a["lambda_max"][0] / b["lambda_max"][0] - 1) < 1e-12)
    True
    """
    global _TORCH_ON_CPU
    before, _TORCH_ON_CPU = _TORCH_ON_CPU, True
    try:
        yield
    finally:
        _TORCH_ON_CPU = before


def _torch_route(device: Any) -> bool:
    """Whether spectra are computed with torch: on any device but the CPU (NumPy there)."""
    if device is None:
        return False
    return getattr(device, "type", "cpu") != "cpu" or _TORCH_ON_CPU


def _spectrum(mats: list[np.ndarray], N: int, scale: float, opts: AnalyzeOptions,
              device: Any) -> Spectrum:
    # the inverse ESD needs the smallest eigenvalues to full relative accuracy: the SVD route
    method = "svd" if opts.inverse else opts.method
    if _torch_route(device):
        from lmlab.spectral.esd_torch import spectrum_of_torch

        return spectrum_of_torch(mats, N=N, scale=scale, method=method,
                                 precision=opts.precision, device=device)
    return spectrum_of(mats, N=N, scale=scale, method=method, precision=opts.precision)


def _streamable(ref: LayerRef, opts: AnalyzeOptions, device: Any) -> bool:
    """Whether the layer takes the blocked route: a 2-D matrix on the CPU eigh route, with no
    option that needs the matrix itself (``randomize``, ``vectors``, ``inverse``'s SVD)."""
    return (not _torch_route(device) and ref.layer_type != "conv2d" and len(ref.shape) == 2
            and opts.method == "eigh" and not (opts.inverse or opts.randomize or opts.vectors))


class _BlockCheck:
    """:func:`_weights_problem` over a matrix seen one block at a time."""

    def __init__(self) -> None:
        self.energy, self.bad = 0.0, 0

    def add(self, block: np.ndarray) -> None:
        flat = block.ravel()
        energy = _energy(flat)
        if not math.isfinite(energy):
            self.bad += int(flat.size - np.count_nonzero(np.isfinite(flat)))
        self.energy += energy

    def problem(self) -> str:
        if self.bad:
            return f"weights contain {self.bad} NaN/Inf values"
        return "all-zero weight matrix" if self.energy == 0.0 else ""


def _blocked_spectrum(blocks: MatrixBlocks, N: int, M: int, ref: LayerRef,
                      opts: AnalyzeOptions) -> tuple[Spectrum | None, str, float]:
    """(spectrum, problem, scale) of a matrix read block by block (never copied whole)."""
    from lmlab.spectral import extras

    _, scale = extras.prepared_matrices([], N, M, 1, ref.layer_type, opts)
    check = _BlockCheck()
    gram = gram_of_blocks(blocks, scale=scale, precision=opts.precision, on_block=check.add)
    problem = check.problem()
    if problem:
        return None, problem, scale
    return spectrum_of_gram(gram, blocks, N=N, scale=scale), "", scale


def _load_matrix(ref: LayerRef, opts: AnalyzeOptions, device: Any
                 ) -> tuple[np.ndarray | None, MatrixBlocks | None]:
    """The weight as one float32 array, or (for a 2-D matrix larger than one block on the
    blocked route) its blocks."""
    if _streamable(ref, opts, device):
        blocks, tensor = blocks_of(ref.load)
        if blocks is None:
            return _to_numpy(tensor), None
        if blocks.n_blocks > 1:
            return None, blocks
        try:
            return blocks.whole(), None
        finally:
            blocks.close()
    return _to_numpy(ref.load()), None


def layer_row(ref: LayerRef, opts: AnalyzeOptions, *, columns: tuple[str, ...] = (),
              device: Any = None, rng: np.random.Generator | None = None,
              ) -> tuple[dict[str, Any], np.ndarray | None]:
    """The row of one layer and its eigenvalues (None when skipped or failed early).

    A 2-D matrix larger than one block (:data:`~lmlab.spectral.blocks.BLOCK_BYTES` in
    float64) on the CPU eigh route is read block by block and never copied whole.

    Args:
        ref: the layer.
        opts: the analysis options (checked by the caller).
        columns: every column of the table (those not computed stay NaN).
        device: a ``torch.device`` other than CPU computes the spectrum with torch.
        rng: random numbers for ``randomize`` (default: seeded from ``opts.seed`` and the
            layer id, so a layer's result does not depend on which other layers ran).
    """
    from lmlab.spectral import extras
    from lmlab.spectral.fits import fit_layer

    N, M, rf = dims_of(ref)
    row = base_row(ref, N, M, rf, opts, columns)
    reason = skip_reason(N, M, rf, ref, opts)
    if reason:
        row.update(status="skipped", reason=reason)
        return row, None
    W, blocks = _load_matrix(ref, opts, device)
    mats: list[np.ndarray] = []
    if blocks is not None:
        try:
            spec, problem, scale = _blocked_spectrum(blocks, N, M, ref, opts)
        finally:
            blocks.close()
    else:
        assert W is not None
        problem = _weights_problem(W)
        if not problem:
            mats, N, M, rf = matrices_of(W, ref.layer_type)
            mats, scale = extras.prepared_matrices(mats, N, M, rf, ref.layer_type, opts)
            spec = _spectrum(mats, N, scale, opts, device)
        del W
    if problem:
        row.update(status="failed", reason=problem)
        return row, None
    assert spec is not None
    evals = extras.transformed_evals(spec.evals, opts)
    if evals is not spec.evals:
        spec = Spectrum(evals=evals, sv_max=spec.sv_max, sv_min=spec.sv_min,
                        rank_loss=spec.rank_loss)
    row.update(_esd_metrics(spec, N, opts.tolerance))
    fit = fit_layer(spec.evals, fit=opts.fit, fix_fingers=opts.fix_fingers,
                    xmax=opts.xmax, xmin_max=opts.xmin_max, max_fingers=opts.max_fingers,
                    finger_thresh=opts.finger_thresh)
    row.update(_fit_metrics(spec.evals, fit, row["log_spectral_norm"]))
    row.update(extras.fit_columns(fit, opts))
    if rng is None:
        rng = np.random.default_rng([opts.seed, ref.layer_id])
    extra, reasons = extras.extra_columns(mats, N, M, rf, scale, spec.evals, fit, opts, rng)
    row.update(extra)
    if reasons:
        row["reason"] = "; ".join([r for r in (row["reason"], *reasons) if r])
    return row, spec.evals
