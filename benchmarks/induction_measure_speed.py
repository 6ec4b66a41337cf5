"""Speed of the induction study's circuit measurements: lmlab's batched ``measure_runs`` against
the analysis notebook's way (one checkpoint at a time, the model rebuilt for each, torch SVDs).

Workload: every checkpoint of five settings (spec §6): at the main relative distance (R = R[+1])
inner/outer QK–OV matching and embedding–OV matching for r = 1..32, the diagonal z-score, the
row-wise token mismatch, ScreeNOT ranks of W_qk, W_ov and E for k = 5, 10, 20; and for each
relative distance t in 0, 5, …, 35 the z-score, m(5) and the mismatch.

* ``lmlab``: :func:`lmlab.circuits.measure_runs` — each run's checkpoints loaded once and stacked
  into (N, 64, 64) arrays, batched ``np.linalg.svd``; one extra batched SVD per relative
  distance. The random baseline is computed cold (an empty cache directory).
* ``notebook``: for the main distance and then for every relative distance (one pass each, as the
  notebook did — it took ~53 s per relative distance for five settings), for every setting it
  reads ``config.json`` and ``err_arr.json``, builds R by rotating basis vectors with the model's
  own rotary code, and for every checkpoint builds ``TFModel(RotaryConfig(...))``, loads the
  state dict, extracts the weights with torch (float64), and computes every statistic with one
  ``torch.linalg.svd`` per matrix and per rank; ScreeNOT runs per matrix and per k (each call
  with its own SVD, like the ``screenot`` package).

Both sides must give the same numbers: the script reports the largest absolute difference per
statistic and the number of differing integer values (ranks).

Input: ``--runs DIR1 DIR2 …`` (real run directories), otherwise five synthetic settings × 101
checkpoints (steps 0, 200, …, 20000) of random weights with the exact keys, in a temporary
directory (the output says which).

Usage::

    .venv/bin/python benchmarks/induction_measure_speed.py --threads 1
    .venv/bin/python benchmarks/induction_measure_speed.py --runs runs/induction/a runs/induction/b

Writes ``benchmarks/results/induction_measure_speed.md`` and ``.json``.
"""

from __future__ import annotations

import sys

from _common import cpu_model, jsonable, md_table, pin_threads_from_argv, version

_THREADS = pin_threads_from_argv(default=1)

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from lmlab.circuits import MeasureConfig, checkpoint_shapes, measure_runs, screenot_rank  # noqa: E402

torch.set_num_threads(_THREADS)
SETTINGS = ("infinite_pool_size", "small_pool_size", "large_pool_size",
            "boundary_pool_size_740", "boundary_pool_size_750")
CFG = MeasureConfig()   # ranks 1..32, R(+1), row argmax, LN ignored
REL_DIST = 1                                  # the main rotary distance (the authors' R[1])
REL_DISTS = (0, 5, 10, 15, 20, 25, 30, 35)    # the distance sweep (0: R = I)
SWEEP_RANK = 5


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", nargs="+", type=Path, help="real run directories")
    p.add_argument("--checkpoints", type=int, default=101, help="synthetic: per setting")
    p.add_argument("--repeats", type=int, default=3,
                   help="lmlab calls: the first with a cold baseline cache, the rest warm")
    p.add_argument("--out", default="benchmarks/results/induction_measure_speed.md")
    return p.parse_args()


def make_synthetic(root: Path, n_ckpt: int) -> dict[str, Path]:
    """Five settings × n_ckpt random checkpoints with the exact keys, config and err_arr."""
    runs = {}
    g = torch.Generator().manual_seed(0)
    steps = [200 * i for i in range(n_ckpt)]
    for name in SETTINGS:
        run = root / name
        run.mkdir(parents=True)
        for k in steps:
            sd = {key: torch.randn(shape, generator=g) * (1.0 if key.startswith("embed") else 0.125)
                  for key, shape in checkpoint_shapes().items()}
            torch.save(sd, run / f"ckpt_{k}.pt")
        (run / "config.json").write_text(json.dumps(
            {"vocab_size": 64, "d_model": 64, "num_layers": 2, "num_heads": 1,
             "rotary_theta": 10000.0, "max_seq_len": 64, "num_epoch": steps[-1],
             "n_save": max(1, n_ckpt - 1), "dropout": 0.1, "mlp": False, "ff_dim": 256}))
        rng = np.random.default_rng(1)
        errs = [{"epoch": e, "loss_train": 1.0, "err_train": 0.5, "loss_test": 1.0,
                 "err_test": float(rng.random()), "loss_ood": 1.0, "err_ood": float(rng.random())}
                for e in range(steps[-1])]
        (run / "err_arr.json").write_text(json.dumps(errs))
        runs[name] = run
    return runs


