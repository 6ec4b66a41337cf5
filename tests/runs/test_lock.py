"""One writer per run directory: an OS-level lock (flock on ``<dir>/.lock``) that refuses a
second writer at once and that the OS drops when its holder dies, however it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmlab.errors import LmlabError
from lmlab.runs import RunDir
from lmlab.runs.guard import DirectoryLock

ROOT = Path(__file__).resolve().parents[2]

_CONTENDER = """
import sys, time
from pathlib import Path
from lmlab.errors import LmlabError
from lmlab.runs.guard import DirectoryLock
gate, directory = Path(sys.argv[1]), sys.argv[2]
(gate / f"ready-{sys.argv[3]}").touch()
while not (gate / "go").exists():
    time.sleep(0.0005)
try:
    lock = DirectoryLock(directory).acquire()
except LmlabError as e:
    print("refused:", e, flush=True)
    sys.exit(2)
print("won", flush=True)
while not (gate / "done").exists():  # hold it until every contender has tried
    time.sleep(0.01)
"""

_HOLDER = """
import sys, time
from lmlab.runs import RunDir
RunDir(sys.argv[1]).lock()
print("locked", flush=True)
time.sleep(600)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def _wait_for(condition: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_contenders_released_at_the_same_instant_get_one_lock(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "demo").path
    gate = tmp_path / "gate"
    gate.mkdir()
    n = 4
    procs = [subprocess.Popen([sys.executable, "-c", _CONTENDER, str(gate), str(run), str(i)],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(n)]
    try:
        _wait_for(lambda: len(list(gate.glob("ready-*"))) == n, "the contenders to start")
        (gate / "go").touch()  # the start line: every contender goes at once
        _wait_for(lambda: sum(p.poll() is not None for p in procs) >= n - 1,
                  "all contenders but one to give up")
        refused = [p for p in procs if p.poll() == 2]
        assert len(refused) == n - 1, [p.communicate() for p in procs if p.poll() is not None]
        (winner,) = [p for p in procs if p not in refused]
        for p in refused:
            out = p.stdout.read().strip()  # type: ignore[union-attr]
            assert out == (f"refused: {run} is being written by another lmlab process "
                           f"(pid {winner.pid}); wait for it to finish or stop it")
        (gate / "done").touch()
        assert winner.wait(timeout=60) == 0
        assert winner.stdout.read().strip() == "won"  # type: ignore[union-attr]
    finally:
        (gate / "done").touch()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    DirectoryLock(run).acquire().release()  # and free once the winner has gone


def test_a_sigkilled_holder_does_not_block(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "demo")
    run.save_config({"seed": 0})
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run.path)], env=_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"  # type: ignore[union-attr]
        with pytest.raises(LmlabError, match=rf"\(pid {holder.pid}\); wait for it"):
            RunDir.open(run.path).lock()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert holder.returncode == -signal.SIGKILL
    assert (run.path / ".lock").read_text().strip() == str(holder.pid)  # the stale pid stays
    again = RunDir.open(run.path).lock()  # but not the lock: at once, no waiting
    assert (run.path / ".lock").read_text().strip() == str(os.getpid())
    again.unlock()


def test_lock_is_per_run_directory_object_and_reentrant(tmp_path: Path) -> None:
    a = RunDir.create(tmp_path, "demo", "a")
    b = RunDir.create(tmp_path, "demo", "b")
    assert a.lock() is a and a.lock() is a  # taking it twice is harmless
    b.lock()  # another directory: its own lock
    with pytest.raises(LmlabError, match="is being written by another lmlab process"):
        RunDir(a.path).lock()  # a second writer, even in this process
    a.unlock()
    a.unlock()  # releasing twice too
    RunDir(a.path).lock().unlock()
    b.unlock()


def test_no_fcntl_means_no_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows has no flock: a run there is not protected, and not refused either."""
    monkeypatch.setitem(sys.modules, "fcntl", None)  # import fcntl now raises ImportError
    first = DirectoryLock(tmp_path).acquire()
    second = DirectoryLock(tmp_path).acquire()
    assert not first.held and not second.held
    assert not (tmp_path / ".lock").exists()


def test_a_lab_being_written_is_refused(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from lmlab.cli import main

    lab = tmp_path / "lab-20260101-000000"
    lab.mkdir()
    with DirectoryLock(lab):
        code = main(["run", "all", "--out", str(tmp_path), "--resume", str(lab)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == (f"lmlab: error: {lab} is being written by another lmlab "
                                 f"process (pid {os.getpid()}); wait for it to finish or stop it")
    assert sorted(p.name for p in lab.iterdir()) == [".lock"]  # nothing ran
