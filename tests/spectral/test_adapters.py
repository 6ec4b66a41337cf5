"""LoRA adapters in the PEFT layout: ΔW = s·B·A alone, and W + s·B·A merged into a base, equal
to analysing the directly merged weights; bad adapters fail in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lmlab.errors import LmlabError
from lmlab.spectral import analyze, layer_spectra
from lmlab.spectral.adapters import merge_adapter, read_adapter
from tests.conftest import tiny_model

QV = ("model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj")


def dyadic(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Entries k/8, |k| ≤ 4: every product and sum below is exact in float32 and float64."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-4, 5, shape, generator=g).float() / 8


def write_adapter(path: Path, factors: dict[str, tuple[torch.Tensor, torch.Tensor]],
                  *, fmt: str = "safetensors", **config: object) -> Path:
    """An adapter in PEFT's file layout: adapter_config.json + adapter_model.<fmt>."""
    path.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for module, (a, b) in factors.items():
        tensors[f"base_model.model.{module}.lora_A.weight"] = a.contiguous()
        tensors[f"base_model.model.{module}.lora_B.weight"] = b.contiguous()
    if fmt == "safetensors":
        save_file(tensors, str(path / "adapter_model.safetensors"))
    else:
        torch.save(tensors, path / "adapter_model.bin")
    cfg = {"peft_type": "LORA", "r": 8, "lora_alpha": 16,
           "target_modules": sorted({m.split(".")[-1] for m in factors}), **config}
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    return path


