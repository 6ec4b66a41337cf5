"""`lmlab run ... --resume`: a study killed mid-run (SIGINT or SIGKILL) continues from its last
checkpoint and ends with the same numbers as a run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from lmlab.cli import main
from lmlab.runs import RunDir
from lmlab.studies.runner import find_resumable, run_study
from tests.studies.test_finetune_spectral import overrides

# timings differ between any two runs; everything else must be equal
TIMING = {"train_seconds", "tokens_per_second", "tracking_seconds"}
EPOCHS = 6  # 4 steps per epoch on 32 examples: 24 steps, a spectral analysis after each


def _sets(model: Path, **extra: object) -> list[str]:
    sets = overrides(model, **{"train.epochs": EPOCHS, "train.checkpoint_every": 2,
                               "spectral.track_every": 1, **extra})
    return [a for s in sets for a in ("--set", s)]


def _command(model: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lmlab.cli", "run", "finetune-spectral", "--preset", "paper",
            *_sets(model), "--out", str(out), *extra]


def _env() -> dict[str, str]:
    root = Path(__file__).resolve().parents[2]
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root / "src"),
            "TQDM_DISABLE": "1"}


def _summary(run: Path) -> dict:
    data = json.loads((run / "summary.json").read_text())
    return {k: v for k, v in data.items() if k not in TIMING}


def _run_dir(out: Path) -> Path:
    (run,) = (out / "finetune-spectral").iterdir()
    return run


def _checkpoint_step(run: Path) -> int:
    from lmlab.train.checkpoint import checkpoint_step

    return checkpoint_step(run / "checkpoints")


@pytest.fixture(scope="module")
def straight(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run, never interrupted."""
    out = tmp_path_factory.mktemp("straight")
    subprocess.run(_command(tiny_dir, out), env=_env(), check=True, capture_output=True)
    return _run_dir(out)


def _interrupt(model: Path, out: Path, sig: int) -> subprocess.CompletedProcess[str]:
    """Start the run, send ``sig`` once its second checkpoint exists, wait for the end."""
    # A shell without job control starts background jobs with SIGINT ignored, and Python keeps
    # an inherited SIG_IGN: give the child the default disposition so that it gets
    # KeyboardInterrupt however the tests were launched.
    proc = subprocess.Popen(_command(model, out), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    ckpt = None
    while time.monotonic() < deadline and proc.poll() is None:
        runs = list((out / "finetune-spectral").glob("*/checkpoints/last.pt"))
        if runs and _checkpoint_step(runs[0].parents[1]) >= 4:
            ckpt = runs[0]
            break
        time.sleep(0.02)
    assert ckpt is not None and proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_a_killed_run_resumes_to_the_same_numbers(sig: int, tiny_dir: Path, straight: Path,
                                                 tmp_path: Path) -> None:
    killed = _interrupt(tiny_dir, tmp_path, sig)
    run = _run_dir(tmp_path)
    meta = json.loads((run / "meta.json").read_text())
    stopped_at = _checkpoint_step(run)
    assert 4 <= stopped_at < 4 * EPOCHS  # killed mid-run, after a checkpoint
    assert not (run / "summary.json").exists()
    if sig == signal.SIGINT:
        assert killed.returncode == 130 and "--resume" in killed.stderr
        assert meta["status"] == "interrupted"
    else:  # the killed process held the run directory's lock: the OS let go of it
        assert killed.returncode == -signal.SIGKILL and meta["status"] == "running"
        assert (run / ".lock").read_text().strip() == str(meta["pid"])
        # what a kill in the middle of a checkpoint write leaves: resuming clears it
        (run / "checkpoints" / f".last.pt.{meta['pid']}-k1ll3d00.tmp").write_bytes(b"half")

    resumed = subprocess.run(_command(tiny_dir, tmp_path, "--resume"), env=_env(),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run}" in resumed.stderr
    assert not list(run.rglob("*.tmp"))
    if sig == signal.SIGKILL:
        assert "removed 1 temporary file(s)" in resumed.stderr
    assert list((tmp_path / "finetune-spectral").iterdir()) == [run]  # no second directory
    assert _summary(run) == _summary(straight)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "finished" and meta["resumed"] == 1

    # the metrics read as one run: every training step once, the same losses and α
    got, want = (RunDir.open(r).read_metrics() for r in (run, straight))
    train = got[got["kind"] == "train"]
    assert train["step"].tolist() == list(range(1, 4 * EPOCHS + 1))
    key = ["kind", "step", "layer_id"]
    cols = ["kind", "step", "layer_id", "loss", "alpha", "perplexity"]
    pd.testing.assert_frame_equal(
        got.reindex(columns=cols).sort_values(key, na_position="first").reset_index(drop=True),
        want.reindex(columns=cols).sort_values(key, na_position="first").reset_index(drop=True))


def test_resume_refuses_a_different_config(tiny_dir: Path, straight: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "finetune-spectral", "--preset", "paper",
                 *_sets(tiny_dir, **{"train.lr": 0.01}), "--resume", str(straight)])
    err = capsys.readouterr().err
    assert code == 2 and "train.lr: 0.001 in the run, 0.01 now" in err
    assert len(err.strip().splitlines()) == 1


