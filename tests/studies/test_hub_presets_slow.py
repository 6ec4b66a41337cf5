"""The presets that need the Hugging Face hub, end to end, on local stand-ins of their downloads.

``lmlab run finetune-spectral|optimizers|ablation --preset paper`` runs in a fresh process with
the same model references (``distilgpt2``, ``gpt2``) and data sources (IR-Triplets, WikiText-2
through ``datasets``) as a user with the hub; only the downloads are replaced by what they
leave on disk (see ``tests/_hub_standins.py``): the hub cache, the ``datasets`` cache, lmlab's
data cache, with ``HF_HUB_OFFLINE=1``.

The models have their public configs but **random weights** (no package ships the real ones), so
the numbers checked here are those any such network must give: parameter counts from the
config, data sizes from the protocol, and the loss of an untrained GPT-2 (near ln 50257).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from tests._hub_standins import (
    DISTILGPT2_CONFIG,
    GPT2_CONFIG,
    PARAMETERS,
    VOCAB_SIZE,
    gpt2_style_tokenizer,
    hub_env,
    hub_model,
    ir_triplets_cache,
    wikitext2_cache,
)
from tests.studies.conftest import IR

pytestmark = pytest.mark.slow

LMLAB = [sys.executable, "-m", "lmlab.cli"]

# An untrained GPT-2 predicts nearly uniformly: its logits h·e are sums of d = 768 products of a
# layer-normed state (unit variance per coordinate) and embeddings of std 0.02, so they have
# variance σ² ≈ 768 · 0.02² ≈ 0.31 and the expected loss is ln V + σ²/2 ≈ ln V + 0.15.
LN_V = math.log(VOCAB_SIZE)
UNTRAINED_LOSS = (LN_V, LN_V + 0.4)


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every download of the three presets, in its cache (built once, ~1 min)."""
    from lmlab.studies.finetune_spectral import Config

    root = tmp_path_factory.mktemp("hub-standins")
    tokenizer = gpt2_style_tokenizer(root / "tokenizer")
    hub_model(root / "hub", "distilgpt2", DISTILGPT2_CONFIG, tokenizer)
    hub_model(root / "hub", "gpt2", GPT2_CONFIG, tokenizer)
    wikitext2_cache(root / "datasets", root / "work")
    ir_triplets_cache(root / "lmlab", IR, Config.paper().data.url)
    return root


def run_paper(study: str, root: Path, out: Path, *sets: str) -> tuple[dict, Path]:
    """``lmlab run STUDY --preset paper [--set ...]`` in a fresh process pointed at the
    stand-ins, on one thread; prints its wall time, CPU time and peak memory (``-s`` shows
    them); returns the run's summary and directory."""
    env = {**os.environ, **hub_env(root), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "RAYON_NUM_THREADS": "1"}
    argv = [*LMLAB, "run", study, "--preset", "paper", "--out", str(out)]
    for s in sets:
        argv += ["--set", s]
    log = out.parent / f"{study}.log"
    with log.open("w") as f:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT)
        timer = threading.Timer(3600, proc.kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)  # this run's own CPU time and peak memory
        timer.cancel()
        wall = time.perf_counter() - start
    text = log.read_text(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text[-3000:]
    cpu, peak = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 2**20  # KiB on Linux
    print(f"\n{study} --preset paper {' '.join(sets)}: {wall:.0f} s wall, {cpu:.0f} s CPU, "
          f"peak RSS {peak:.2f} GiB")
    (summary_file,) = out.rglob("summary.json")
    return json.loads(summary_file.read_text()), summary_file.parent


def test_finetune_spectral_paper(hub_root: Path, tmp_path: Path) -> None:
    """distilgpt2 on 500 IR-Triplets records (400 train, 100 test), batch 8; 2 of the epoch's
    50 steps (~15 s of CPU each on one core)."""
    s, run_dir = run_paper("finetune-spectral", hub_root, tmp_path / "runs", "train.max_steps=2")
    assert s["model"] == "distilgpt2"
    assert s["params"] == PARAMETERS["distilgpt2"]
    assert s["data_source"].startswith("IR-Triplets")
    assert (s["n_train"], s["n_test"]) == (400, 100)
    assert s["steps"] == 2
    assert UNTRAINED_LOSS[0] < s["test_loss_pre"] < UNTRAINED_LOSS[1]
    assert s["perplexity_pre"] == pytest.approx(math.exp(s["test_loss_pre"]), rel=1e-6)
    # the 4 weight matrices of each of the 6 blocks and the position embedding (the token
    # embedding, tied to the output head, is skipped)
    assert s["n_layers"] == 6 * 4 + 1
    assert (run_dir / "report.md").is_file()


def test_optimizers_paper(hub_root: Path, tmp_path: Path) -> None:
    """gpt2 on the WikiText-2 budget (≥ 1,024 tokens per split), AdamW and SGD; 1 of the
    5 epochs."""
    from lmlab.data import WIKITEXT2_SOURCE

    s, run_dir = run_paper("optimizers", hub_root, tmp_path / "runs", "train.epochs=1")
    assert s["model"] == "gpt2" and s["data_source"] == WIKITEXT2_SOURCE
    for split in ("train_tokens", "val_tokens"):  # stop once 1,024 are in; lines ≤ 128 tokens
        assert 1024 <= s[split] < 1024 + 128
    for name in ("adamw", "sgd"):
        assert s[name]["parameters"] == PARAMETERS["gpt2"]
    # the claim under test: at lr 1e-4 AdamW lowers the loss much faster than SGD (here, from
    # random weights, 10.97 → 9.85 in 3 steps against 10.97 for SGD)
    assert s["adamw"]["final_train_loss"] < s["sgd"]["final_train_loss"] - 0.5
    table = pd.read_csv(run_dir / "optimizers.csv")
    assert list(table["optimizer"]) == ["adamw", "sgd"]


def test_ablation_paper(hub_root: Path, tmp_path: Path) -> None:
    """gpt2 on the WikiText-2 budget: zero ablation untrained (all layers, each of the 12
    alone), then baseline and ablated training; 1 of the 5 epochs."""
    s, run_dir = run_paper("ablation", hub_root, tmp_path / "runs", "train.epochs=1")
    assert s["model"] == "gpt2" and s["importance_mode"] == "zero"
    lo, hi = (math.exp(x) for x in UNTRAINED_LOSS)
    assert lo < s["untrained_baseline_perplexity"] < hi
    importance = pd.read_csv(run_dir / "layer_importance.csv")
    assert list(importance["layer"]) == list(range(GPT2_CONFIG["n_layer"]))
    assert {"baseline_perplexity"} <= set(s) and "perplexity" in s["zero"]
