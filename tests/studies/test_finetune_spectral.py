"""The finetune-spectral study end to end on a tiny GPT-2 and real IR-Triplets records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import transformers

from lmlab.errors import LmlabError
from lmlab.runs import RunDir
from lmlab.studies import get_study, load_result
from lmlab.studies.finetune_spectral import SUMMARY, DataConfig, _texts
from lmlab.studies.runner import run_study
from tests.studies.conftest import assert_redraws

IR = Path(__file__).resolve().parents[3] / "shared" / "data" / "ir_triplets.json"
REQUIRED = ["model", "n_layers", "mean_alpha_pre", "mean_alpha_post", "good_layers_pre",
            "good_layers_post", "test_loss", "perplexity", "train_seconds"]


def overrides(model: Path, **extra: object) -> list[str]:
    base = {"model": model, "data.path": IR, "data.n_samples": 40, "data.max_length": 64,
            "train.warmup_steps": 1, "train.lr": 1e-3, "spectral.track_every": 2, "device": "cpu"}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def test_split_sizes_follow_the_homework() -> None:
    train, test, source = _texts(DataConfig(path=str(IR), n_samples=500))
    assert (len(train), len(test)) == (400, 100)
    assert "IR-Triplets" in source and test[0].startswith("Context: ")


@pytest.fixture(scope="module")
def tiny_run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """One finished run of the study on the tiny GPT-2 (4 steps), shared by the tests below."""
    return run_study("finetune-spectral", preset="paper", overrides=overrides(tiny_dir),
                     out=tmp_path_factory.mktemp("finetune"))


def test_whole_study_on_a_tiny_gpt2(tiny_run: RunDir, tiny_dir: Path) -> None:
    run = tiny_run
    summary = json.loads((run.path / "summary.json").read_text())
    assert set(REQUIRED) <= set(summary) <= {k.key for k in SUMMARY}
    assert get_study("finetune-spectral").SUMMARY.problems(summary) == []
    assert (summary["n_train"], summary["n_test"], summary["steps"]) == (32, 8, 4)
    assert summary["perplexity"] == pytest.approx(math.exp(summary["test_loss"]))
    assert summary["test_loss"] < summary["test_loss_pre"]  # 4 steps at lr 1e-3 do learn

    # perplexity by hand: reload the final weights, score the test split one example at a time
    from lmlab.data import format_records, load_ir_triplets, sample_split

    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir)
    model = transformers.GPT2LMHeadModel.from_pretrained(tiny_dir)
    state = torch.load(run.path / "checkpoints" / "last.pt", weights_only=True)
    model.load_state_dict(state["model"])
    model.eval()
    _, test = sample_split(format_records(load_ir_triplets(IR)), 40, seed=42)
    total, count = 0.0, 0
    with torch.no_grad():
        for text in test:
            ids = torch.tensor([tok(text, truncation=True, max_length=64)["input_ids"]])
            logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
            total -= logp[torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum().item()
            count += ids.shape[1] - 1
    assert summary["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)

    metrics = pd.read_json(run.path / "metrics.jsonl", lines=True)
    tracked = metrics[metrics["kind"] == "spectral"]
    assert sorted(tracked["step"].unique()) == [0, 2, 4]
    assert (metrics["kind"] == "train").sum() == 4 and (metrics["kind"] == "eval").sum() == 1
    pre = pd.read_csv(run.path / "spectra_pre.csv")
    post = pd.read_csv(run.path / "spectra_post.csv")
    assert pre["longname"].tolist() == post["longname"].tolist()
    assert summary["mean_alpha_pre"] == pytest.approx(
        pre.loc[pre.status == "success", "alpha"].mean())

    # the homework's printed numbers and answers, recomputed from the files
    assert summary["params"] == sum(p.numel() for p in
                                    transformers.GPT2LMHeadModel.from_pretrained(tiny_dir)
                                    .parameters() if p.requires_grad)
    losses = metrics.loc[metrics["kind"] == "train", "loss"].tolist()
    assert summary["train_loss_mean"] == pytest.approx(sum(losses) / len(losses))
    a0, a1 = summary["mean_alpha_pre"], summary["mean_alpha_post"]
    assert summary["alpha_mean_in_2_6_before"] is (2 <= a0 <= 6)
    assert summary["alpha_mean_in_2_6_after"] is (2 <= a1 <= 6)
    same = (a1 > a0) == (summary["perplexity"] > summary["perplexity_pre"])
    assert summary["alpha_ppl_same_direction"] is same
    ok = pre.status.eq("success") & post.status.eq("success")
    moved = sorted(zip(pre.longname[ok], post.alpha[ok] - pre.alpha[ok], strict=True),
                   key=lambda t: -abs(t[1]))[:3]
    assert summary["top_delta_alpha_layers"] == [n for n, _ in moved]
    assert summary["top_delta_alpha"] == pytest.approx([d for _, d in moved])

    html = (run.path / "report.html").read_text()
    assert f"{summary['params']:,} trainable parameters" in html
    for fig in ("mean_alpha", "delta_alpha", "alpha_over_training", "loss"):
        assert f'src="figures/{fig}.png"' in html
        assert (run.path / "figures" / f"{fig}.png").read_bytes()[:4] == b"\x89PNG"
    assert "Interpretation" in html and "fine-tuned" in html


def test_report_redraws_from_the_saved_result(tiny_run: RunDir) -> None:
    back = load_result(tiny_run.path)
    assert back.config.data.n_samples == 40 and len(back.history) == 4
    assert back.delta["delta"].tolist() == pytest.approx(
        (back.delta["alpha_post"] - back.delta["alpha_pre"]).tolist())
    assert back.stages["stage"].tolist() == ["pre-trained", "fine-tuned"]
    assert_redraws(tiny_run, "finetune-spectral")


def test_bad_inputs(tiny_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(LmlabError, match="no causal-LM head"):
        run_study("finetune-spectral", overrides=overrides("all-minilm-l6-v2"), out=tmp_path)
    with pytest.raises(LmlabError, match="nope.json"):
        run_study("finetune-spectral", overrides=overrides(tiny_dir, **{"data.path": "nope.json"}),
                  out=tmp_path)
    with pytest.raises(LmlabError, match=r"record 0 has no field 'Hint'"):
        run_study("finetune-spectral", out=tmp_path,
                  overrides=overrides(tiny_dir, **{"data.template": "{Question} {Hint}"}))


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tiny_dir: Path, tmp_path: Path) -> None:
    """The same command under torchrun (2 gloo processes) gives the single-process results."""
    import os
    import subprocess
    import sys

    sets = [a for o in overrides(tiny_dir) for a in ("--set", o)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    for launcher, out in ((torchrun, tmp_path / "ddp"), ([sys.executable], tmp_path / "one")):
        proc = subprocess.run([*launcher, "-m", "lmlab.cli", "run", "finetune-spectral",
                               "--preset", "paper", *sets, "--out", str(out)],
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    (ddp,) = (tmp_path / "ddp" / "finetune-spectral").iterdir()
    (one,) = (tmp_path / "one" / "finetune-spectral").iterdir()
    a = json.loads((ddp / "summary.json").read_text())
    b = json.loads((one / "summary.json").read_text())
    assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-5)
    la = pd.read_json(ddp / "metrics.jsonl", lines=True).query("kind == 'train'")["loss"]
    lb = pd.read_json(one / "metrics.jsonl", lines=True).query("kind == 'train'")["loss"]
    assert la.tolist() == pytest.approx(lb.tolist(), rel=1e-5)
