"""The step loop of sampled minibatches: schedule, reproducibility, NaN guard, bad configs."""

from __future__ import annotations

import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.models.char_mlp import CharMLPEnsemble, MLPShape, MLPVariant
from lmlab.train.sampled import StepConfig, batch_indices, train_ensemble, train_module

SHAPE = MLPShape(vocab_size=7, block_size=2, n_embd=4, n_hidden=16)


def data(n: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    X = torch.randint(0, 7, (n, 2), generator=g)
    return X, (X[:, 0] + X[:, 1]) % 7


def test_learning_rate_steps_down_at_the_decay_step() -> None:
    cfg = StepConfig(steps=10, lr=0.1, lr_decay_step=5, lr_decayed=0.01)
    assert [cfg.lr_at(i) for i in (0, 4, 5, 9)] == [0.1, 0.1, 0.01, 0.01]
    assert StepConfig(lr_decay_step=None).lr_at(10**6) == 0.1


def test_same_seed_same_losses_and_the_loss_falls() -> None:
    X, Y = data()
    cfg = StepConfig(steps=400, lr=0.5, lr_decay_step=300, lr_decayed=0.05, diag_every=100)
    runs = []
    for _ in range(2):
        ens = CharMLPEnsemble(SHAPE, [MLPVariant("a"), MLPVariant("b", direct=True)], seed=3)
        runs.append(train_ensemble(ens, X, Y, cfg, diag_fn=ens.diagnostics))
    assert torch.equal(runs[0].losses, runs[1].losses)
    losses = runs[0].losses
    assert losses.shape == (2, 400)
    assert (losses[:, -50:].mean(1) < losses[:, :50].mean(1) - 0.3).all()
    steps = sorted({r["step"] for r in runs[0].diagnostics})
    assert steps == [0, 100, 200, 300, 399]  # every diag_every steps and the last
    assert runs[0].steps_per_second > 0


def test_nan_loss_stops_training_and_names_the_member() -> None:
    X, Y = data()
    ens = CharMLPEnsemble(SHAPE, [MLPVariant("ok"), MLPVariant("broken")])
    ens.params["W2"][1, 0, 0] = float("nan")
    with pytest.raises(LmlabError, match=r"broken became nan at step 0; lower the learning"):
        train_ensemble(ens, X, Y, StepConfig(steps=100, check_every=10))


def test_train_module_with_adamw_learns() -> None:
    X, Y = data()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(7, 8), torch.nn.Flatten(),
                                torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 7))
    res = train_module(model, X, Y, StepConfig(steps=300, lr=1e-2, optimizer="adamw",
                                               lr_decay_step=None, weight_decay=0.01))
    assert res.losses.shape == (1, 300)
    assert float(res.losses[0, -30:].mean()) < float(res.losses[0, :30].mean()) - 0.5


@pytest.mark.parametrize("cfg, match", [
    (StepConfig(steps=0), "steps"), (StepConfig(batch_size=1), "batch_size"),
    (StepConfig(lr=0.0), "'lr' must be > 0"),
    (StepConfig(optimizer="lion"), "sgd or adamw"),  # type: ignore[arg-type]
])
def test_bad_configs(cfg: StepConfig, match: str) -> None:
    with pytest.raises(LmlabError, match=match):
        cfg.validate()


def test_ensemble_needs_sgd_and_matching_data() -> None:
    X, Y = data()
    ens = CharMLPEnsemble(SHAPE, [MLPVariant("a")])
    with pytest.raises(LmlabError, match="plain SGD"):
        train_ensemble(ens, X, Y, StepConfig(steps=1, optimizer="adamw"))
    with pytest.raises(LmlabError, match="equally long"):
        train_ensemble(ens, X, Y[:10], StepConfig(steps=1))


@pytest.mark.parametrize(("n", "batch", "steps", "chunk"),
                         [(10, 4, 7, 3), (228_146, 32, 1000, 500), (3, 1, 5, 1), (2**33, 2, 4, 4)])
def test_chunked_draws_equal_the_per_step_draws(n: int, batch: int, steps: int,
                                                chunk: int) -> None:
    """One randint per chunk of steps = one per step, and the generator ends in the same state
    (n = 2**33 takes torch's 64-bit path)."""
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    chunked = list(batch_indices(n, batch, steps, g1, chunk=chunk))
    per_step = [torch.randint(0, n, (batch,), generator=g2) for _ in range(steps)]
    assert len(chunked) == steps
    assert all(torch.equal(a, b) for a, b in zip(chunked, per_step, strict=True))
    assert torch.equal(g1.get_state(), g2.get_state())


def test_the_check_interval_changes_no_number() -> None:
    """check_every sets the draw chunk: the losses are the same bit for bit at any value."""
    X, Y = data()
    runs = []
    for every in (1, 7, 500):
        ens = CharMLPEnsemble(SHAPE, [MLPVariant("a")], seed=1)
        runs.append(train_ensemble(ens, X, Y, StepConfig(steps=30, lr=0.3, check_every=every,
                                                         lr_decay_step=None)).losses)
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
