"""Study `attention-phase`: the positional–semantic phase transition of a solvable attention model.

After Cui, Behrens, Krzakala, Zdeborová, "A phase transition between positional and semantic
learning in a solvable model of dot-product attention" (NeurIPS 2024, arXiv 2402.03902) and the
authors' code. A tied rank-1 attention layer learns from a teacher that mixes semantic attention
with a fixed positional matrix A (weight ω). Trained from a semantic start (Q0 = Q*) and from a
positional start (Q0 = 1/√d), the two minima exchange the lower training loss at α_c(ω) (1.241 at
ω = 0.3): a first-order transition in the sample ratio α = n/d. Below it the positional
mechanism wins; above it the semantic one, which then also beats the best linear positional
baseline beyond α_l(ω).

Simulation: every cell (one seed, one ω) trains both initialisations at every α on one teacher
and one pool of samples (α uses the first n = round(α d)); full-batch GD as the authors, or
heavy-ball momentum (validated to reach the same minimum). Theory: the saddle-point equations of
both branches (:mod:`lmlab.theory`). Cells run in-process, on a process pool, or on Ray, and a
rerun with the same ``store`` skips finished cells.

Commands::

    lmlab run attention-phase --preset quick     # small d, coarse grid, momentum (~1 min)
    lmlab run attention-phase --preset paper     # d = 1000, 25 α × 25 ω × 24 seeds, 5,000 GD steps
    lmlab run attention-phase --preset paper --set sweep.backend=ray --set sweep.address=auto
    lmlab run attention-phase --set cv.lambdas=0.001,0.01,0.1          # cross-validate λ
    lmlab run attention-phase --set concentration.ds=100,200,500,1000,2000
    lmlab run attention-phase --set theory.spinodals=true           # where each branch ends

>>> Config.paper().task.d, len(Config.paper().grid.alphas()), len(Config.paper().grid.omegas)
(1000, 25, 25)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from lmlab.config import check_ranges, ranged, seed_field
from lmlab.data.attention_teacher import AttentionTask
from lmlab.errors import LmlabError
from lmlab.models.attention_student import GDConfig
from lmlab.runs import Report, RunDir
from lmlab.studies._attention_phase_cells import Cell, cell_key, simulate_cell
from lmlab.studies._attention_phase_extras import ConcentrationConfig, CVConfig
from lmlab.studies._attention_phase_grid import (
    _CELL_WHY,
    MAX_CELL_BYTES,
    MAX_STUDENTS,
    Grid,
    TheoryConfig,
)
from lmlab.studies._attention_phase_more import extra_figures, extra_report
from lmlab.studies._attention_phase_more import extra_summary as _extra_summary
from lmlab.studies._attention_phase_tables import (
    crossing,
    crossing_table,
    figure_tables,
    means_of,
    simulated_crossings,
)
from lmlab.studies.pattern import Summary, SummaryKey
from lmlab.sweep import SweepConfig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Read by the registry without importing this module.
STUDY = {"name": "attention-phase", "order": 6,
         "description": ("Positional vs semantic attention: the phase transition in α = "
                         "n/d, simulation + theory"),
         "source": "Cui, Behrens, Krzakala, Zdeborová, NeurIPS 2024"}

__all__ = ["CVConfig", "Cell", "ConcentrationConfig", "Config", "Grid", "Result", "SUMMARY",
           "TheoryConfig", "check", "crossing", "plot", "report", "run", "simulate_cell",
           "simulated_crossings"]

# ``lmlab run ... --resume`` continues an interrupted run: every finished sweep cell is stored in
# ``<run>/cells``.
RESUMES = True

#: The keys of ``summary.json``, their types and meaning ("at ω" is at ``grid.fig2_omega``).
SUMMARY = Summary(
    SummaryKey("omega", float, "the ω of Fig. 2 (grid.fig2_omega), where the keys below are "
               "taken"),
    SummaryKey("d", int, "the embedding dimension"),
    SummaryKey("seeds", int, "independent teachers and data sets per cell"),
    SummaryKey("steps", int, "gradient-descent steps per student"),
    SummaryKey("momentum", float, "heavy-ball momentum (0: plain GD, as the authors)"),
    SummaryKey("alpha_top", float, "the largest α of the grid"),
    SummaryKey("alpha_c_sim", float, "the crossing of the mean simulated Δε_t at ω",
               headline=True),
    SummaryKey("alpha_c_sim_se", float, "the standard error of the per-seed crossings at ω"),
    SummaryKey("alpha_c_sim_seeds_crossing", int, "seeds whose Δε_t crosses at ω"),
    SummaryKey("eps_lin", float, "simulated test error of the linear baseline (mean over α)",
               headline=True),
    SummaryKey("eps_g_sem_alpha2", float, "simulated test error of the semantic branch at the "
               "largest α", headline=True),
    SummaryKey("eps_g_pos_alpha2", float, "simulated test error of the positional branch at "
               "the largest α", headline=True),
    SummaryKey("eps_t_sem_alpha2", float, "simulated training error of the semantic branch at "
               "the largest α"),
    SummaryKey("eps_t_pos_alpha2", float, "simulated training error of the positional branch "
               "at the largest α"),
    SummaryKey("theta_sem_alpha2", float, "θ/σ² (the authors' |Q*·Q|/d) of the semantic branch "
               "at the largest α"),
    SummaryKey("m_pos_alpha2", float, "m = |1·Q|/d of the positional branch at the largest α"),
    SummaryKey("alpha_c_theory", float, "α where ε_t^sem = ε_t^pos in the theory, at ω "
               "(null without theory)"),
    SummaryKey("alpha_l_theory", float, "α where the global minimum's ε_g equals the linear "
               "baseline's (theory; null without theory)"),
    SummaryKey("alpha_sp_sem_theory", float, "the semantic branch's spinodal at ω: below it "
               "the branch no longer exists (theory; null without theory.spinodals)"),
    SummaryKey("alpha_sp_pos_theory", float, "the positional branch's spinodal at ω: above it "
               "the branch no longer exists (theory; null without theory.spinodals)"),
    SummaryKey("cv_lambda_sem_alpha2", float, "the cross-validated λ of the semantic start at "
               "the largest α (null without cv.lambdas)"),
    SummaryKey("cv_lambda_pos_alpha2", float, "the cross-validated λ of the positional start "
               "at the largest α (null without cv.lambdas)"),
    SummaryKey("concentration_slope.<statistic>", float, "slope of log(std over seeds) "
               "against log d, per statistic (theta_emp_semantic, m_positional, "
               "eps_t_<init>); −0.5 is the 1/√d rate; absent without concentration.ds"),
    SummaryKey("theory.<quantity>", (float, str), "the theory's values at the same points "
               "(alpha, eps_g_sem, eps_t_pos, ..., curve_points_converged as 'k/n'); absent "
               "without theory"),
)


@dataclass(frozen=True)
class Config:
    """The attention-phase study.

    Attributes:
        task: the teacher and the dimensions (``task.d``, ``task.L`` ...).
        gd: the student's gradient descent.
        grid: the α × ω × seeds × initialisations sweep.
        theory: the asymptotic theory.
        cv: cross-validation of λ (off unless ``cv.lambdas`` is set).
        concentration: the spread of the statistics over d (off unless ``concentration.ds``
            is set).
        sweep: where the cells run (in-process, a process pool or Ray).
        n_test: test samples per cell.
        lam_lin: ridge penalty of the linear baseline.
        store: the folder of finished cells (default ``<run>/cells``); a rerun with the same
            folder skips every finished cell.
        dtype: the floating-point type of the simulation.
        seed: the base seed of every teacher and data set.
        device: ``cpu``, ``cuda`` (``cuda:N``) or ``auto`` (CUDA when available): where the
            simulation's batched trainer runs; samples are drawn on the CPU either way.
    """

    task: AttentionTask = field(default_factory=AttentionTask)
    gd: GDConfig = field(default_factory=GDConfig)
    grid: Grid = field(default_factory=Grid)
    theory: TheoryConfig = field(default_factory=TheoryConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    concentration: ConcentrationConfig = field(default_factory=ConcentrationConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    n_test: int = ranged(50_000, 1, 10**6, why=_CELL_WHY)
    lam_lin: float = ranged(1e-4, 0)
    store: str | None = None
    dtype: Literal["float32", "float64"] = "float32"
    seed: int = seed_field(0)
    device: str = "cpu"

    @classmethod
    def paper(cls) -> Config:
        """The authors' protocol: d = 1000, 25 α in [0.01, 2], ω = 0.02..0.50, 24 seeds, both
        initialisations, full-batch GD lr 0.15, λ 0.01, 5,000 steps, 50,000 test samples."""
        return cls()

    @classmethod
    def quick(cls) -> Config:
        """d = 200, 12 α, 4 ω, 8 seeds, momentum 0.9 for 500 steps: about a minute."""
        return cls(task=AttentionTask(d=200),
                   gd=GDConfig(steps=500, momentum=0.9),
                   grid=Grid(alpha_min=0.1, alpha_points=12, omegas=(0.1, 0.2, 0.3, 0.4),
                             seeds=8),
                   theory=TheoryConfig(alpha_points=20,
                                       line_omegas=(0.0, 0.1, 0.2, 0.3, 0.4)),
                   n_test=5000)

    def validate(self) -> None:
        """Sections in range; every α gives a sample; the grid and a cell fit in memory."""
        self.task.validate()
        self.gd.validate()
        self.grid.validate()
        self.cv.validate()
        self.concentration.validate()
        self.sweep.validate()
        check_ranges(self)
        g, need = self.grid, self.cell_bytes()
        if g.students() > MAX_STUDENTS:
            raise LmlabError(f"the grid trains {g.students():.3g} students (alpha_points × ω × "
                             f"seeds × inits = {g.alpha_points} × {len(g.all_omegas())} × "
                             f"{g.seeds} × {len(g.inits)}); at most {MAX_STUDENTS:,}")
        if need > MAX_CELL_BYTES:
            raise LmlabError(f"a cell would need about {need / 2**30:.1f} GiB (its samples, every "
                             f"student's loss history); at most {MAX_CELL_BYTES // 2**30} GiB: "
                             "lower n_test, task.d, grid.alpha_max or gd.steps")
        n_min = round(self.grid.alpha_min * self.task.d)
        if n_min < 1:
            raise LmlabError(f"grid.alpha_min={self.grid.alpha_min} gives n = round(α d) = 0 "
                             f"samples at d={self.task.d}; raise grid.alpha_min or task.d")

    def cell_bytes(self) -> float:
        """Estimated peak memory of one cell: its training pool and test set (float64 tokens,
        three copies while they are drawn), the students' activations and loss histories."""
        t, g = self.task, self.grid
        n_max, students = round(g.alpha_max * t.d), g.alpha_points * len(g.inits)
        return 8.0 * (3 * (n_max + self.n_test) * 2 * t.d
                      + students * (4 * n_max * 2 * t.rank + 4 * n_max + self.gd.steps))


