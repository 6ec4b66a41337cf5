"""Where the diversity boundary lies: the smallest pattern pool whose runs generalise OOD.

Reads the full ID/OOD evaluations of every setting of an induction run (a pool-size × seed
sweep) and, at each evaluated step, the fraction of seeds per pool whose OOD error is below a
threshold (0.5: the errors are bimodal, ≈ 0.98 for a memorising model and near the 0.047 floor
for a copying one). The boundary at a step is bracketed by the largest pool where fewer than
half the seeds generalise and the smallest pool above it where at least half do.

Usage::

    python -m lmlab.studies.induction_boundary RUN_DIR [--steps 1000,2000,4000]

>>> df = pd.DataFrame({"pool": [100, 100, 1000, 1000, math.inf], "seed": [1, 2, 1, 2, 1],
...                    "step": 4000, "err_ood": [0.98, 0.97, 0.05, 0.9, 0.05]})
>>> boundary_at(df)
(100.0, 1000.0)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from lmlab.errors import LmlabError

__all__ = ["sweep_errors", "generalising", "boundary_at", "boundary_table"]

THRESHOLD = 0.5


def sweep_errors(run_dir: str | Path) -> pd.DataFrame:
    """One row per (setting, full-evaluation step): ``pool`` (inf: infinite), ``seed``,
    ``step`` (checkpoint step), ``err_ood``, from the run's ``summary.json`` and the settings'
    ``err_arr.json``."""
    from lmlab.circuits import find_settings, read_err_arr

    run = Path(run_dir)
    summary_path = run / "summary.json"
    if not summary_path.is_file():
        raise LmlabError(f"{run} has no summary.json: give an induction run directory")
    summary = json.loads(summary_path.read_text())
    config = json.loads((run / "config.json").read_text())
    root = Path(config.get("runs_dir") or run / "settings")
    found = find_settings(root)
    rows = []
    for name, info in summary.get("settings", {}).items():
        path = found.settings.get(name)
        if path is None or not (path / "err_arr.json").is_file():
            continue
        err = read_err_arr(path / "err_arr.json").reset_index()
        if "full" in err:
            err = err[err["full"].fillna(False).astype(bool)]
        pool = float(info["pool"]) if info.get("pool") else math.inf
        seed = info.get("seed", summary.get("seed"))
        for epoch, e in zip(err["epoch"], err["err_ood"], strict=True):
            rows.append((name, pool, seed, int(epoch) + 1, float(e)))
    if not rows:
        raise LmlabError(f"no setting of {run} has full evaluations in its err_arr.json")
    return pd.DataFrame(rows, columns=["setting", "pool", "seed", "step", "err_ood"])


def generalising(df: pd.DataFrame, threshold: float = THRESHOLD) -> pd.DataFrame:
    """Per (step, pool): seeds, seeds with OOD error below ``threshold``, mean and s.e."""
    g = df.assign(ok=df["err_ood"] < threshold).groupby(["step", "pool"])
    out = g.agg(seeds=("ok", "size"), generalise=("ok", "sum"),
                err_ood_mean=("err_ood", "mean"), err_ood_se=("err_ood", "sem"))
    return out.reset_index()


def boundary_at(df: pd.DataFrame, threshold: float = THRESHOLD) -> tuple[float, float]:
    """(largest pool where fewer than half the seeds generalise, smallest larger pool where at
    least half do) over the rows of one step; NaN where no such pool was run."""
    g = generalising(df, threshold)
    frac = (g["generalise"] / g["seeds"]).to_numpy()
    pools = g["pool"].to_numpy()
    failing = pools[frac < 0.5]
    below = float(failing.max()) if failing.size else math.nan
    ok = pools[(frac >= 0.5) & ((pools > below) if failing.size else True)]
    return below, (float(ok.min()) if ok.size else math.nan)


def boundary_table(df: pd.DataFrame, steps: list[int] | None = None,
                   threshold: float = THRESHOLD) -> pd.DataFrame:
    """The boundary bracket at each step (all evaluated steps by default)."""
    wanted = steps or sorted(df["step"].unique())
    rows = []
    for step in wanted:
        at = df[df["step"] == step]
        if at.empty:
            continue
        lo, hi = boundary_at(at, threshold)
        g = generalising(at, threshold)
        counts = ", ".join(f"{'∞' if math.isinf(p) else int(p)}: {int(k)}/{int(n)}"
                           for p, k, n in zip(g["pool"], g["generalise"], g["seeds"],
                                              strict=True))
        rows.append({"step": int(step), "fails_at_or_below": lo, "generalises_from": hi,
                     "seeds_generalising": counts})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--steps", default="", help="comma-separated steps (default: every one)")
    p.add_argument("--threshold", type=float, default=THRESHOLD)
    args = p.parse_args(argv)
    try:
        df = sweep_errors(args.run_dir)
    except LmlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    steps = [int(s) for s in args.steps.split(",") if s] or None
    table = boundary_table(df, steps, args.threshold)
    print("| " + " | ".join(table.columns) + " |")
    print("|" + "---|" * len(table.columns))
    for row in table.itertuples(index=False):
        print("| " + " | ".join("∞" if isinstance(v, float) and math.isinf(v) else str(v)
                                for v in row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
