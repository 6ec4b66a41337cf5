"""Benchmark lmlab's training loop against Hugging Face ``transformers.Trainer``, and the cost of
spectral tracking during fine-tuning.

Measures:

* throughput: training tokens/s of ``lmlab.train.train`` and of ``transformers.Trainer`` on the
  same model (fresh copy, same seed), the same batches in the same order, the same recipe (global
  batch 8, AdamW, weight decay 0.01, linear warm-up then linear decay, clipping at 1.0), no
  evaluation and no checkpoints. Trainer runs twice per repeat: with its default optimizer
  (``adamw_torch_fused`` on torch >= 2.8) and with ``optim="adamw_torch"``, the same
  ``torch.optim.AdamW`` implementation that lmlab uses. Models: a tiny GPT-2 built from a config
  and smollm2-135m.
* tracking share: seconds spent in ``lmlab.spectral.SpectralTracker`` (a callback of lmlab's
  loop, timed by wrapping it) over the seconds of the training steps, at the study's default
  interval (every 10 steps) and at the quick preset's (every 6), on smollm2-135m; plus the
  seconds of one analysis of smollm2-135m in float64 and in float32.

Usage::

    .venv/bin/python benchmarks/finetune_throughput.py --threads 2 --repeats 3

Prints a table and writes it as Markdown to ``--out`` (default
``benchmarks/results/finetune_throughput.md``) with every number as JSON beside it (``.json``).
The exit code is 0 whatever the targets say; it is nonzero only when something crashes.
"""

from __future__ import annotations

# --- thread control first: before numpy / torch are imported anywhere ----------------------------
import os
import sys

from _common import blas_info, cpu_model, jsonable, md_table, pin_threads_from_argv, version

_THREADS = pin_threads_from_argv(default=2)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# --- the rest ------------------------------------------------------------------------------------
import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import datetime as _dt  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(_THREADS)

import transformers  # noqa: E402
from transformers import (  # noqa: E402
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

transformers.logging.set_verbosity_error()
with contextlib.suppress(Exception):
    transformers.utils.logging.disable_progress_bar()
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning, module="torch")
logging.getLogger("accelerate").setLevel(logging.ERROR)

from lmlab.data import (  # noqa: E402
    STDLIB_DOCSTRINGS_SOURCE,
    CausalLMCollator,
    format_records,
    load_ir_triplets,
    stdlib_docstrings,
    tokenize_texts,
)
from lmlab.models.hf import load_causal_lm  # noqa: E402
from lmlab.spectral import SpectralTracker, analyze  # noqa: E402
from lmlab.train import TrainConfig, train  # noqa: E402
from lmlab.train.callbacks import Callback, Timed  # noqa: E402

ALL_MODELS = ("tiny", "smollm2")
SMOLLM2 = "smollm2-135m"
IR_TRIPLETS = Path("/work/shared/data/ir_triplets.json")
BATCH = 8
MAX_LENGTH = 128
LR = 5e-5
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
SEED = 42
TARGET_RATIO = 0.95
TARGET_SHARE = 0.10
DEFAULT_INTERVAL = 10  # the study's SpectralConfig.track_every
QUICK_INTERVAL = 6  # the quick preset's track_every
TOOLS = ("lmlab", "trainer", "trainer_adamw_torch")
TOOL_LABELS = {
    "lmlab": "lmlab `train`",
    "trainer": "Trainer (default optim)",
    "trainer_adamw_torch": "Trainer (`optim=\"adamw_torch\"`)",
}


# ----------------------------------------------------------------------------- helpers


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_counters() -> tuple[float, float, float, float]:
    """(wall, machine busy CPU-seconds, machine steal CPU-seconds, this process's CPU-seconds)."""
    busy = steal = float("nan")
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        busy = (v[0] + v[1] + v[2] + v[5] + v[6]) / _CLK_TCK  # user nice system irq softirq
        steal = v[7] / _CLK_TCK
    return time.perf_counter(), busy, steal, time.process_time()


