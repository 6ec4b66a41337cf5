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


# ---------------------------------------------------------------------------- read as indexed


def _two_shards_with_one_name(directory: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Two shards that both hold ``proj.weight`` (different values) and one other tensor."""
    directory.mkdir()
    torch.manual_seed(0)
    first, second = torch.randn(48, 32), 3.0 * torch.randn(48, 32)
    save_file({"proj.weight": first, "a.weight": torch.randn(32, 32)},
              str(directory / "model-00001-of-00002.safetensors"))
    save_file({"proj.weight": second, "b.weight": torch.randn(32, 32)},
              str(directory / "model-00002-of-00002.safetensors"))
    return first, second


def _write_index(directory: Path, index: object) -> Path:
    path = directory / "model.safetensors.index.json"
    path.write_text(json.dumps(index))
    return path


@pytest.mark.parametrize("owner", [0, 1])
def test_each_tensor_is_read_from_the_shard_the_index_names(tmp_path: Path, owner: int) -> None:
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    values = _two_shards_with_one_name(tmp_path / "m")
    _write_index(tmp_path / "m", {"metadata": {}, "weight_map": {
        "proj.weight": shards[owner], "a.weight": shards[0], "b.weight": shards[1]}})
    rows = analyze(tmp_path / "m").set_index("longname")
    expected = analyze({"proj.weight": values[owner]}).iloc[0]
    assert rows.loc["proj", "sv_max"] == expected["sv_max"]
    assert sorted(rows.index) == ["a", "b", "proj"]


def test_a_name_in_two_files_without_an_index_is_refused(tmp_path: Path) -> None:
    _two_shards_with_one_name(tmp_path / "m")
    with pytest.raises(LmlabError, match=r"'proj.weight' is in both .*00001-of-00002"
                                         r".safetensors and .*00002-of-00002.safetensors"):
        analyze(tmp_path / "m")


@pytest.mark.parametrize("index, match", [
    ([1, 2], "holds a JSON list, not an object"),
    ("weight_map", "holds a JSON str, not an object"),
    ({"metadata": {}}, "has no 'weight_map'"),
    ({"weight_map": ["a"]}, "has a 'weight_map' that is a JSON list"),
    ({"weight_map": {}}, "has an empty 'weight_map'"),
    ({"weight_map": {"proj.weight": 3}}, "maps 'proj.weight' to 3"),
    ({"weight_map": {"proj.weight": "../model-00001-of-00002.safetensors"}}, "not a file name"),
    ({"weight_map": {"proj.weight": "gone.safetensors"}}, "missing: gone.safetensors"),
    ({"weight_map": {"c.weight": "model-00001-of-00002.safetensors"}},
     "puts 'c.weight' in .*00001-of-00002.safetensors, which does not hold it"),
])
def test_a_malformed_index_is_refused_naming_it(tmp_path: Path, index: object,
                                                 match: str) -> None:
    _two_shards_with_one_name(tmp_path / "m")
    _write_index(tmp_path / "m", index)
    with pytest.raises(LmlabError, match=f"model.safetensors.index.json.*{match}"):
        analyze(tmp_path / "m")


def test_an_index_that_is_not_json_is_refused_naming_it(tmp_path: Path) -> None:
    _two_shards_with_one_name(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors.index.json").write_text("{ torn")
    with pytest.raises(LmlabError, match="cannot read the shard index .*index.json"):
        analyze(tmp_path / "m")


# ---------------------------------------------------------------------------- files to refuse


def test_an_empty_pt_says_it_is_empty(tmp_path: Path) -> None:
    (tmp_path / "w.pt").write_bytes(b"")
    with pytest.raises(LmlabError, match=r"w.pt is empty \(0 bytes\)"):
        analyze(tmp_path / "w.pt")


def test_pt_files_are_loaded_with_weights_only(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    torch.save({"proj.weight": torch.randn(16, 16)}, tmp_path / "w.pt")
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    analyze(tmp_path / "w.pt")
    assert calls and all(c is True for c in calls)


def test_a_pickle_of_other_objects_is_refused_without_torch_advice(tmp_path: Path) -> None:
    torch.save({"proj.weight": torch.randn(16, 16), "opt": Path("x")}, tmp_path / "w.pt")
    with pytest.raises(LmlabError) as info:
        analyze(tmp_path / "w.pt")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'w.pt'} holds Python objects other than tensors")
    assert "weights_only" not in message and "\n" not in message


def _save_bin_shards(model: torch.nn.Module, directory: Path, n: int = 3) -> list[str]:
    """The model as Hugging Face's legacy sharded checkpoint: pytorch_model-0000i-of-0000n.bin
    files, their index, and config.json."""
    directory.mkdir(parents=True, exist_ok=True)
    model.config.architectures = [type(model).__name__]  # as save_pretrained records it
    model.config.save_pretrained(directory)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    keys = list(sd)
    names, weight_map = [], {}
    for i in range(n):
        name = f"pytorch_model-{i + 1:05d}-of-{n:05d}.bin"
        part = {k: sd[k] for k in keys[i::n]}
        torch.save(part, directory / name)
        weight_map.update(dict.fromkeys(part, name))
        names.append(name)
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    return names


def test_sharded_pytorch_bin_directory_gives_the_in_memory_rows(tmp_path) -> None:
    model = tiny_model("gpt2")
    _save_bin_shards(model, tmp_path)
    in_memory = analyze(model)
    from_shards = analyze(tmp_path)
    assert from_shards["layer_id"].tolist() == in_memory["layer_id"].tolist()
    assert from_shards["longname"].tolist() == in_memory["longname"].tolist()
    np.testing.assert_array_equal(from_shards["alpha"].to_numpy(float),
                                  in_memory["alpha"].to_numpy(float))
    (tmp_path / "pytorch_model.bin.index.json").unlink()  # without the index: every shard
    assert analyze(tmp_path)["alpha"].tolist() == from_shards["alpha"].tolist()


def test_bin_index_naming_a_missing_shard_is_refused(tmp_path) -> None:
    names = _save_bin_shards(tiny_model("gpt2"), tmp_path)
    (tmp_path / names[0]).unlink()
    with pytest.raises(LmlabError, match="names shard\\(s\\) that are missing"):
        analyze(tmp_path)
