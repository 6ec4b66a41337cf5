"""`lmlab spectral compare A B`: layers paired by longname, Δα exactly where the weights
differ, unpaired layers listed, adapters merged, and the command line."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lmlab.cli import main
from lmlab.spectral import analyze
from lmlab.spectral.compare import pair_tables
from lmlab.studies import get_study, load_result
from lmlab.studies.runner import run_study
from tests.conftest import tiny_model
from tests.spectral.test_adapters import QV, merged_by_hand, qv_factors, write_adapter

PNG = b"\x89PNG\r\n\x1a\n"
REPLACED = "model.layers.1.mlp.down_proj"  # weight (64, 160)
FIGURES = {"mean_alpha", "delta_alpha_by_layer", "delta_alpha_by_block",
           "delta_alpha_by_matrix", "alpha_b_vs_a"}


def power_law_matrix(n: int, m: int, seed: int = 0) -> torch.Tensor:
    """U·diag(s)·Vᵀ (n × m, n ≥ m) with singular values s_i = 10·i^(-1/2): a known spectrum."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, m, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    s = torch.arange(1, m + 1, dtype=torch.float64) ** -0.5 * 10
    return (u * s) @ v.T


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path, torch.Tensor]:
    """A tiny Llama and a copy with one layer's weight replaced by a known-spectrum matrix."""
    root = tmp_path_factory.mktemp("cmp")
    model = tiny_model("llama")
    model.save_pretrained(root / "a")
    other = copy.deepcopy(model)
    w = power_law_matrix(160, 64).T.float().contiguous()
    with torch.no_grad():
        dict(other.named_modules())[REPLACED].weight.copy_(w)
    other.save_pretrained(root / "b")
    return root / "a", root / "b", w


def test_delta_alpha_is_nonzero_exactly_at_the_replaced_layer(pair, tmp_path: Path) -> None:
    a, b, w = pair
    run = run_study("spectral-compare", overrides=[f"model_a={a}", f"model_b={b}"],
                    out=tmp_path / "runs")
    table = pd.read_csv(run.path / "compare.csv")
    expected_a = analyze(a)
    assert table["longname"].tolist() == expected_a["longname"].tolist()  # all paired
    assert pd.read_csv(run.path / "unpaired.csv").empty
    delta = table.set_index("longname")["delta_alpha"]
    assert delta[REPLACED] != 0
    others = delta.drop(REPLACED).dropna()
    assert len(others) == len(delta) - 1 and (others == 0.0).all()
    # α of B there is the α of the known matrix analysed on its own
    lone = torch.nn.Linear(160, 64, bias=False)
    with torch.no_grad():
        lone.weight.copy_(w)
    row = table.set_index("longname").loc[REPLACED]
    assert row["alpha_b"] == pytest.approx(float(analyze(lone)["alpha"].iloc[0]), abs=1e-10)
    assert row["alpha_a"] == pytest.approx(
        float(expected_a.set_index("longname").loc[REPLACED, "alpha"]), abs=1e-10)

    summary = json.loads((run.path / "summary.json").read_text())
    assert get_study("spectral-compare").SUMMARY.problems(summary) == []
    assert summary["n_changed"] == 1 and summary["layer_max_abs_delta"] == REPLACED
    assert summary["mode"] == "models" and summary["n_unpaired_a"] == 0
    figures = {p.stem for p in (run.path / "figures").glob("*.png")}
    assert figures == FIGURES
    assert all(p.read_bytes()[:8] == PNG for p in (run.path / "figures").glob("*.png"))
    html = (run.path / "report.html").read_text()
    assert REPLACED in html and "Paired layers" in html
    # the block of the replaced layer carries all of the change; block 0 none
    result = load_result(run.path)
    by_block = result.table.groupby("block")["delta_alpha"].apply(lambda s: s.abs().sum())
    assert by_block[1] > 0 and by_block[0] == 0
    assert set(get_study("spectral-compare").plot(result)) == FIGURES


def test_unpaired_layers_are_listed_not_dropped() -> None:
    import transformers as tf

    a = analyze(tiny_model("llama"))
    cfg = tf.LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=300,
                         max_position_embeddings=64)
    torch.manual_seed(0)
    b = analyze(tf.LlamaForCausalLM(cfg))
    paired, unpaired = pair_tables(a, b)
    extra = [n for n in b["longname"] if n.startswith("model.layers.2.")]
    assert len(extra) == 7
    assert unpaired["side"].tolist() == ["B"] * 7 and unpaired["longname"].tolist() == extra
    assert len(paired) == len(a)


