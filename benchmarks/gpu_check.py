"""The GPU check: every study's small setting on CUDA beside the CPU, spectral α parity, and a
CUDA resume against an uninterrupted CUDA run, in one table.

On a bare CUDA machine with PyTorch preinstalled and no network::

    make gpu-wheels          # here, with network: lmlab's wheel and the few it needs that such
                             # a machine lacks, into gpu-wheels/ (about 8 MiB)
    make gpu-check           # there: installs gpu-wheels/ with --no-deps into a private folder
                             # (nothing else is touched) and runs this script

The dry run on the CPU (what CI runs; a few minutes on 2 cores)::

    GPU_CHECK_DEVICE=cpu python benchmarks/gpu_check.py --out /tmp/gpu-check

What it does, on ``GPU_CHECK_DEVICE`` (default ``cuda``):

1. Builds a small GPT-2 (2 layers, d 128, **random weights**) with a word-level tokenizer
   trained on the Python standard library's docstrings (real text, shipped with Python), and a
   text file of those docstrings: the LM studies need no download.
2. Runs each study's small setting (its ``quick`` preset with the overrides of ``SMALL``) once
   on the CPU and once on the device, and compares every number of the two ``summary.json``
   (timings left out): the largest relative difference and where it is.
3. Spectral parity: the per-layer α, D and λmax of the ``spectral`` study's table on the device
   (the torch route, float64) against the CPU (the NumPy route): at most 1e-9 relative.
4. Resume: the training loop on the device, interrupted after 5 of 12 steps and resumed,
   against an uninterrupted run on the device: the losses and the final weights bit for bit
   (deterministic mode); and the same for one induction setting split with ``stop_after``.
5. Prints a table (study, seconds on the CPU and on the device, numbers compared, largest
   difference) and writes it with the machine's description to ``--out``/gpu_check.{md,json}.

It exits 0 when every study finished on both devices with finite numbers, α parity holds,
and both resumes are exact; on the CPU dry run, the two runs of each study must also give the
same numbers bit for bit (they run on the same device), so the dry run checks the script and
lmlab's reproducibility. Numbers of a training study on a GPU differ from the CPU's by float32
rounding (another summation order) grown over the steps; they are reported, not judged.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")
TOKENS = 2_000  # words of the tokenizer's vocabulary

SMALL: dict[str, list[str]] = {
    "optimizers": ["data.max_tokens=64", "data.budget=6000", "train.epochs=1",
                   "train.batch_size=8", "noise_window=5"],
    "ablation": ["data.max_tokens=64", "data.budget=3000", "train.epochs=1",
                 "train.batch_size=8"],
    "finetune-spectral": ["data.n_samples=60", "data.max_length=64", "train.max_steps=8",
                          "spectral.track_every=4", "data.format=paragraphs"],
    "charlm": ["mlp.train.steps=300", "wavenet.train.steps=100", "transformer.train.steps=60",
               "mlp.train.diag_every=100", "samples=3"],
    "attention-phase": ["task.d=40", "gd.steps=200", "grid.alpha_points=3", "grid.seeds=2",
                        "theory.enabled=false", "n_test=200"],
    "induction": ["pools=0", "steps=60", "save_every=30", "eval_every=30", "eval_full=100",
                  "eval_cheap=50"],
    "spectral": [],
}
"""Each study's small setting: ``--set`` overrides of its quick preset (the model and data
paths are added at run time)."""

TIMING = ("second", "per_s", "_time", "time_", "speed", "duration")


# ------------------------------------------------------------------------------ the inputs


def docstrings(limit: int = 4000) -> list[str]:
    """Paragraphs of the standard library's docstrings (lmlab's offline text source)."""
    from lmlab.data import stdlib_docstrings

    return [p for p in stdlib_docstrings() if len(p.split()) >= 8][:limit]


def make_inputs(where: Path) -> tuple[Path, Path]:
    """A small GPT-2 with random weights and a tokenizer trained on real text; a text file."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    texts = docstrings()
    text_file = where / "docstrings.txt"
    text_file.write_text("\n\n".join(" ".join(t.split()) for t in texts) + "\n", encoding="utf-8")
    model_dir = where / "gpt2-small-random"
    if (model_dir / "config.json").is_file():
        return model_dir, text_file
    core = Tokenizer(models.WordLevel(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.train_from_iterator(texts, trainers.WordLevelTrainer(
        vocab_size=TOKENS, special_tokens=["<eos>", "<unk>"]))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>",
                                               unk_token="<unk>", pad_token="<eos>")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=128, n_head=4, n_positions=128,
                                  vocab_size=tok.vocab_size, bos_token_id=0, eos_token_id=0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return model_dir, text_file


def overrides(study: str, model_dir: Path, text_file: Path) -> list[str]:
    sets = list(SMALL[study])
    if study in ("optimizers", "ablation"):
        sets += [f"model={model_dir}", "data.source=stdlib-docstrings"]
    elif study == "finetune-spectral":
        sets += [f"model={model_dir}", f"data.path={text_file}"]
    elif study == "spectral":
        sets += [f"model={model_dir}"]
    return sets


# ----------------------------------------------------------------------------- comparisons


def numbers(tree: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every number in a JSON tree, by its dotted path (timings left out)."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from numbers(v, f"{prefix}{k}.")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from numbers(v, f"{prefix}{i}.")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        key = prefix.rstrip(".")
        if not any(t in key for t in TIMING):
            yield key, float(tree)


def rel(a: float, b: float) -> float:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def compare(cpu: dict[str, Any], dev: dict[str, Any]) -> dict[str, Any]:
    """The numbers of two summaries side by side: how many, the largest relative difference
    and its key, and which are not finite."""
    a, b = dict(numbers(cpu)), dict(numbers(dev))
    shared = sorted(set(a) & set(b))
    worst, key = 0.0, ""
    for k in shared:
        d = rel(a[k], b[k])
        if d > worst:
            worst, key = d, k
    bad = [k for k in shared if not math.isfinite(b[k]) and math.isfinite(a[k])]
    return {"n": len(shared), "max_rel": worst, "at": key, "not_finite": bad,
            "missing": sorted(set(a) ^ set(b))}


def spectral_parity(cpu_dir: Path, dev_dir: Path) -> dict[str, Any]:
    """Per-layer α, D and λmax of the two spectral tables: the largest relative difference."""
    import pandas as pd

    a, b = (pd.read_csv(d / "spectra.csv") for d in (cpu_dir, dev_dir))
    worst = {}
    for col in ("alpha", "D", "lambda_max"):
        if col in a.columns and col in b.columns:
            worst[col] = max((rel(float(x), float(y)) for x, y in zip(a[col], b[col],
                                                                        strict=True)),
                             default=0.0)
    return {"layers": len(a), "max_rel": worst, "ok": len(a) == len(b) > 0
            and all(v <= 1e-9 for v in worst.values()) and bool(worst)}


# --------------------------------------------------------------------------------- resumes


def lm_resume(model_dir: Path, text_file: Path, device: str, tmp: Path) -> dict[str, Any]:
    """The training loop on ``device``: 12 steps at once, and 5 + 7 with a resume between."""
    import torch

    from lmlab.data import CausalLMCollator
    from lmlab.models.hf import load_causal_lm
    from lmlab.runtime import seed_everything
    from lmlab.train import Callback, TrainConfig, train

    class Stop(Callback):
        def on_step_end(self, state: Any) -> None:
            if state.step == 5:
                raise KeyboardInterrupt

    texts = text_file.read_text(encoding="utf-8").split("\n\n")[:96]
    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-3, warmup_steps=2, checkpoint_every=1)

    def once(ckpt: Path | None, stop: bool) -> tuple[list[float], list[torch.Tensor]]:
        seed_everything(0)
        model, tok = load_causal_lm(str(model_dir), device=device)
        examples = [tok(t)["input_ids"][:64] for t in texts]
        collate = CausalLMCollator(pad_token_id=int(tok.pad_token_id))
        result = train(model, examples, collate=collate, cfg=cfg, device=device,
                       checkpoint_dir=ckpt, resume=ckpt is not None and not stop,
                       callbacks=[Stop()] if stop else ())
        return [r["loss"] for r in result.history], [p.detach().cpu() for p in
                                                      model.parameters()]

    t0 = time.perf_counter()
    whole, weights = once(None, False)
    try:
        once(tmp / "lm-resume", True)
    except KeyboardInterrupt:
        pass
    resumed, weights2 = once(tmp / "lm-resume", False)
    same = whole == resumed and all(torch.equal(x, y) for x, y in zip(weights, weights2,
                                                                       strict=True))
    return {"check": "train loop: resume after 5 of 12 steps", "ok": same,
            "steps": len(whole), "seconds": round(time.perf_counter() - t0, 1),
            "max_loss_diff": max((abs(x - y) for x, y in zip(whole, resumed, strict=False)),
                                 default=float("nan"))}


def induction_resume(device: str, tmp: Path) -> dict[str, Any]:
    """One induction setting on ``device``: 60 steps at once, and 30 + 30 with a resume."""
    from lmlab.studies.induction_train import TrainSetting, train_setting

    s = TrainSetting("check", pool_size=None, steps=60, save_every=30, eval_every=30,
                     eval_cheap=50, eval_full=100)
    t0 = time.perf_counter()
    whole = train_setting(s, tmp / "ind-whole", device=device)
    train_setting(s, tmp / "ind-split", device=device, stop_after=30)
    split = train_setting(s, tmp / "ind-split", device=device)
    keys = ("loss_test", "err_test", "err_ood")
    same = all(whole[k] == split[k] for k in keys)
    return {"check": "induction: resume after 30 of 60 steps", "ok": same, "steps": 60,
            "seconds": round(time.perf_counter() - t0, 1),
            "max_loss_diff": abs(whole["loss_test"] - split["loss_test"])}


# ------------------------------------------------------------------------------------ main


def run_one(study: str, sets: list[str], device: str, out: Path) -> tuple[Path, float, str]:
    """Run ``study`` on ``device`` into ``out``; (run directory, seconds, status)."""
    from lmlab.studies.runner import run_study

    t0 = time.perf_counter()
    try:
        run_dir = run_study(study, preset="quick", overrides=sets, out=out, device=device,
                            name=device.replace(":", "-"))
    except BaseException as exc:  # noqa: BLE001 - a failed study is a row of the table
        if isinstance(exc, KeyboardInterrupt):
            raise
        return out, time.perf_counter() - t0, f"failed: {str(exc).splitlines()[0][:120]}"
    return run_dir.path, time.perf_counter() - t0, "finished"


def machine(device: str) -> dict[str, Any]:
    import torch

    info = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
            "cpu_count": os.cpu_count()}
    if device.startswith("cuda") and torch.cuda.is_available():
        info |= {"gpu": torch.cuda.get_device_name(0), "cuda": torch.version.cuda}
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu-check", help="where the runs and the table go")
    p.add_argument("--studies", default=",".join(SMALL), help="comma-separated subset")
    args = p.parse_args(argv)
    import torch

    from lmlab.runtime import resolve_device

    device = str(resolve_device(DEVICE))  # an unavailable GPU: one line, exit 2 (below)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # the CPU runs beside a GPU use up to 8 threads; the dry run one (CI's 2 shared cores)
    torch.set_num_threads(1 if device == "cpu" else max(1, min(8, os.cpu_count() or 1)))
    model_dir, text_file = make_inputs(out)
    rows, checks, ok = [], [], True
    spectral_dirs: dict[str, Path] = {}
    for study in [s for s in args.studies.split(",") if s]:
        sets = overrides(study, model_dir, text_file)
        cpu_dir, cpu_s, cpu_status = run_one(study, sets, "cpu", out / "cpu")
        dev_dir, dev_s, dev_status = run_one(study, sets, device, out / "device")
        row: dict[str, Any] = {"study": study, "cpu_s": round(cpu_s, 1),
                               "device_s": round(dev_s, 1), "status": dev_status}
        if cpu_status == dev_status == "finished":
            diff = compare(json.loads((cpu_dir / "summary.json").read_text()),
                           json.loads((dev_dir / "summary.json").read_text()))
            row |= diff
            fine = not diff["not_finite"] and not diff["missing"]
            if device == "cpu":  # the dry run: the same device twice, the same numbers
                fine = fine and diff["max_rel"] == 0.0
            row["ok"] = fine
            if study == "spectral":
                spectral_dirs = {"cpu": cpu_dir, "device": dev_dir}
        else:
            row |= {"ok": False, "status": f"cpu {cpu_status}; {device} {dev_status}"}
        ok &= row["ok"]
        rows.append(row)
        print(f"{study:<18} cpu {cpu_s:7.1f} s  {device} {dev_s:7.1f} s  "
              f"{'ok' if row['ok'] else 'FAILED'}  max rel diff {row.get('max_rel', '-')} "
              f"at {row.get('at', '-')}", flush=True)
    if spectral_dirs:
        parity = spectral_parity(spectral_dirs["cpu"], spectral_dirs["device"])
        checks.append({"check": "spectral: α, D, λmax per layer, device vs CPU",
                       **parity})
        ok &= parity["ok"]
    for fn in (lambda: lm_resume(model_dir, text_file, device, out),
               lambda: induction_resume(device, out)):
        result = fn()
        checks.append(result)
        ok &= result["ok"]
    report = {"machine": machine(device), "ok": ok, "studies": rows, "checks": checks}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if ok else 1


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"# GPU check on {m.get('gpu', m['device'])}", "",
             f"torch {m['torch']}, CUDA {m.get('cuda', '-')}, Python {m['python']}, "
             f"{m['cpu_count']} CPU cores. Overall: {'ok' if report['ok'] else 'FAILED'}.", "",
             "| study | CPU s | device s | numbers | largest rel. diff | at | ok |",
             "|---|---:|---:|---:|---:|---|---|"]
    for r in report["studies"]:
        diff = r.get("max_rel")
        lines.append(f"| {r['study']} | {r['cpu_s']} | {r['device_s']} | {r.get('n', '-')} | "
                     f"{'-' if diff is None else f'{diff:.2e}'} | {r.get('at', r['status'])} | "
                     f"{'yes' if r['ok'] else 'no'} |")
    lines += ["", "| check | result | ok |", "|---|---|---|"]
    for c in report["checks"]:
        detail = {k: v for k, v in c.items() if k not in ("check", "ok")}
        lines.append(f"| {c['check']} | {json.dumps(detail, default=str)} | "
                     f"{'yes' if c['ok'] else 'no'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # noqa: BLE001 - one line for a setup problem (no CUDA, ...)
        from lmlab.errors import LmlabError

        if isinstance(exc, LmlabError):
            print(f"gpu_check: error: {exc}", file=sys.stderr)
            sys.exit(2)
        raise