# --- the notebook's way -------------------------------------------------------------------

def rotary_R_from_model(d: int, t: int, theta: float, n_ctx: int) -> torch.Tensor:
    """R[j, k] = ⟨Rot(0) e_j, Rot(t) e_k⟩ with the model's own rotary code (float32 tables)."""
    from lmlab.models.rotary_tf import apply_rotary, rotary_tables

    cos, sin = rotary_tables(d, max(n_ctx, t + 1), theta)
    x = torch.zeros(d, t + 1, d, dtype=torch.float64)
    x[torch.arange(d), t, torch.arange(d)] = 1.0                 # e_k at position t
    rotated = apply_rotary(x, cos[:t + 1].double(), sin[:t + 1].double())[:, t, :]  # (k, j)
    return rotated.T.contiguous()                                 # Rot(0) = I


def smax(A: torch.Tensor, B: torch.Tensor, r: int) -> float:
    return float(torch.linalg.svd(A[:, :r].T @ B[:, :r]).S[0])


def notebook_pass(run: Path, t: int) -> list[dict[str, Any]]:
    """Every statistic for every checkpoint of one run at relative distance t, the slow way."""
    from lmlab.models.rotary_tf import RotaryConfig, TFModel

    config = json.loads((run / "config.json").read_text())
    errs = {e["epoch"]: e for e in json.loads((run / "err_arr.json").read_text())}
    d = int(config["d_model"])
    R = rotary_R_from_model(d, t, float(config.get("rotary_theta", 10000.0)),
                            int(config["max_seq_len"]))
    steps = sorted(int(p.stem.split("_")[1]) for p in run.glob("ckpt_*.pt"))
    rows = []
    for step in steps:
        model = TFModel(RotaryConfig(
            vocab_size=config["vocab_size"], d_model=d, num_layers=config["num_layers"],
            num_heads=1, max_seq_len=config["max_seq_len"], dropout=0.1, mlp=False,
            ff_dim=256, rotary_theta=float(config.get("rotary_theta", 10000.0))))
        model.load_state_dict(torch.load(run / f"ckpt_{step}.pt", map_location="cpu"))
        with torch.no_grad():
            E = model.embed.embed.weight.detach().double()
            Wq1 = model.h[1].mha.W_q.weight.detach().double()
            Wk1 = model.h[1].mha.W_k.weight.detach().double()
            Wv0 = model.h[0].mha.W_v.weight.detach().double()
            Wo0 = model.h[0].mha.W_o.weight.detach().double()
            W_qk = Wq1.T @ R @ Wk1 / math.sqrt(d)
            W_ov = Wo0 @ Wv0
            U_qk, _, Vh_qk = torch.linalg.svd(W_qk)
            U_ov, _, Vh_ov = torch.linalg.svd(W_ov)
            _, _, Vh_E = torch.linalg.svd(E)
            V_qk, V_ov, V_E = Vh_qk.T, Vh_ov.T, Vh_E.T
            row: dict[str, Any] = {"step": step}
            for r in CFG.ranks:
                row[f"match_r{r}"] = smax(V_qk, U_ov, r)
                row[f"outer_match_r{r}"] = smax(V_ov, U_qk, r)
                row[f"emb_ov_match_r{r}"] = smax(V_E, U_ov, r)
            W = W_qk @ W_ov
            row["zscore"] = float((torch.diagonal(W).mean() - W.mean()) / W.std(unbiased=False))
            M = E @ W @ E.T
            row["mismatch"] = float((M.argmax(dim=1) != torch.arange(M.shape[0])).double().mean())
            for k in CFG.screenot_k:
                for name, Y in (("qk", W_qk), ("ov", W_ov), ("E", E)):
                    row[f"rank_{name}_k{k}"] = int(screenot_rank(Y.numpy(), k)[1])
        e = errs.get(step - 1, {})
        row["err_test"], row["err_ood"] = e.get("err_test", math.nan), e.get("err_ood", math.nan)
        rows.append(row)
    return rows