def test_resume_of_a_finished_run_does_nothing(tiny_dir: Path, straight: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    before = (straight / "summary.json").read_bytes()
    assert main(["run", "finetune-spectral", "--preset", "paper", *_sets(tiny_dir),
                 "--resume", str(straight)]) == 0
    assert "finished already" in capsys.readouterr().err
    assert (straight / "summary.json").read_bytes() == before


def test_resume_refuses_a_run_that_is_being_written(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The run directory's lock, not its status, says whether another process writes it."""
    from lmlab.studies.runner import build_config

    cfg = build_config("spectral", overrides=["model=all-minilm-l6-v2"])
    run = RunDir.create(tmp_path, "spectral", "quick")
    run.save_config(cfg, meta={"study": "spectral", "status": "failed"})
    holder = RunDir.open(run.path).lock()  # what another process writing the run holds
    try:
        code = main(["run", "spectral", "--set", "model=all-minilm-l6-v2", "--out",
                     str(tmp_path), "--resume"])
    finally:
        holder.unlock()
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == (f"lmlab: error: {run.path} is being written by another lmlab "
                                 f"process (pid {os.getpid()}); wait for it to finish or stop it")
    assert RunDir.open(run.path).read_meta()["status"] == "failed"  # untouched


_AT_ONCE = """
import sys, time
from pathlib import Path
import torch, transformers  # the slow imports, before the start line
from lmlab.cli import main
barrier = Path(sys.argv[1])
(barrier.parent / f"ready-{sys.argv[2]}").touch()
while not barrier.exists():
    time.sleep(0.001)
sys.exit(main(sys.argv[3:]))
"""


def test_two_resumes_started_at_once_one_runs_the_other_is_refused(
        tiny_dir: Path, straight: Path, tmp_path: Path) -> None:
    """Two `--resume` of one interrupted run, released at the same instant: exactly one runs;
    the other exits 2 with one line naming the first; every step is logged once."""
    _interrupt(tiny_dir, tmp_path, signal.SIGKILL)
    run = _run_dir(tmp_path)
    gate = tmp_path / "gate"
    gate.mkdir()
    args = _command(tiny_dir, tmp_path, "--resume", str(run))[3:]  # after "-m lmlab.cli"
    procs = [subprocess.Popen([sys.executable, "-c", _AT_ONCE, str(gate / "go"), str(i), *args],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    deadline = time.monotonic() + 120
    while len(list(gate.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    (gate / "go").touch()
    done = [(p, *p.communicate(timeout=300)) for p in procs]
    codes = sorted(p.returncode for p, _, _ in done)
    assert codes == [0, 2], [err for _, _, err in done]
    (winner, _, _), = [d for d in done if d[0].returncode == 0]
    (_, _, refused), = [d for d in done if d[0].returncode == 2]
    assert refused.strip() == (f"lmlab: error: {run} is being written by another lmlab process "
                               f"(pid {winner.pid}); wait for it to finish or stop it")
    train = RunDir.open(run).read_metrics().query("kind == 'train'")
    assert train["step"].tolist() == list(range(1, 4 * EPOCHS + 1))  # no step twice
    assert _summary(run) == _summary(straight)


def test_find_resumable_takes_the_newest_run_of_that_name(tmp_path: Path) -> None:
    base = tmp_path / "spectral"
    for name in ("20260101-000000-quick", "20260102-000000-quick", "20260102-000000-quick-2",
                 "20260103-000000-paper", "20260104-000000-quickish"):
        (base / name).mkdir(parents=True)
        (base / name / "config.json").write_text("{}")
    assert find_resumable(tmp_path, "spectral", "quick").path.name == "20260102-000000-quick-2"
    assert find_resumable(tmp_path, "spectral", "paper").path.name == "20260103-000000-paper"
    assert find_resumable(tmp_path, "charlm", "quick") is None


def test_resume_with_nothing_to_resume_starts_a_new_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import tiny_model

    model = tmp_path / "m"
    tiny_model("gpt2").save_pretrained(model)
    run = run_study("spectral", overrides=[f"model={model}"], out=tmp_path / "runs",
                    resume=True)
    assert "nothing to resume" in capsys.readouterr().err
    assert RunDir.open(run.path).read_meta()["status"] == "finished"


def test_attention_phase_resumes_from_its_stored_cells(tmp_path: Path) -> None:
    from tests.studies.test_attention_phase import TINY

    run = run_study("attention-phase", overrides=TINY, out=tmp_path).path
    cells = run / "cells" / "cells.jsonl"
    lines = cells.read_text().splitlines()
    want = _summary(run)
    # the state a kill leaves: four of six cells stored, no summary, status "running"
    cells.write_text("\n".join(lines[:4]) + "\n")
    (run / "summary.json").unlink()
    RunDir.open(run).update_meta({"status": "running", "pid": 0})
    again = run_study("attention-phase", overrides=TINY, out=tmp_path, resume=True).path
    assert again == run
    after = cells.read_text().splitlines()
    assert after[:4] == lines[:4] and len(after) == 6  # only the two missing cells ran
    assert {json.loads(x)["key"] for x in after} == {json.loads(x)["key"] for x in lines}
    assert _summary(run) == want


def test_charlm_resumes_from_its_trained_phases(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A run cut short in the WaveNet phase: the MLP ensemble is taken back, not retrained;
    the WaveNet and the transformer train again; every number and curve is as before."""
    import lmlab.train.sampled as sampled
    from tests.conftest import SHARED_DATA
    from tests.studies.test_charlm import SHORT

    words = tmp_path / "names.txt"
    words.write_text("\n".join((SHARED_DATA / "names_2018.txt").read_text().split()[::16]))
    sets = [f"data.path={words}", *SHORT]
    run = run_study("charlm", overrides=sets, out=tmp_path / "runs").path
    want, curves = _summary(run), RunDir.open(run).read_metrics()
    assert sorted(p.name for p in (run / "checkpoints").glob("trained-*.pt")) == [
        "trained-mlp.pt", "trained-transformer.pt", "trained-wavenet.pt"]

    # the state a kill during the WaveNet's training leaves behind
    for name in ("trained-wavenet.pt", "trained-transformer.pt", "wavenet.pt",
                 "transformer.pt"):
        (run / "checkpoints" / name).unlink()
    (run / "summary.json").unlink()
    RunDir.open(run).update_meta({"status": "running", "pid": 0})

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the MLP ensemble was trained again")

    monkeypatch.setattr(sampled, "train_ensemble", no_training)
    again = run_study("charlm", overrides=sets, out=tmp_path / "runs", resume=True).path
    assert again == run
    got = _summary(run)
    timing = ("seconds", "per_second")
    for key in set(want) | set(got):
        if key == "models":
            for model, row in want[key].items():
                assert {k: v for k, v in got[key][model].items() if k != "seconds"} == {
                    k: v for k, v in row.items() if k != "seconds"}, model
        elif not any(t in key for t in timing):
            assert got.get(key) == want.get(key), key
    pd.testing.assert_frame_equal(RunDir.open(run).read_metrics(), curves)


@pytest.mark.parametrize("seed", ["-1", str(2**32), "4294967296000"])
def test_a_bad_seed_fails_before_the_run_directory_exists(
        seed: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A seed that seed_everything refuses is refused by the checks, so no half-made run
    directory is left for a later --resume to pick up."""
    from tests.studies.test_attention_phase import TINY

    for extra in ([], ["--check"], ["--resume"]):
        code = main(["run", "attention-phase", *(a for t in TINY for a in ("--set", t)),
                     "--set", f"seed={seed}", "--out", str(tmp_path / "runs"), *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "seed" in err, err
        assert not (tmp_path / "runs").exists()
