"""The MLP with BatchNorm: fused gradients equal autograd's, BatchNorm train/eval behaviour,
folding equality, the initial loss, and the zero-init symmetry."""

from __future__ import annotations

import math

import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.models.char_mlp import (
    BN_MOMENTUM,
    CharMLP,
    CharMLPEnsemble,
    MLPShape,
    MLPVariant,
)

SHAPE = MLPShape(vocab_size=27, block_size=3, n_embd=10, n_hidden=200)
ALL = [MLPVariant("e01"), MLPVariant("e03", direct=True),
       MLPVariant("unscaled", last_layer_scale=1.0), MLPVariant("gaussian", init="gaussian"),
       MLPVariant("zero", init="zero"), MLPVariant("nobn", batchnorm=False),
       MLPVariant("nobn-gaussian", init="gaussian", batchnorm=False)]
SEED = 2147483647


def batches(n: int, batch: int = 32, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        X = torch.randint(0, 27, (batch, 3), generator=g)
        out.append((X, (X[:, 0] * 7 + X[:, 2]) % 27))  # a learnable rule
    return out


@pytest.mark.parametrize("order", ["plain-last", "mixed"])
def test_fused_step_equals_autograd_for_every_variant(order: str) -> None:
    # members without BatchNorm at the end take a sliced path, elsewhere a blended one
    variants = ALL if order == "plain-last" else [ALL[5], *ALL[:3], ALL[6], *ALL[3:5]]
    ens = CharMLPEnsemble(SHAPE, variants, seed=SEED, dtype=torch.float64)
    assert (ens._plain_tail is None) == (order == "mixed")
    (X, Y), = batches(1)
    before = {n: p.clone() for n, p in ens.params.items()}
    loss = ens.step(X, Y, lr=1.0)
    for k, variant in enumerate(variants):
        ref = CharMLP(SHAPE, variant, generator=torch.Generator().manual_seed(SEED)).double()
        out = torch.nn.functional.cross_entropy(ref(X), Y)
        out.backward()
        assert float(loss[k]) == pytest.approx(out.item(), abs=1e-12)
        for name, p in ref.named_parameters():
            step = (before[name][k] - ens.params[name][k]).reshape(p.shape)  # lr 1: -grad
            assert torch.allclose(step, p.grad, atol=1e-12, rtol=1e-9), (variant.name, name)
        if not variant.batchnorm:
            assert (ens.params["gain"][k] == 1).all() and (ens.params["beta"][k] == 0).all()
            continue
        assert (ens.params["b1"][k] == before["b1"][k]).all()  # BatchNorm cancels b1
        assert torch.allclose(ens.running_mean[k, 0], ref.running_mean, atol=1e-15)
        assert torch.allclose(ens.running_std[k, 0], ref.running_std, atol=1e-15)
    assert not ens.variants[0].direct and (ens.params["W_skip"][0] == 0).all()  # masked


def test_a_member_trains_the_same_alone_or_in_an_ensemble() -> None:
    alone = CharMLPEnsemble(SHAPE, [ALL[0]], seed=SEED)
    together = CharMLPEnsemble(SHAPE, ALL, seed=SEED)
    for X, Y in batches(100):
        a, b = alone.step(X, Y, 0.1), together.step(X, Y, 0.1)
    assert float(a[0]) == pytest.approx(float(b[0]), abs=1e-5)
    assert torch.allclose(alone.params["W1"][0], together.params["W1"][0], atol=1e-5)


def test_autograd_module_and_ensemble_follow_the_same_trajectory() -> None:
    ens = CharMLPEnsemble(SHAPE, [ALL[1], ALL[5]], seed=SEED, dtype=torch.float64)
    ref = CharMLP(SHAPE, ALL[1], generator=torch.Generator().manual_seed(SEED)).double()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for X, Y in batches(50):
        ens.step(X, Y, 0.1)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(X), Y).backward()
        opt.step()
    X, _ = batches(1, batch=500, seed=9)[0]
    ref.eval()
    assert torch.allclose(ens.logits(X)[0], ref(X), atol=1e-10)


