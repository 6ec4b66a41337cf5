"""Benchmark: a Llama-7B-shaped bf16 checkpoint analysed on a small machine (2 cores, < 2 GiB).

1. Generates (once, into ``--cache-dir``) a sharded bf16 safetensors directory shaped like
   Llama-7B with random N(0, 0.02²) weights: 32 blocks of d = 4096 (q/k/v/o 4096×4096, gate/up
   11008×4096, down 4096×11008), ``embed_tokens`` and ``lm_head`` 32000×4096, a ``config.json``
   and a ``model.safetensors.index.json`` (~13.5 GB for all 32 blocks). One shard per block;
   each tensor is written in row chunks straight into its shard (seeded from its name), so
   generation holds one chunk at a time. ``--layers N`` generates and analyses only the first
   N blocks (plus the embeddings and the head); more blocks are added to the same directory
   when a later run asks for them.
2. Analyses the first ``--layers`` blocks + embeddings in a fresh child process per mode:
   ``serial1`` (one core: ``workers=1, threads=1``), ``workers2`` (two worker processes, one
   BLAS thread each) and, with ``--modes``, ``threads2`` (serial, two BLAS threads). Wall time
   and memory of the whole process tree (the child and its workers) are measured from outside:
   the peak of the summed RSS (sampled every 0.1 s), the sum of each process's own high-water
   mark (``VmHWM``, exact; an upper bound of the simultaneous total) and the peak summed PSS
   (shared library pages counted once).
3. Measures the one-core eigenvalue floor: the time ``numpy.linalg.eigvalsh`` alone takes on
   a float64 Gram matrix of each distinct shape (M×M; here every matrix has M = 4096), times
   the number of matrices of that shape.
4. Checks that every mode gives identical rows (same order, same values bit for bit), and
   writes ``benchmarks/results/spectral_7b_shaped.{md,json}``.

Usage::

    .venv/bin/python benchmarks/spectral_7b_shaped.py --layers 2          # quick check
    .venv/bin/python benchmarks/spectral_7b_shaped.py                     # all 32 blocks (~1 h)

Run it on an otherwise idle machine: the two-core ratio means nothing when other work shares
the cores (the load average is recorded before and after).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from _common import cpu_model, jsonable, md_table, version

HIDDEN, MLP, VOCAB, N_BLOCKS = 4096, 11008, 32000, 32
_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")
GIB = 2**30
MODES = {"serial1": (1, 1, "1 core: serial, 1 BLAS thread"),
         "workers2": (2, 1, "2 cores: 2 worker processes, 1 BLAS thread each"),
         "threads2": (1, 2, "2 cores: serial, 2 BLAS threads")}


# ----------------------------------------------------------------------------- the checkpoint


def block_tensors(i: int) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of block ``i`` as Hugging Face's Llama names them."""
    pre = f"model.layers.{i}"
    out: list[tuple[str, tuple[int, ...]]] = [
        (f"{pre}.self_attn.{p}.weight", (HIDDEN, HIDDEN)) for p in _ATTN]
    out += [(f"{pre}.mlp.gate_proj.weight", (MLP, HIDDEN)),
            (f"{pre}.mlp.up_proj.weight", (MLP, HIDDEN)),
            (f"{pre}.mlp.down_proj.weight", (HIDDEN, MLP)),
            (f"{pre}.input_layernorm.weight", (HIDDEN,)),
            (f"{pre}.post_attention_layernorm.weight", (HIDDEN,))]
    return out


def shards(n_blocks: int) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """Shard file name -> its tensors: the embedding, one shard per block, the head."""
    out = {"model-embed.safetensors": [("model.embed_tokens.weight", (VOCAB, HIDDEN))]}
    for i in range(n_blocks):
        out[f"model-block-{i:02d}.safetensors"] = block_tensors(i)
    out["model-head.safetensors"] = [("model.norm.weight", (HIDDEN,)),
                                     ("lm_head.weight", (VOCAB, HIDDEN))]
    return out


