"""analyze() against weightwatcher 0.7.7: same layers, same ids, same numbers in every column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.spectral import WW_COLUMNS, analyze, summarize
from tests.conftest import tiny_model

SV_MIN_RTOL = 1e-5  # the Gram route resolves the smallest singular value less finely


def assert_same_as_ww(mine: pd.DataFrame, ref: pd.DataFrame) -> None:
    mine = mine[mine["status"] != "skipped"].reset_index(drop=True)
    assert list(ref.columns) == list(WW_COLUMNS)
    assert mine["layer_id"].tolist() == ref["layer_id"].tolist()
    for col in WW_COLUMNS:
        a, b = mine[col], ref[col]
        if pd.api.types.is_bool_dtype(b) or not pd.api.types.is_numeric_dtype(b):
            assert a.astype(str).tolist() == b.astype(str).tolist(), col
        elif col == "sv_min":
            np.testing.assert_allclose(a.astype(float), b.astype(float), rtol=SV_MIN_RTOL)
        elif col == "alpha":
            np.testing.assert_allclose(a.astype(float), b.astype(float), rtol=0, atol=1e-9)
        else:
            np.testing.assert_allclose(a.astype(float), b.astype(float), rtol=1e-9, err_msg=col)


def test_parity_with_weightwatcher_on_three_families(family: str, ww_analyze) -> None:
    model = tiny_model(family)
    assert_same_as_ww(analyze(model), ww_analyze(model))


def test_svd_route_is_also_exact(ww_analyze) -> None:
    model = tiny_model("gpt2")
    assert_same_as_ww(analyze(model, method="svd"), ww_analyze(model))


def test_parity_on_conv2d_and_rank_deficient_layers(ww_analyze) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3),
        torch.nn.Flatten(), torch.nn.Linear(64, 48), torch.nn.Linear(48, 30),
    )
    with torch.no_grad():  # an exactly rank-10 dense layer
        a = torch.randint(-3, 4, (30, 10)).float()
        b = torch.randint(-3, 4, (10, 48)).float()
        model[5].weight.copy_(a @ b)
    mine, ref = analyze(model), ww_analyze(model)
    assert_same_as_ww(mine, ref)
    assert int(ref.loc[ref.layer_id == 6, "rank_loss"].iloc[0]) == 20


def test_skipped_layers_are_listed_with_reasons() -> None:
    model = tiny_model("bert")  # token_type_embeddings is 2 x 64: too small
    df = analyze(model)
    skipped = df[df["status"] == "skipped"]
    assert skipped["longname"].tolist() == ["embeddings.token_type_embeddings"]
    assert "min_evals" in skipped["reason"].iloc[0]
    assert skipped["alpha"].isna().all()


def test_max_n_rule_and_its_lift() -> None:
    big = torch.nn.Embedding(50_001, 16)
    assert analyze(big)["status"].tolist() == ["skipped"]
    assert "max_N" in analyze(big)["reason"].iloc[0]
    assert analyze(big, max_N=None)["status"].tolist() == ["success"]


def test_nan_and_zero_weights_get_failed_rows_not_minus_one() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.Linear(32, 32),
                                torch.nn.Linear(32, 64))
    with torch.no_grad():
        model[0].weight[3, 5] = float("nan")
        model[1].weight.zero_()
    df = analyze(model)
    assert df["status"].tolist() == ["failed", "failed", "success"]
    assert "NaN" in df["reason"][0] and "all-zero" in df["reason"][1]
    assert df["alpha"][:2].isna().all()
    s = summarize(df)
    assert s["n_layers"] == 1 and s["n_failed"] == 2
    assert s["alpha_mean"] == pytest.approx(df["alpha"][2])


def test_summary_equals_get_summary(ww_analyze) -> None:
    import weightwatcher

    model = tiny_model("llama")
    ref = weightwatcher.WeightWatcher(model=model)
    details = ww_analyze(model)
    expected = ref.get_summary(details)
    mine = summarize(analyze(model))
    for key, value in expected.items():
        assert mine[key] == pytest.approx(value, rel=1e-9), key


def test_layer_selection_by_id_name_and_type() -> None:
    model = tiny_model("gpt2")
    full = analyze(model)
    assert set(analyze(model, layers=["conv1d"])["layer_type"]) == {"conv1d"}
    by_name = analyze(model, layers=["c_attn"])
    assert by_name["longname"].tolist() == [f"transformer.h.{i}.attn.c_attn" for i in (0, 1)]
    first = int(full["layer_id"].iloc[0])
    assert analyze(model, layers=[first])["layer_id"].tolist() == [first]


def test_float32_mode_error_is_small() -> None:
    model = tiny_model("bert")
    exact, fast = analyze(model), analyze(model, precision="float32")
    ok = exact["status"] == "success"
    assert np.max(np.abs(exact.loc[ok, "alpha"] - fast.loc[ok, "alpha"])) < 1e-2


def test_no_weight_matrices_is_an_error() -> None:
    with pytest.raises(LmlabError, match="no weight matrices"):
        analyze(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.LayerNorm(4)))
    with pytest.raises(LmlabError, match="cannot analyse"):
        analyze(42)


def test_real_minilm_matches_reference_values(minilm_path) -> None:
    """all-MiniLM-L6-v2's α as weightwatcher reports them (specs/spectral.md)."""
    df = analyze(minilm_path).set_index("longname")
    s = summarize(df.reset_index())
    assert s["n_layers"] == 39
    assert s["alpha_mean"] == pytest.approx(4.12, abs=0.005)
    assert s["alpha_median"] == pytest.approx(3.55, abs=0.005)
    expected = {
        "embeddings.word_embeddings": 4.53, "embeddings.position_embeddings": 1.55,
        "pooler.dense": 12.35, "encoder.layer.4.attention.self.value": 8.44,
        "encoder.layer.5.attention.self.key": 6.64,
    }
    for name, alpha in expected.items():
        assert df.loc[name, "alpha"] == pytest.approx(alpha, abs=0.005), name


# ---------------------------------------------------------------------------- hostile inputs


def test_an_unknown_layer_name_is_refused_with_the_nearest_names() -> None:
    model = tiny_model("gpt2")
    with pytest.raises(LmlabError, match=r"no layer is named 'c_atn'; nearest names: c_attn"):
        analyze(model, layers=["c_attn", "c_atn"])  # one good entry does not hide a bad one
    with pytest.raises(LmlabError, match=r"'9999'; valid ids: "):
        analyze(model, layers=[9999])
    assert len(analyze(model, layers=["c_attn", "conv2d"])) == 2  # a type never matching is ok


def test_complex_weights_are_analysed_through_the_hermitian_gram_matrix() -> None:
    """Known answer: W = U diag(s) Vᴴ gives λ = s², with no imaginary part dropped."""
    import warnings

    rng = np.random.default_rng(0)
    s = np.linspace(1.0, 4.0, 48)
    U, _ = np.linalg.qr(rng.standard_normal((96, 48)) + 1j * rng.standard_normal((96, 48)))
    V, _ = np.linalg.qr(rng.standard_normal((48, 48)) + 1j * rng.standard_normal((48, 48)))
    W = torch.from_numpy(((U * s) @ V.conj().T).astype(np.complex64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when it drops an imaginary part
        row = analyze({"proj.weight": W}).iloc[0]
    assert row["status"] == "success" and row["num_evals"] == 48
    assert row["sv_max"] == pytest.approx(4.0, rel=1e-5)
    assert row["sv_min"] == pytest.approx(1.0, rel=1e-5)
    assert row["norm"] == pytest.approx(float(np.sum(s**2)), rel=1e-5)
