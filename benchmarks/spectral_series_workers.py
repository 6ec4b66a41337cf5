"""Benchmark: a folder of training checkpoints analysed on one core and on a process pool.

Generates (once, into ``--cache-dir``) ``--checkpoints`` checkpoint folders ``step_N/`` of a
GPT-2-small-shaped model (12 blocks of d = 768, the 50257 × 768 embedding; **random bf16
weights**, N(0, 0.02²), a different seed per step, ~250 MB each), then analyses the series
twice in this process, the files already in the page cache:

* ``serial1``: one checkpoint after another in this process, one BLAS thread;
* ``workers2``: a process pool of two workers, one BLAS thread each (the default on 2 cores),
  worker start-up (importing torch) included in the time.

It checks that both give the same rows (same order, the same values bit for bit) and writes
``benchmarks/results/spectral_series_workers.{md,json}``. Run it on an otherwise idle machine
(the load average is recorded before and after).

Usage::

    .venv/bin/python benchmarks/spectral_series_workers.py                  # 8 checkpoints
    .venv/bin/python benchmarks/spectral_series_workers.py --checkpoints 4
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before NumPy and torch are imported: one thread per process

from _common import cpu_model, jsonable, md_table  # noqa: E402

HIDDEN, VOCAB, BLOCKS, POSITIONS = 768, 50257, 12, 1024


def shapes() -> list[tuple[str, tuple[int, ...]]]:
    """GPT-2 small's tensors, by Hugging Face's names (Conv1D weights are in × out)."""
    out: list[tuple[str, tuple[int, ...]]] = [("transformer.wte.weight", (VOCAB, HIDDEN)),
                                              ("transformer.wpe.weight", (POSITIONS, HIDDEN))]
    for i in range(BLOCKS):
        p = f"transformer.h.{i}"
        out += [(f"{p}.attn.c_attn.weight", (HIDDEN, 3 * HIDDEN)),
                (f"{p}.attn.c_proj.weight", (HIDDEN, HIDDEN)),
                (f"{p}.mlp.c_fc.weight", (HIDDEN, 4 * HIDDEN)),
                (f"{p}.mlp.c_proj.weight", (4 * HIDDEN, HIDDEN))]
    return out


def generate(folder: Path, n: int) -> list[Path]:
    """``step_0``, ``step_100``, ... with ``model.safetensors`` each (made once)."""
    import torch
    from safetensors.torch import save_file

    made = []
    for k in range(n):
        ckpt = folder / f"step_{100 * k}"
        target = ckpt / "model.safetensors"
        if not target.is_file():
            ckpt.mkdir(parents=True, exist_ok=True)
            g = torch.Generator().manual_seed(1000 + k)
            tensors = {name: (torch.randn(shape, generator=g) * 0.02).to(torch.bfloat16)
                       for name, shape in shapes()}
            save_file(tensors, str(target.with_suffix(".tmp")))
            target.with_suffix(".tmp").rename(target)
        made.append(target)
    return made


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", type=int, default=8)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--out", default="benchmarks/results/spectral_series_workers.md")
    args = p.parse_args()

    from lmlab.runtime import cache_dir
    from lmlab.spectral.options import AnalyzeOptions
    from lmlab.spectral.series import analyze_series, find_checkpoints
    from lmlab.sweep import SweepConfig

    folder = Path(args.cache_dir) if args.cache_dir else cache_dir() / "bench" / "gpt2-series"
    files = generate(folder, args.checkpoints)
    for f in files:  # into the page cache: both modes read from memory
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass
    checkpoints = [c for c in find_checkpoints(folder)][: args.checkpoints]
    load_before = os.getloadavg()[0]
    modes = {"serial1": SweepConfig(backend="inprocess", threads_per_worker=1),
             "workers2": SweepConfig(backend="process", workers=2, threads_per_worker=1)}
    tables, seconds = {}, {}
    for mode, sweep in modes.items():
        t0 = time.perf_counter()
        tables[mode] = analyze_series(checkpoints, AnalyzeOptions(), sweep=sweep, progress=False)
        seconds[mode] = time.perf_counter() - t0
        print(f"{mode}: {seconds[mode]:.1f} s, {len(tables[mode])} rows", flush=True)
    load_after = os.getloadavg()[0]
    a, b = tables["serial1"], tables["workers2"]
    identical = a.shape == b.shape and a.equals(b)
    ratio = seconds["serial1"] / seconds["workers2"]
    n_matrices = int((a["status"] == "success").sum()) if "status" in a else len(a)
    report = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "cpu": cpu_model(), "cores": os.cpu_count(), "load_before": load_before,
              "load_after": load_after, "checkpoints": len(checkpoints),
              "matrices": n_matrices, "seconds": seconds, "speedup": ratio,
              "identical_rows": identical}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(jsonable(report), indent=1) + "\n")
    rows = [[m, f"{seconds[m]:.1f}", f"{seconds['serial1'] / seconds[m]:.2f}"] for m in modes]
    out.write_text(
        f"# A folder of {len(checkpoints)} checkpoints on one core and on two worker processes"
        f"\n\nMeasured {report['date']} on {report['cpu']} ({report['cores']} cores), load "
        f"average {load_before:.2f} before, {load_after:.2f} after.\n\n"
        f"Command: `python benchmarks/spectral_series_workers.py --checkpoints "
        f"{len(checkpoints)}`\n\nCheckpoints: `step_N/model.safetensors`, GPT-2-small-shaped, "
        f"random bf16 weights; {n_matrices} matrices in all, read from the page cache.\n\n"
        + md_table(["mode", "seconds", "speed-up over one core"], rows)
        + f"\n\n- rows identical in both modes (same order, bit for bit): {identical}\n"
        f"- the pool's time includes starting its two workers (each imports torch)\n")
    print(out.read_text())
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