def write_shard(path: Path, tensors: list[tuple[str, tuple[int, ...]]]) -> None:
    """One bf16 safetensors file, written tensor by tensor in row chunks (atomically)."""
    import torch

    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in tensors:
        size = 2 * int(torch.Size(shape).numel())
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset,
                                                                                offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for name, shape in tensors:
            if len(shape) == 1:  # norm weights: ones
                f.write(torch.ones(shape, dtype=torch.bfloat16).view(torch.int16).numpy())
                continue
            g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            rows, cols = shape
            for a in range(0, rows, 1024):
                chunk = torch.randn(min(1024, rows - a), cols, generator=g) * 0.02
                f.write(chunk.to(torch.bfloat16).view(torch.int16).numpy().tobytes())
    tmp.replace(path)


def config() -> dict[str, Any]:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": HIDDEN, "intermediate_size": MLP, "num_hidden_layers": N_BLOCKS,
            "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": VOCAB,
            "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "hidden_act": "silu",
            "tie_word_embeddings": False, "torch_dtype": "bfloat16"}


def ensure_model(root: Path, n_blocks: int) -> dict[str, Any]:
    """Write whatever shards the first ``n_blocks`` blocks need and are missing; rewrite the
    index over every shard present. Returns what was done."""
    import resource

    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config(), indent=2) + "\n")
    start, written = time.perf_counter(), []
    for name, tensors in shards(n_blocks).items():
        if not (root / name).exists():
            print(f"  writing {name}", flush=True)
            write_shard(root / name, tensors)
            written.append(name)
    weight_map = {t: name for name, ts in shards(N_BLOCKS).items() if (root / name).exists()
                  for t, _ in ts}
    size = sum((root / n).stat().st_size for n in set(weight_map.values()))
    index = {"metadata": {"total_size": size}, "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=1) + "\n")
    return {"path": str(root), "written": written, "seconds": time.perf_counter() - start,
            "bytes_on_disk": size, "generation_peak_rss_mb":
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def analysed_names(n_blocks: int) -> list[str]:
    """Longnames of the matrices analysed: the embedding, the first blocks, the head."""
    names = ["model.embed_tokens"]
    for i in range(n_blocks):
        names += [f"model.layers.{i}.self_attn.{p}" for p in _ATTN]
        names += [f"model.layers.{i}.mlp.{p}" for p in _MLP]
    return [*names, "lm_head"]


# ----------------------------------------------------------------------------- measuring


_CHILD = """
import json, sys, time
path, workers, threads, names, out = sys.argv[1:6]
from lmlab.spectral import analyze
t0 = time.perf_counter()
df = analyze(path, layers=json.loads(names), workers=int(workers), threads=int(threads),
             progress=sys.stderr.isatty())
seconds = time.perf_counter() - t0
df.to_parquet(out)
print("RESULT " + json.dumps({"seconds": seconds, "rows": len(df),
                              "success": int((df["status"] == "success").sum())}))
"""


def _vmhwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class TreeMemory(threading.Thread):
    """Samples the memory of a process and its descendants until stopped."""

    def __init__(self, pid: int, every: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak_rss_sum = self.peak_pss_sum = self.peak_rss_one = 0
        self.hwm: dict[int, int] = {}
        self.pids: set[int] = set()
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        tick = 0
        while not self._halt.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            rss = 0
            for p in procs:
                try:
                    r = p.memory_info().rss
                except psutil.Error:
                    continue
                self.pids.add(p.pid)
                rss += r
                self.peak_rss_one = max(self.peak_rss_one, r)
                hwm = _vmhwm_kb(p.pid)
                if hwm is not None:
                    self.hwm[p.pid] = max(self.hwm.get(p.pid, 0), hwm * 1024)
            self.peak_rss_sum = max(self.peak_rss_sum, rss)
            if tick % 5 == 0:
                pss = 0
                for p in procs:
                    try:
                        pss += p.memory_full_info().pss
                    except (psutil.Error, AttributeError):
                        continue
                self.peak_pss_sum = max(self.peak_pss_sum, pss)
            tick += 1
            time.sleep(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def run_mode(mode: str, path: Path, names: list[str], out: Path) -> dict[str, Any]:
    workers, threads, label = MODES[mode]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    print(f"== {mode}: {label}", flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), str(workers),
                             str(threads), json.dumps(names), str(out)],
                            stdout=subprocess.PIPE, stderr=None, text=True, env=env)
    monitor = TreeMemory(proc.pid)
    monitor.start()
    stdout, _ = proc.communicate()
    wall = time.perf_counter() - start
    monitor.stop()
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"mode {mode} failed (exit {proc.returncode})")
    result = json.loads(lines[-1][len("RESULT "):])
    mb = 1 / 2**20
    row = {"mode": mode, "label": label, "workers": workers, "threads": threads,
           "seconds": result["seconds"], "process_seconds": wall, "rows": result["rows"],
           "success": result["success"], "processes": len(monitor.pids),
           "peak_rss_sum_mb": monitor.peak_rss_sum * mb,
           "sum_of_process_peaks_mb": sum(monitor.hwm.values()) * mb,
           "largest_process_peak_mb": max(monitor.hwm.values(), default=0) * mb,
           "peak_pss_sum_mb": monitor.peak_pss_sum * mb}
    print(f"   {row['seconds']:.1f} s; peak RSS of the tree {row['peak_rss_sum_mb']:.0f} MiB "
          f"(sum of process peaks {row['sum_of_process_peaks_mb']:.0f} MiB, PSS "
          f"{row['peak_pss_sum_mb']:.0f} MiB)", flush=True)
    return row


_FLOOR = """
import json, sys, time
import numpy as np
M, repeats = int(sys.argv[1]), int(sys.argv[2])
X = np.random.default_rng(0).standard_normal((M, M))
G = X.T @ X
times = []
for _ in range(repeats):
    t0 = time.perf_counter(); np.linalg.eigvalsh(G); times.append(time.perf_counter() - t0)
print("RESULT " + json.dumps(min(times)))
"""


def eig_floor(shapes: dict[int, int], repeats: int) -> dict[str, Any]:
    """One-core eigvalsh time per distinct Gram size M, times the matrices of that size."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    per: dict[str, Any] = {}
    total = 0.0
    for M, count in sorted(shapes.items()):
        out = subprocess.run([sys.executable, "-c", _FLOOR, str(M), str(repeats)], env=env,
                             capture_output=True, text=True, check=True).stdout
        t = json.loads([ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1][7:])
        per[str(M)] = {"eigvalsh_seconds": t, "matrices": count, "seconds": t * count}
        total += t * count
    return {"per_gram_size": per, "seconds": total}


# ----------------------------------------------------------------------------- report


def render(meta: dict[str, Any], model: dict[str, Any], runs: list[dict[str, Any]],
           floor: dict[str, Any], checks: dict[str, Any]) -> str:
    lines = [f"# A Llama-7B-shaped checkpoint on a small machine ({meta['blocks']} of 32 "
             "blocks + embeddings)", "",
             f"Measured {meta['date']} on {meta['cpu_model']} ({meta['cpu_count']} cores), "
             f"load average {meta['load_before'][0]:.2f} before, "
             f"{meta['load_after'][0]:.2f} after"
             + (" — **other work was running: timings are preliminary**"
                if max(meta['load_before'][0], meta['load_after'][0]) > 0.5 * meta['cpu_count']
                else "") + ".", "",
             f"Command: `{meta['command']}`", "",
             f"Checkpoint: {model['matrices']} matrices analysed from `{model['path']}` "
             f"({model['bytes_on_disk'] / 1e9:.2f} GB of bf16 shards present).", ""]
    rows = [[r["label"], f"{r['seconds']:.1f}", f"{r['peak_rss_sum_mb']:.0f}",
             f"{r['sum_of_process_peaks_mb']:.0f}", f"{r['peak_pss_sum_mb']:.0f}",
             str(r["processes"])] for r in runs]
    lines += [md_table(["mode", "seconds", "peak RSS, whole tree (MiB)",
                        "sum of process peaks (MiB)", "peak PSS (MiB)", "processes"], rows), ""]
    lines += [f"One-core eigenvalue floor: {floor['seconds']:.1f} s = Σ over Gram sizes of "
              "(numpy.linalg.eigvalsh time on one M×M float64 matrix) × (matrices of that "
              "size): " + "; ".join(f"M = {m}: {v['eigvalsh_seconds']:.2f} s × {v['matrices']}"
                                    for m, v in floor["per_gram_size"].items()) + ".", ""]
    lines += [f"- {k}: {v}" for k, v in checks.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=N_BLOCKS,
                   help="analyse the first N blocks + embeddings (default all 32)")
    p.add_argument("--cache-dir", default=None,
                   help="where the generated checkpoint lives (default: lmlab's cache, "
                        "bench/llama-7b-shaped)")
    p.add_argument("--modes", default="serial1,workers2",
                   help=f"comma-separated subset of {','.join(MODES)}")
    p.add_argument("--floor-repeats", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/spectral_7b_shaped.md")
    args = p.parse_args(argv)
    if not 1 <= args.layers <= N_BLOCKS:
        p.error(f"--layers must be between 1 and {N_BLOCKS}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        p.error(f"--modes: choose from {', '.join(MODES)}")
    if args.cache_dir:
        root = Path(args.cache_dir).expanduser()
    else:
        from lmlab.runtime import cache_dir

        root = cache_dir("bench/llama-7b-shaped")
    meta = {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "blocks": args.layers,
            "load_before": os.getloadavg(),
            "versions": {"python": platform.python_version(), "numpy": version("numpy"),
                         "torch": version("torch"), "lmlab": version("lmlab")},
            "command": " ".join([Path(sys.executable).name, *sys.argv])}
    print(f"checkpoint in {root}", flush=True)
    model = ensure_model(root, args.layers)
    names = analysed_names(args.layers)
    model["matrices"] = len(names)
    runs, frames = [], {}
    with tempfile.TemporaryDirectory(prefix="lmlab_7b_") as tmp:
        for mode in modes:
            runs.append(run_mode(mode, root, names, Path(tmp) / f"{mode}.parquet"))
            import pandas as pd

            frames[mode] = pd.read_parquet(Path(tmp) / f"{mode}.parquet")
    meta["load_after"] = os.getloadavg()
    floor = eig_floor({HIDDEN: len(names)}, args.floor_repeats)
    first = frames[modes[0]]
    identical = all(frames[m].equals(first) for m in modes[1:])
    by = {r["mode"]: r for r in runs}
    checks: dict[str, Any] = {
        "rows identical in every mode (same order, bit for bit)": identical,
        "every matrix analysed": all(r["rows"] == len(names) for r in runs),
        "peak RSS of the whole tree under 2 GiB in every mode":
            all(r["peak_rss_sum_mb"] < 2048 for r in runs),
        "sum of process peaks under 2 GiB in every mode":
            all(r["sum_of_process_peaks_mb"] < 2048 for r in runs),
    }
    if "serial1" in by:
        checks["one core / eigenvalue floor"] = round(by["serial1"]["seconds"] / floor["seconds"],
                                                      3)
        for m in ("workers2", "threads2"):
            if m in by:
                checks[f"speed-up of {m} over one core (target ≥ 1.7 for workers2)"] = round(
                    by["serial1"]["seconds"] / by[m]["seconds"], 3)
    text = render(meta, model, runs, floor, checks)
    print("\n" + text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    payload = {"meta": meta, "model": model, "runs": runs, "floor": floor, "checks": checks}
    out.with_suffix(".json").write_text(json.dumps(jsonable(payload), indent=2) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