def test_batchnorm_train_statistics_and_eval_running_statistics() -> None:
    ens = CharMLPEnsemble(SHAPE, [ALL[0]], seed=SEED, dtype=torch.float64)
    X, Y = batches(1, batch=256)[0]
    pre = ens.preactivation(X, batch_stats=True)[0]  # gain 1, beta 0 at init
    assert torch.allclose(pre.mean(0), torch.zeros(200, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(pre.std(0), torch.ones(200, dtype=torch.float64), atol=1e-4)
    hpre = X.new_zeros(0)
    emb = ens.params["C"][0][X].flatten(1)
    hpre = emb @ ens.params["W1"][0]
    ens.step(X, Y, lr=0.0)  # no update, but the running statistics move
    assert torch.allclose(ens.running_mean[0, 0], BN_MOMENTUM * hpre.mean(0), atol=1e-14)
    expected_std = (1 - BN_MOMENTUM) + BN_MOMENTUM * (hpre.var(0) + 1e-5).sqrt()
    assert torch.allclose(ens.running_std[0, 0], expected_std, atol=1e-14)
    # evaluation: a row's output does not depend on the other rows of the batch
    full = ens.logits(X)[0]
    assert torch.allclose(ens.logits(X[:3])[0], full[:3], atol=1e-12)
    assert not torch.allclose(ens.logits(X[:3], batch_stats=True)[0], full[:3], atol=1e-3)


def test_folding_batchnorm_changes_nothing_but_round_off() -> None:
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        ens = CharMLPEnsemble(SHAPE, [*ALL[:2], ALL[5]], seed=SEED, dtype=dtype)
        for X, Y in batches(200):
            ens.step(X, Y, 0.1)
        X, _ = batches(1, batch=1000, seed=5)[0]
        bn, folded = ens.preactivation(X), ens.preactivation(X, folded=True)
        assert float((bn - folded).abs().max()) < tol
        assert float((bn - folded).abs().max()) > 0 or dtype == torch.float64
        assert torch.allclose(ens.logits(X), ens.logits(X, folded=True), atol=10 * tol)


def test_initial_loss_with_and_without_last_layer_scaling() -> None:
    ens = CharMLPEnsemble(SHAPE, ALL, seed=SEED)
    X, Y = batches(1, batch=4000, seed=3)[0]
    loss = ens.loss(X, Y, batch_stats=True)
    uniform = math.log(27)
    assert float(loss[4]) == pytest.approx(uniform, abs=1e-6)  # zero init: exactly uniform
    assert abs(float(loss[0]) - uniform) < 0.05                 # scaled by 0.01
    assert float(loss[2]) > 4 * uniform                          # unscaled: hockey stick


def test_zero_init_never_breaks_the_symmetry() -> None:
    ens = CharMLPEnsemble(SHAPE, [ALL[0], ALL[4]], seed=SEED)
    for X, Y in batches(300):
        ens.step(X, Y, 0.1)
        g = ens.grads["W1"][1]
        assert torch.equal(g, g[:, :1].expand_as(g))  # every hidden unit, the same gradient
    X, Y = batches(1, batch=500, seed=4)[0]
    h = ens.hidden(X)
    assert torch.equal(h[1], h[1][:, :1].expand_as(h[1]))          # all units identical
    assert float((h[0] - h[0][:, :1]).abs().max()) > 0.5           # E01's units differ
    assert float(ens.params["b2"][1].abs().max()) > 0               # only the bias learns
    assert float(ens.loss(X, Y)[1]) < math.log(27)                 # the unigram, no more


def test_diagnostics_rows_per_member() -> None:
    ens = CharMLPEnsemble(SHAPE, [ALL[0], ALL[6], ALL[4], ALL[3], ALL[5]], seed=SEED)
    X, Y = batches(1)[0]
    ens.step(X, Y, 0.1)
    rows = ens.diagnostics(step=0, lr=0.1)
    assert [r["member"] for r in rows] == ["e01", "nobn-gaussian", "zero", "gaussian", "nobn"]
    sat = [float(r["tanh_saturation"]) for r in rows]
    assert sat[1] > 0.5          # W1 ~ N(0, 1) without BatchNorm: most units saturate
    assert max(sat[0], sat[3]) < 0.06  # BatchNorm, whatever W1's scale: P(|z| > 2.09) = 3.7%
    assert 0.15 < sat[4] < 0.3         # Kaiming gain 5/3 alone: P(|z| > 1.25) = 21%
    assert -5 < float(rows[0]["ud_log10_W1"]) < 0
    assert math.isnan(float(rows[2]["ud_log10_W1"]))  # zero weights: ratio undefined


def test_bad_variants_and_shapes() -> None:
    with pytest.raises(LmlabError, match="unknown init"):
        MLPVariant("x", init="ones")  # type: ignore[arg-type]
    with pytest.raises(LmlabError, match="block_size"):
        MLPShape(block_size=0)
    with pytest.raises(LmlabError, match="unique"):
        CharMLPEnsemble(SHAPE, [ALL[0], ALL[0]])