def cpu_usage(a: tuple[float, ...], b: tuple[float, ...]) -> dict[str, float]:
    """Average cores used between two snapshots: by this process, by everything else, stolen."""
    wall = max(b[0] - a[0], 1e-9)
    own = (b[3] - a[3]) / wall
    return {"own_cores": own, "other_cores": max(0.0, (b[1] - a[1]) / wall - own),
            "steal_cores": (b[2] - a[2]) / wall}


def wait_quiet(max_wait: float, threshold: float = 0.3, sample: float = 2.0) -> dict[str, float]:
    """Wait (at most ``max_wait`` s) until other processes use less than ``threshold`` cores."""
    start = time.perf_counter()
    while True:
        a = cpu_counters()
        time.sleep(sample)
        other = cpu_usage(a, cpu_counters())["other_cores"]
        waited = time.perf_counter() - start
        if other < threshold or waited >= max_wait or math.isnan(other):
            return {"waited_s": round(waited, 1), "other_cores_before": round(other, 2)}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {' '.join(map(str, loadavg()))}] {msg}",
          flush=True)


# ----------------------------------------------------------------------------- data and models


def load_texts() -> tuple[list[str], str]:
    """Real text, in a fixed shuffled order (seed 42)."""
    if IR_TRIPLETS.is_file():
        texts = format_records(load_ir_triplets(IR_TRIPLETS))
        source = f"IR-Triplets ({IR_TRIPLETS}), {len(texts)} records, default template"
    else:
        texts = stdlib_docstrings()
        source = f"{STDLIB_DOCSTRINGS_SOURCE}, {len(texts)} texts"
    texts = list(texts)
    random.Random(SEED).shuffle(texts)
    return texts, source


def tiny_gpt2(vocab_size: int, pad_token_id: int) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=vocab_size, n_layer=2, n_embd=128, n_head=4, n_positions=256,
                     pad_token_id=pad_token_id)
    return GPT2LMHeadModel(cfg)


def lmlab_order(n: int, seed: int) -> list[int]:
    """The order in which lmlab's loop visits ``n`` examples in epoch 0 (checked at run time
    against the batches its collate function actually receives)."""
    g = torch.Generator().manual_seed(seed * 1000)
    return torch.randperm(n, generator=g).tolist()


class RecordingCollate:
    """Wraps a collate function; records the batches (as tuples of token ids) it is given."""

    def __init__(self, collate: Any) -> None:
        self.collate, self.batches = collate, []

    def __call__(self, batch: Any) -> dict[str, torch.Tensor]:
        self.batches.append(tuple(tuple(int(t) for t in seq) for seq in batch))
        return self.collate(batch)


class TrainerCollate(RecordingCollate):
    """lmlab's collator, taking Trainer's feature dicts (``{"input_ids": [...]}``)."""

    def __call__(self, features: Any) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return super().__call__([f["input_ids"] for f in features])


# ----------------------------------------------------------------------------- timing callbacks


class LmlabClock(Callback):
    """Timestamps at the start of training and after every optimisation step."""

    def __init__(self) -> None:
        self.begin, self.stamps, self.cpu = 0.0, [], []

    def on_train_begin(self, state: Any) -> None:  # noqa: D102
        self.begin = time.perf_counter()

    def on_step_end(self, state: Any) -> None:  # noqa: D102
        self.stamps.append(time.perf_counter())
        self.cpu.append(time.process_time())


class TrainerClock(TrainerCallback):
    """The same timestamps for Trainer."""

    def __init__(self) -> None:
        self.begin, self.stamps, self.cpu = 0.0, [], []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.begin = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.stamps.append(time.perf_counter())
        self.cpu.append(time.process_time())


# ----------------------------------------------------------------------------- the runs


def batch_tokens(batches: list[list[list[int]]], collate: Any) -> list[int]:
    """Non-padding label tokens of each batch: sum(labels != -100)."""
    return [int((collate(b)["labels"] != -100).sum()) for b in batches]


