"""Exact finite-d minima of each branch of the rank-1 attention model, against the RS theory.

The replica-symmetric (RS) equations of :mod:`lmlab.theory.attention` give each branch's
training energy ``ε_t = −Φ`` as d → ∞. This module minimises the exact empirical loss of one
training set (``n = round(α d)`` samples, the study's data generator, the teacher rescaled to
``‖Q*‖² = d``) inside each branch's subspace, and sets the minimum beside the RS value:

* ``positional``: θ = 0 (Q ⟂ Q*), m free;
* ``semantic``: m = 0 (Q ⟂ 1_d), θ free;
* ``agnostic``: m = θ = 0 (the memorising solution, Q ⟂ both);

each held by projection. The loss is written in the per-sample 2×2 Gram form
(:class:`GramProblem`: O(n d) per evaluation, analytic gradient) and minimised by L-BFGS
(``scipy.optimize``) from several starts — gradient descent's informed start, and vectors with
the RS fixed point's order parameters and random remaining directions at four norms — keeping
the lowest (the median over starts is kept too). Reported per (ω, α, d, seed, branch):
``eps_t`` (= ℒ/d, the regularised loss, the quantity −Φ is), its data-fit part, q, m, θ, the
RS values and ``gap_pct``, the relative gap ``100 (ε_t − ε_t^RS)/ε_t^RS``.

Usage::

    python -m lmlab.theory.finite_d --omega 0 --alpha 0.6 --d 500 1000 --seeds 3 --out DIR

writes ``DIR/finite_d_branches.csv`` (one row per minimum), ``finite_d_summary.csv`` (per d and
branch: mean and spread of the gap over seeds), ``finite_d_delta.csv`` (ε_t semantic −
positional, paired by seed), ``finite_d.json`` (the settings) and ``finite_d_branches.png``.

>>> prob = draw_problem(omega=0.0, alpha=0.6, d=40, seed=0)
>>> res = minimise_branch(prob, "semantic", n_starts=2, seed=0)
>>> res.branch, res.m < 1e-12, res.eps_t <= prob.energy(prob.project(prob.Q_star, "semantic"))
('semantic', True, True)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from lmlab.errors import LmlabError

from ._finite_d_loss import FD_BRANCHES, GramProblem, draw_problem, problem_from_data
from ._rs_agnostic import solve_agnostic
from ._solver import FixedPoint, TheoryParams, solve_branch

__all__ = ["FD_BRANCHES", "BRANCH_ORDER", "GramProblem", "BranchMinimum", "draw_problem",
           "problem_from_data", "rs_reference", "minimise_branch", "run_branches",
           "summarise", "delta_table", "PAIRS", "main"]

#: The three branches compared with the RS theory.
BRANCH_ORDER = ("positional", "semantic", "agnostic")

#: Norm of the random part of the RS-like starts, relative to the RS value, cycled. Smaller
#: random parts reach lower minima on the positional and semantic branches; the agnostic
#: branch has minima spread over several % whichever the scale.
_RS_SCALES = (0.25, 0.5, 0.1, 0.75)


@dataclass(frozen=True)
class BranchMinimum:
    """The best of several L-BFGS runs in one branch's subspace.

    Attributes:
        branch: the subspace.
        eps_t: ``ℒ(Q)/d`` at the minimum (regulariser included).
        fit: its data-fit part ``Σ_μ ‖y − S x‖²/(2d²)``.
        q, m, theta, theta_over_sigma2: ``σ²‖Q‖²/d``, ``|1_d·Q|/d``, ``σ²|Q*·Q|/d``, ``θ/σ²``.
        grad_norm: ``‖∇ε_t‖`` in the subspace at the minimum (scaled by d², i.e. of ℒ·d).
        best_start: which start gave it; ``start_eps_t``: every start's final ε_t (in
            order: the informed start, then the RS-like ones).
        iterations: L-BFGS iterations of the best start.
        Q: the minimiser (d,).
    """

    branch: str
    eps_t: float
    fit: float
    q: float
    m: float
    theta: float
    theta_over_sigma2: float
    grad_norm: float
    best_start: str
    start_eps_t: tuple[float, ...]
    iterations: int
    Q: np.ndarray


def _check_branch(branch: str) -> str:
    if branch not in FD_BRANCHES:
        raise LmlabError(f"branch must be one of {FD_BRANCHES}, got {branch!r}")
    return branch


def rs_reference(omega: float, alpha: float, branch: str,
                 params: TheoryParams | None = None) -> FixedPoint:
    """The RS fixed point of ``branch`` from lmlab's solver (``agnostic``: m = θ = 0).

    >>> fp = rs_reference(0.3, 2.0, "positional", TheoryParams(order=4, max_iter=2))
    >>> fp.branch, fp.theta
    ('positional', 0.0)
    """
    if branch not in BRANCH_ORDER:
        raise LmlabError(f"the RS theory has the branches {BRANCH_ORDER}, got {branch!r}")
    p = (params or TheoryParams()).with_(omega=float(omega))
    if branch == "agnostic":
        return solve_agnostic(alpha, p)
    return solve_branch(alpha, branch, p)


def _starts(prob: GramProblem, branch: str, n_starts: int, rs: FixedPoint | None,
            rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """Gradient descent's start for the branch, then RS-like vectors (see the module doc)."""
    d, s2 = prob.d, prob.sigma ** 2
    if branch in ("positional", "free"):
        informed = np.full(d, 1.0 / math.sqrt(d))                      # Q0 = 1_d/√d
    elif branch == "semantic":
        informed = prob.Q_star.copy()                                   # Q0 = Q*
    else:
        informed = 0.1 * rng.standard_normal(d)                         # random init
    out = [("gd", informed)]
    q, m, t = (rs.q, rs.m, rs.theta / s2) if rs is not None else (s2 * 0.2, 0.0, 0.0)
    base = m * np.ones(d) + t * prob.Q_star * math.sqrt(d) / np.linalg.norm(prob.Q_star)
    rest = math.sqrt(max(q / s2 - m * m - t * t, 1e-4) * d)             # ‖Q‖² = d q/σ²
    for k in range(n_starts - 1):
        g = prob.project(rng.standard_normal(d), "agnostic")
        scale = _RS_SCALES[k % len(_RS_SCALES)]
        out.append((f"rs{k}", base + scale * rest * g / np.linalg.norm(g)))
    return [(name, prob.project(Q0, branch)) for name, Q0 in out[:n_starts]]