def _published_setting(cfg: Config) -> bool:
    """Whether the published lines apply: the authors' σ, λ, A, rank and scalings."""
    t = cfg.task
    return (t.convention == "paper" and t.rank == 1 and t.sigma == 0.5 and cfg.gd.lam == 0.01
            and tuple(t.A) == (0.6, 0.4, 0.4, 0.6))


@dataclass(frozen=True)
class Result:
    """Everything the figures and the report need (Fig. 2 tables are at ``grid.fig2_omega``).

    Attributes:
        config: the config that ran.
        runs: every simulated student, one row per (seed, ω, α, init) (``runs.csv``).
        means: per (ω, α, init): means and standard deviations over seeds (``means.csv``).
        theory: the theory's branch curves at ``fig2_omega`` (``theory_curves.csv``) with
            ``theta_over_sigma2``; empty without theory.
        lines: the theory's α_c(ω) and α_l(ω) (``theory_lines.csv``); empty without theory.
        crossings: α_c per ω: simulated, theory, published (``alpha_c_by_omega.csv``).
        summary: the numbers of ``summary.json`` (see ``SUMMARY``).
        delta: per (quantity ``eps_t``/``eps_g``, α): the seed mean of the paired semantic −
            positional difference, its standard error and the number of seeds.
        branches: the rows of ``means`` at ``fig2_omega``, with ``eps_g_se`` and ``eps_t_se``.
        best: per α: ε_g of the initialisation with the lower mean ε_t, and the mean ε_lin.
        theory_pairs: per α of the theory: Δε_t, Δε_g, the global minimum's ε_g, converged.
        phase_eps_t: per (ω, α): the seed mean of Δε_t (Fig. 3 left).
        phase_linear: per (ω, α): ε_lin − ε_g of the global minimum (Fig. 3 right).
        published: the published α_c(ω) where the authors' parameters ran, else empty.
        cv: per (α, init, λ) at ``fig2_omega``: the mean validation error on held-out samples
            ± standard error, the mean test error (``cv.csv``); empty without ``cv.lambdas``.
        cv_choice: per (α, init): the λ of lowest validation error (``cv_choice.csv``).
        concentration: per (d, init, quantity): mean, std over seeds, std/|mean|
            (``concentration.csv``); empty without ``concentration.ds``.
    """

    config: Config
    runs: pd.DataFrame
    means: pd.DataFrame
    theory: pd.DataFrame
    lines: pd.DataFrame
    crossings: pd.DataFrame
    summary: dict[str, Any]
    delta: pd.DataFrame
    branches: pd.DataFrame
    best: pd.DataFrame
    theory_pairs: pd.DataFrame
    phase_eps_t: pd.DataFrame
    phase_linear: pd.DataFrame
    published: pd.DataFrame
    cv: pd.DataFrame = field(default_factory=pd.DataFrame)
    cv_choice: pd.DataFrame = field(default_factory=pd.DataFrame)
    concentration: pd.DataFrame = field(default_factory=pd.DataFrame)


