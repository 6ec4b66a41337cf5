"""The charlm study's initialisation exercises, by known answers: the zero-initialisation
evidence at step 0 and lecture part 2's MLP (every parameter N(0, 1), no BatchNorm)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmlab.models.char_mlp import CharMLPEnsemble, MLPShape
from lmlab.studies._charlm_phases import lecture2_biases, zero_init_evidence
from lmlab.studies.charlm import DEFAULT_VARIANTS, VARIANTS, Config, MLPConfig
from lmlab.train.sampled import StepConfig, train_ensemble

SHAPE = MLPShape(vocab_size=27, block_size=3, n_embd=10, n_hidden=200)
SEED = 2147483647


def _data(n: int = 500, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 27, (n, 3), generator=g), torch.randint(0, 27, (n,), generator=g)


def test_zero_init_step0_h_and_W1_grad_are_zero_and_the_loss_is_ln27() -> None:
    X, Y = _data()
    ev = zero_init_evidence(SHAPE, VARIANTS["zero"], SEED, X, Y, 32)
    assert ev["zero_init_h_max_abs"] == 0.0
    assert ev["zero_init_W1_grad_max_abs"] == 0.0
    assert ev["zero_init_step0_loss"] == pytest.approx(-math.log(1 / 27), abs=1e-6)
    assert ev["zero_init_b2_grad_max_abs"] > 1 / 32 - 1 / 27  # the output bias does learn


def test_zero_init_b2_grad_is_softmax_minus_onehot() -> None:
    """All targets one class: dL/db2 = 1/27 − onehot, so max |dL/db2| = 26/27."""
    X, Y = _data()
    ev = zero_init_evidence(SHAPE, VARIANTS["zero"], SEED, X, torch.full_like(Y, 5), 32)
    assert ev["zero_init_b2_grad_max_abs"] == pytest.approx(26 / 27, abs=1e-6)


def test_zero_init_evidence_uses_the_loops_first_minibatch() -> None:
    """The fused ensemble's first training step sees the same minibatch: same dL/db2."""
    X, Y = _data()
    ev = zero_init_evidence(SHAPE, VARIANTS["zero"], SEED, X, Y, 32)
    ens = CharMLPEnsemble(SHAPE, [VARIANTS["zero"]], seed=SEED)
    res = train_ensemble(ens, X, Y, StepConfig(steps=1, lr_decay_step=None, diag_every=0))
    assert float(ens.grads["b2"].abs().max()) == pytest.approx(ev["zero_init_b2_grad_max_abs"],
                                                               abs=1e-6)
    assert float(res.losses[0, 0]) == pytest.approx(ev["zero_init_step0_loss"], abs=1e-6)


def test_a_kaiming_init_is_not_zero() -> None:
    """The same measurement on E01 is not zero: the zero answers above could fail."""
    X, Y = _data()
    ev = zero_init_evidence(SHAPE, VARIANTS["e01"], SEED, X, Y, 32)
    assert ev["zero_init_h_max_abs"] > 0.5 and ev["zero_init_W1_grad_max_abs"] > 0


def test_lecture2_parameters_are_the_lectures_draws() -> None:
    """C, W1, b1, W2, b2 = randn in that order from the seed, unscaled; E01 left alone."""
    ens = CharMLPEnsemble(SHAPE, [VARIANTS["e01"], VARIANTS["lecture2"]], seed=SEED)
    lecture2_biases(ens, SEED)
    g = torch.Generator().manual_seed(SEED)
    want = {"C": torch.randn((27, 10), generator=g), "W1": torch.randn((30, 200), generator=g),
            "b1": torch.randn(200, generator=g), "W2": torch.randn((200, 27), generator=g),
            "b2": torch.randn(27, generator=g)}
    for name, value in want.items():
        torch.testing.assert_close(ens.params[name][1].reshape(value.shape), value,
                                   rtol=0, atol=0)
    assert float(ens.params["b2"][0].abs().max()) == 0.0  # E01: b2 = 0
    assert float(ens.params["W2"][0].abs().max()) < 0.1   # E01: W2 · 0.01


def test_lecture2_initial_loss_matches_a_numpy_forward() -> None:
    """The ensemble's plain path with the lecture's biases against a numpy re-computation."""
    X, Y = _data(300, seed=1)
    ens = CharMLPEnsemble(SHAPE, [VARIANTS["e01"], VARIANTS["lecture2"]], seed=SEED)
    lecture2_biases(ens, SEED)
    p = {k: v[1].double().numpy() for k, v in ens.params.items()}
    emb = p["C"][X.numpy()].reshape(len(X), -1)
    logits = np.tanh(emb @ p["W1"] + p["b1"].ravel()) @ p["W2"] + p["b2"].ravel()
    logits -= logits.max(1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    want = -logp[np.arange(len(Y)), Y.numpy()].mean()
    got = ens.loss(X, Y).tolist()
    assert got[1] == pytest.approx(want, rel=1e-5)
    assert got[1] > 10 > got[0]  # unscaled W2 and b2: the lecture's high start


def test_lecture2_is_opt_in() -> None:
    """The quick and paper presets train the same variants as before; lecture2 is accepted."""
    assert "lecture2" not in DEFAULT_VARIANTS
    assert Config.quick().mlp.variants == ("e01", "e03", "unscaled", "zero", "bn-gaussian",
                                           "nobn", "nobn-gaussian")
    cfg = Config(mlp=MLPConfig(variants=("e01", "lecture2")))
    cfg.validate()
    assert not VARIANTS["lecture2"].batchnorm and VARIANTS["lecture2"].init == "gaussian"


@pytest.mark.slow
def test_lecture2_and_e01_reach_the_lecture_losses_on_the_2018_file(tmp_path) -> None:
    """200,000 steps of E01 and lecture 2's MLP on the lecture's file (~3–4 min on a CPU)."""
    import json

    from lmlab.studies.runner import run_study
    from tests.conftest import SHARED_DATA

    path = SHARED_DATA / "names_2018.txt"
    if not path.is_file():
        pytest.skip(f"the lecture's names file is not at {path}")
    run = run_study("charlm", preset="paper", out=tmp_path, overrides=[
        f"data.path={path}", "mlp.variants=e01,lecture2", "wavenet.enabled=false",
        "transformer.enabled=false", "samples=0", "mlp.train.diag_every=0", "device=cpu"])
    m = json.loads((run.path / "summary.json").read_text())["models"]
    assert m["mlp-lecture2"]["parameters"] == 11897
    assert m["mlp-lecture2"]["train"] == pytest.approx(2.1260, abs=0.01)
    assert m["mlp-lecture2"]["dev"] == pytest.approx(2.1701, abs=0.01)
    assert m["mlp-e01"]["train"] == pytest.approx(2.0674, abs=0.005)
    assert m["mlp-e01"]["dev"] == pytest.approx(2.1057, abs=0.005)