def minimise_branch(prob: GramProblem, branch: str, *, n_starts: int = 8, seed: int = 0,
                    rs: FixedPoint | None = None, max_iter: int = 5000,
                    starts: Sequence[np.ndarray] | None = None) -> BranchMinimum:
    """Minimise ``ε_t`` over ``branch``'s subspace by L-BFGS from several starts.

    Args:
        prob: the training set.
        branch: ``positional``, ``semantic``, ``agnostic`` or ``free`` (no constraint).
        n_starts: number of starts (≥ 1): gradient descent's informed start, then RS-like
            vectors (``rs``'s q, m, θ; random directions for the rest of the norm).
        seed: seed of the random starts.
        rs: the RS fixed point whose order parameters the RS-like starts take (default: a
            vector of q = 0.05 with no overlap).
        max_iter: L-BFGS iterations per start.
        starts: explicit starting vectors instead (each projected onto the subspace).
    """
    _check_branch(branch)
    if isinstance(n_starts, bool) or not isinstance(n_starts, int) or n_starts < 1:
        raise LmlabError(f"n_starts must be an integer >= 1, got {n_starts!r}")
    U = prob.removed(branch)
    scale = float(prob.d) ** 2            # minimise d² ε_t = d ℒ: O(d), well-scaled for L-BFGS

    def fun(u: np.ndarray) -> tuple[float, np.ndarray]:
        Q = u - U.T @ (U @ u)
        e, g = prob.energy_and_grad(Q)
        return e * scale, (g - U.T @ (U @ g)) * scale

    if starts is not None:
        named = [(f"given{i}", prob.project(s, branch)) for i, s in enumerate(starts)]
    else:
        named = _starts(prob, branch, n_starts, rs, np.random.default_rng([seed, prob.d, 7]))
    best: tuple[float, str, np.ndarray, int] | None = None
    finals = []
    for name, Q0 in named:
        res = minimize(fun, Q0, jac=True, method="L-BFGS-B",
                       options={"maxiter": max_iter, "maxcor": 20, "ftol": 1e-15,
                                "gtol": 1e-9, "maxls": 50})
        Q = prob.project(res.x, branch)
        e = prob.energy(Q)
        finals.append(e)
        if best is None or e < best[0]:
            best = (e, name, Q, int(res.nit))
    assert best is not None
    e, name, Q, nit = best
    g = prob.energy_and_grad(Q)[1]
    g = g - U.T @ (U @ g)
    return BranchMinimum(branch=branch, eps_t=e, fit=prob.fit_energy(Q),
                         **prob.order_parameters(Q), grad_norm=float(np.linalg.norm(g)) * scale,
                         best_start=name, start_eps_t=tuple(finals), iterations=nit, Q=Q)


