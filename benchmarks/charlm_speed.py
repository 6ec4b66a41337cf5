"""Training speed of the charlm MLPs: lmlab's fused step against a plain PyTorch loop.

The plain loop is the exercise sheet's: one model at a time, autograd, ``torch.optim.SGD``, one
``torch.randint`` minibatch of 32 per step (lmlab.models.char_mlp.CharMLP, the readable module,
whose gradients the fused step reproduces). lmlab trains the same model with
``CharMLPEnsemble.step`` — one member alone, and the study's whole set of variants (E01, E03 and
the initialisations) together as one batched model.

Measured on the real names (SSA 2017, block 3, the training split), same seed, same minibatches,
interleaved repeats, median; times are CPU seconds of this process (robust to other processes
on a shared machine; with one thread, the loop's own time) and wall seconds. Targets:

* a single E01 model: fused ≥ 1.5× the plain loop's steps/s;
* the study's set: training all variants together ≥ 4× faster than the plain loop training them
  one after another.

It also checks that the mathematics is unchanged: E01's mean training loss over the last 1,000
steps and its dev loss, plain vs fused, after the same steps from the same seed.

Usage::

    .venv/bin/python benchmarks/charlm_speed.py --threads 1 --steps 4000 --repeats 3

Writes ``benchmarks/results/charlm_speed.md`` and ``.json``.
"""

from __future__ import annotations

import sys

from _common import blas_info, cpu_model, jsonable, md_table, pin_threads_from_argv, version

_THREADS = pin_threads_from_argv(default=1)

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from lmlab.data.names import Vocab, context_windows, split_words, ssa_names  # noqa: E402
from lmlab.models.char_mlp import CharMLP, CharMLPEnsemble, MLPShape  # noqa: E402
from lmlab.studies.charlm import VARIANTS  # noqa: E402
from lmlab.train.sampled import StepConfig, train_ensemble  # noqa: E402

torch.set_num_threads(_THREADS)
SEED = 2147483647


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=4000, help="steps per timed run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/charlm_speed.md")
    return p.parse_args()


def plain_loop(variant: str, X: torch.Tensor, Y: torch.Tensor, steps: int
               ) -> tuple[CharMLP, list[float]]:
    """The sheet's loop: autograd and torch.optim.SGD, one model."""
    gen = torch.Generator().manual_seed(SEED)
    model = CharMLP(MLPShape(), VARIANTS[variant], generator=gen)  # init draws from gen
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for i in range(steps):
        ix = torch.randint(0, X.shape[0], (32,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(X[ix]), Y[ix])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for group in opt.param_groups:
            group["lr"] = 0.1 if i < 100_000 else 0.01
        opt.step()
        losses.append(loss.item())
    return model, losses


def fused(variants: list[str], X: torch.Tensor, Y: torch.Tensor, steps: int
          ) -> tuple[CharMLPEnsemble, torch.Tensor]:
    ens = CharMLPEnsemble(MLPShape(), [VARIANTS[v] for v in variants], seed=SEED)
    res = train_ensemble(ens, X, Y, StepConfig(steps=steps, diag_every=0))
    return ens, res.losses


def timed(fn, *args):  # noqa: ANN001, ANN202
    c, w = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.process_time() - c, time.perf_counter() - w


def main() -> None:
    args = _args()
    words = ssa_names(2017)
    vocab = Vocab.from_words(words)
    train, dev, _ = split_words(words)
    X, Y = context_windows(train, vocab, 3)
    Xdv, Ydv = context_windows(dev, vocab, 3)
    names = list(VARIANTS)
    n = args.steps
    cpu: dict[str, list[float]] = {}
    wall: dict[str, list[float]] = {}
    check: dict[str, float] = {}
    fused(names, X, Y, 200)  # warm-up
    plain_loop("e01", X, Y, 200)
    for r in range(args.repeats):
        for v in names:
            (model, losses), c, w = timed(plain_loop, v, X, Y, n)
            cpu.setdefault(f"plain:{v}", []).append(c)
            wall.setdefault(f"plain:{v}", []).append(w)
            if v == "e01" and r == 0:
                model.eval()
                with torch.no_grad():
                    check["plain_dev"] = float(torch.nn.functional.cross_entropy(model(Xdv), Ydv))
                check["plain_last1000"] = statistics.mean(losses[-1000:])
        (ens, losses_f), c, w = timed(fused, ["e01"], X, Y, n)
        cpu.setdefault("fused:e01", []).append(c)
        wall.setdefault("fused:e01", []).append(w)
        if r == 0:
            check["fused_dev"] = float(ens.loss(Xdv, Ydv)[0])
            check["fused_last1000"] = float(losses_f[0, -1000:].mean())
        _, c, w = timed(fused, names, X, Y, n)
        cpu.setdefault("fused:set", []).append(c)
        wall.setdefault("fused:set", []).append(w)
        print(f"repeat {r + 1}/{args.repeats} done", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in cpu.items()}
    medw = {k: statistics.median(v) for k, v in wall.items()}
    single = med["plain:e01"] / med["fused:e01"]
    plain_set = sum(med[f"plain:{v}"] for v in names)
    set_ratio = plain_set / med["fused:set"]
    rows = [[f"plain loop, {v}", f"{n / med[f'plain:{v}']:,.0f}", f"{med[f'plain:{v}']:.2f}",
             f"{medw[f'plain:{v}']:.2f}", ""] for v in names]
    rows.append(["fused, e01 alone", f"{n / med['fused:e01']:,.0f}", f"{med['fused:e01']:.2f}",
                 f"{medw['fused:e01']:.2f}", f"{single:.2f}× vs plain e01"])
    rows.append([f"fused, all {len(names)} variants at once", f"{n / med['fused:set']:,.0f}",
                 f"{med['fused:set']:.2f}", f"{medw['fused:set']:.2f}",
                 f"{set_ratio:.2f}× vs plain, one after another ({plain_set:.2f} s)"])
    table = md_table(["run", "steps/s (CPU)", "CPU s", "wall s", "ratio"], rows)
    verdict = (f"single E01: {single:.2f}× (target ≥ 1.5×: {'PASS' if single >= 1.5 else 'FAIL'})"
               f"; set of {len(names)}: {set_ratio:.2f}× (target ≥ 4×: "
               f"{'PASS' if set_ratio >= 4 else 'FAIL'})")
    same = (f"E01 after {n:,} steps from the same seed and minibatches — mean training loss of "
            f"the last 1,000 steps: plain {check['plain_last1000']:.4f}, fused "
            f"{check['fused_last1000']:.4f}; dev loss: plain {check['plain_dev']:.4f}, fused "
            f"{check['fused_dev']:.4f}")
    header = (f"# charlm training speed: fused vs plain loop\n\n"
              f"{n:,} steps per run, batch 32, median of {args.repeats} interleaved repeats, "
              f"{_THREADS} thread(s); CPU: {cpu_model()}; torch {version('torch')}, "
              f"lmlab {version('lmlab')}.\n\n"
              f"Command: `.venv/bin/python benchmarks/charlm_speed.py --threads {_THREADS} "
              f"--steps {n} --repeats {args.repeats}`\n")
    text = f"{header}\n{table}\n\n**{verdict}**\n\n{same}.\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(jsonable({
        "steps": n, "repeats": args.repeats, "threads": _THREADS, "cpu_seconds": cpu,
        "wall_seconds": wall, "single_ratio": single, "set_ratio": set_ratio,
        "same_math": check, "blas": blas_info(),
    }), indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