# --- comparison -----------------------------------------------------------------------------

def compare(fast: pd.DataFrame, slow: dict[int, pd.DataFrame]) -> list[dict[str, Any]]:
    """Max |difference| per statistic family between lmlab's table and the per-pass tables."""
    out = []
    fast = fast.sort_values(["setting", "step"], kind="stable")
    slow = {t: df.sort_values(["setting", "step"], kind="stable") for t, df in slow.items()}
    main = slow[REL_DIST]
    at = {t: fast[fast["rel_dist"] == t] for t in slow}
    fams = {"match_r*": "match_r", "outer_match_r*": "outer_match_r",
            "emb_ov_match_r*": "emb_ov_match_r"}
    def diff(a: pd.DataFrame | pd.Series, b: pd.DataFrame | pd.Series) -> float:
        return float(np.nanmax(np.abs(a.to_numpy(dtype=float) - b.to_numpy(dtype=float))))

    for label, prefix in fams.items():
        cols = [f"{prefix}{r}" for r in CFG.ranks]
        out.append({"statistic": f"{label} (t={REL_DIST})",
                    "max_abs_diff": diff(at[REL_DIST][cols], main[cols])})
    for col in ("zscore", "mismatch", "err_test", "err_ood"):
        out.append({"statistic": f"{col} (t={REL_DIST})",
                    "max_abs_diff": diff(at[REL_DIST][col], main[col])})
    rank_cols = [c for c in main if c.startswith("rank_")]
    mine = at[REL_DIST][rank_cols]
    differ = int((mine.to_numpy() != main[rank_cols].to_numpy()).sum())
    out.append({"statistic": f"ScreeNOT ranks ({len(rank_cols)} columns)",
                "max_abs_diff": diff(mine, main[rank_cols]),
                "n_differ": differ, "n": int(fast[rank_cols].size)})
    for stat in ("zscore", f"match_r{SWEEP_RANK}", "mismatch"):
        worst = max(diff(at[t][stat], slow[t][stat]) for t in REL_DISTS)
        out.append({"statistic": f"{stat} at rel_dist t, t in {list(REL_DISTS)}",
                    "max_abs_diff": worst})
    return out