def run_branches(omega: float, alpha: float, ds: Sequence[int], seeds: Sequence[int], *,
                 branches: Sequence[str] = BRANCH_ORDER, n_starts: int = 8,
                 params: TheoryParams | None = None, max_iter: int = 5000,
                 progress: bool = True,
                 on_row: Callable[[pd.DataFrame], None] | None = None,
                 done: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every (d, seed, branch) minimum at one (ω, α), with the RS values and the gap.

    Columns: omega, alpha, d, n, seed, branch, eps_t, fit, q, m, theta, theta_over_sigma2,
    grad_norm, best_start, iterations, eps_t_median_start (median over starts),
    eps_t_gd_start (from gradient descent's start alone), seconds, rs_eps_t, rs_q, rs_m,
    rs_theta, rs_converged, gap_pct (best start), gap_pct_median_start, gap_pct_gd_start.
    ``on_row(df)`` (if given) is called with the table so far after every (d, seed), e.g. to
    save it. Rows of ``done`` (a table of an earlier call at the same ω, α and settings) are
    kept and their (d, seed, branch) not computed again.
    """
    from tqdm.auto import tqdm

    names = [b for b in branches]
    for b in names:
        if b not in BRANCH_ORDER:
            raise LmlabError(f"branches must be among {BRANCH_ORDER}, got {b!r}")
    rs = {b: rs_reference(omega, alpha, b, params) for b in names}
    for b, fp in rs.items():
        if not fp.converged:
            warnings.warn(f"the RS {b} branch did not converge at omega={omega}, "
                          f"alpha={alpha}; its gap_pct is relative to the last iterate",
                          stacklevel=2)
    p = params or TheoryParams()
    rows = [] if done is None else done.to_dict("records")
    have = {(int(r["d"]), int(r["seed"]), str(r["branch"])) for r in rows}
    todo = [(int(d), int(seed), b) for d in ds for seed in seeds for b in names
            if (int(d), int(seed), b) not in have]
    bar = tqdm(total=len(todo), desc="finite-d minima", unit="branch", disable=not progress)
    try:
        for d in ds:
            for seed in seeds:
                missing = [b for b in names if (int(d), int(seed), b) in todo]
                if not missing:
                    continue
                prob = draw_problem(omega, alpha, int(d), int(seed), sigma=p.sigma, lam=p.lam,
                                    A=(*p.A[0], *p.A[1]))
                for b in missing:
                    bar.set_postfix_str(f"d={d} seed={seed} {b}")
                    t0 = time.perf_counter()
                    res = minimise_branch(prob, b, n_starts=n_starts, seed=int(seed),
                                          rs=rs[b], max_iter=max_iter)
                    row = {k: v for k, v in asdict(res).items()
                           if k not in ("Q", "start_eps_t")}
                    row["eps_t_median_start"] = float(np.median(res.start_eps_t))
                    row["eps_t_gd_start"] = res.start_eps_t[0]
                    fp = rs[b]
                    rows.append({"omega": omega, "alpha": alpha, "d": int(d), "n": prob.n,
                                 "seed": int(seed), **row,
                                 "seconds": time.perf_counter() - t0,
                                 "rs_eps_t": fp.eps_t, "rs_q": fp.q, "rs_m": fp.m,
                                 "rs_theta": fp.theta, "rs_converged": fp.converged,
                                 "gap_pct": 100.0 * (res.eps_t - fp.eps_t) / fp.eps_t,
                                 "gap_pct_median_start":
                                     100.0 * (row["eps_t_median_start"] / fp.eps_t - 1.0),
                                 "gap_pct_gd_start":
                                     100.0 * (row["eps_t_gd_start"] / fp.eps_t - 1.0)})
                    bar.update()
                if on_row is not None:
                    on_row(pd.DataFrame(rows))
    finally:
        bar.close()
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame, lam: float = 0.01, sigma: float = 0.5) -> pd.DataFrame:
    """Per (ω, α, d, branch): seeds, mean, standard deviation, min and max over seeds of the
    gap (%) of the best start, the means of the median start's gap and of the informed start's
    gap, mean ε_t, its data-fit part, q, m, θ/σ², and the RS values; ``rs_fit`` is the RS data
    fit ``−Φ − λq/(2σ²)`` (``lam``, ``sigma``: those of the run)."""
    df = df.assign(rs_fit=df["rs_eps_t"] - lam * df["rs_q"] / (2 * sigma ** 2))
    g = df.groupby(["omega", "alpha", "d", "branch"], sort=False)
    out = g.agg(seeds=("seed", "size"), gap_pct_mean=("gap_pct", "mean"),
                gap_pct_std=("gap_pct", "std"), gap_pct_min=("gap_pct", "min"),
                gap_pct_max=("gap_pct", "max"),
                gap_pct_median_start=("gap_pct_median_start", "mean"),
                gap_pct_gd_start=("gap_pct_gd_start", "mean"), eps_t_mean=("eps_t", "mean"),
                fit_mean=("fit", "mean"), q_mean=("q", "mean"), m_mean=("m", "mean"),
                theta_over_sigma2_mean=("theta_over_sigma2", "mean"),
                rs_eps_t=("rs_eps_t", "first"), rs_q=("rs_q", "first"), rs_m=("rs_m", "first"),
                rs_theta=("rs_theta", "first"), rs_fit=("rs_fit", "first"))
    return out.reset_index()


#: Branch pairs of :func:`delta_table`: (first, second) gives ε_t(first) − ε_t(second).
PAIRS = (("semantic", "positional"), ("agnostic", "semantic"), ("agnostic", "positional"))


def delta_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per (ω, α, d) and branch pair: ``ε_t`` differences paired by seed (mean, standard
    deviation, seeds) and the RS difference. Pairs with a branch missing are left out."""
    cols = ["omega", "alpha", "d", "pair", "seeds", "delta_mean", "delta_std", "rs_delta"]
    wide = df.pivot_table(index=["omega", "alpha", "d", "seed"], columns="branch",
                          values=["eps_t", "rs_eps_t"])
    parts = []
    for first, second in PAIRS:
        if ("eps_t", first) not in wide or ("eps_t", second) not in wide:
            continue
        both = pd.DataFrame({
            "delta": wide[("eps_t", first)] - wide[("eps_t", second)],
            "rs": wide[("rs_eps_t", first)] - wide[("rs_eps_t", second)]}).reset_index()
        out = both.groupby(["omega", "alpha", "d"]).agg(
            seeds=("delta", "size"), delta_mean=("delta", "mean"),
            delta_std=("delta", "std"), rs_delta=("rs", "first")).reset_index()
        parts.append(out.assign(pair=f"{first} - {second}"))
    return pd.concat(parts)[cols] if parts else pd.DataFrame(columns=cols)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lmlab.theory.finite_d",
                                description=(__doc__ or "").split("\n")[0])
    p.add_argument("--omega", type=float, default=0.0, help="teacher mixing ω (default 0)")
    p.add_argument("--alpha", type=float, default=0.6, help="sample ratio α = n/d")
    p.add_argument("--d", type=int, nargs="+", default=[500, 1000], help="dimensions")
    p.add_argument("--seeds", type=int, default=3, help="seeds per d: 0 .. SEEDS−1")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--starts", type=int, default=8, help="L-BFGS starts per branch")
    p.add_argument("--branches", nargs="+", default=list(BRANCH_ORDER),
                   choices=list(BRANCH_ORDER))
    p.add_argument("--max-iter", type=int, default=5000, help="L-BFGS iterations per start")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--figure", default=None, help="also save the figure here")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows already in OUT (same ω, α, starts, max-iter) and add "
                        "only the missing (d, seed, branch)")
    p.add_argument("--no-progress", action="store_true")
    return p


