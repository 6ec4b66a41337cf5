"""The training core: random states that round-trip through a weights-only checkpoint, the
parts of a run restored exactly, the NaN guard's one-line messages, the progress bar."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.train.checkpoint import load_checkpoint, save_checkpoint
from lmlab.train.core import (
    TrainParts,
    check_finite,
    check_finite_weights,
    progress_bar,
    restore_rng,
    resume_from,
    rng_state,
)


def draws(gens: dict) -> list:
    """One draw from every stream a run may use."""
    return [torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.randn(),
            random.random(), gens["np"].integers(0, 10**9, 3).tolist(),
            gens["mt"].random(), torch.rand(2, generator=gens["torch"]).tolist()]


def test_every_random_state_round_trips_through_a_weights_only_file(tmp_path: Path) -> None:
    gens = {"np": np.random.default_rng(1),
            "mt": np.random.Generator(np.random.MT19937(2)),  # array-valued state
            "torch": torch.Generator().manual_seed(3)}
    np.random.randn()  # a cached Gaussian in NumPy's global state
    random.gauss(0, 1)  # and in Python's
    save_checkpoint(tmp_path, {"step": 0, "rng": rng_state(gens)})
    want = draws(gens)
    torch.load(tmp_path / "last.pt", weights_only=True)  # plain values and tensors only
    restore_rng(load_checkpoint(tmp_path / "last.pt")["rng"], gens)
    assert draws(gens) == want


def test_a_missing_stream_is_a_clear_error() -> None:
    state = rng_state()
    with pytest.raises(LmlabError, match="no state of the random stream 'data'"):
        restore_rng(state, {"data": np.random.default_rng(0)})


def _parts(seed: int) -> TrainParts:
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    return TrainParts(model, opt, sched, {"data": torch.Generator().manual_seed(seed)})


def _steps(parts: TrainParts, n: int) -> list[float]:
    losses = []
    for _ in range(n):
        x = torch.randn(4, 3, generator=parts.generators["data"])
        loss = torch.nn.functional.dropout(parts.model(x), 0.5).pow(2).mean()  # type: ignore[misc]
        parts.optimizer.zero_grad()
        loss.backward()
        parts.optimizer.step()
        parts.scheduler.step()
        losses.append(loss.item())
    return losses


def test_resume_from_a_checkpoint_continues_exactly(tmp_path: Path) -> None:
    straight = _steps(_parts(0), 6)
    first = _parts(0)
    head = _steps(first, 3)
    save_checkpoint(tmp_path, first.state(3, losses=head))
    _steps(first, 2)  # lost work after the checkpoint
    again = _parts(5)  # other weights, other random states: all of them are restored
    saved = resume_from(tmp_path / "last.pt", again)
    assert saved is not None and saved["step"] == 3
    assert saved["losses"] + _steps(again, 3) == straight
    assert resume_from(tmp_path / "absent.pt", again) is None


def test_a_checkpoint_of_an_older_layout_names_the_file(tmp_path: Path) -> None:
    parts = _parts(0)
    old = {"step": 2, "model": parts.model.state_dict(),  # type: ignore[union-attr]
           "optimizer": parts.optimizer.state_dict(), "scheduler": parts.scheduler.state_dict(),
           "rng": {"torch": torch.get_rng_state(), "cuda": None}}
    path = save_checkpoint(tmp_path, old)
    with pytest.raises(LmlabError, match=f"{path} lacks rng.numpy, rng.python") as info:
        resume_from(path, parts)
    assert "\n" not in str(info.value)


def test_nan_guard_messages() -> None:
    check_finite(1.5, 0)
    check_finite(torch.ones(2, 3), 0, names=["a", "b"])
    with pytest.raises(LmlabError, match=r"^the training loss became nan at step 4 \(the last "
                                         r"good checkpoint is kept at x.pt\); try a lower lr$"):
        check_finite(float("nan"), 4, hint="try a lower lr", kept="x.pt")
    with pytest.raises(LmlabError, match="loss became inf at step 12;"):
        check_finite(torch.tensor([1.0, 2.0, float("inf")]), 10)
    with pytest.raises(LmlabError, match="loss of b became -inf at step 11;"):
        check_finite(torch.tensor([[1.0, 2.0], [1.0, -float("inf")]]), 10, names=["a", "b"])
    assert str(check_finite.__doc__)  # documented


def test_weight_guard() -> None:
    model = torch.nn.Linear(2, 2)
    check_finite_weights(model, 3)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(LmlabError, match="NaN/Inf by step 3; training stopped; lower the"):
        check_finite_weights(model, 3)


def test_progress_bar_shows_rate_and_eta(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar(10, desc="t", initial=4, enabled=False) as bar:  # silent, calls work
        bar.update(3)
        bar.set_postfix(loss="1.0", refresh=False)
    assert capsys.readouterr().err == ""
    with progress_bar(10, desc="t", initial=4) as bar:
        bar.update(3)
    err = capsys.readouterr().err
    assert "7/10" in err and "step/s" in err and "<" in err  # count, rate, elapsed<remaining
