"""Each attention ablation does what its name says, on GPT-2, Llama (grouped-query) and BERT."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.hooks import MODES, ablate, capture, locate
from tests.hooks.conftest import out, tiny

ATOL = 1e-6


def _in_cols(module: torch.nn.Module) -> torch.Tensor:
    """W_O's weight as (out, in) view: GPT-2's Conv1D stores it transposed."""
    w = module.weight
    return w.T if type(module).__name__ == "Conv1D" else w


def _v_and_o(model: torch.nn.Module, ids: torch.Tensor, layer: int, mode: str | None,
             heads: list[int] | None = None, **kw: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """V per query head (B, T, H, D) and W_O's input (B, T, H, D) of ``layer``, under ``mode``."""
    layout = locate(model)
    d = layout.dims
    vp, op = layout.path("value", layer), layout.path("out_proj", layer)
    ablation = (contextlib.nullcontext() if mode is None
                else ablate(model, mode, layers=[layer], heads=heads))
    # hooks on one module run in the order attached: ablate first, then capture what it made
    with torch.no_grad(), ablation, capture(model, [vp]) as v_cache, \
            capture(model, [op], inputs=True) as o_cache:
        model(ids, **kw)
    v = v_cache[vp][..., -d.n_kv_heads * d.d_head:]
    v = v.reshape(*v.shape[:2], d.n_kv_heads, d.d_head).repeat_interleave(d.group, dim=2)
    o = o_cache[op].reshape(*v.shape[:2], d.n_heads, d.d_head)
    return v, o


def test_zero_equals_zeroed_output_projection(fam: str, ids: torch.Tensor) -> None:
    model = tiny(fam)
    zeroed = copy.deepcopy(model)
    layout = locate(zeroed)
    for layer in range(2):
        proj = zeroed.get_submodule(layout.path("out_proj", layer))
        with torch.no_grad():
            proj.weight.zero_()
            proj.bias.zero_() if proj.bias is not None else None
    with torch.no_grad():
        with ablate(model, "zero"):
            ablated = out(model, ids)
        expected = out(zeroed, ids)
        plain = out(model, ids)
    torch.testing.assert_close(ablated, expected, atol=ATOL, rtol=0)
    assert not torch.allclose(ablated, plain, atol=1e-3)