_SAME = ("omega", "alpha", "starts", "max_iter")   # settings that rows to resume must share


def _previous(out: Path, settings: dict[str, float]) -> tuple[pd.DataFrame | None, list[str]]:
    """The rows and commands of an earlier run in ``out`` (none if there is none)."""
    import json

    table, meta = out / "finite_d_branches.csv", out / "finite_d.json"
    if not table.is_file():
        return None, []
    try:
        saved = json.loads(meta.read_text(encoding="utf-8"))
        old = {k: saved["settings"][k] for k in _SAME}
        commands = [str(c) for c in saved.get("commands") or saved.get("command", "").split(
            "\n") if c]
        done = pd.read_csv(table)
        if not {"d", "seed", "branch", "eps_t"} <= set(done.columns):
            raise KeyError("columns")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LmlabError(f"cannot resume from {out}: {type(exc).__name__} reading "
                         f"{meta.name} or {table.name}; use a new --out") from None
    if old != settings:
        raise LmlabError(f"cannot resume: {out} was made with {old}, not {settings}; use a "
                         "new --out or the same settings")
    return done, commands


def main(argv: list[str] | None = None) -> int:
    """The command line: compute, write the tables and the figure, print the summary."""
    from lmlab.runs.io import atomic_write_json, atomic_write_text

    args = _parser().parse_args(argv)
    try:
        if args.seeds < 1 or args.starts < 1 or min(args.d) < 2 or args.max_iter < 1:
            raise LmlabError("--seeds, --starts, --max-iter must be >= 1 and every --d >= 2")
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise LmlabError(f"--out {out} is a file; give a directory")
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        settings = {k: getattr(args, k) for k in _SAME}
        command = " ".join(["python -m lmlab.theory.finite_d", *(argv or sys.argv[1:])])
        done, commands = _previous(out, settings) if args.resume else (None, [])
        atomic_write_json(out / "finite_d.json", {"settings": settings,
                                                  "commands": [*commands, command]})

        def save(df: pd.DataFrame) -> None:
            atomic_write_text(out / "finite_d_branches.csv", df.to_csv(index=False))

        df = run_branches(args.omega, args.alpha, args.d, seeds, branches=args.branches,
                          n_starts=args.starts, max_iter=args.max_iter,
                          progress=not args.no_progress, on_row=save, done=done)
        save(df)
        summary, delta = summarise(df), delta_table(df)
        atomic_write_text(out / "finite_d_summary.csv", summary.to_csv(index=False))
        atomic_write_text(out / "finite_d_delta.csv", delta.to_csv(index=False))
        from lmlab.plotting.attention_branches import save_branch_gaps

        targets = [out / "finite_d_branches.png"] + ([Path(args.figure)] if args.figure else [])
        save_branch_gaps(summary, delta, targets)
    except LmlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(summary[["d", "branch", "seeds", "gap_pct_mean", "gap_pct_std",
                       "gap_pct_median_start", "gap_pct_gd_start", "eps_t_mean", "rs_eps_t",
                       "m_mean", "theta_over_sigma2_mean"]].to_string(index=False))
        print(delta.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
