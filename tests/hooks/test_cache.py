"""capture(): cached activations equal those computed by hand."""

from __future__ import annotations

import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.hooks import capture
from tests.hooks.conftest import tiny


def test_gpt2_activations_match_hand_computation(ids: torch.Tensor) -> None:
    model = tiny("gpt2")
    t = model.transformer
    paths = ["transformer.drop", "transformer.h.0", "transformer.h.0.attn",
             "transformer.h.1.attn.c_proj", "transformer.ln_f", "lm_head"]
    with torch.no_grad():
        with capture(model, paths, device="cpu") as cache:
            result = model(ids, output_hidden_states=True)
        embed = t.wte(ids) + t.wpe(torch.arange(ids.shape[1]))
        T = ids.shape[1]
        causal = torch.full((T, T), torch.finfo(embed.dtype).min).triu(1)[None, None]
        block0 = t.h[0](embed, attention_mask=causal)
        attn0 = t.h[0].attn(t.h[0].ln_1(embed), attention_mask=causal)[0]  # tuple's first
        block1_in = t.h[1].ln_1(block0)
    assert sorted(cache) == sorted(paths)
    torch.testing.assert_close(cache["transformer.drop"], embed)
    torch.testing.assert_close(cache["transformer.h.0"], block0)
    torch.testing.assert_close(cache["transformer.h.0"], result.hidden_states[1])
    torch.testing.assert_close(cache["transformer.h.0.attn"], attn0, atol=1e-6, rtol=1e-5)
    assert cache["transformer.h.1.attn.c_proj"].shape == block1_in.shape
    torch.testing.assert_close(cache["transformer.ln_f"], result.hidden_states[-1])
    torch.testing.assert_close(cache["lm_head"], result.logits)
    assert cache.shapes()["lm_head"] == (3, 7, 300)


def test_detached_by_default_and_kept_on_request(ids: torch.Tensor) -> None:
    model = tiny("llama")
    with capture(model, "model.layers.0") as cache:
        model(ids)
    assert not cache["model.layers.0"].requires_grad
    with capture(model, "model.layers.0", detach=False) as cache:
        model(ids)
    assert cache["model.layers.0"].requires_grad


def test_inputs_and_last_pass_wins(ids: torch.Tensor) -> None:
    model = tiny("bert")
    with torch.no_grad(), capture(model, "encoder.layer.1.attention.output.dense",
                                  inputs=True) as cache:
        model(ids[:1])
        model(ids)
    assert cache["encoder.layer.1.attention.output.dense"].shape == (3, 7, 32)


def test_capture_removes_hooks_and_rejects_bad_path() -> None:
    model = tiny("gpt2")
    with pytest.raises(LmlabError, match="nearest"), capture(model, "transformer.h.5"):
        pass
    with pytest.raises(ValueError), capture(model, "transformer.h.0"):
        raise ValueError
    assert all(not m._forward_hooks for m in model.modules())