def test_zero_heads_equals_zeroed_input_columns(fam: str, ids: torch.Tensor) -> None:
    model = tiny(fam)
    zeroed = copy.deepcopy(model)
    layout = locate(zeroed)
    d_head = layout.dims.d_head
    proj = zeroed.get_submodule(layout.path("out_proj", 1))
    with torch.no_grad():
        for h in (0, 2):
            _in_cols(proj)[:, h * d_head:(h + 1) * d_head] = 0.0
        with ablate(model, "zero", layers=[1], heads=[0, 2]):
            ablated = out(model, ids)
        expected = out(zeroed, ids)
    torch.testing.assert_close(ablated, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("fam", ["gpt2", "llama"])
def test_uniform_causal_is_mean_of_v_over_window(fam: str, ids: torch.Tensor) -> None:
    model = tiny(fam)
    v, o = _v_and_o(model, ids, layer=1, mode="uniform")
    T = ids.shape[1]
    pattern = torch.tril(torch.ones(T, T))
    pattern = pattern / pattern.sum(-1, keepdim=True)  # row t: 1/(t+1) on 0..t
    torch.testing.assert_close(pattern.sum(-1), torch.ones(T))
    expected = torch.einsum("ts,bshd->bthd", pattern, v)
    torch.testing.assert_close(o, expected, atol=ATOL, rtol=1e-5)
    # position 0 attends only to itself; the last position to all, equally
    torch.testing.assert_close(o[:, 0], v[:, 0], atol=ATOL, rtol=0)
    torch.testing.assert_close(o[:, -1], v.mean(1), atol=ATOL, rtol=1e-5)


def test_uniform_bert_excludes_padding_keys(ids: torch.Tensor) -> None:
    model = tiny("bert")
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0  # right padding
    mask[1, :2] = 0  # left padding
    v, o = _v_and_o(model, ids, layer=0, mode="uniform", attention_mask=mask)
    for b in range(ids.shape[0]):
        keys = mask[b].bool()
        expected = v[b, keys].mean(0)  # (H, D), the same for every query position
        for t in range(ids.shape[1]):
            torch.testing.assert_close(o[b, t], expected, atol=ATOL, rtol=1e-5)
    v, o = _v_and_o(model, ids, layer=0, mode="uniform")  # no mask: all positions
    torch.testing.assert_close(o, v.mean(1, keepdim=True).expand_as(o), atol=ATOL, rtol=1e-5)


def test_uniform_causal_with_left_padding(ids: torch.Tensor) -> None:
    model = tiny("llama")
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    v, o = _v_and_o(model, ids, layer=0, mode="uniform", attention_mask=mask)
    for t in range(3, ids.shape[1]):
        torch.testing.assert_close(o[0, t], v[0, 3:t + 1].mean(0), atol=ATOL, rtol=1e-5)


def test_uniform_only_chosen_heads(fam: str, ids: torch.Tensor) -> None:
    model = tiny(fam)
    _, plain = _v_and_o(model, ids, layer=0, mode=None)
    v, o = _v_and_o(model, ids, layer=0, mode="uniform", heads=[1])
    torch.testing.assert_close(o[:, :, [0, 2, 3]], plain[:, :, [0, 2, 3]], atol=0, rtol=0)
    assert not torch.allclose(o[:, :, 1], plain[:, :, 1], atol=1e-4)


def test_previous_token_is_v_shifted_by_one(fam: str, ids: torch.Tensor) -> None:
    model = tiny(fam)
    v, o = _v_and_o(model, ids, layer=1, mode="previous-token")
    torch.testing.assert_close(o[:, 1:], v[:, :-1], atol=ATOL, rtol=0)
    torch.testing.assert_close(o[:, 0], v[:, 0], atol=ATOL, rtol=0)


def test_mean_is_reference_mean(fam: str, ids: torch.Tensor) -> None:
    model = tiny(fam)
    layout = locate(model)
    paths = [layout.path("out_proj", layer) for layer in range(2)]
    reference = torch.randint(0, 300, (4, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        with capture(model, paths) as ref_cache:
            model(reference)
        with ablate(model, "mean", reference=reference), capture(model, paths) as cache:
            model(ids)
    for path in paths:
        expected = ref_cache[path].mean(dim=(0, 1))
        torch.testing.assert_close(cache[path], expected.expand_as(cache[path]),
                                   atol=1e-5, rtol=1e-5)


def test_mean_reference_mask_ignores_padding(ids: torch.Tensor) -> None:
    model = tiny("bert")
    path = locate(model).path("out_proj", 0)
    reference = torch.randint(0, 300, (2, 6), generator=torch.Generator().manual_seed(3))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    with torch.no_grad():
        with capture(model, path) as ref_cache:
            model(reference, attention_mask=mask)
        with ablate(model, "mean", layers=[0],
                    reference={"input_ids": reference, "attention_mask": mask}), \
                capture(model, path) as cache:
            model(ids)
    expected = ref_cache[path][mask.bool()].mean(0)
    torch.testing.assert_close(cache[path][0, 0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["zero", "uniform", "previous-token"])
def test_ablating_layer_1_leaves_layer_0(fam: str, mode: str, ids: torch.Tensor) -> None:
    model = tiny(fam)
    blocks = locate(model).blocks
    paths = [f"{blocks}.0", f"{blocks}.1"]
    with torch.no_grad():
        with capture(model, paths) as plain:
            model(ids)
        with ablate(model, mode, layers=1), capture(model, paths) as ablated:
            model(ids)
    torch.testing.assert_close(ablated[paths[0]], plain[paths[0]], atol=0, rtol=0)
    assert not torch.allclose(ablated[paths[1]], plain[paths[1]], atol=1e-4)


def test_uniform_gives_no_gradient_to_queries_and_keys(ids: torch.Tensor) -> None:
    model = tiny("llama")
    with ablate(model, "uniform"):
        out(model, ids).sum().backward()
    attn = model.model.layers[0].self_attn
    for proj in (attn.q_proj, attn.k_proj):
        assert proj.weight.grad is None or torch.count_nonzero(proj.weight.grad) == 0
    assert torch.count_nonzero(attn.v_proj.weight.grad) > 0


def test_hooks_removed_after_exception(fam: str, ids: torch.Tensor) -> None:
    model = tiny(fam)
    with torch.no_grad():
        plain = out(model, ids)
        for mode in MODES:
            ref = ids if mode == "mean" else None
            with pytest.raises(KeyError), ablate(model, mode, reference=ref):
                out(model, ids)
                raise KeyError(mode)
        assert all(not (m._forward_hooks or m._forward_pre_hooks) for m in model.modules())
        torch.testing.assert_close(out(model, ids), plain, atol=0, rtol=0)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mode": "softmax-of-zeros"}, r"unknown ablation mode .*zero, uniform, mean, previous"),
    ({"mode": "zero", "layers": [2]}, r"layer 2 out of range; valid layers: 0\.\.1"),
    ({"mode": "zero", "layers": [-1]}, r"valid layers: 0\.\.1"),
    ({"mode": "zero", "layers": []}, "empty layers"),
    ({"mode": "uniform", "heads": [4]}, r"head 4 out of range; valid heads: 0\.\.3"),
    ({"mode": "mean"}, "needs reference"),
    ({"mode": "zero", "reference": torch.zeros(1, 2, dtype=torch.long)}, "mode 'mean' only"),
])
def test_errors(kwargs: dict, message: str) -> None:
    model = tiny("gpt2")
    with pytest.raises(LmlabError, match=message) as err, ablate(model, **kwargs):
        pass
    assert "\n" not in str(err.value)


def test_unsupported_family_lists_supported() -> None:
    import transformers as tf

    model = tf.OPTForCausalLM(tf.OPTConfig(num_hidden_layers=1, hidden_size=16, ffn_dim=32,
                                           num_attention_heads=2, vocab_size=50,
                                           word_embed_proj_dim=16))
    with pytest.raises(LmlabError, match=r"supported families: gpt2 .*llama .*bert"):
        with ablate(model, "zero"):
            pass


def test_kv_cache_is_refused() -> None:
    model = tiny("gpt2")
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        past = model(ids, use_cache=True).past_key_values
        with pytest.raises(LmlabError, match="past_key_values"), ablate(model, "uniform"):
            model(torch.tensor([[4]]), past_key_values=past)


@pytest.mark.parametrize("name", ["Mistral", "Qwen2"])
def test_llama_layout_families(name: str, ids: torch.Tensor) -> None:
    import transformers as tf

    torch.manual_seed(0)
    cfg = getattr(tf, f"{name}Config")(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2,
                                       vocab_size=300, max_position_embeddings=32)
    model = getattr(tf, f"{name}ForCausalLM")(cfg).eval()
    assert locate(model).family.name == "llama"
    v, o = _v_and_o(model, ids, layer=0, mode="previous-token")
    torch.testing.assert_close(o[:, 1:], v[:, :-1], atol=ATOL, rtol=0)


def test_the_mask_is_read_once_per_forward_not_once_per_layer(
        ids: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether the attention mask is all ones is read from the device once per forward pass
    (a read waits for a GPU), however many layers are ablated; the numbers are unchanged."""
    model = tiny("llama")
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.no_grad(), ablate(model, "uniform", layers=[0, 1]):
        expected = out(model, ids, attention_mask=mask)
    reads = []
    real_all = torch.Tensor.all

    def counting_all(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        if self is mask:
            reads.append(1)
        return real_all(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "all", counting_all)
    with torch.no_grad(), ablate(model, "uniform", layers=[0, 1]):
        got = out(model, ids, attention_mask=mask)
        assert len(reads) == 1
        out(model, ids, attention_mask=mask)
    assert len(reads) == 2  # one more forward, one more read
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
