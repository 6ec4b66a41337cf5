"""The rotary transformer: the authors' state-dict keys, rotary maths, causality, loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.models.rotary_tf import (
    RotaryConfig,
    TFModel,
    apply_rotary,
    load_checkpoint,
    load_state,
    rotary_tables,
)

torch.set_num_threads(1)


def expected_keys(num_layers: int) -> list[str]:
    keys = ["embed.embed.weight"]
    for i in range(num_layers):
        keys += [f"h.{i}.ln_1.weight", f"h.{i}.ln_1.bias"]
        for w in "qkvo":
            keys += [f"h.{i}.mha.W_{w}.weight", f"h.{i}.mha.W_{w}.bias"]
        keys += [f"h.{i}.ln_2.weight", f"h.{i}.ln_2.bias"]
    return keys + ["ln_f.weight", "ln_f.bias", "fc.weight", "fc.bias"]


def test_state_dict_keys_are_the_authors() -> None:
    state = TFModel().state_dict()
    assert list(state) == expected_keys(2)  # no rotary tables, no dropout
    assert state["h.0.mha.W_q.weight"].shape == (64, 64)
    assert state["fc.weight"].shape == (64, 64) and state["fc.bias"].shape == (64,)


def test_parameter_count() -> None:
    V = d = 64
    layers = 2
    per_layer = 4 * (d * d + d) + 2 * (2 * d)  # W_q, W_k, W_v, W_o with bias; ln_1, ln_2
    total = V * d + layers * per_layer + 2 * d + (d * V + V)  # embed, blocks, ln_f, fc
    assert total == 42176
    assert sum(p.numel() for p in TFModel().parameters()) == total
    mlp = TFModel(RotaryConfig(mlp=True))
    assert sum(p.numel() for p in mlp.parameters()) == total + layers * (2 * 64 * 256 + 256 + 64)


def test_default_init_and_untied_readout() -> None:
    torch.manual_seed(0)
    model = TFModel()
    assert model.embed.embed.weight.std().item() == pytest.approx(1.0, abs=0.05)  # N(0, 1)
    assert model.fc.weight.data_ptr() != model.embed.embed.weight.data_ptr()


def test_rotary_is_complex_multiplication_of_consecutive_pairs() -> None:
    torch.manual_seed(1)
    d_head, n_ctx = 8, 10
    x = torch.randn(n_ctx, d_head)
    cos, sin = rotary_tables(d_head, n_ctx, theta=10000.0)
    theta = 10000.0 ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)
    angle = torch.arange(n_ctx, dtype=torch.float64)[:, None] * theta
    z = torch.view_as_complex(x.double().reshape(n_ctx, d_head // 2, 2).contiguous())
    expected = torch.view_as_real(z * torch.polar(torch.ones_like(angle), angle)).reshape(
        n_ctx, d_head)
    assert torch.allclose(apply_rotary(x, cos, sin).double(), expected, atol=1e-5)
    assert torch.equal(apply_rotary(x, cos, sin)[0], x[0])  # position 0 is not rotated


def test_rotary_score_depends_on_relative_position_only() -> None:
    torch.manual_seed(2)
    d_head, n_ctx = 64, 64
    cos, sin = rotary_tables(d_head, n_ctx)
    q, k = torch.randn(d_head), torch.randn(d_head)
    rq = apply_rotary(q.expand(n_ctx, d_head), cos, sin)  # q placed at every position
    rk = apply_rotary(k.expand(n_ctx, d_head), cos, sin)
    scores = rq @ rk.T  # (m, n): query at m, key at n
    for m, n in ((10, 3), (40, 0), (5, 5), (2, 30)):
        for shift in (1, 7, 20):
            assert scores[m + shift, n + shift].item() == pytest.approx(
                scores[m, n].item(), rel=1e-4, abs=1e-4)
    assert abs(scores[10, 3].item() - scores[10, 4].item()) > 1e-3  # it does depend on n - m


def test_layer_score_is_shift_invariant() -> None:
    """Through a real block (dropout off): same query/key tokens, both shifted, same score."""
    torch.manual_seed(3)
    model = TFModel().eval()
    block = model.h[0]
    a, b = torch.randn(64), torch.randn(64)
    x = torch.randn(1, 64, 64)

    def score(m: int, n: int) -> float:
        y = x.clone()
        y[0, m], y[0, n] = a, b
        return block.mha.scores(block.ln_1(y))[0, 0, m, n].item()

    for m, n in ((12, 4), (30, 29), (20, 0)):
        for shift in (3, 17):
            assert score(m + shift, n + shift) == pytest.approx(score(m, n), abs=1e-4)


def test_fused_attention_equals_explicit_softmax() -> None:
    torch.manual_seed(4)
    mha = TFModel().h[1].mha
    x = torch.randn(3, 20, 64)
    v = mha.W_v(x).view(3, 20, 1, 64).transpose(1, 2)
    explicit = mha.W_o((mha.pattern(x) @ v).transpose(1, 2).reshape(3, 20, 64))
    assert torch.allclose(mha(x), explicit, atol=1e-5)
    assert torch.isinf(mha.scores(x)[0, 0, 0, 1:]).all()  # causal mask


def test_causality() -> None:
    torch.manual_seed(5)
    model = TFModel().eval()
    x = torch.randint(0, 64, (2, 64))
    y = x.clone()
    y[:, 40] = (y[:, 40] + 1) % 64
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.equal(a[:, :40], b[:, :40])
    assert not torch.allclose(a[:, 40:], b[:, 40:])


def test_dropout_only_in_training() -> None:
    torch.manual_seed(6)
    model = TFModel()
    x = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        assert not torch.equal(model.train()(x), model(x))
        assert torch.equal(model.eval()(x), model(x))


def test_too_long_sequence() -> None:
    with pytest.raises(LmlabError, match="max_seq_len=64"):
        TFModel()(torch.zeros(1, 65, dtype=torch.long))


def test_bad_config_names_the_field() -> None:
    with pytest.raises(LmlabError, match="model.num_layers"):
        TFModel(RotaryConfig(num_layers=0))
    with pytest.raises(LmlabError, match="model.d_model"):
        TFModel(RotaryConfig(d_model=63))


def test_from_run_config() -> None:
    cfg = RotaryConfig.from_run_config({"vocab_size": 32, "num_layers": 1, "lr": 1e-3,
                                        "rotary_theta": None, "device": "cuda"})
    assert cfg == RotaryConfig(vocab_size=32, num_layers=1)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(7)
    model = TFModel()
    path = tmp_path / "ckpt_0.pt"
    torch.save(model.state_dict(), path)
    loaded = load_checkpoint(path)
    x = torch.randint(0, 64, (1, 64))
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_checkpoint_of_another_architecture_names_the_keys(tmp_path: Path) -> None:
    one_layer = tmp_path / "one.pt"
    torch.save(TFModel(RotaryConfig(num_layers=1)).state_dict(), one_layer)
    with pytest.raises(LmlabError, match=r"missing keys: h\.1\.ln_1\.weight") as info:
        load_checkpoint(one_layer)
    assert "one.pt" in str(info.value) and "\n" not in str(info.value)

    with pytest.raises(LmlabError, match=r"unexpected keys: h\.0\.feed_forward"):
        load_state(TFModel(), TFModel(RotaryConfig(mlp=True)).state_dict())
    with pytest.raises(LmlabError, match=r"mis-shaped: embed\.embed\.weight \(32, 64\)"):
        load_state(TFModel(), TFModel(RotaryConfig(vocab_size=32)).state_dict())
    with pytest.raises(LmlabError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(LmlabError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
