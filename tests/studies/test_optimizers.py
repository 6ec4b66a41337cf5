"""The optimizers study on a tiny GPT-2: same start, AdamW beats SGD at the same small lr."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

from lmlab.errors import LmlabError
from lmlab.runs import RunDir
from lmlab.studies import get_study, load_result
from lmlab.studies.optimizers import LinesData, _lines_used, load_lines_data
from lmlab.studies.runner import build_config, run_study
from tests.runs.test_browser_render import browser, check_page, page  # noqa: F401
from tests.studies.conftest import IR, assert_redraws

if TYPE_CHECKING:
    from playwright.sync_api import Page


def write_lines(path: Path) -> Path:
    """200 IR-Triplets records as one line each, separated by blank lines, in ``path``."""
    from lmlab.data import format_records, load_ir_triplets

    lines = [t.replace("\n", " ") for t in format_records(load_ir_triplets(IR)[:200])]
    path.write_text("\n\n".join(lines), encoding="utf-8")  # blank lines are skipped
    return path


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "lines.txt")


def tiny_sets(model: Path, root: Path) -> list[str]:
    """The ``--set`` values of a comparison on the tiny GPT-2 (3 epochs of 2 steps)."""
    return [f"model={model}", "data.source=file", f"data.path={write_lines(root / 'lines.txt')}",
            "data.budget=400", "train.epochs=3", "train.lr=0.001", "device=cpu"]


#: Two seeds, a loss-noise window of 3 changes, a checkpoint after every step.
SEEDED = ["seeds=2", "noise_window=3", "train.checkpoint_every=1"]


@pytest.fixture(scope="module")
def tiny_run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """One finished comparison on the tiny GPT-2 (3 epochs), shared by the tests below."""
    root = tmp_path_factory.mktemp("optimizers")
    return run_study("optimizers", preset="paper", overrides=tiny_sets(tiny_dir, root),
                     out=root / "runs")


@pytest.fixture(scope="module")
def seeded_run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """The same comparison with seeds 42 and 43."""
    root = tmp_path_factory.mktemp("optimizers-seeds")
    return run_study("optimizers", preset="paper", overrides=[*tiny_sets(tiny_dir, root),
                                                               *SEEDED], out=root / "runs")


def test_adamw_and_sgd_from_the_same_start(tiny_run: RunDir) -> None:
    run = tiny_run
    summary = json.loads((run.path / "summary.json").read_text())
    assert get_study("optimizers").SUMMARY.problems(summary) == []
    metrics = pd.read_json(run.path / "metrics.jsonl", lines=True)
    train = metrics[metrics["kind"] == "train"]
    first = train.groupby("optimizer")["loss"].first()
    assert first["adamw"] == pytest.approx(first["sgd"], rel=1e-6)  # same model, data, order
    assert summary["adamw"]["final_train_loss"] < summary["sgd"]["final_train_loss"]
    evals = metrics[metrics["kind"] == "eval"]
    assert evals.groupby("optimizer").size().tolist() == [3, 3]  # one per epoch
    last = evals.groupby("optimizer").last()
    for name in ("adamw", "sgd"):
        assert summary[name]["val_perplexity"] == pytest.approx(math.exp(last.loc[name, "loss"]))
        assert summary[name]["seconds"] > 0
    html = (run.path / "report.html").read_text()
    assert 'src="figures/train_loss.png"' in html and 'src="figures/val_perplexity.png"' in html
    assert not list((run.path / "checkpoints").iterdir())  # dropped once finished


def test_report_redraws_from_the_saved_result(tiny_run: RunDir) -> None:
    back = load_result(tiny_run.path)
    assert back.config.optimizers == ("adamw", "sgd")
    assert back.table["optimizer"].tolist() == ["adamw", "sgd"]
    assert back.evals.groupby("optimizer").size().tolist() == [3, 3]
    assert_redraws(tiny_run, "optimizers")


def test_token_budget_protocol(tiny_dir: Path, text_file: Path) -> None:
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir)
    train, val, name = load_lines_data(LinesData(source="file", path=str(text_file),
                                                 max_tokens=20, budget=100), tok)
    assert all(len(x) <= 20 for x in train + val)
    assert sum(map(len, train)) >= 100 and sum(map(len, train[:-1])) < 100
    lines = text_file.read_text().splitlines()
    assert _lines_used(lines, train) == 2 * len(train) - 1  # blank separators counted
    assert tok(lines[_lines_used(lines, train) + 1])["input_ids"][:20] == val[0]
    assert "lines.txt" in name


def test_unknown_optimizer_is_a_clear_error() -> None:
    with pytest.raises(LmlabError, match="unknown optimizer 'adamx'"):
        build_config("optimizers", "quick", ["optimizers=adamw,adamx"])


@pytest.mark.parametrize("sets", [["data.source=file", "data.path=/no/such.txt"],
                                  ["data.source=file"]])
def test_bad_data_fails_before_a_run_directory_exists(tiny_dir: Path, tmp_path: Path, sets):
    with pytest.raises(LmlabError, match="data.path"):
        run_study("optimizers", preset="paper", out=tmp_path,
                  overrides=[f"model={tiny_dir}", *sets])
    assert not (tmp_path / "optimizers").exists()


def _train_losses(run: RunDir) -> dict[tuple[str, int], np.ndarray]:
    """Each (optimizer, seed)'s training losses in step order, read from metrics.jsonl."""
    metrics = pd.read_json(run.path / "metrics.jsonl", lines=True)
    train = metrics[metrics["kind"] == "train"].sort_values("step")
    return {(str(o), int(s)): g["loss"].to_numpy()
            for (o, s), g in train.groupby(["optimizer", "seed"])}