@pytest.fixture
def llama_base(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    model = tiny_model("llama")
    model.save_pretrained(tmp_path / "base")
    return model, tmp_path / "base"


def qv_factors(r: int = 8) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {m: (dyadic((r, 64), 2 * i), dyadic((64 if "q_proj" in m else 32, r), 2 * i + 1))
            for i, m in enumerate(QV)}


def merged_by_hand(model: torch.nn.Module, factors, scaling: float, *,
                   transpose: bool = False) -> torch.nn.Module:
    """The base with W ← W + s·B·A written into its weights (the direct computation)."""
    import copy

    merged = copy.deepcopy(model)
    modules = dict(merged.named_modules())
    with torch.no_grad():
        for name, (a, b) in factors.items():
            delta = scaling * (b @ a)
            modules[name].weight += delta.T if transpose else delta
    return merged


def test_merged_route_equals_the_directly_merged_weights(llama_base, tmp_path: Path) -> None:
    model, base = llama_base
    factors = qv_factors()
    adapter = write_adapter(tmp_path / "lora", factors)
    direct = merged_by_hand(model, factors, 16 / 8)
    via_base = analyze(adapter, base_model=base)
    expected = analyze(direct, layers=list(QV))
    assert via_base["longname"].tolist() == list(QV)
    assert via_base["layer_id"].tolist() == expected["layer_id"].tolist()
    assert (via_base["status"] == "success").all()
    for col in ("alpha", "lambda_max", "log_norm", "stable_rank", "xmin", "D"):
        np.testing.assert_allclose(via_base[col].astype(float), expected[col].astype(float),
                                   rtol=0, atol=1e-10)
    ids = expected["layer_id"].tolist()
    # layers are named as in the merged model: by the base's ids or by longname
    mine, ref = layer_spectra(adapter, ids, base_model=base), layer_spectra(direct, ids)
    assert sorted(layer_spectra(adapter, list(QV), base_model=base)) == sorted(ids)
    for i in ids:
        np.testing.assert_allclose(mine[i], ref[i], rtol=0, atol=1e-10)
    # the whole merged model: every layer, the unadapted ones untouched
    whole = analyze(merge_adapter(base, adapter))
    full = analyze(direct)
    assert whole["longname"].tolist() == full["longname"].tolist()
    np.testing.assert_allclose(whole["alpha"].astype(float), full["alpha"].astype(float),
                               rtol=0, atol=1e-10, equal_nan=True)
    # and the merged model really differs from the base exactly where adapted
    plain = analyze(model)
    changed = plain["longname"][~np.isclose(plain["alpha"], full["alpha"], equal_nan=True)]
    assert set(changed) <= set(QV) and len(changed) > 0


def test_fan_in_fan_out_and_rslora_scaling(tmp_path: Path) -> None:
    model = tiny_model("gpt2")  # Conv1D weights are stored (in, out): fan_in_fan_out
    model.save_pretrained(tmp_path / "gpt2")
    name = "transformer.h.0.attn.c_attn"  # weight (64, 192)
    factors = {name: (dyadic((16, 64), 5), dyadic((192, 16), 6))}
    adapter = write_adapter(tmp_path / "lora", factors, r=16, lora_alpha=8, use_rslora=True,
                            fan_in_fan_out=True)
    scaling = 8 / math.sqrt(16)
    direct = merged_by_hand(model, factors, scaling, transpose=True)
    got = analyze(adapter, base_model=tmp_path / "gpt2")
    want = analyze(direct, layers=[name])
    np.testing.assert_allclose(got["alpha"].astype(float), want["alpha"].astype(float),
                               rtol=0, atol=1e-10)
    assert read_adapter(adapter).layers[0].load.scaling == pytest.approx(2.0)


def test_update_alone_has_rank_r_spectrum(tmp_path: Path) -> None:
    factors = qv_factors(r=8)
    adapter = write_adapter(tmp_path / "lora", factors, fmt="bin")
    df = analyze(adapter)
    assert df["longname"].tolist() == list(QV)
    assert df["layer_type"].tolist() == ["dense", "dense"]
    assert (df["status"] == "success").all()  # r = 8 = min_evals: fitted
    evals = layer_spectra(adapter, df["layer_id"].tolist())
    for lid, (a, b) in zip(df["layer_id"], factors.values(), strict=True):
        sv = np.linalg.svd(2.0 * (b.double() @ a.double()).numpy(), compute_uv=False)
        top = np.sort(evals[int(lid)])[::-1]
        np.testing.assert_allclose(top[:8], sv[:8] ** 2, rtol=1e-9)  # the r non-zero ones
        assert np.all(np.abs(top[8:]) < 1e-9 * top[0])  # the rest are zero: rank ≤ r
    assert df["num_evals"].tolist() == [64, 32]  # the full ESD, min(N, M) values


def test_rank_below_min_evals_is_skipped_with_the_reason(tmp_path: Path) -> None:
    adapter = write_adapter(tmp_path / "lora", qv_factors(r=4), r=4)
    df = analyze(adapter)
    assert df["status"].tolist() == ["skipped", "skipped"]
    assert df["alpha"].isna().all()
    assert "rank r = 4" in df.loc[0, "reason"] and "min_evals 8" in df.loc[0, "reason"]
    assert (analyze(adapter, min_evals=4)["status"] == "success").all()


def test_adapted_layer_missing_from_the_base_is_named(llama_base, tmp_path: Path) -> None:
    _, base = llama_base
    factors = {"model.layers.0.self_attn.q_proj": (dyadic((8, 64), 0), dyadic((64, 8), 1)),
               "model.layers.7.self_attn.q_proj": (dyadic((8, 64), 2), dyadic((64, 8), 3))}
    adapter = write_adapter(tmp_path / "lora", factors)
    with pytest.raises(LmlabError) as e:
        analyze(adapter, base_model=base)
    assert "model.layers.7.self_attn.q_proj" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_corrupt_adapter_file_is_one_line(tmp_path: Path, fmt: str) -> None:
    adapter = write_adapter(tmp_path / "lora", qv_factors(), fmt=fmt)
    (adapter / f"adapter_model.{fmt}").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(LmlabError) as e:
        analyze(adapter)
    assert "adapter_model" in str(e.value) and "\n" not in str(e.value)


def test_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    adapter = write_adapter(tmp_path / "lora", qv_factors())
    (adapter / "adapter_model.safetensors").unlink()
    (adapter / "adapter_model.bin").write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(LmlabError) as e:
        analyze(adapter)
    assert "\n" not in str(e.value)


def test_config_problems_are_one_line(tmp_path: Path) -> None:
    adapter = write_adapter(tmp_path / "lora", qv_factors(), target_modules=["k_proj"])
    with pytest.raises(LmlabError, match="target_modules"):
        analyze(adapter)
    write_adapter(tmp_path / "lora", qv_factors(), r=16)
    with pytest.raises(LmlabError, match="rank 8"):
        analyze(adapter)
    write_adapter(tmp_path / "lora", qv_factors(), use_dora=True)
    with pytest.raises(LmlabError, match="DoRA"):
        analyze(adapter)
    (adapter / "adapter_config.json").write_text("{not json")
    with pytest.raises(LmlabError, match="adapter config"):
        analyze(adapter)


def test_written_by_peft_itself(llama_base, tmp_path: Path) -> None:
    """Cross-check against PEFT's own files and merge (skipped when peft is not installed)."""
    peft = pytest.importorskip("peft", reason="peft is not installed (optional cross-check)")
    model, base = llama_base
    torch.manual_seed(1)
    cfg = peft.LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                          init_lora_weights=False)  # random B, so ΔW ≠ 0
    wrapped = peft.get_peft_model(__import__("copy").deepcopy(model), cfg)
    wrapped.save_pretrained(tmp_path / "peft_lora")
    merged = wrapped.merge_and_unload()
    names = [n for n, _ in merged.named_modules() if n.endswith(("q_proj", "v_proj"))]
    got = analyze(tmp_path / "peft_lora", base_model=base)
    want = analyze(merged, layers=names)
    assert got["longname"].tolist() == want["longname"].tolist()
    np.testing.assert_allclose(got["alpha"].astype(float), want["alpha"].astype(float),
                               rtol=1e-4)
