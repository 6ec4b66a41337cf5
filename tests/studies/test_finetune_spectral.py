"""The finetune-spectral study end to end on a tiny GPT-2 and real IR-Triplets records."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
import torch
import transformers

from lmlab.errors import LmlabError
from lmlab.runs import RunDir
from lmlab.studies import get_study, load_result
from lmlab.studies.finetune_spectral import SUMMARY, DataConfig, _texts
from lmlab.studies.runner import run_study
from tests.runs.test_browser_render import browser, check_page, page  # noqa: F401 (fixtures)
from tests.studies.conftest import assert_redraws

if TYPE_CHECKING:
    from playwright.sync_api import Page

IR = Path(__file__).resolve().parents[3] / "shared" / "data" / "ir_triplets.json"
REQUIRED = ["model", "n_layers", "mean_alpha_pre", "mean_alpha_post", "good_layers_pre",
            "good_layers_post", "test_loss", "perplexity", "train_seconds"]


def overrides(model: Path, **extra: object) -> list[str]:
    base = {"model": model, "data.path": IR, "data.n_samples": 40, "data.max_length": 64,
            "train.warmup_steps": 1, "train.lr": 1e-3, "spectral.track_every": 2, "device": "cpu"}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def hand_loss(model: torch.nn.Module, tok: object, texts: list[str], max_length: int) -> float:
    """Mean next-token loss of ``texts``, one example at a time (no padding), in float64."""
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tok(text, truncation=True, max_length=max_length)["input_ids"]])
            logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
            total -= logp[torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum().item()
            count += ids.shape[1] - 1
    return total / count


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
    assert summary["perplexity"] == pytest.approx(math.exp(hand_loss(model, tok, test, 64)),
                                                  rel=1e-5)

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
    for fig in ("mean_alpha", "delta_alpha", "alpha_over_training", "alpha_test_loss", "loss"):
        assert f'src="figures/{fig}.png"' in html
        assert (run.path / "figures" / f"{fig}.png").read_bytes()[:4] == b"\x89PNG"
    assert "Interpretation" in html and "fine-tuned" in html


def test_test_loss_at_every_tracked_step(tiny_run: RunDir) -> None:
    """Steps 0, 2 and 4 are tracked: 0 is the evaluation before training, 2 is scored by the
    tracker during training, 4 (the epoch's end) by the loop's own evaluation."""
    summary = json.loads((tiny_run.path / "summary.json").read_text())
    metrics = pd.read_json(tiny_run.path / "metrics.jsonl", lines=True)
    scored = metrics[metrics["kind"] == "tracked_test"]
    assert scored["step"].tolist() == [0, 2]
    assert scored["perplexity"].tolist() == pytest.approx(np.exp(scored["loss"]).tolist())
    table = pd.read_csv(tiny_run.path / "alpha_test_loss.csv")
    assert table["step"].tolist() == [0, 2, 4]
    assert table["test_loss"].tolist() == pytest.approx(
        [summary["test_loss_pre"], scored["loss"].iloc[1], summary["test_loss"]], rel=1e-12)
    spectral = metrics[(metrics["kind"] == "spectral") & (metrics["status"] == "success")]
    assert table["mean_alpha"].tolist() == pytest.approx(
        spectral.groupby("step")["alpha"].mean().tolist())
    assert table["eval_seconds"].isna().tolist() == [True, False, True]  # only step 2 is extra
    assert scored["seconds"].iloc[1] == pytest.approx(table["eval_seconds"].iloc[1])
    back = load_result(tiny_run.path)
    assert back.tracking["test_loss"].tolist() == pytest.approx(table["test_loss"].tolist())
    report = json.loads((tiny_run.path / "report.json").read_text())
    captions = [b["caption"] for b in report["blocks"] if b["type"] == "figure"]
    assert any("test loss (right axis)" in c for c in captions)


def test_the_tracker_scores_the_weights_of_its_step(tiny_dir: Path) -> None:
    """The test loss logged at step 2 is the loss of the weights after step 2, computed by
    hand from a snapshot taken at that step (dropout off, padding excluded)."""
    import copy

    from lmlab.data import CausalLMCollator, tokenize_texts
    from lmlab.spectral import SpectralTracker
    from lmlab.studies._finetune_tracking import TestLossTracker
    from lmlab.train import Callback, TrainConfig, evaluate_lm, train

    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir)
    model = transformers.GPT2LMHeadModel.from_pretrained(tiny_dir)
    train_texts, test_texts, _ = _texts(DataConfig(path=str(IR), n_samples=40, max_length=64))
    train_ex = tokenize_texts(train_texts, tok, 64)
    test_ex = tokenize_texts(test_texts, tok, 64)
    collate = CausalLMCollator(pad_token_id=0)
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    class Snapshot(Callback):
        def on_step_end(self, state: object) -> None:
            snapshots[state.step] = copy.deepcopy(state.model.state_dict())  # type: ignore[attr-defined]

    wants = SpectralTracker(every=2).wants
    tests = TestLossTracker(wants, lambda m: evaluate_lm(m, test_ex, collate, batch_size=3),
                            skip=lambda step: step == 4)
    result = train(model, train_ex, collate=collate, eval_examples=test_ex,
                   cfg=TrainConfig(batch_size=8, lr=1e-3, warmup_steps=1), callbacks=[Snapshot(),
                   tests])
    assert [r["step"] for r in tests.rows] == [2]
    fresh = transformers.GPT2LMHeadModel.from_pretrained(tiny_dir)
    fresh.load_state_dict(snapshots[2])
    assert tests.rows[0]["loss"] == pytest.approx(hand_loss(fresh, tok, test_texts, 64),
                                                  rel=1e-5)
    fresh.load_state_dict(snapshots[4])  # the loop's own evaluation at the epoch's end
    assert result.evals[-1]["loss"] == pytest.approx(hand_loss(fresh, tok, test_texts, 64),
                                                     rel=1e-5)
    assert tests.rows[0]["loss"] != pytest.approx(result.evals[-1]["loss"])


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
    with pytest.raises(LmlabError, match=r"record 0 of ir_triplets.json has no field 'Hint'"):
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


def test_fine_tunes_on_the_users_own_text(tiny_dir: Path, tmp_path: Path) -> None:
    """A plain text file of paragraphs: 30 documents, 24 train / 6 test, named in the report."""
    records = json.loads(IR.read_text())[:30]
    text = "\n\n".join(f"{r['Question']}\n{r['Answer']}" for r in records)
    notes = tmp_path / "notes.txt"
    notes.write_text(text + "\n", encoding="utf-8")
    train, test, source = _texts(DataConfig(path=str(notes), n_samples=None))
    assert (len(train), len(test)) == (24, 6)
    assert source == "notes.txt (plain text, one document per paragraph: 30 documents)"
    assert sorted(train + test) == sorted(f"{r['Question']}\n{r['Answer']}" for r in records)
    run = run_study("finetune-spectral", preset="paper", out=tmp_path / "runs",
                    overrides=overrides(tiny_dir, **{"data.path": notes, "data.n_samples": 30,
                                                     "spectral.track_every": 3}))
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["data_source"] == source
    assert (summary["n_train"], summary["n_test"], summary["steps"]) == (24, 6, 3)
    assert "notes.txt (plain text" in (run.path / "report.html").read_text()
    table = pd.read_csv(run.path / "alpha_test_loss.csv")
    assert table["step"].tolist() == [0, 3] and table["test_loss"].notna().all()


def test_lines_format_and_its_errors(tiny_dir: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("".join(f"line {i}\n\n" for i in range(10)))
    train, test, _ = _texts(DataConfig(path=str(notes), format="lines", n_samples=None))
    assert sorted(train + test) == sorted(f"line {i}" for i in range(10))
    from lmlab.studies.finetune_spectral import Config, check

    with pytest.raises(LmlabError, match=r"data.format=lines describes the file in data.path"):
        check(Config(model=str(tiny_dir), data=DataConfig(format="lines")))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(LmlabError, match="empty.txt is empty"):
        _texts(DataConfig(path=str(tmp_path / "empty.txt")))


def test_a_url_of_the_users_is_reported_as_unchecked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmlab.data import IR_TRIPLETS_URL

    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path / "cache"))
    mirror = tmp_path / "mirror.json"
    mirror.write_bytes(IR.read_bytes())
    train, _, source = _texts(DataConfig(url=mirror.as_uri(), n_samples=50))
    assert len(train) == 40
    assert source == (f"IR-Triplets (downloaded from {mirror.as_uri()}; not checked against a "
                      "known SHA-256)")
    assert DataConfig().url == IR_TRIPLETS_URL  # the default is the pinned one
    _, _, local = _texts(DataConfig(path=str(IR), n_samples=50))
    assert local.endswith("; SHA-256 of the published file")


def test_report_renders_every_figure_in_a_browser(tiny_run: RunDir, page: Page) -> None:  # noqa: F811
    """The report, α-and-test-loss figure included, in headless Chromium: every image loads
    (skips without Chromium or playwright, as the browser tests do)."""
    broken, errors = check_page(page, (tiny_run.path / "report.html").as_uri())
    assert broken == [] and errors == []
    sources = [page.locator("figure img").nth(i).get_attribute("src")
               for i in range(page.locator("figure img").count())]
    assert "figures/alpha_test_loss.png" in sources and len(sources) == 5
