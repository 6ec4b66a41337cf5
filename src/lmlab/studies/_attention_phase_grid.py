"""The sweep grid and the theory settings of the ``attention-phase`` study, with their limits.

>>> Grid(alpha_points=3, omegas=(0.3,), seeds=2).students()
12
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from lmlab.config import check_ranges, ranged
from lmlab.errors import LmlabError

__all__ = ["MAX_CELL_BYTES", "MAX_STUDENTS", "Grid", "TheoryConfig"]

MAX_STUDENTS = 10**6  # the most students one sweep may train (the paper grid: 30,000)
MAX_CELL_BYTES = 16 * 2**30  # the most memory one cell may need (the paper's: about 2.3 GiB)
_GRID_WHY = f"the grid trains at most {MAX_STUDENTS:,} students, each a row of runs.csv"
_CELL_WHY = f"a cell must fit in {MAX_CELL_BYTES // 2**30} GiB"


@dataclass(frozen=True)
class Grid:
    """The sweep: α = n/d on a linear grid, the teacher mixings ω, seeds, initialisations.

    Attributes:
        alpha_min, alpha_max, alpha_points: ``np.linspace(alpha_min, alpha_max, alpha_points)``;
            each α trains on ``n = round(α d)`` samples (at least one).
        omegas: the teacher mixings ω of the phase diagram.
        fig2_omega: the ω of Fig. 2 (added to ``omegas`` if missing).
        seeds: independent teachers and data sets per cell (the authors kept 24).
        inits: the initialisations trained on the same data.
    """

    alpha_min: float = ranged(0.01, 0, open_lo=True)
    alpha_max: float = ranged(2.0, 0, 100, open_lo=True, why=_CELL_WHY)
    alpha_points: int = ranged(25, 1, 1000, why=_GRID_WHY)
    omegas: tuple[float, ...] = ranged(tuple(round(0.02 * k, 2) for k in range(1, 26)), 0, 1)
    fig2_omega: float = ranged(0.3, 0, 1)
    seeds: int = ranged(24, 1, 10_000, why=_GRID_WHY)
    inits: tuple[Literal["semantic", "positional", "random"], ...] = ("semantic", "positional")

    def alphas(self) -> np.ndarray:
        """The α grid."""
        return np.linspace(self.alpha_min, self.alpha_max, self.alpha_points)

    def all_omegas(self) -> list[float]:
        """``omegas`` with ``fig2_omega``, sorted."""
        return sorted(set(self.omegas) | {self.fig2_omega})

    def validate(self) -> None:
        """Every value in its declared range; alpha_min ≤ alpha_max; at least one init."""
        check_ranges(self, "grid.")
        if self.alpha_min > self.alpha_max:
            raise LmlabError(f"grid needs alpha_min ≤ alpha_max (got {self.alpha_min} > "
                             f"{self.alpha_max})")
        if not self.inits or not set(self.inits) <= {"semantic", "positional", "random"}:
            raise LmlabError(f"grid.inits: use semantic, positional and/or random (got "
                             f"{self.inits})")

    def students(self) -> int:
        """Students trained by the sweep: α points × ω × seeds × initialisations."""
        return self.alpha_points * len(self.all_omegas()) * self.seeds * len(self.inits)


@dataclass(frozen=True)
class TheoryConfig:
    """The asymptotic theory: curves at ``fig2_omega`` and the α_c(ω), α_l(ω) lines.

    Attributes:
        enabled: solve the theory (off: simulation only, much faster).
        alpha_points: points of the theory curves between ``grid.alpha_min`` and
            ``grid.alpha_max``.
        line_omegas: the ω at which α_c(ω) and α_l(ω) are solved for Fig. 3.
        spinodals: also find, at every ``line_omegas``, where each branch ceases to exist
            (:func:`lmlab.theory.spinodal`, by continuation in α from α_c; about a minute per
            ω): columns ``alpha_sp_sem`` and ``alpha_sp_pos`` of the lines, drawn on Fig. 3.
    """

    enabled: bool = True
    spinodals: bool = False
    alpha_points: int = ranged(40, 1, 1000, why="every point is a saddle-point solve")
    line_omegas: tuple[float, ...] = ranged(
        (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.425), 0, 1)