def test_base_against_adapter_compares_base_with_merged(tmp_path: Path) -> None:
    model = tiny_model("llama")
    model.save_pretrained(tmp_path / "base")
    factors = qv_factors()
    adapter = write_adapter(tmp_path / "lora", factors)
    run = run_study("spectral-compare",
                    overrides=[f"model_a={tmp_path / 'base'}", f"model_b={adapter}"],
                    out=tmp_path / "runs")
    result = load_result(run.path)
    assert result.summary["mode"].startswith("base vs base + LoRA")
    t = result.table.set_index("longname")
    moved = set(t.index[t["delta_alpha"].abs() > 0])
    assert moved == set(QV)
    direct = analyze(merged_by_hand(model, factors, 2.0)).set_index("longname")
    np.testing.assert_allclose(t.loc[list(QV), "alpha_b"], direct.loc[list(QV), "alpha"],
                               rtol=0, atol=1e-10)


def test_cli_compare_writes_a_run_directory(pair, tmp_path: Path, capsys) -> None:
    a, b, _ = pair
    code = main(["spectral", "compare", str(a), str(b), "--out", str(tmp_path / "runs"),
                 "--layers", "up_proj", "down_proj", "--format", "json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    run_dir = Path(out[-1])
    assert run_dir.parent == tmp_path / "runs" / "spectral-compare"
    assert run_dir.name.endswith("a-vs-b")
    for name in ("compare.json", "unpaired.json", "summary.json", "report.html",
                 "config.json"):
        assert (run_dir / name).exists(), name
    table = pd.read_json(run_dir / "compare.json")
    assert sorted(table["matrix"]) == ["mlp_down"] * 2 + ["mlp_up"] * 2  # --layers applied
    assert main(["report", str(run_dir)]) == 0


@pytest.mark.parametrize("argv", [["compare", "/no/such/a", "/no/such/b"],
                                  ["compare", "x", "y", "z"]])
def test_cli_compare_mistakes_are_one_line(argv, tmp_path: Path, capsys) -> None:
    assert main(["spectral", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lmlab: error: ")


def test_a_model_named_compare_is_still_one_model(tmp_path: Path, monkeypatch, capsys) -> None:
    tiny_model("gpt2").save_pretrained(tmp_path / "compare")
    monkeypatch.chdir(tmp_path)
    assert main(["spectral", "compare", "--out", str(tmp_path / "runs")]) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path / "runs" / "spectral"


def test_a_pt_state_dict_pairs_with_a_model_directory(pair, tmp_path: Path) -> None:
    import transformers as tf

    a, b, _ = pair
    sd = tf.LlamaForCausalLM.from_pretrained(b).state_dict()
    torch.save(sd, tmp_path / "b.pt")
    paired, unpaired = pair_tables(analyze(a), analyze(tmp_path / "b.pt"))
    assert unpaired.empty
    delta = paired.set_index("longname")["delta_alpha"].dropna()
    assert delta[REPLACED] != 0 and (delta.drop(REPLACED) == 0.0).all()


def test_which_side_an_adapter_is_merged_into(tmp_path: Path) -> None:
    from lmlab.spectral.adapters import MergedAdapter
    from lmlab.studies.spectral_compare import _sources

    one = write_adapter(tmp_path / "one", qv_factors())
    two = write_adapter(tmp_path / "two", qv_factors())
    base = tmp_path / "base"
    a, b, mode = _sources(base, one)
    assert a == base and isinstance(b, MergedAdapter) and b.base == base and b.adapter == one
    a, b, mode = _sources(one, base)
    assert isinstance(a, MergedAdapter) and a.base == base and b == base
    assert _sources(one, two) == (one, two, "two LoRA updates ΔW = s·B·A")


def test_spectral_study_on_an_adapter_with_its_base(tmp_path: Path) -> None:
    tiny_model("llama").save_pretrained(tmp_path / "base")
    adapter = write_adapter(tmp_path / "lora", qv_factors())
    run = run_study("spectral", overrides=[f"model={adapter}", f"base_model={tmp_path / 'base'}"],
                    out=tmp_path / "runs")
    table = pd.read_csv(run.path / "spectra.csv")
    assert table["longname"].tolist() == list(QV) and (table["status"] == "success").all()
    assert len(list((run.path / "figures").glob("esd_layer_*.png"))) == 2
