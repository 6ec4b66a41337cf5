"""Forward-pass overhead of lmlab.hooks: capture and ablation vs. plain PyTorch hooks (and nnsight).

Models (random weights, built locally, eval mode, no grad):

- ``tiny``: GPT-2 with 2 layers, width 64, 4 heads, vocabulary 1,000; batch 4 x 32 tokens
  (a forward pass of about a millisecond, where per-hook Python costs show).
- ``gpt2-small``: GPT-2 small's shape (12 layers, width 768, 12 heads, vocabulary 50,257);
  batch 1 x 128 tokens.

Variants, each a full forward pass (entering and leaving the hook context every pass):

- ``none``: the bare model.
- ``plain-dict``: the minimal baseline, a dict filled by forward hooks registered directly with
  ``register_forward_hook`` on every block (and removed after the pass).
- ``lmlab-capture``: ``lmlab.hooks.capture`` of every block's output.
- ``lmlab-zero`` / ``lmlab-uniform``: ``lmlab.hooks.ablate`` in every layer.
- ``nnsight``: ``NNsight(model).trace`` saving every block's output, if nnsight imports.

Threads are fixed before torch is imported; every variant is warmed up; the variants run
interleaved (rotating order) and the median of the repeats is reported, in CPU time of this
process (``time.process_time``: robust to other processes on a shared machine; with one thread
it is the forward pass's own time) and in wall-clock time. Ratios and PASS/FAIL use CPU time.
Target: lmlab capture of one activation per layer within 10 % of the bare forward pass
(PASS/FAIL per model).

Run from the project root::

    .venv/bin/python benchmarks/hooks_overhead.py --threads 1
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

TARGET = 0.10


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=0,
                   help="timed repeats per variant (default: 200 for tiny, 15 for gpt2-small)")
    p.add_argument("--models", default="tiny,gpt2-small")
    p.add_argument("--nnsight-path", default="",
                   help="a directory to put on sys.path to import nnsight from")
    p.add_argument("--out", default="benchmarks/results/hooks_overhead.md")
    return p.parse_args()


ARGS = _args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)
if ARGS.nnsight_path:
    sys.path.insert(0, ARGS.nnsight_path)

import torch  # noqa: E402
import transformers  # noqa: E402

from lmlab.hooks import ablate, capture  # noqa: E402

torch.set_num_threads(ARGS.threads)

SHAPES = {
    "tiny": ({"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 1000}, (4, 32), 200, 10),
    "gpt2-small": ({"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257},
                   (1, 128), 15, 1),
}


def _nnsight() -> tuple[object | None, str]:
    try:
        import nnsight
    except ImportError as err:
        return None, f"not importable ({err.name})"
    return nnsight, str(nnsight.__version__)


def _variants(model: torch.nn.Module, ids: torch.Tensor, nn_mod: object | None
              ) -> dict[str, Callable[[], object]]:
    blocks = [f"transformer.h.{i}" for i in range(model.config.n_layer)]
    modules = [model.get_submodule(p) for p in blocks]

    def none() -> object:
        return model(ids)

    def plain_dict() -> object:
        store: dict[str, torch.Tensor] = {}
        handles = []
        for name, module in zip(blocks, modules, strict=True):
            def hook(m: torch.nn.Module, a: object, o: torch.Tensor, name: str = name) -> None:
                store[name] = (o[0] if isinstance(o, tuple) else o).detach()
            handles.append(module.register_forward_hook(hook))
        try:
            model(ids)
        finally:
            for h in handles:
                h.remove()
        assert len(store) == len(blocks)
        return store

    def lmlab_capture() -> object:
        with capture(model, blocks) as cache:
            model(ids)
        assert len(cache) == len(blocks)
        return cache

    def lmlab_zero() -> object:
        with ablate(model, "zero"):
            return model(ids)

    def lmlab_uniform() -> object:
        with ablate(model, "uniform"):
            return model(ids)

    variants: dict[str, Callable[[], object]] = {
        "none": none, "plain-dict": plain_dict, "lmlab-capture": lmlab_capture,
        "lmlab-zero": lmlab_zero, "lmlab-uniform": lmlab_uniform,
    }
    if nn_mod is not None:
        # a copy, so that whatever nnsight does to a model cannot slow the other variants
        traced = nn_mod.NNsight(copy.deepcopy(model))  # type: ignore[attr-defined]

        def nnsight_trace() -> object:
            saved = []
            with traced.trace(ids):
                for i in range(len(blocks)):
                    saved.append(traced.transformer.h[i].output.save())
            assert len(saved) == len(blocks)
            return saved

        variants["nnsight"] = nnsight_trace
    return variants


def _time(fn: Callable[[], object], inner: int) -> tuple[float, float]:
    """Seconds per call: (wall clock, CPU time of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - wall) / inner, (time.process_time() - cpu) / inner


