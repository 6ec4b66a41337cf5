"""Asymptotic theory (saddle-point solvers) for the solvable models of the studies.

:mod:`lmlab.theory.attention` — the tied rank-1 dot-product attention model of Cui, Behrens,
Krzakala and Zdeborová (2024): semantic and positional branches, the transition α_c, the dense
linear baseline and the crossover α_l. :mod:`lmlab.theory.notebook_scheme` re-runs the
published notebook's coarser numerical scheme for the same model, to trace published numbers.

>>> from lmlab.theory import TheoryParams, linear_baseline
>>> round(linear_baseline(TheoryParams(omega=0.0))[0], 5)
0.00402
"""

from __future__ import annotations

from ._rs_agnostic import solve_agnostic
from .attention import (
    BRANCHES,
    FixedPoint,
    TheoryParams,
    alpha_c,
    alpha_l,
    branch_exists,
    linear_baseline,
    solve_branch,
    solve_curve,
    spinodal,
    transverse_multiplier,
)

__all__ = ["BRANCHES", "TheoryParams", "FixedPoint", "solve_branch", "solve_curve", "alpha_c",
           "linear_baseline", "alpha_l", "spinodal", "branch_exists", "transverse_multiplier"]

# The finite-d branch minima (lmlab.theory.finite_d) import torch: loaded on first use.
_FINITE_D = ("GramProblem", "draw_problem", "minimise_branch", "rs_reference", "run_branches")
__all__ += ["solve_agnostic", *_FINITE_D]


def __getattr__(name: str) -> object:
    if name in _FINITE_D:
        from . import finite_d

        return getattr(finite_d, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
