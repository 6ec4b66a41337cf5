"""Every option of :func:`lmlab.spectral.analyze`, checked once, in one frozen object.

weightwatcher 0.7.7 spells its options as ``analyze()`` keywords; lmlab accepts the same
names (and its own: ``method``, ``precision``, ``device``, ``seed``). :func:`check_options`
refuses, in one line each, the values and combinations weightwatcher refuses or would mis-handle,
and :data:`NOT_SUPPORTED` says why the few options lmlab leaves out are left out.

>>> opts = AnalyzeOptions(fix_fingers="clip_xmax", randomize=True)
>>> check_options(opts)
>>> opts.fit_label
'clip_xmax'
>>> try:
...     check_options(AnalyzeOptions(min_evals=50, max_evals=10))
... except LmlabError as e:
...     print(e)
min_evals = 50 must be smaller than max_evals = 10 (both count eigenvalues, M·rf)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from lmlab.errors import LmlabError
from lmlab.spectral.fits import validate_fit_options

__all__ = ["AnalyzeOptions", "check_options", "NOT_SUPPORTED", "Method", "Precision", "Fit"]

Method = Literal["eigh", "svd"]
Precision = Literal["float64", "float32"]
Fit = Literal["PL", "TPL", "E_TPL"]
FixFingers = Literal["xmin_peak", "clip_xmax"]

#: weightwatcher options lmlab does not offer, and why (the front end refuses them in one line).
NOT_SUPPORTED: dict[str, str] = {
    "min_size": "removed by weightwatcher itself (it ignores it with a warning); use min_evals",
    "max_size": "removed by weightwatcher itself (it ignores it with a warning); use max_evals",
    "ww2x": "deprecated by weightwatcher (it means pool=False)",
    "pool": "pool=False (one row per conv2d kernel slice) is not offered: conv2d slices are "
            "always pooled into one ESD, weightwatcher's default",
    "conv2d_fft": "deprecated by weightwatcher; not offered",
    "fft": "experimental in weightwatcher (FFT of conv2d kernels); not offered",
    "intra": "experimental in weightwatcher (correlations between consecutive layers); "
             "not offered",
    "stacked": "experimental in weightwatcher (all layers stacked into one matrix); not offered",
    "sparsify": "only used with intra=True, which is not offered",
    "channels": "conv2d channel order is read from the kernel's shape, as weightwatcher's "
                "default does; forcing it is not offered",
    "deltas": "weightwatcher only plots eigenvalue spacings with it (no columns); not drawn",
    "peft": "LoRA/PEFT adapters are analysed by the adapter route of lmlab.spectral, "
            "not by this option",
}


@dataclass(frozen=True)
class AnalyzeOptions:
    """The options of one :func:`~lmlab.spectral.analyze` call.

    Attributes:
        min_evals, max_evals: size rules on the number of eigenvalues M·rf (weightwatcher's).
        max_N: skip a matrix whose larger side exceeds this; ``None`` lifts the rule.
        method: ``eigh`` (Gram matrix of the smaller side) or ``svd``.
        precision: ``float64`` (weightwatcher parity) or ``float32`` (fast mode).
        fit: ``PL`` power law, ``TPL`` truncated power law, ``E_TPL`` (TPL with xmin near the
            ESD's peak).
        fix_fingers: ``None``, ``xmin_peak`` (xmin searched near the ESD peak) or
            ``clip_xmax`` (drop the largest eigenvalues while α falls sharply).
        xmin_max: top of the xmin range for ``xmin_peak`` (default 1.5 × the peak).
        max_fingers, finger_thresh: ``clip_xmax``'s limits (weightwatcher's defaults 10, 1.0).
        xmax: ``None``, or ``-k`` to leave the k largest eigenvalues out of the fit.
        pl_package: weightwatcher's choice of fitting package; lmlab has one estimator per
            fit, so both ``ww`` and ``powerlaw`` give the same numbers.
        randomize, mp_fit, vectors, detX, inverse: weightwatcher's extra analyses (their
            columns are added to the table).
        glorot_fix: rescale W by its Glorot norm before the ESD.
        conv2d_norm: scale conv2d kernels by √(1/2) (weightwatcher's default ``True``).
        tolerance: ``weak_rank_loss`` counts eigenvalues below this.
        start_ids: the first module's ``layer_id`` (0 or 1).
        seed: seeds the permutations of ``randomize``.
    """

    min_evals: int = 8
    max_evals: int = 15000
    max_N: int | None = 50000
    method: Method = "eigh"
    precision: Precision = "float64"
    fit: Fit = "PL"
    fix_fingers: FixFingers | None = None
    xmin_max: float | None = None
    max_fingers: int = 10
    finger_thresh: float = 1.0
    xmax: int | None = None
    pl_package: Literal["ww", "powerlaw"] = "ww"
    randomize: bool = False
    mp_fit: bool = False
    vectors: bool = False
    detX: bool = False
    inverse: bool = False
    glorot_fix: bool = False
    conv2d_norm: bool = True
    tolerance: float = 1e-6
    start_ids: int = 0
    seed: int = 0

    @property
    def fit_label(self) -> str:
        """What the ``fit_mode`` column records: the fit and its finger or xmax handling."""
        parts: list[str] = [] if self.fit == "PL" else [self.fit]
        if self.fix_fingers and self.fit != "E_TPL":
            parts.append(self.fix_fingers)
        if self.xmax is not None:
            parts.append(f"xmax={-abs(self.xmax)}")
        return "+".join(parts) or "ww"


def _choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        shown = ", ".join(repr(c) for c in choices)
        raise LmlabError(f"{name} = {value!r} is not one of {shown}")


def check_options(opts: AnalyzeOptions) -> None:
    """Refuse invalid values and combinations, in one line that says what to change.

    Raises:
        LmlabError: the first problem found.
    """
    _choice("method", opts.method, ("eigh", "svd"))
    _choice("precision", opts.precision, ("float64", "float32"))
    if opts.min_evals < 0 or opts.max_evals < 0:
        raise LmlabError("min_evals and max_evals must be ≥ 0 (0 turns the rule off)")
    if opts.min_evals and opts.max_evals and opts.min_evals >= opts.max_evals:
        raise LmlabError(f"min_evals = {opts.min_evals} must be smaller than max_evals = "
                         f"{opts.max_evals} (both count eigenvalues, M·rf)")
    if opts.max_N is not None and opts.max_N < 1:
        raise LmlabError(f"max_N = {opts.max_N} must be ≥ 1, or None to lift the rule")
    validate_fit_options(fit=opts.fit, fix_fingers=opts.fix_fingers, xmax=opts.xmax,
                         xmin_max=opts.xmin_max, max_fingers=opts.max_fingers,
                         finger_thresh=opts.finger_thresh, pl_package=opts.pl_package)
    if not opts.tolerance > 0:
        raise LmlabError(f"tolerance = {opts.tolerance} must be > 0")
    if opts.start_ids not in (0, 1):
        raise LmlabError(f"start_ids = {opts.start_ids} must be 0 or 1")
