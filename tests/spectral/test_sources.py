"""Streaming from files gives the same rows as the in-memory model; bad files fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from lmlab.errors import LmlabError
from lmlab.spectral import WW_COLUMNS, analyze
from lmlab.spectral.sources import iter_layers
from tests.conftest import tiny_model

NUMERIC = [c for c in WW_COLUMNS if c not in ("name", "longname", "layer_type", "status",
                                                "warning", "has_esd")]


def assert_same_rows(a: pd.DataFrame, b: pd.DataFrame, *, ids: bool = True) -> None:
    assert a["longname"].tolist() == b["longname"].tolist()
    assert a["status"].tolist() == b["status"].tolist()
    if ids:
        assert a["layer_id"].tolist() == b["layer_id"].tolist()
        assert a["layer_type"].tolist() == b["layer_type"].tolist()
    cols = [c for c in NUMERIC if c != "layer_id"]
    np.testing.assert_array_equal(a[cols].astype(float).values, b[cols].astype(float).values)


@pytest.fixture
def saved_gpt2(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    model = tiny_model("gpt2")
    model.save_pretrained(tmp_path / "gpt2", safe_serialization=True)
    return model, tmp_path / "gpt2"


def test_streamed_directory_equals_in_memory(family: str, tmp_path: Path) -> None:
    model = tiny_model(family)
    model.save_pretrained(tmp_path / family)
    assert_same_rows(analyze(tmp_path / family), analyze(model))


def test_single_safetensors_file_with_config_beside_it(saved_gpt2) -> None:
    model, path = saved_gpt2
    assert_same_rows(analyze(path / "model.safetensors"), analyze(model))


def test_sharded_directory_equals_in_memory(tmp_path: Path) -> None:
    model = tiny_model("llama")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    assert_same_rows(analyze(tmp_path / "sharded"), analyze(model))


def test_pt_state_dict_without_config_matches_by_name(tmp_path: Path) -> None:
    model = tiny_model("bert")
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    streamed = analyze(tmp_path / "weights.pt").set_index("longname")
    memory = analyze(model).set_index("longname")
    common = memory.index.intersection(streamed.index)
    assert len(common) == len(memory)  # every in-memory layer is found by name
    assert_same_rows(streamed.loc[common].reset_index(), memory.loc[common].reset_index(),
                     ids=False)


def test_in_memory_state_dict_and_nested_checkpoint(tmp_path: Path) -> None:
    model = tiny_model("gpt2")
    rows = analyze(model.state_dict())
    torch.save({"model": model.state_dict(), "step": 3}, tmp_path / "ckpt.pt")
    nested = analyze(tmp_path / "ckpt.pt")
    assert rows["alpha"].tolist() == nested["alpha"].tolist()


def test_streaming_loads_tensors_one_at_a_time(saved_gpt2) -> None:
    _, path = saved_gpt2
    refs = list(iter_layers(path))
    assert all(callable(r.load) for r in refs)
    assert refs[0].load().shape == refs[0].shape


# ---------------------------------------------------------------------------- bad inputs


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(LmlabError, match="no such file"):
        analyze(tmp_path / "nope.safetensors")


def test_corrupt_safetensors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(LmlabError, match="bad.safetensors.*corrupt"):
        analyze(bad)


def test_truncated_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"layer.weight": torch.randn(64, 64)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LmlabError, match="w.safetensors.*truncated"):
        analyze(path)


def test_corrupt_pt(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    path.write_bytes(b"this is not a zip archive nor a pickle")
    with pytest.raises(LmlabError, match="w.pt"):
        analyze(path)


def test_truncated_pt(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save({"layer.weight": torch.randn(64, 64)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LmlabError, match="w.pt"):
        analyze(path)


def test_file_without_weight_matrices(tmp_path: Path) -> None:
    path = tmp_path / "norms.safetensors"
    save_file({"ln.weight": torch.ones(8), "ln.bias": torch.zeros(8)}, str(path))
    with pytest.raises(LmlabError, match="no weight matrices"):
        analyze(path)


def test_directory_without_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(LmlabError, match="holds no weights"):
        analyze(tmp_path)


def test_nan_weights_in_a_file_name_the_layer(tmp_path: Path) -> None:
    w = torch.randn(32, 32)
    w[0, 0] = float("inf")
    path = tmp_path / "w.safetensors"
    save_file({"blocks.0.proj.weight": w, "blocks.1.proj.weight": torch.randn(32, 32)}, str(path))
    df = analyze(path)
    assert df["status"].tolist() == ["failed", "success"]
    assert df["longname"][0] == "blocks.0.proj" and "NaN/Inf" in df["reason"][0]
