"""Repeated seeds of a fine-tuning study: the seeds that run, and numbers over them.

A study with ``seeds = n`` trains every variant once per seed ``seed, seed + 1, …,
seed + n − 1``; a table with one row per variant and seed is reduced to one row per variant
with the mean over seeds and its spread, the sample standard deviation over seeds
(``ddof = 1``; NaN for a single seed).

>>> seed_values(42, 3)
[42, 43, 44]
>>> runs = pd.DataFrame({"optimizer": ["sgd", "sgd", "adamw", "adamw"],
...                      "seed": [1, 2, 1, 2], "loss": [3.0, 5.0, 1.0, 1.0]})
>>> over_seeds(runs, "optimizer", ["loss"]).to_dict("records")
[{'optimizer': 'sgd', 'seeds': 2, 'loss': 4.0, 'loss_std': 1.4142135623730951}, \
{'optimizer': 'adamw', 'seeds': 2, 'loss': 1.0, 'loss_std': 0.0}]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from lmlab.config import ranged
from lmlab.errors import LmlabError

__all__ = ["check_seeds", "over_seeds", "seed_values", "seeds_field", "spread_text"]


def seeds_field() -> Any:
    """The ``seeds`` config key: how many seeds each variant runs with (1 to 100)."""
    return ranged(1, 1, 100, why="every seed trains every variant again")


def seed_values(seed: int, seeds: int) -> list[int]:
    """The seeds that run: ``seed, seed + 1, …, seed + seeds − 1``."""
    return list(range(seed, seed + seeds))


def check_seeds(seed: int, seeds: int) -> None:
    """Refuse seeds past the largest one NumPy accepts."""
    from lmlab.runtime import MAX_SEED

    if seed + seeds - 1 > MAX_SEED:
        raise LmlabError(f"seed + seeds − 1 = {seed + seeds - 1} is past the largest seed "
                         f"({MAX_SEED}); lower seed or seeds")


def over_seeds(runs: pd.DataFrame, by: str, columns: Sequence[str]) -> pd.DataFrame:
    """One row per value of ``by`` (first-seen order): ``seeds`` (rows), then for each column
    its mean over seeds and ``<column>_std``, the sample standard deviation (NaN for one seed).
    """
    rows = []
    for name, g in runs.groupby(by, sort=False):
        row: dict[str, Any] = {by: name, "seeds": len(g)}
        for col in columns:
            row[col] = float(g[col].mean())
            row[f"{col}_std"] = float(g[col].std(ddof=1)) if len(g) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def spread_text(mean: float, std: float, digits: int = 4) -> str:
    """``mean ± std`` for a report cell (the mean alone when the spread is NaN).

    >>> spread_text(1.23456, 0.0213), spread_text(2.0, float("nan"))
    ('1.235 ± 0.021', '2')
    """
    if pd.isna(mean):
        return "—"
    text = f"{mean:.{digits}g}"
    return text if pd.isna(std) else f"{text} ± {std:.2g}"
