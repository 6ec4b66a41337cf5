"""Speed of the attention-phase simulation: lmlab's batched trainer against one model at a time
with autograd (the assignment's style), on the Fig. 2A workload; and sweep throughput of the
study's cells with 1 and 2 workers on a backend (Ray by default).

Workload (the spec's Fig. 2A): d = 1000, ω = 0.3, 10 α in [0.2, 2], 2 initialisations,
4 seeds = 80 models, 5,000 full-batch GD steps (lr 0.15, λ 0.01), float32.

* ``naive``: for every model, its own tokens (n, 2, d), ``f = softmax(h hᵀ) x`` on the
  d-dimensional tokens, ``torch.optim.SGD(weight_decay=λ)`` on the summed loss / (2d) — timed for
  ``--naive-steps`` steps per model (the cost per step is constant) and extrapolated to 5,000
  steps.
* ``batched``: :func:`lmlab.models.attention_student.train_students`, all α and both
  initialisations of a seed at once on nested data; timed in full (5,000 plain GD steps), and
  with heavy-ball momentum 0.9 for 500 steps (validated to reach the same minimum; the table
  also gives the largest difference in ε_t and ε_g between the two).
* ``sweep``: cells of the study (one seed and one ω each) through ``lmlab.sweep`` with 1 and 2
  workers; cells per second.

Usage::

    .venv/bin/python benchmarks/attention_phase_speed.py --threads 1
    .venv/bin/python benchmarks/attention_phase_speed.py --threads 1 --skip-plain   # faster

Writes ``benchmarks/results/attention_phase_speed.md`` and ``.json``.
"""

from __future__ import annotations

import sys

from _common import cpu_model, jsonable, md_table, pin_threads_from_argv, version

_THREADS = pin_threads_from_argv(default=1)

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lmlab.data.attention_teacher import AttentionTask, positional_encodings, sample_group  # noqa: E402
from lmlab.models.attention_student import (  # noqa: E402
    GDConfig,
    StudentSpec,
    initial_query,
    train_students,
)

torch.set_num_threads(_THREADS)
D, OMEGA, SEEDS, STEPS = 1000, 0.3, 4, 5000
ALPHAS = np.linspace(0.2, 2.0, 10)


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--naive-steps", type=int, default=30)
    p.add_argument("--skip-plain", action="store_true",
                   help="skip the 5,000-step batched run (momentum only)")
    p.add_argument("--plain-seeds", type=int, default=SEEDS,
                   help="seeds the 5,000-step batched run times (the rest extrapolated)")
    p.add_argument("--skip-sweep", action="store_true", help="skip the sweep throughput")
    p.add_argument("--sweep-only", action="store_true",
                   help="only the sweep throughput (written to <out>_sweep.md)")
    p.add_argument("--sweep-backend", default="ray", choices=["ray", "process"])
    p.add_argument("--sweep-cells", type=int, default=8)
    p.add_argument("--out", default="benchmarks/results/attention_phase_speed.md")
    return p.parse_args()


def naive_seconds_per_step(data, n: int, init: str, steps: int) -> float:
    """One model, autograd on the tokens, torch.optim.SGD: seconds per step."""
    task = data.task
    x = data.train.x[:n].float()
    z = x - positional_encodings(task).float()
    T = (1 - OMEGA) * data.train.T_sem[:n].float() + OMEGA * task.A_tensor(torch.float32)
    y = T @ z
    Q = initial_query(data, init).float().requires_grad_(True)
    opt = torch.optim.SGD([Q], lr=0.15, weight_decay=0.01)
    start = time.process_time()
    for _ in range(steps):
        h = (x @ Q) * task.scale
        out = torch.softmax(h @ h.transpose(-1, -2), -1) @ x
        loss = ((y - out) ** 2).sum() / (2 * task.d)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.process_time() - start) / steps


def batched(data, gd: GDConfig):
    specs = [StudentSpec(n=max(1, round(a * D)), omega=OMEGA, init=i)
             for a in ALPHAS for i in ("semantic", "positional")]
    start = time.process_time()
    res = train_students(data, specs, gd)
    return time.process_time() - start, res.table


def sweep_rate(backend: str, workers: int, cells: int) -> float:
    from lmlab.studies.attention_phase import Config, Grid, cells_of, simulate_cell
    from lmlab.sweep import SweepConfig, run_sweep

    cfg = Config(gd=GDConfig(steps=500, momentum=0.9),
                 grid=Grid(alpha_min=0.08, alpha_points=25, omegas=(0.3,), seeds=cells),
                 n_test=10_000)
    todo = cells_of(cfg)[:cells]
    start = time.perf_counter()
    run_sweep(simulate_cell, todo, SweepConfig(backend=backend, workers=workers),
              progress=False)
    return len(todo) / (time.perf_counter() - start)