def summarise_run(tool: str, wall: float, clock: Any, tokens: list[int], batches_ok: bool,
                  usage: dict[str, float], extra: dict[str, Any]) -> dict[str, Any]:
    stamps, begin, cpu = clock.stamps, clock.begin, clock.cpu
    steps = len(stamps)
    timed_cpu = cpu[-1] - cpu[0] if steps > 1 else float("nan")
    step_s = [stamps[0] - begin] + [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    timed_s = stamps[-1] - stamps[0] if steps > 1 else float("nan")
    timed_tokens = sum(tokens[1:steps])
    return {
        "tool": tool, "steps": steps, "wall_s": wall,
        "timed_s": timed_s, "timed_tokens": timed_tokens,
        "tokens_per_s": timed_tokens / timed_s if timed_s > 0 else float("nan"),
        "tokens_per_cpu_s": timed_tokens / timed_cpu if timed_cpu > 0 else float("nan"),
        "wall_tokens_per_s": sum(tokens[:steps]) / wall,
        "median_step_s": statistics.median(step_s[1:]) if steps > 1 else float("nan"),
        "first_step_s": step_s[0], "step_s": step_s, "same_batches": batches_ok,
        **{k: round(v, 3) for k, v in usage.items()}, **extra,
    }


def run_lmlab(base: torch.nn.Module, examples: list[list[int]], collate: Any, steps: int,
              warmup: int, expected: list[tuple]) -> dict[str, Any]:
    model = copy.deepcopy(base)
    rec, clock = RecordingCollate(collate), LmlabClock()
    cfg = TrainConfig(epochs=1, batch_size=BATCH, lr=LR, weight_decay=WEIGHT_DECAY,
                      warmup_steps=warmup, max_grad_norm=MAX_GRAD_NORM, max_steps=steps, seed=SEED)
    torch.manual_seed(SEED)
    c0 = cpu_counters()
    result = train(model, examples, collate=rec, cfg=cfg, callbacks=[clock])
    c1 = cpu_counters()
    wall = c1[0] - c0[0]
    tokens = batch_tokens([list(map(list, b)) for b in rec.batches], collate)
    out = summarise_run("lmlab", wall, clock, tokens, rec.batches == expected, cpu_usage(c0, c1),
                        {"mean_loss": statistics.mean(h["loss"] for h in result.history),
                         "loop_seconds": result.seconds})
    del model
    gc.collect()
    return out


def run_trainer(base: torch.nn.Module, ordered: list[list[int]], collate: Any, steps: int,
                warmup: int, expected: list[tuple], optim: str | None) -> dict[str, Any]:
    model = copy.deepcopy(base)
    rec, clock = TrainerCollate(collate), TrainerClock()
    kwargs: dict[str, Any] = {} if optim is None else {"optim": optim}
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=BATCH, gradient_accumulation_steps=1,
            max_steps=steps, learning_rate=LR, weight_decay=WEIGHT_DECAY,
            adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, lr_scheduler_type="linear",
            warmup_steps=warmup, max_grad_norm=MAX_GRAD_NORM, seed=SEED,
            save_strategy="no", eval_strategy="no", logging_steps=10**9, report_to=[],
            dataloader_num_workers=0, dataloader_pin_memory=False, use_cpu=True,
            disable_tqdm=True, remove_unused_columns=False,
            train_sampling_strategy="sequential", **kwargs)
        trainer = Trainer(model=model, args=args,
                          train_dataset=[{"input_ids": ex} for ex in ordered],
                          data_collator=rec, callbacks=[clock])
        torch.manual_seed(SEED)
        c0 = cpu_counters()
        out = trainer.train()
        c1 = cpu_counters()
        wall = c1[0] - c0[0]
        optimizer = type(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer")
                         else trainer.optimizer).__name__
        defaults = getattr(trainer.optimizer, "defaults", {}) or {}
        opt_desc = (f"{args.optim.value if hasattr(args.optim, 'value') else args.optim} "
                    f"({optimizer}, fused={defaults.get('fused')}, "
                    f"foreach={defaults.get('foreach')})")
    tokens = batch_tokens([list(map(list, b)) for b in rec.batches], collate)
    name = "trainer" if optim is None else f"trainer_{optim}"
    res = summarise_run(name, wall, clock, tokens, rec.batches == expected, cpu_usage(c0, c1),
                        {"mean_loss": float(out.training_loss), "optimizer": opt_desc,
                         "torch_threads_after": torch.get_num_threads()})
    del trainer, model
    gc.collect()
    return res