def bench(key: str, nn_mod: object | None) -> dict[str, object]:
    shape, (batch, seq), repeats, inner = SHAPES[key]
    repeats = ARGS.repeats or repeats
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(**shape, n_positions=1024, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))
    variants = _variants(model, ids, nn_mod)
    names = list(variants)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        for name in names:  # warm-up
            for _ in range(3):
                variants[name]()
        for r in range(repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                w, c = _time(variants[name], inner)
                wall[name].append(w)
                cpu[name].append(c)
    rows = {}
    for n in names:
        rows[n] = {
            "cpu_ms": 1e3 * statistics.median(cpu[n]),
            "wall_ms": 1e3 * statistics.median(wall[n]),
            "ratio": statistics.median(cpu[n]) / statistics.median(cpu["none"]),
            "wall_ratio": statistics.median(wall[n]) / statistics.median(wall["none"]),
        }
        rows[n]["overhead_pct"] = 100 * (rows[n]["ratio"] - 1)
    return {"model": key, "n_layer": shape["n_layer"], "n_embd": shape["n_embd"],
            "vocab": shape["vocab_size"], "batch": batch, "seq": seq, "repeats": repeats,
            "inner": inner, "variants": rows,
            "capture_pass": rows["lmlab-capture"]["ratio"] <= 1 + TARGET}


def _markdown(results: list[dict], env: dict[str, str]) -> str:
    lines = ["# lmlab.hooks forward overhead", "",
             "Command: `" + " ".join([".venv/bin/python", "benchmarks/hooks_overhead.py",
                                      *sys.argv[1:]]) + "`", "",
             "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), ""]
    for res in results:
        lines += [f"## {res['model']}: GPT-2 shape, {res['n_layer']} layers, width "
                  f"{res['n_embd']}, vocabulary {res['vocab']}, "
                  f"batch {res['batch']} x {res['seq']} tokens "
                  f"(median of {res['repeats']} repeats x {res['inner']} passes)", "",
                  "| variant | CPU ms / forward | ratio to none | overhead | wall ms | "
                  "wall ratio |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, row in res["variants"].items():
            lines.append(f"| {name} | {row['cpu_ms']:.3f} | {row['ratio']:.3f} | "
                         f"{row['overhead_pct']:+.1f} % | {row['wall_ms']:.3f} | "
                         f"{row['wall_ratio']:.3f} |")
        verdict = "PASS" if res["capture_pass"] else "FAIL"
        lines += ["", f"Target: lmlab-capture of one activation per layer ≤ "
                      f"{100 * TARGET:.0f} % overhead: **{verdict}**", ""]
    return "\n".join(lines)


def main() -> None:
    nn_mod, nn_version = _nnsight()
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__, "nnsight": nn_version,
           "threads": str(torch.get_num_threads()), "cpu": platform.processor() or "unknown"}
    print("environment:", env)
    results = []
    for key in ARGS.models.split(","):
        res = bench(key, nn_mod)
        results.append(res)
        print(f"\n{key}:")
        for name, row in res["variants"].items():
            print(f"  {name:14s} cpu {row['cpu_ms']:9.3f} ms  x{row['ratio']:.3f} "
                  f"({row['overhead_pct']:+6.1f} %)   wall {row['wall_ms']:9.3f} ms  "
                  f"x{row['wall_ratio']:.3f}")
        print(f"  capture overhead target ≤ {100 * TARGET:.0f} %: "
              f"{'PASS' if res['capture_pass'] else 'FAIL'}")
    out = Path(ARGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_markdown(results, env) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"environment": env, "target": TARGET,
                                                    "results": results}, indent=2) + "\n")
    print(f"\nwrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