def test_one_seed_has_no_spread(tiny_run: RunDir) -> None:
    summary = json.loads((tiny_run.path / "summary.json").read_text())
    assert summary["seeds"] == 1 and summary["noise_window"] == 20
    losses = _train_losses(tiny_run)
    assert sorted(losses) == [("adamw", 42), ("sgd", 42)]
    for name in ("adamw", "sgd"):
        assert summary[name]["final_train_loss_std"] is None
        # 6 steps: fewer than W = 20 changes, so all 5 of them count
        want = np.std(np.diff(losses[name, 42]), ddof=1)
        assert summary[name]["loss_noise"] == pytest.approx(want)


def test_seeds_repeat_every_optimizer(seeded_run: RunDir) -> None:
    run = seeded_run
    s = json.loads((run.path / "summary.json").read_text())
    assert get_study("optimizers").SUMMARY.problems(s) == []
    assert s["seeds"] == 2 and s["noise_window"] == 3
    losses = _train_losses(run)
    assert sorted(losses) == [("adamw", 42), ("adamw", 43), ("sgd", 42), ("sgd", 43)]
    metrics = pd.read_json(run.path / "metrics.jsonl", lines=True)
    steps = metrics[metrics["kind"] == "train"].groupby(["optimizer", "seed"])["step"]
    assert all(v == [1, 2, 3, 4, 5, 6] for v in steps.apply(sorted))  # each step once
    for seed in (42, 43):  # the same seed: the same start and first batch for both
        assert losses["adamw", seed][0] == pytest.approx(losses["sgd", seed][0], rel=1e-6)
    assert losses["adamw", 42][0] != pytest.approx(losses["adamw", 43][0])  # another order
    per_seed = pd.read_csv(run.path / "optimizer_seeds.csv")
    assert per_seed[["optimizer", "seed"]].values.tolist() == [
        ["adamw", 42], ["adamw", 43], ["sgd", 42], ["sgd", 43]]
    for name in ("adamw", "sgd"):
        # the loss noise by hand: std of the last 3 changes of each run, then over seeds
        a, b = (float(np.std(np.diff(losses[name, seed])[-3:], ddof=1)) for seed in (42, 43))
        got = per_seed.set_index(["optimizer", "seed"])["loss_noise"]
        assert got[name, 42] == pytest.approx(a) and got[name, 43] == pytest.approx(b)
        assert s[name]["loss_noise"] == pytest.approx((a + b) / 2)
        assert s[name]["loss_noise_std"] == pytest.approx(abs(a - b) / math.sqrt(2))
        last = [losses[name, seed][-1] for seed in (42, 43)]
        assert s[name]["final_train_loss"] == pytest.approx(np.mean(last))
        assert s[name]["final_train_loss_std"] == pytest.approx(np.std(last, ddof=1))
    html = (run.path / "report.html").read_text()
    for fig in ("train_loss", "val_perplexity", "loss_noise"):
        assert f'src="figures/{fig}.png"' in html
    assert "Mean over 2 seeds (42 to 43)" in html and " ± " in html
    assert "above AdamW" in html


def test_seeded_report_redraws_from_the_saved_result(seeded_run: RunDir) -> None:
    back = load_result(seeded_run.path)
    assert back.config.seeds == 2
    assert sorted(back.history["seed"].unique()) == [42, 43]
    assert back.runs["loss_noise"].notna().all()
    assert_redraws(seeded_run, "optimizers")