def bench_throughput(key: str, base: torch.nn.Module, pool: list[list[int]], collate: Any,
                     steps: int, warmup: int, repeats: int, max_wait: float) -> dict[str, Any]:
    n = steps * BATCH
    if len(pool) < n:
        raise SystemExit(f"{key}: need {n} examples, only {len(pool)} available")
    examples = pool[:n]
    order = lmlab_order(n, SEED)
    ordered = [examples[i] for i in order]
    expected = [tuple(tuple(x) for x in ordered[s * BATCH:(s + 1) * BATCH])
                for s in range(steps)]
    runners = {
        "lmlab": lambda: run_lmlab(base, examples, collate, steps, warmup, expected),
        "trainer": lambda: run_trainer(base, ordered, collate, steps, warmup, expected, None),
        "trainer_adamw_torch": lambda: run_trainer(base, ordered, collate, steps, warmup,
                                                   expected, "adamw_torch"),
    }
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in TOOLS}
    for r in range(repeats):
        order_r = TOOLS if r % 2 == 0 else tuple(reversed(TOOLS))
        for tool in order_r:
            quiet = wait_quiet(max_wait)
            la = loadavg()
            res = runners[tool]()
            res.update(loadavg_before=la, **quiet)
            runs[tool].append(res)
            log(f"{key} repeat {r + 1}/{repeats} {tool:20s} {res['tokens_per_s']:8.0f} tok/s "
                f"{res['tokens_per_cpu_s']:7.0f} tok/CPU-s, other processes "
                f"{res['other_cores']:.2f} cores (waited {quiet['waited_s']:.0f} s); "
                f"(median step {res['median_step_s']:.3f} s, first {res['first_step_s']:.3f} s, "
                f"wall {res['wall_s']:.1f} s, mean loss {res['mean_loss']:.5f}, "
                f"same batches {res['same_batches']})")
    med = {t: statistics.median(x["tokens_per_s"] for x in runs[t]) for t in TOOLS}
    med_wall = {t: statistics.median(x["wall_tokens_per_s"] for x in runs[t]) for t in TOOLS}
    med_step = {t: statistics.median(x["median_step_s"] for x in runs[t]) for t in TOOLS}
    med_cpu = {t: statistics.median(x["tokens_per_cpu_s"] for x in runs[t]) for t in TOOLS}
    other = {t: statistics.median(x["other_cores"] for x in runs[t]) for t in TOOLS}
    # Contention only slows a step down, and every run sees the same batches: the fastest time
    # of each step over the repeats is a noise-robust cross-check of the median.
    timed_tokens = runs["lmlab"][0]["timed_tokens"]
    best = {t: timed_tokens / sum(min(x["step_s"][i] for x in runs[t]) for i in range(1, steps))
            for t in TOOLS}
    return {
        "model": key, "params_M": round(sum(p.numel() for p in base.parameters()) / 1e6, 2),
        "steps": steps, "warmup_steps": warmup, "examples": n,
        "tokens_per_run": sum(batch_tokens(
            [list(map(list, b)) for b in expected], collate)),
        "timed_tokens_per_run": runs["lmlab"][0]["timed_tokens"],
        "padded_positions_per_run": sum(len(b) * max(len(s) for s in b) for b in expected),
        "tokens_per_s": med, "wall_tokens_per_s": med_wall, "median_step_s": med_step,
        "tokens_per_cpu_s": med_cpu, "other_cores": other,
        "cpu_ratio_vs_trainer": med_cpu["lmlab"] / med_cpu["trainer"],
        "best_step_tokens_per_s": best,
        "best_ratio_vs_trainer": best["lmlab"] / best["trainer"],
        "best_ratio_vs_trainer_adamw_torch": best["lmlab"] / best["trainer_adamw_torch"],
        "ratio_vs_trainer": med["lmlab"] / med["trainer"],
        "ratio_vs_trainer_adamw_torch": med["lmlab"] / med["trainer_adamw_torch"],
        "wall_ratio_vs_trainer": med_wall["lmlab"] / med_wall["trainer"],
        "same_batches": all(x["same_batches"] for t in TOOLS for x in runs[t]),
        "trainer_optimizers": {t: runs[t][0].get("optimizer") for t in TOOLS if t != "lmlab"},
        "mean_loss": {t: [round(x["mean_loss"], 5) for x in runs[t]] for t in TOOLS},
        "runs": runs,
    }