def check(cfg: Config) -> None:
    """Fail before any work when the sweep backend cannot run (ray not installed)."""
    cfg.sweep.check_available()


def cells_of(cfg: Config, device: str = "cpu") -> list[Cell]:
    """The sweep's cells, seed-major (λ is cross-validated in the cells at ``fig2_omega``),
    each to train on ``device`` (resolved: ``cpu``, ``cuda``, ``cuda:N``)."""
    d = cfg.task.d
    ns = tuple(sorted({max(1, round(float(a) * d)) for a in cfg.grid.alphas()}))
    return [Cell(cfg.task, cfg.gd, ns, w, cfg.seed * 1_000_003 + s, cfg.n_test,
                 tuple(cfg.grid.inits), cfg.lam_lin, cfg.dtype,
                 cv_lambdas=cfg.cv.lambdas if w == cfg.grid.fig2_omega else (),
                 cv_holdout=cfg.cv.holdout, device=device)
            for s in range(cfg.grid.seeds) for w in cfg.grid.all_omegas()]


def run(cfg: Config, run_dir: RunDir) -> Result:
    """Simulate the grid (through the sweep backend), solve the theory, compute every table.

    The data tables (``runs.csv``, ``means.csv``, ``alpha_c_by_omega.csv``, the theory's) go
    to ``run_dir``; the finished cells to ``cfg.store`` (default ``run_dir/cells``).
    """
    from lmlab.runtime import resolve_device
    from lmlab.studies._attention_phase_more import concentration_of, cv_of
    from lmlab.sweep import run_sweep
    from lmlab.theory.attention import PUBLISHED_ALPHA_C

    store = cfg.store or str(run_dir.path / "cells")
    device = str(resolve_device(cfg.device))
    rows = run_sweep(simulate_cell, cells_of(cfg, device), cfg.sweep, store=store, key=cell_key,
                     desc="attention-phase cells", device=device
                     ).drop(columns=["cell"], errors="ignore")
    part = rows["part"].fillna("main") if "part" in rows else pd.Series("main", rows.index)
    runs = rows[part == "main"].drop(columns=["part"], errors="ignore").reset_index(drop=True)
    run_dir.save_table("runs.csv", runs)
    cv = cv_of(rows[part == "cv"], run_dir)
    concentration = concentration_of(cfg, store, run_dir)
    means = means_of(runs)
    run_dir.save_table("means.csv", means)
    theory, lines = _theory(cfg, run_dir)
    published = PUBLISHED_ALPHA_C if _published_setting(cfg) else {}
    crossings = crossing_table(runs, lines, published)
    run_dir.save_table("alpha_c_by_omega.csv", crossings)
    summary = _summary(cfg, crossings, means, theory, lines)
    _extra_summary(summary, cfg, lines, cv["cv_choice"], concentration)
    tables = figure_tables(runs, means, theory, omega=cfg.grid.fig2_omega, sigma=cfg.task.sigma,
                           published=published)
    return Result(config=cfg, runs=runs, means=means, lines=lines, crossings=crossings,
                  summary=summary, concentration=concentration, **cv, **tables)