def main() -> None:
    args = _args()
    tmp = tempfile.TemporaryDirectory(prefix="induction_measure_")
    if args.runs:
        runs = {p.name: p for p in args.runs}
        source = "real run directories: " + ", ".join(str(p) for p in args.runs)
    else:
        t0 = time.perf_counter()
        runs = make_synthetic(Path(tmp.name) / "runs", args.checkpoints)
        source = (f"synthetic: {len(runs)} settings × {args.checkpoints} checkpoints of random "
                  f"weights with the exact keys (built in {time.perf_counter() - t0:.1f} s in a "
                  "temporary directory)")
    n_ckpt = sum(len(list(p.glob("ckpt_*.pt"))) for p in runs.values())
    print(source, flush=True)

    os.environ["LMLAB_CACHE"] = str(Path(tmp.name) / "cache")     # cold random baseline
    lmlab_times = []
    for i in range(args.repeats):               # the first call computes the baseline (cold)
        w0, c0 = time.perf_counter(), time.process_time()
        fast = measure_runs(runs, CFG, rel_dists=(REL_DIST, *REL_DISTS))
        lmlab_times.append((time.perf_counter() - w0, time.process_time() - c0))
        print(f"lmlab measure_runs #{i + 1}: {lmlab_times[-1][0]:.2f} s wall, "
              f"{lmlab_times[-1][1]:.2f} s CPU", flush=True)
    fast_wall, fast_cpu = lmlab_times[0]
    warm = lmlab_times[1:] or lmlab_times
    warm_wall = float(np.median([t[0] for t in warm]))
    warm_cpu = float(np.median([t[1] for t in warm]))
    load_before = os.getloadavg()

    passes = [REL_DIST, *[t for t in REL_DISTS if t != REL_DIST]]
    slow: dict[int, pd.DataFrame] = {}
    pass_times = []
    w0, c0 = time.perf_counter(), time.process_time()
    for t in passes:
        pw = time.perf_counter()
        frames = [pd.DataFrame(notebook_pass(run, t)).assign(setting=name)
                  for name, run in runs.items()]
        slow[t] = pd.concat(frames, ignore_index=True)
        pass_times.append({"rel_dist": t, "wall_s": time.perf_counter() - pw})
        print(f"notebook pass t={t}: {pass_times[-1]['wall_s']:.1f} s", flush=True)
    slow_wall, slow_cpu = time.perf_counter() - w0, time.process_time() - c0
    agreement = compare(fast, slow)
    tmp.cleanup()

    ratio_wall, ratio_cpu = slow_wall / fast_wall, slow_cpu / fast_cpu
    verdict = "PASS" if ratio_wall >= 10 else "FAIL"
    rows = [["lmlab `measure_runs` (batched NumPy), 1st call: cold baseline cache",
             f"{fast_wall:.2f}", f"{fast_cpu:.2f}", "1×"],
            [f"lmlab `measure_runs`, warm cache (median of {len(warm)})", f"{warm_wall:.2f}",
             f"{warm_cpu:.2f}", ""],
            [f"notebook loop ({len(passes)} passes, per checkpoint, torch)", f"{slow_wall:.1f}",
             f"{slow_cpu:.1f}", f"{ratio_wall:.1f}× slower (CPU {ratio_cpu:.1f}×; "
             f"vs warm: {slow_wall / warm_wall:.1f}×, CPU {slow_cpu / warm_cpu:.1f}×)"]]
    load = os.getloadavg()
    per_pass = sum(p["wall_s"] for p in pass_times) / len(pass_times)
    agree_rows = [[a["statistic"], f"{a['max_abs_diff']:.2e}"
                   + (f" ({a['n_differ']} of {a['n']} differ)" if "n_differ" in a else "")]
                  for a in agreement]
    cmd = "`.venv/bin/python benchmarks/induction_measure_speed.py " + " ".join(sys.argv[1:]) + "`"
    report = "\n".join([
        "# induction circuit measurements: batched lmlab vs the notebook's per-checkpoint loop",
        "",
        f"Input: {source}; {n_ckpt} checkpoints in all. {_THREADS} thread(s); CPU: {cpu_model()}; "
        f"numpy {version('numpy')}, torch {version('torch')}, lmlab {version('lmlab')}.",
        "",
        f"Command: {cmd}",
        "",
        "Statistics: m(r), outer m(r), embedding–OV m(r) for r = 1..32, baseline, z, mismatch "
        f"(row argmax), ScreeNOT ranks k = {list(CFG.screenot_k)} at R = R[+1]; z, m(5), "
        f"mismatch for t in {list(REL_DISTS)}. Wall and CPU seconds of this process; the "
        f"machine is shared (1-min load average {load_before[0]:.1f} after the lmlab calls, "
        f"{load[0]:.1f} after the loop, on {os.cpu_count()} cores).",
        "",
        md_table(["implementation", "wall s", "CPU s", "ratio"], rows),
        "",
        f"**speed-up {ratio_wall:.1f}× wall against lmlab's cold first call (target ≥ 10×: "
        f"{verdict})**; the loop averaged "
        f"{per_pass:.1f} s per relative-distance pass over all settings "
        f"({per_pass / n_ckpt * 1000:.0f} ms per checkpoint).",
        "",
        "Agreement (lmlab − notebook loop, float64 on both sides; the loop's R comes from the "
        "model's float32 rotary tables):",
        "",
        md_table(["statistic", "max |diff|"], agree_rows),
        "",
    ])
    print(report)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report, encoding="utf-8")
    out = {"source": source, "n_checkpoints": n_ckpt, "threads": _THREADS, "cpu": cpu_model(),
           "versions": {k: version(k) for k in ("numpy", "torch", "lmlab")},
           "lmlab": {"wall_s": fast_wall, "cpu_s": fast_cpu, "warm_wall_s": warm_wall,
                     "warm_cpu_s": warm_cpu, "calls": lmlab_times},
           "loadavg": {"after_lmlab": load_before, "after_loop": load},
           "notebook": {"wall_s": slow_wall, "cpu_s": slow_cpu, "passes": pass_times},
           "ratio_wall": ratio_wall, "ratio_cpu": ratio_cpu, "target": 10, "verdict": verdict,
           "agreement": agreement, "measure_config": CFG.__dict__}
    path.with_suffix(".json").write_text(json.dumps(jsonable(out), indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