def sweep_only(args: argparse.Namespace) -> None:
    """Cells per second with 1 and 2 workers, nothing else."""
    rates = {w: sweep_rate(args.sweep_backend, w, args.sweep_cells) for w in (1, 2)}
    text = (f"# attention-phase sweep throughput ({args.sweep_backend})\n\n"
            f"Cells of the study at d = {D} (one seed and ω = {OMEGA} per cell, 25 α × 2 "
            f"initialisations, momentum 0.9 for 500 steps, 10,000 test samples), "
            f"{args.sweep_cells} cells per run, one thread per worker; CPU: {cpu_model()}.\n\n"
            + md_table(["workers", "cells/s", "vs 1 worker"],
                       [[str(w), f"{r:.3f}", f"{r / rates[1]:.2f}×"] for w, r in rates.items()])
            + f"\n\nCommand: `.venv/bin/python benchmarks/attention_phase_speed.py --sweep-only "
              f"--sweep-backend {args.sweep_backend} --sweep-cells {args.sweep_cells}`\n")
    print(text)
    path = Path(args.out).with_name(Path(args.out).stem + "_sweep.md")
    path.write_text(text, encoding="utf-8")
    path.with_suffix(".json").write_text(json.dumps(jsonable(rates), indent=2), encoding="utf-8")


def main() -> None:
    args = _args()
    if args.sweep_only:
        sweep_only(args)
        return
    task = AttentionTask(d=D)
    datas = [sample_group(task, n=round(ALPHAS.max() * D), n_test=10_000, seed=s)
             for s in range(SEEDS)]
    naive = {}
    for a in ALPHAS:
        n = max(1, round(a * D))
        naive[float(a)] = sum(naive_seconds_per_step(datas[0], n, i, args.naive_steps)
                              for i in ("semantic", "positional"))
    naive_total = sum(naive.values()) * SEEDS * STEPS
    rows, out = [], {"naive_seconds_per_step_pair": naive, "naive_total": naive_total}
    rows.append(["one model at a time, autograd (extrapolated)", f"{naive_total:,.0f}", "1.0×",
                 f"{args.naive_steps} steps per model measured"])
    tables = {}
    runs = [("momentum", GDConfig(steps=500, momentum=0.9))]
    if not args.skip_plain:
        runs.insert(0, ("plain", GDConfig(steps=STEPS)))
    for name, gd in runs:
        total, parts = 0.0, []
        timed = datas[:args.plain_seeds] if name == "plain" else datas
        for data in timed:
            seconds, table = batched(data, gd)
            total += seconds
            parts.append(table)
        how = "measured in full"
        if len(timed) < SEEDS:
            how = f"{len(timed)} of {SEEDS} seeds measured, × {SEEDS / len(timed):g}"
            total *= SEEDS / len(timed)
        tables[name] = parts
        out[f"batched_{name}_seconds"] = total
        label = ("batched, plain GD 5,000 steps" if name == "plain"
                 else "batched, momentum 0.9, 500 steps")
        rows.append([label, f"{total:,.1f}", f"{naive_total / total:,.0f}×", how])
    if "plain" in tables:
        diffs = {c: max(float((p[c] - m[c]).abs().max()) for p, m in
                        zip(tables["plain"], tables["momentum"], strict=False))
                 for c in ("eps_t", "eps_g")}
        out["momentum_vs_plain_max_abs_diff"] = diffs
    rates: dict[int, float] = {}
    for workers in (() if args.skip_sweep else (1, 2)):
        try:
            rates[workers] = sweep_rate(args.sweep_backend, workers, args.sweep_cells)
        except Exception as e:  # noqa: BLE001 - report, do not crash the benchmark
            print(f"sweep with {workers} worker(s) failed: {e}", file=sys.stderr)
    out["sweep_cells_per_second"] = rates
    text = ["# attention-phase: batched trainer vs one model at a time\n",
            f"Fig. 2A workload: d = {D}, ω = {OMEGA}, {len(ALPHAS)} α in [0.2, 2], 2 "
            f"initialisations, {SEEDS} seeds ({len(ALPHAS) * 2 * SEEDS} models), float32. CPU "
            f"seconds of this process, {_THREADS} thread(s); CPU: {cpu_model()}; torch "
            f"{version('torch')}.\n",
            f"Command: `.venv/bin/python benchmarks/attention_phase_speed.py --threads "
            f"{_THREADS}{' --skip-plain' if args.skip_plain else ''}"
            f"{f' --plain-seeds {args.plain_seeds}' if args.plain_seeds != SEEDS else ''}"
            f"{' --skip-sweep' if args.skip_sweep else ''}`\n",
            md_table(["trainer", "CPU s", "speed-up", "how"], rows), ""]
    if "momentum_vs_plain_max_abs_diff" in out:
        d = out["momentum_vs_plain_max_abs_diff"]
        text.append(f"Momentum 500 steps vs plain GD 5,000 steps, largest difference over the "
                    f"models of the seeds run both ways: ε_t {d['eps_t']:.1e}, "
                    f"ε_g {d['eps_g']:.1e}.\n")
    if rates:
        text.append(f"Sweep of study cells (d = 1000, one seed and ω = 0.3 per cell, 25 α × 2 "
                    f"inits, momentum 500 steps, 10,000 test samples), backend "
                    f"{args.sweep_backend}: " + ", ".join(
                        f"{w} worker(s) {r:.3f} cells/s" for w, r in rates.items())
                    + (f"; 2 workers / 1 worker = {rates[2] / rates[1]:.2f}×" if len(rates) == 2
                       else "") + ".\n")
    report = "\n".join(text)
    print(report)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report, encoding="utf-8")
    path.with_suffix(".json").write_text(json.dumps(jsonable(out), indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