def bench_analysis(model: torch.nn.Module, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for precision in ("float64", "float32"):
        times, n_layers = [], 0
        for _ in range(repeats):
            t0 = time.perf_counter()
            df = analyze(model, precision=precision, progress=False)
            times.append(time.perf_counter() - t0)
            n_layers = int((df["status"] == "success").sum())
        out[precision] = {"median_s": statistics.median(times), "times_s": times,
                          "layers_fitted": n_layers}
        log(f"analysis smollm2 {precision}: median {out[precision]['median_s']:.2f} s "
            f"({[round(t, 2) for t in times]}), {n_layers} layers fitted")
    return out


def bench_tracking(base: torch.nn.Module, pool: list[list[int]], collate: Any, steps: int,
                   warmup: int, every: int, max_wait: float) -> dict[str, Any]:
    n = steps * BATCH
    model = copy.deepcopy(base)
    tracker = SpectralTracker(every=every, at_begin=False, at_end=False, precision="float64")
    timed = Timed(tracker)
    cfg = TrainConfig(epochs=1, batch_size=BATCH, lr=LR, weight_decay=WEIGHT_DECAY,
                      warmup_steps=warmup, max_grad_norm=MAX_GRAD_NORM, max_steps=steps, seed=SEED)
    quiet = wait_quiet(max_wait)
    la = loadavg()
    torch.manual_seed(SEED)
    c0 = cpu_counters()
    result = train(model, pool[:n], collate=collate, cfg=cfg, callbacks=[timed])
    c1 = cpu_counters()
    wall = c1[0] - c0[0]
    analyses = list(timed.calls)
    res = {
        "every": every, "steps": steps, "precision": "float64",
        "train_seconds": result.seconds, "tracking_seconds": timed.seconds,
        "share": timed.seconds / result.seconds, "wall_s": wall,
        "analyses": len(analyses), "analysis_calls": analyses,
        "tracked_steps": sorted(int(s) for s in tracker.frame()["step"].unique()),
        "tokens_per_s_untracked_steps": result.tokens / result.seconds,
        "loadavg_before": la, **quiet, **{k: round(v, 3) for k, v in cpu_usage(c0, c1).items()},
    }
    log(f"tracking every {every}: {timed.seconds:.1f} s tracking / {result.seconds:.1f} s "
        f"training = {res['share']:.1%} ({len(analyses)} analyses at steps "
        f"{res['tracked_steps']}; other processes {res['other_cores']:.2f} cores)")
    del model
    gc.collect()
    return res


# ----------------------------------------------------------------------------- report


def targets(thr: list[dict[str, Any]], tracking: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in thr:
        out.append({"target": f"{r['model']}: lmlab tokens/s >= {TARGET_RATIO:g} x Trainer "
                              "(Trainer's default optimizer)",
                    "pass": bool(r["ratio_vs_trainer"] >= TARGET_RATIO),
                    "value": f"ratio {r['ratio_vs_trainer']:.3f}"})
        out.append({"target": f"{r['model']}: lmlab tokens/s >= {TARGET_RATIO:g} x Trainer "
                              "(optim=\"adamw_torch\", lmlab's AdamW implementation)",
                    "pass": bool(r["ratio_vs_trainer_adamw_torch"] >= TARGET_RATIO),
                    "value": f"ratio {r['ratio_vs_trainer_adamw_torch']:.3f}"})
    for t in tracking:
        if t["every"] == DEFAULT_INTERVAL:
            out.append({"target": f"smollm2: tracking <= {TARGET_SHARE:.0%} of training time "
                                  f"(every {DEFAULT_INTERVAL} steps, float64)",
                        "pass": bool(t["share"] <= TARGET_SHARE),
                        "value": f"{t['share']:.1%}"})
    return out


def render(meta: dict[str, Any], thr: list[dict[str, Any]], analysis: dict[str, Any] | None,
           tracking: list[dict[str, Any]], checks: list[dict[str, Any]]) -> str:
    parts = ["# Fine-tuning throughput: lmlab's loop vs transformers.Trainer, and tracking cost",
             ""]
    parts.append(f"- date: {meta['date']}")
    parts.append(f"- machine: {meta['cpu_count']} CPUs ({meta['cpu_model']}), {meta['platform']}, "
                 f"{meta['mem_gb']} GB RAM")
    parts.append("- load average (1/5/15 min): start " + " ".join(map(str, meta["loadavg_start"]))
                 + ", end " + " ".join(map(str, meta["loadavg_end"])))
    v = meta["versions"]
    parts.append("- versions: " + ", ".join(f"{k} {v[k]}" for k in v))
    parts.append(f"- threads: {meta['threads']} (OMP/OPENBLAS/MKL_NUM_THREADS={meta['threads']}, "
                 f"torch.get_num_threads()={meta['torch_threads']})")
    parts.append("- BLAS / OpenMP in effect: " + "; ".join(
        f"{b['internal_api']} {b['version'] or ''} x{b['num_threads']} "
        f"({Path(b['filepath']).name})" for b in meta["blas"]))
    parts.append(f"- data: {meta['data_source']}; tokenised with smollm2-135m's tokenizer "
                 f"(vocab {meta['vocab_size']}), max_length {MAX_LENGTH}, right padding "
                 f"(pad id {meta['pad_token_id']})")
    parts.append(f"- recipe (both tools): global batch {BATCH}, AdamW lr {LR:g} "
                 f"(β 0.9/0.999, ε 1e-8), weight decay {WEIGHT_DECAY} (not on biases and norm "
                 f"weights), linear warm-up {meta['warmup_steps']} steps then linear decay to 0, "
                 f"clipping at {MAX_GRAD_NORM}, seed {SEED}, one epoch over exactly steps × "
                 f"{BATCH} examples, no evaluation, no checkpoints; Trainer with "
                 "`save_strategy=\"no\"`, `eval_strategy=\"no\"`, `report_to=[]`, "
                 "`logging_steps=1e9`, `dataloader_num_workers=0`, "
                 "`dataloader_pin_memory=False`, `use_cpu=True`, "
                 "`train_sampling_strategy=\"sequential\"` over the examples in lmlab's "
                 "epoch order, collator = `lmlab.data.CausalLMCollator` taking Trainer's "
                 "feature dicts")
    parts.append(f"- repeats: {meta['repeats']} (median; order lmlab → Trainer → Trainer "
                 "adamw_torch, reversed every other repeat); each run starts from a fresh "
                 "deep copy of the same model")
    parts.append(f"- command: `{meta['command']}`")
    parts.append("")
    parts.append("## Throughput")
    parts.append("")
    parts.append("tokens/s = non-padding label tokens (sum of `labels != -100`) of steps 2..N "
                 "over the time from the end of step 1 to the end of step N, both taken by a "
                 "step-end callback of each tool (step 1 is the warm-up; setup, the first step "
                 "and the teardown are excluded; data loading and collation are included for "
                 "both). \"wall\" = all tokens over `perf_counter` around the whole "
                 "`train(...)` / `trainer.train()` call, setup included. tokens/CPU-s = the "
                 "timed tokens over this process's CPU time (`time.process_time`) of the same "
                 "steps. best-step tokens/s = the timed tokens over the sum, over steps 2..N, "
                 "of each step's fastest time among the repeats (identical batches in every "
                 "run; contention only slows a step down). \"other processes\" = average cores "
                 "used by every other process on the machine during the run (from "
                 "`/proc/stat`); the machine is shared, so runs "
                 f"wait up to {meta['max_wait_s']:.0f} s for it to be quiet (< 0.3 cores) first.")
    parts.append("")
    header = ["model", "params", "steps", "tokens/run (timed)", "tool", "tokens/s (median)",
              "lmlab / this", "best-step tokens/s", "lmlab / this (best)", "median step s",
              "wall tokens/s", "tokens/CPU-s", "other processes (cores)"]
    rows = []
    for r in thr:
        for t in TOOLS:
            ratio = r["tokens_per_s"]["lmlab"] / r["tokens_per_s"][t]
            bratio = r["best_step_tokens_per_s"]["lmlab"] / r["best_step_tokens_per_s"][t]
            rows.append([
                r["model"], f"{r['params_M']}M", str(r["steps"]),
                f"{r['tokens_per_run']} ({r['timed_tokens_per_run']})", TOOL_LABELS[t],
                f"{r['tokens_per_s'][t]:.0f}", "—" if t == "lmlab" else f"{ratio:.3f}",
                f"{r['best_step_tokens_per_s'][t]:.0f}",
                "—" if t == "lmlab" else f"{bratio:.3f}",
                f"{r['median_step_s'][t]:.3f}", f"{r['wall_tokens_per_s'][t]:.0f}",
                f"{r['tokens_per_cpu_s'][t]:.0f}", f"{r['other_cores'][t]:.2f}",
            ])
    parts.append(md_table(header, rows))
    parts.append("")
    for r in thr:
        parts.append(f"- {r['model']}: identical batches in identical order for every run: "
                     f"{'yes' if r['same_batches'] else 'NO'}; padded positions per run "
                     f"{r['padded_positions_per_run']}; Trainer optimizers: "
                     + "; ".join(f"{k}: {v}" for k, v in r["trainer_optimizers"].items())
                     + "; mean training loss over the steps (per run) " + "; ".join(
                         f"{k} {v}" for k, v in r["mean_loss"].items()))
        parts.append("  - single runs, tokens/s: " + "; ".join(
            f"{t} {[round(x['tokens_per_s']) for x in r['runs'][t]]}" for t in TOOLS))
    parts.append("")
    if analysis is not None or tracking:
        parts.append("## Spectral tracking during training (smollm2-135m)")
        parts.append("")
    if analysis is not None:
        parts.append(md_table(
            ["one `analyze(model)`", "median s", "all s", "layers fitted"],
            [[p, f"{a['median_s']:.2f}", str([round(t, 2) for t in a["times_s"]]),
              str(a["layers_fitted"])] for p, a in analysis.items()]))
        parts.append("")
    if tracking:
        parts.append("lmlab's loop with `SpectralTracker(every=k, at_begin=False, at_end=False, "
                     "precision=\"float64\")` as its callback (as the study sets it up; its "
                     "analyses before and after training are outside the loop), wrapped to time "
                     "each call. share = tracking seconds / training seconds, training seconds = "
                     "the loop's own step time (`TrainResult.seconds`, callbacks excluded). "
                     "Steady-state estimate = one analysis / (k × median lmlab step of the "
                     "throughput runs).")
        parts.append("")
        rows = []
        step_s = next((r["median_step_s"]["lmlab"] for r in thr if r["model"] == "smollm2"),
                      None)
        for t in tracking:
            est64 = est32 = "n/a"
            if analysis is not None and step_s:
                est64 = f"{analysis['float64']['median_s'] / (t['every'] * step_s):.1%}"
                est32 = f"{analysis['float32']['median_s'] / (t['every'] * step_s):.1%}"
            rows.append([str(t["every"]), str(t["steps"]), str(t["tracked_steps"]),
                         f"{t['tracking_seconds']:.1f}", f"{t['train_seconds']:.1f}",
                         f"{t['share']:.1%}", est64, est32, f"{t['other_cores']:.2f}"])
        parts.append(md_table(["every k", "steps", "tracked at steps", "tracking s",
                               "training s", "share (measured)", "share est. float64",
                               "share est. float32", "other processes (cores)"], rows))
        parts.append("")
    parts.append("## Targets")
    parts.append("")
    parts.append(md_table(["target", "result", "value"],
                          [[c["target"], "PASS" if c["pass"] else "FAIL", c["value"]]
                           for c in checks]))
    parts.append("")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(ALL_MODELS),
                   help=f"comma-separated subset of {','.join(ALL_MODELS)}")
    p.add_argument("--steps-tiny", type=int, default=30)
    p.add_argument("--steps-smollm2", type=int, default=12)
    p.add_argument("--tracking-periods", type=int, default=2,
                   help="a tracking run with interval k trains periods x k steps (0 skips the "
                        "tracking runs)")
    p.add_argument("--max-wait", type=float, default=90.0,
                   help="before each run, wait up to this many seconds for other processes to "
                        "use less than 0.3 cores")
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/finetune_throughput.md")
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in ALL_MODELS:
            p.error(f"unknown model {m!r}; choose from {', '.join(ALL_MODELS)}")
    if args.threads != _THREADS:
        p.error("--threads must be given as '--threads N' or '--threads=N'")
    if min(args.steps_tiny, args.steps_smollm2) < 2:
        p.error("at least 2 steps are needed (step 1 is the warm-up)")

    blas = blas_info()
    mem_gb = "n/a"
    with contextlib.suppress(OSError, ValueError):
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    meta: dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(), "cpu_model": cpu_model(), "platform": platform.platform(),
        "mem_gb": mem_gb, "loadavg_start": loadavg(),
        "versions": {
            "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "transformers": transformers.__version__,
            "accelerate": version("accelerate"), "tokenizers": version("tokenizers"),
            "lmlab": version("lmlab"),
        },
        "threads": args.threads, "torch_threads": torch.get_num_threads(), "blas": blas,
        "repeats": args.repeats, "warmup_steps": args.warmup_steps,
        "steps": {"tiny": args.steps_tiny, "smollm2": args.steps_smollm2,
                  "tracking_periods": args.tracking_periods},
        "max_wait_s": args.max_wait,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    print(f"threads: {args.threads}; torch.get_num_threads() = {torch.get_num_threads()}; "
          f"load average {meta['loadavg_start']}")
    for b in blas:
        print(f"  {b['user_api']:6s} {b['internal_api']:8s} {b['version'] or '':14s} "
              f"threads={b['num_threads']}  {b['filepath']}")
    if any(b["num_threads"] != args.threads for b in blas):
        print("  WARNING: a thread pool does not match --threads")

    log("loading smollm2-135m and its tokenizer")
    smol, tok = load_causal_lm(SMOLLM2)
    texts, source = load_texts()
    need = max(args.steps_tiny, args.steps_smollm2,
               args.tracking_periods * max(DEFAULT_INTERVAL, QUICK_INTERVAL)) * BATCH
    pool = tokenize_texts(texts[: need + 64], tok, MAX_LENGTH)
    collate = CausalLMCollator(pad_token_id=int(tok.pad_token_id))
    meta.update(data_source=source, vocab_size=len(tok), pad_token_id=int(tok.pad_token_id))
    log(f"data: {source}; {len(pool)} tokenised examples, mean length "
        f"{statistics.mean(map(len, pool)):.1f}")

    thr: list[dict[str, Any]] = []
    for key in models:
        if key == "tiny":
            base = tiny_gpt2(len(tok), int(tok.pad_token_id))
            steps = args.steps_tiny
        else:
            base, steps = smol, args.steps_smollm2
        thr.append(bench_throughput(key, base, pool, collate, steps, args.warmup_steps,
                                    args.repeats, args.max_wait))
        if torch.get_num_threads() != args.threads:
            log(f"WARNING: torch threads changed to {torch.get_num_threads()}; resetting")
            torch.set_num_threads(args.threads)

    analysis = None
    tracking: list[dict[str, Any]] = []
    if "smollm2" in models:
        wait_quiet(args.max_wait)
        analysis = bench_analysis(smol, args.repeats)
        if args.tracking_periods > 0:
            for every in (DEFAULT_INTERVAL, QUICK_INTERVAL):
                tracking.append(bench_tracking(smol, pool, collate, args.tracking_periods * every,
                                               args.warmup_steps, every, args.max_wait))
    meta["loadavg_end"] = loadavg()

    checks = targets(thr, tracking)
    text = render(meta, thr, analysis, tracking, checks)
    print("\n" + text)
    for c in checks:
        print(f"{'PASS' if c['pass'] else 'FAIL'}  {c['target']}  ({c['value']})")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    payload = {"meta": meta, "throughput": thr, "analysis": analysis, "tracking": tracking,
               "targets": checks}
    out.with_suffix(".json").write_text(json.dumps(jsonable(payload), indent=2) + "\n")
    print(f"\nwrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