def _theory(cfg: Config, run_dir: RunDir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Branch curves at fig2_omega and the α_c(ω), α_l(ω) lines (empty if not applicable)."""
    if not cfg.theory.enabled or cfg.task.convention != "paper" or cfg.task.rank != 1:
        return pd.DataFrame(), pd.DataFrame()
    from lmlab.runtime import cache_dir
    from lmlab.theory import TheoryParams, alpha_c, alpha_l, linear_baseline, solve_curve

    def params(omega: float) -> Any:
        return TheoryParams(omega=omega, sigma=cfg.task.sigma, lam=cfg.gd.lam,
                            A=((cfg.task.A[0], cfg.task.A[1]), (cfg.task.A[2], cfg.task.A[3])))

    alphas = np.linspace(max(cfg.grid.alpha_min, 0.05), cfg.grid.alpha_max,
                         cfg.theory.alpha_points)
    curves = solve_curve(list(alphas), params(cfg.grid.fig2_omega),
                         cache_dir=cache_dir("theory"))
    curves["eps_lin"] = linear_baseline(params(cfg.grid.fig2_omega))[0]
    lines = pd.DataFrame([{"omega": w, "alpha_c": alpha_c(params(w)),
                           "alpha_l": alpha_l(params(w)), "eps_lin": linear_baseline(params(w))[0]}
                          for w in cfg.theory.line_omegas])
    if cfg.theory.spinodals:
        from lmlab.studies._attention_phase_more import spinodal_columns

        lines = spinodal_columns(lines, params)
    run_dir.save_table("theory_curves.csv", curves)
    run_dir.save_table("theory_lines.csv", lines)
    return curves, lines


def _summary(cfg: Config, crossings: pd.DataFrame, means: pd.DataFrame, theory: pd.DataFrame,
             lines: pd.DataFrame) -> dict[str, Any]:
    """The numbers of ``summary.json`` (``SUMMARY``): simulation at ω, then the theory."""
    w = cfg.grid.fig2_omega
    sl = means[np.isclose(means["omega"], w)]
    a_top = sl["alpha"].max()
    top = sl[sl["alpha"] == a_top].set_index("init")
    cross = crossings[np.isclose(crossings["omega"], w)].iloc[0]
    s: dict[str, Any] = {
        "omega": w, "d": cfg.task.d, "seeds": cfg.grid.seeds, "steps": cfg.gd.steps,
        "momentum": cfg.gd.momentum, "alpha_top": float(a_top),
        "alpha_c_sim": float(cross["alpha_c_sim"]),
        "alpha_c_sim_se": float(cross["alpha_c_sim_se"]),
        "alpha_c_sim_seeds_crossing": int(cross["seeds_crossing"]),
        "eps_lin": float(sl["eps_lin"].mean()),
    }
    if {"semantic", "positional"} <= set(top.index):
        s.update({"eps_g_sem_alpha2": float(top.loc["semantic", "eps_g"]),
                  "eps_g_pos_alpha2": float(top.loc["positional", "eps_g"]),
                  "eps_t_sem_alpha2": float(top.loc["semantic", "eps_t"]),
                  "eps_t_pos_alpha2": float(top.loc["positional", "eps_t"]),
                  "theta_sem_alpha2": float(top.loc["semantic", "theta_emp"]),
                  "m_pos_alpha2": float(top.loc["positional", "m"])})
    s.update(alpha_c_theory=None, alpha_l_theory=None)
    if not theory.empty:
        row = lines[np.isclose(lines["omega"], w)]
        s["alpha_c_theory"] = float(row["alpha_c"].iloc[0]) if len(row) else _alpha_c_at(cfg, w)
        s["alpha_l_theory"] = float(row["alpha_l"].iloc[0]) if len(row) else float("nan")
        s["theory"] = _theory_summary(theory, cfg.task.sigma)
    return s


def _theory_summary(theory: pd.DataFrame, sigma: float) -> dict[str, Any]:
    """The theory's values at the largest α of its curves."""
    th = theory[np.isclose(theory["alpha"], theory["alpha"].max())].set_index("branch")
    return {"alpha": float(theory["alpha"].max()),
            "eps_g_sem": float(th.loc["semantic", "eps_g"]),
            "eps_g_pos": float(th.loc["positional", "eps_g"]),
            "eps_t_sem": float(th.loc["semantic", "eps_t"]),
            "eps_t_pos": float(th.loc["positional", "eps_t"]),
            "theta_sem_over_sigma2": float(th.loc["semantic", "theta"]) / sigma ** 2,
            "m_pos": float(th.loc["positional", "m"]),
            "eps_lin": float(theory["eps_lin"].iloc[0]),
            "curve_points_converged": f"{int(theory['converged'].sum())}/{len(theory)}"}


def _alpha_c_at(cfg: Config, omega: float) -> float:
    from lmlab.theory import TheoryParams, alpha_c

    A = ((cfg.task.A[0], cfg.task.A[1]), (cfg.task.A[2], cfg.task.A[3]))
    return float(alpha_c(TheoryParams(omega=omega, sigma=cfg.task.sigma, lam=cfg.gd.lam, A=A)))


def plot(result: Result) -> dict[str, Figure]:
    """Every figure of a finished run, from the ``Result`` alone (Fig. 3 needs several ω)."""
    from lmlab.plotting import captioned
    from lmlab.plotting.attention_phase import (
        plot_delta,
        plot_errors,
        plot_order_parameters,
        plot_phase_diagram,
    )

    r, w = result, result.config.grid.fig2_omega
    eps_t, eps_g = (r.delta[r.delta["quantity"] == q] for q in ("eps_t", "eps_g"))
    figures = {
        "fig2_left_delta_eps_t": captioned(
            plot_delta(eps_t, r.theory_pairs, "eps_t", omega=w),
            f"Fig. 2 left: Δε_t = ε_t(semantic) − ε_t(positional) at ω = {w}; mean over seeds ± "
            "standard error of the paired difference; theory line."),
        "fig2_middle_eps_g": captioned(
            plot_errors(r.branches, r.best, r.theory, r.theory_pairs),
            "Fig. 2 middle: test error of each branch, of the global minimum (lower training "
            "loss) and of the linear baseline."),
        "fig2_right_order_parameters": captioned(
            plot_order_parameters(r.branches, r.theory),
            "Fig. 2 right: θ/σ² of the semantic branch and m of the positional one."),
        "delta_eps_g": captioned(
            plot_delta(eps_g, r.theory_pairs, "eps_g", omega=w),
            "Δε_g = ε_g(semantic) − ε_g(positional): the quantity the assignment plotted; it "
            "changes sign earlier than Δε_t."),
    }
    if len(r.config.grid.all_omegas()) > 1:
        figures["fig3_phase_eps_t"] = captioned(plot_phase_diagram(
            r.phase_eps_t, r.lines, "alpha_c", title="Δε_t = ε_t(semantic) − ε_t(positional)",
            label="Δε_t", crossings=r.crossings, published=r.published),
            "Fig. 3: Δε_t over ω × α with the theory's α_c(ω), the simulated crossing per ω (± "
            "standard error over seeds) and, for the authors' parameters, the published α_c(ω)"
            + ("; dotted: the theory's spinodals, where the semantic branch (left) and the "
               "positional one (right) cease to exist." if "alpha_sp_sem" in r.lines else "."))
        figures["fig3_attention_vs_linear"] = captioned(plot_phase_diagram(
            r.phase_linear, r.lines, "alpha_l", title="ε_lin − ε_g(global minimum)",
            label="ε_lin − ε_g"),
            "Fig. 3: ε_lin − ε_g of the global minimum with the theory's α_l(ω).")
    figures.update(extra_figures(r))
    return figures


def report(result: Result, figures: dict[str, Figure]) -> Report:
    """The report of a finished run: setting, summary, figures, the α_c and theory tables."""
    cfg, s = result.config, result.summary
    rep = Report("Positional vs semantic attention: a phase transition in α = n/d")
    rep.add_text(
        f"Tied rank-{cfg.task.rank} attention, d = {cfg.task.d}, σ = {cfg.task.sigma}, "
        f"λ = {cfg.gd.lam}, A = {cfg.task.A} ({cfg.task.convention} convention); "
        f"{cfg.grid.seeds} seeds × {len(cfg.grid.all_omegas())} ω × {cfg.grid.alpha_points} α × "
        f"{len(cfg.grid.inits)} initialisations; full-batch GD lr {cfg.gd.lr}, "
        f"{cfg.gd.steps:,} steps" + (f", heavy-ball momentum {cfg.gd.momentum}"
                                     if cfg.gd.momentum else "")
        + f"; test error on {cfg.n_test:,} fresh samples per seed. Errors are the authors': "
        "ε_t = ℒ/d (regulariser included), ε_g = E‖y − f(x)‖²/(2d).")
    theory_keys = ("theory",) if "theory" in s else ("theory", "alpha_c_theory", "alpha_l_theory")
    rep.add_key_values({k: v for k, v in s.items() if k not in theory_keys},
                       caption="Summary (simulation)")
    if "theory" in s:
        rep.add_key_values(s["theory"], caption="Theory at the same points")
    rep.add_figures(figures, names=["fig2_left_delta_eps_t", "fig2_middle_eps_g",
                                    "fig2_right_order_parameters", "delta_eps_g",
                                    "errors_absolute", "fig3_phase_eps_t",
                                    "fig3_attention_vs_linear", "cv_lambda", "concentration"])
    rep.add_table(result.crossings, caption="α_c per ω: simulated (crossing of the mean Δε_t; "
                  "standard error over the per-seed crossings), theory, published")
    if not result.lines.empty:
        rep.add_table(result.lines, caption="Theory lines: α_c(ω) and α_l(ω)"
                      + (", and the spinodals of the semantic (alpha_sp_sem) and positional "
                         "(alpha_sp_pos) branches" if "alpha_sp_sem" in result.lines else ""))
    extra_report(rep, result)
    return rep