def test_a_seeded_run_interrupted_resumes_to_the_same_numbers(
        tiny_dir: Path, seeded_run: RunDir, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed in sgd's second seed after step 3's row was logged: the resumed run does not
    train the finished (optimizer, seed) runs again, and ends as a run never interrupted."""
    import lmlab.train as train_pkg
    from lmlab.runs.rundir import RunDir as Dir

    log = Dir.log_metrics

    def killed_at(self: Dir, rows: object) -> None:
        log(self, rows)  # type: ignore[arg-type]
        row = rows if isinstance(rows, dict) else {}
        if (row.get("kind"), row.get("optimizer"), row.get("seed"), row.get("step")) == (
                "train", "sgd", 43, 3):
            raise KeyboardInterrupt

    sets = [*tiny_sets(tiny_dir, tmp_path), *SEEDED]
    monkeypatch.setattr(Dir, "log_metrics", killed_at)
    with pytest.raises(KeyboardInterrupt):
        run_study("optimizers", preset="paper", overrides=sets, out=tmp_path / "runs")
    monkeypatch.undo()
    (run,) = (tmp_path / "runs" / "optimizers").iterdir()
    assert json.loads((run / "meta.json").read_text())["status"] == "interrupted"
    assert (run / "checkpoints" / "sgd" / "seed-43").is_dir()

    trained: list[tuple[str, int]] = []
    real_train = train_pkg.train

    def counting(*args: object, **kwargs: object) -> object:
        cfg = kwargs["cfg"]
        trained.append((cfg.optimizer, cfg.seed))  # type: ignore[attr-defined]
        return real_train(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(train_pkg, "train", counting)
    again = run_study("optimizers", preset="paper", overrides=sets, out=tmp_path / "runs",
                      resume=True)
    assert again.path == run
    assert trained == [("adamw", 42), ("adamw", 43), ("sgd", 42), ("sgd", 43)]  # all resumed
    got, want = _train_losses(again), _train_losses(seeded_run)
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6)
    timing = ("seconds", "seconds_std")
    a, b = (json.loads((r.path / "summary.json").read_text()) for r in (again, seeded_run))
    for name in ("adamw", "sgd"):
        assert {k: v for k, v in a[name].items() if k not in timing} == pytest.approx(
            {k: v for k, v in b[name].items() if k not in timing})
    assert not list((run / "checkpoints").iterdir())


def test_seeds_config_errors() -> None:
    with pytest.raises(LmlabError, match="seeds"):
        build_config("optimizers", "quick", ["seeds=0"])
    with pytest.raises(LmlabError, match="past the largest seed"):
        build_config("optimizers", "quick", [f"seed={2**32 - 1}", "seeds=2"])
    with pytest.raises(LmlabError, match="noise_window"):
        build_config("optimizers", "quick", ["noise_window=1"])
    assert build_config("optimizers", "quick").seeds == 1  # the default: one run each


def test_over_seeds_by_hand() -> None:
    from lmlab.studies._seeds import over_seeds, seed_values

    runs = pd.DataFrame({"v": ["b", "a", "b", "b"], "seed": [7, 7, 8, 9],
                         "x": [1.0, 5.0, 2.0, 6.0]})
    t = over_seeds(runs, "v", ["x"]).set_index("v")
    assert t.loc["b", "seeds"] == 3 and t.loc["b", "x"] == pytest.approx(3.0)
    assert t.loc["b", "x_std"] == pytest.approx(math.sqrt(((1 - 3) ** 2 + 1 + 9) / 2))
    assert math.isnan(t.loc["a", "x_std"])
    assert seed_values(7, 3) == [7, 8, 9]


def test_seeded_report_renders_every_figure_in_a_browser(page: Page,  # noqa: F811
                                                         seeded_run: RunDir) -> None:
    """The report of a run with seeds, in headless Chromium: the three figures (loss and
    perplexity bands, loss noise) load, and the browser logs no error."""
    broken, errors = check_page(page, (seeded_run.path / "report.html").as_uri())
    assert broken == [] and errors == []
    srcs = [page.locator("figure img").nth(i).get_attribute("src") for i in range(3)]
    assert srcs == ["figures/train_loss.png", "figures/val_perplexity.png",
                    "figures/loss_noise.png"]
    assert page.locator("figure img").count() == 3


def test_cuda_warm_up_runs_one_untimed_step_and_waits_for_it(
        tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The warm-up's CUDA path, with the CUDA calls stood in for: it loads the model on the
    run's device, copies the batch with the loop's copy, runs forward and backward, and waits
    for the device; on the CPU it does nothing."""
    import torch

    import lmlab.models.hf as hf
    import lmlab.train.core as core
    from lmlab.data import CausalLMCollator
    from lmlab.studies.optimizers import warm_up

    real_load = hf.load_causal_lm
    calls: list[tuple[str, object]] = []
    loaded: list[torch.nn.Module] = []

    def load(ref: str, *, device: object = None) -> tuple[torch.nn.Module, object]:
        calls.append(("load", device))
        model, tok = real_load(ref, device="cpu")
        loaded.append(model)
        return model, tok

    def copy(t: torch.Tensor, device: object) -> torch.Tensor:
        calls.append(("copy", device))
        return t

    monkeypatch.setattr(hf, "load_causal_lm", load)
    monkeypatch.setattr(core, "to_device", copy)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: calls.append(("sync", d)))
    examples, collate = [[1, 2, 3, 4], [5, 6, 7]], CausalLMCollator(pad_token_id=0)

    warm_up(str(tiny_dir), examples, collate, 4, torch.device("cpu"))
    assert calls == []  # nothing off a GPU

    cuda = torch.device("cuda")
    warm_up(str(tiny_dir), examples, collate, 4, cuda)
    assert calls[0] == ("load", cuda) and calls[-1] == ("sync", cuda)
    assert calls[1:-1] == [("copy", cuda)] * len(collate(examples))  # every batch tensor
    grads = [p.grad for p in loaded[0].parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)  # the backward pass ran
