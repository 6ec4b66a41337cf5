"""The extra analyses of weightwatcher's ``analyze()`` options, wired into one layer's row.

Each option adds its own columns (:func:`extra_column_names`), computed by its own module:
``randomize`` (:mod:`~lmlab.spectral.randomize`), ``mp_fit`` (:mod:`~lmlab.spectral.mp`),
``vectors`` (:mod:`~lmlab.spectral.vectors`), ``detX`` / ``inverse`` / ``glorot_fix``
(:mod:`~lmlab.spectral.detx`), the fit options (:mod:`~lmlab.spectral.fits`). A value an option
cannot define for a layer is NaN, and why is appended to the row's ``reason``.

>>> from lmlab.spectral.options import AnalyzeOptions
>>> extra_column_names(AnalyzeOptions())
()
>>> extra_column_names(AnalyzeOptions(fix_fingers="clip_xmax", detX=True))[:3]
('num_fingers', 'raw_alpha', 'ERG_gap')
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lmlab.spectral.options import AnalyzeOptions

__all__ = ["extra_column_names", "prepared_matrices", "transformed_evals", "fit_columns",
           "extra_columns"]


def extra_column_names(opts: AnalyzeOptions) -> tuple[str, ...]:
    """The columns ``opts`` adds to weightwatcher's default ones (weightwatcher's names)."""
    from lmlab.spectral import fits

    cols = list(fits.extra_columns(opts.fit, opts.fix_fingers))
    if opts.mp_fit:
        from lmlab.spectral.mp import MP_FIT_COLUMNS

        cols += MP_FIT_COLUMNS
    if opts.randomize:
        from lmlab.spectral.randomize import RANDOMIZE_COLUMNS

        cols += RANDOMIZE_COLUMNS
    if opts.detX:
        from lmlab.spectral.detx import DETX_COLUMNS

        cols += DETX_COLUMNS
    if opts.vectors:
        from lmlab.spectral.vectors import VECTOR_COLUMNS

        cols += VECTOR_COLUMNS
    return tuple(dict.fromkeys(cols))


def prepared_matrices(mats: list[np.ndarray], N: int, M: int, rf: int, layer_type: str,
                      opts: AnalyzeOptions) -> tuple[list[np.ndarray], float]:
    """The matrices whose ESD is taken and the scale applied to them: √(1/2) for conv2d
    (unless ``conv2d_norm`` is off), √((N+M)·rf/2) with ``glorot_fix``."""
    from lmlab.spectral.detx import weight_scale

    return mats, weight_scale(N, M, rf, layer_type, glorot_fix=opts.glorot_fix,
                              conv2d_norm=opts.conv2d_norm)


def transformed_evals(evals: np.ndarray, opts: AnalyzeOptions) -> np.ndarray:
    """The eigenvalues analysed: with ``inverse``, 1/λ of the nonzero ones (sorted)."""
    if not opts.inverse:
        return evals
    from lmlab.spectral.detx import inverse_evals

    return inverse_evals(evals)[0]


def fit_columns(fit: Any, opts: AnalyzeOptions) -> dict[str, Any]:
    """Columns of the fit options: TPL's ``Lambda``, ``clip_xmax``'s fingers."""
    from lmlab.spectral import fits

    names = fits.extra_columns(opts.fit, opts.fix_fingers)
    return {name: getattr(fit, name) for name in names}


def extra_columns(mats: list[np.ndarray], N: int, M: int, rf: int, scale: float,
                  evals: np.ndarray, fit: Any, opts: AnalyzeOptions,
                  rng: np.random.Generator) -> tuple[dict[str, Any], list[str]]:
    """The columns of ``mp_fit``, ``randomize``, ``detX`` and ``vectors`` for one layer, and
    the reasons for any value left undefined."""
    out: dict[str, Any] = {}
    reasons: list[str] = []
    if opts.mp_fit:
        from lmlab.spectral.mp import fit_mp

        mp = fit_mp(evals, N, M)
        out.update(mp.columns())
        if mp.reason:
            reasons.append(f"mp_fit: {mp.reason}")
    if opts.randomize:
        from lmlab.spectral.randomize import random_esd

        rand = random_esd(mats, N, M, rf, scale, evals, rng)
        out.update(rand.columns)
        if rand.reason:
            reasons.append(rand.reason)
    if opts.detX:
        from lmlab.spectral.detx import detx_columns

        spikes = fit.num_pl_spikes if fit.status == "success" else None
        cols, why = detx_columns(evals, num_pl_spikes=spikes)
        out.update(cols)
        reasons += [why] if why else []
    if opts.vectors:
        from lmlab.spectral.vectors import vector_columns

        xmin = fit.xmin if fit.status == "success" else float("nan")
        cols, why = vector_columns(mats, evals, xmin, scale=scale, inverse=opts.inverse)
        out.update(cols)
        reasons += [why] if why else []
    return out, reasons
