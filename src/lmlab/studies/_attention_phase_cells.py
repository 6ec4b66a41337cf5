"""The sweep cells of the attention-phase study: one seed and one ω, every α and
initialisation (and, when cross-validating λ, every λ on held-out samples), with the linear
baseline.

Not a study (leading underscore): :mod:`lmlab.studies.attention_phase` calls these.

>>> from lmlab.models.attention_student import GDConfig
>>> cell = Cell(AttentionTask(d=20), GDConfig(steps=5), (10, 20), 0.3, 0, 50,
...             ("semantic", "positional"), 1e-4, "float64", cv_lambdas=(0.01, 0.1))
>>> rows = pd.DataFrame(simulate_cell(cell))
>>> rows.groupby("part").size().to_dict()   # 2 α × 2 inits; 2 α × 2 inits × 2 λ
{'cv': 8, 'main': 4}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from lmlab.data.attention_teacher import AttentionTask
from lmlab.models.attention_student import GDConfig
from lmlab.studies._attention_phase_extras import cv_split

__all__ = ["Cell", "cell_key", "linear_baseline_error", "simulate_cell"]


@dataclass(frozen=True)
class Cell:
    """One unit of the sweep: one seed and one ω, every α and initialisation; with
    ``cv_lambdas``, also every λ trained on ``1 − cv_holdout`` of each α's samples; the
    students train on ``device`` (the samples are drawn on the CPU, the same on every device)."""

    task: AttentionTask
    gd: GDConfig
    ns: tuple[int, ...]
    omega: float
    seed: int
    n_test: int
    inits: tuple[str, ...]
    lam_lin: float
    dtype: str
    cv_lambdas: tuple[float, ...] = ()
    cv_holdout: float = 0.2
    device: str = "cpu"


def cell_key(cell: Cell) -> str:
    """The store key of a cell: the sweep's default key of its fields, leaving out the
    cross-validation fields when they are off (so stores written before they existed still
    match) and marking the assignment convention's student scale 1/√d (its cells from before
    that fix are computed again). A CPU cell's key has no device (so stores written before it
    existed still match); another device's key names its type: its floating-point sums differ
    in the last digits, so its cells are not mixed with the CPU's."""
    from lmlab.sweep import cell_key as default_key

    fields = asdict(cell)
    if not cell.cv_lambdas:
        fields.pop("cv_lambdas")
        fields.pop("cv_holdout")
    if fields.pop("device") != "cpu":
        fields["device"] = cell.device.split(":")[0]
    if cell.task.convention == "assignment":
        fields["student_scale"] = "1/sqrt(d)"
    return default_key(fields)


def simulate_cell(cell: Cell) -> list[dict[str, Any]]:
    """Train every (α, init) student of a cell and the linear baseline; one row each
    (``part="main"``), and with ``cv_lambdas`` one row per (α, init, λ) with its validation
    error ``eps_val`` (``part="cv"``; ``alpha`` is the grid's α, n = round(α d) samples of
    which ``n_val`` are held out)."""
    import torch

    from lmlab.data.attention_teacher import sample_group
    from lmlab.models.attention_student import StudentSpec, train_students

    dtype = getattr(torch, cell.dtype)
    d = cell.task.d
    data = sample_group(cell.task, n=max(cell.ns), n_test=cell.n_test, seed=cell.seed,
                        dtype=dtype)
    specs = [StudentSpec(n=n, omega=cell.omega, init=init)  # type: ignore[arg-type]
             for n in cell.ns for init in cell.inits]
    n_main = len(specs)
    grid_alpha = []
    for n in cell.ns:
        split = cv_split(n, cell.cv_holdout) if cell.cv_lambdas else None
        if split is None:
            continue
        for init in cell.inits:
            for lam in cell.cv_lambdas:
                specs.append(StudentSpec(n=split[0], omega=cell.omega,
                                         init=init,  # type: ignore[arg-type]
                                         lam=lam, n_val=split[1]))
                grid_alpha.append(n / d)
    res = train_students(data, specs, cell.gd, seed=cell.seed, dtype=dtype, device=cell.device)
    table = res.table.assign(seed=cell.seed, seconds=res.seconds / len(specs))
    rows = table.iloc[:n_main].assign(part="main")
    lin = {n: linear_baseline_error(data, cell.omega, n, cell.lam_lin) for n in cell.ns}
    rows["eps_lin"] = rows["n"].map(lin)
    cv = table.iloc[n_main:].assign(part="cv", alpha=grid_alpha)
    return pd.concat([rows, cv], ignore_index=True).to_dict("records")


def linear_baseline_error(data: Any, omega: float, n: int, lam: float) -> float:
    """Test error of ``ŷ = B z`` (B 2×2) fitted by ridge on the first n samples (the exact
    minimiser of Σ‖y − Bz‖²/(2d) + λ/2‖B‖², which the authors approach with Adam)."""
    import torch

    d = data.task.d
    A = data.task.A_tensor()

    def stats(split: Any, k: int) -> tuple[Any, Any]:
        T = (1 - omega) * split.T_sem[:k] + omega * A                   # (k, 2, 2)
        return T, split.Czz[:k]

    T, Czz = stats(data.train, n)
    Syz = (T @ Czz).sum(0) / d                                          # Σ y zᵀ / d
    Szz = Czz.sum(0) / d
    B = Syz @ torch.linalg.inv(Szz + lam * torch.eye(2, dtype=Szz.dtype))
    Tt, Czzt = stats(data.test, data.test.x.shape[0])
    R = Tt - B                                                          # y − Bz = (T − B) z
    return float(((R @ Czzt) * R).sum((-1, -2)).mean() / (2 * d))
