"""analyze()'s layer selection, base-model deltas and bookkeeping options, against
weightwatcher run side by side."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.spectral import analyze
from tests.conftest import tiny_model
from tests.spectral.test_analyze import assert_same_as_ww


def test_excluding_layers_by_negative_id_matches_weightwatcher(ww_analyze) -> None:
    model = tiny_model("gpt2")
    ids = analyze(model)["layer_id"].tolist()
    drop = [-ids[0], -ids[3]]
    mine = analyze(model, layers=drop)
    assert ids[0] not in mine["layer_id"].tolist() and ids[3] not in mine["layer_id"].tolist()
    assert_same_as_ww(mine, ww_analyze(model, layers=drop))


def test_excluding_layers_by_name_matches_weightwatcher(ww_analyze) -> None:
    model = tiny_model("llama")
    mine = analyze(model, layers=["-q_proj", "-embed_tokens"])
    assert not mine["name"].isin(["q_proj", "embed_tokens"]).any()
    assert len(mine) == len(analyze(model)) - 3  # two q_proj, one embedding
    assert_same_as_ww(mine, ww_analyze(model, layers=["-q_proj", "-embed_tokens"]))


def test_keeping_layers_by_name_matches_weightwatcher(ww_analyze) -> None:
    model = tiny_model("bert")
    assert_same_as_ww(analyze(model, layers=["query"]), ww_analyze(model, layers=["query"]))


def test_mixing_kept_and_excluded_layers_is_refused() -> None:
    with pytest.raises(LmlabError, match="not both"):
        analyze(tiny_model("gpt2"), layers=[2, -3])
    with pytest.raises(LmlabError, match="no layer is named 'nope'"):
        analyze(tiny_model("gpt2"), layers=["-nope"])


def test_start_ids_matches_weightwatcher(ww_analyze) -> None:
    model = tiny_model("bert")
    mine = analyze(model, start_ids=1)
    assert mine["layer_id"].tolist() == [i + 1 for i in analyze(model)["layer_id"]]
    assert_same_as_ww(mine, ww_analyze(model, start_ids=1))


def test_tolerance_counts_weak_rank_loss(ww_analyze) -> None:
    model = tiny_model("gpt2")
    mine = analyze(model, tolerance=0.05)
    ref = ww_analyze(model, tolerance=0.05)
    assert mine["weak_rank_loss"].sum() > analyze(model)["weak_rank_loss"].sum()
    assert_same_as_ww(mine, ref)


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_base_model_delta_matches_weightwatcher(family: str, ww_analyze) -> None:
    base, tuned = tiny_model(family, seed=0), tiny_model(family, seed=1)
    mine = analyze(tuned, base_model=base)
    assert_same_as_ww(mine, ww_analyze(tuned, base_model=base))


def test_base_model_delta_is_the_spectrum_of_the_difference() -> None:
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(40, 60), torch.nn.Linear(60, 50))
    tuned = torch.nn.Sequential(torch.nn.Linear(40, 60), torch.nn.Linear(60, 50))
    tuned.load_state_dict(base.state_dict())
    u, v = torch.randn(60, 1), torch.randn(1, 40)
    with torch.no_grad():
        tuned[0].weight += 3.0 * u @ v  # a rank-one update of the first layer only
    df = analyze(tuned, base_model=base, min_evals=0)
    first, second = df.iloc[0], df.iloc[1]
    sigma = 3.0 * float(u.norm() * v.norm())
    assert first["lambda_max"] == pytest.approx(sigma**2, rel=1e-5)
    assert first["stable_rank"] == pytest.approx(1.0, abs=1e-6)  # one direction carries it
    assert second["status"] == "failed" and "all-zero" in second["reason"]


def test_base_model_from_files_equals_in_memory(tmp_path) -> None:
    import safetensors.torch

    base, tuned = tiny_model("gpt2", 0), tiny_model("gpt2", 1)
    path = tmp_path / "base.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in base.state_dict().items()
                                 if k != "lm_head.weight"}, str(path))
    from_file = analyze(tuned, base_model=path)
    in_memory = analyze(tuned, base_model=base)
    ok = (in_memory["status"] == "success") & (from_file["status"] == "success")
    assert ok.sum() == len(in_memory) - 1  # the tied lm_head is not in the file
    np.testing.assert_allclose(from_file.loc[ok, "alpha"], in_memory.loc[ok, "alpha"], rtol=1e-12)


def test_base_model_of_another_architecture_is_refused() -> None:
    with pytest.raises(LmlabError, match="not the same architecture"):
        analyze(torch.nn.Linear(30, 20), base_model=torch.nn.Linear(30, 10))
    with pytest.raises(LmlabError, match="shares no layer name"):
        analyze(tiny_model("gpt2"), base_model=torch.nn.Sequential(torch.nn.Linear(64, 64)))


def test_layer_missing_from_base_is_listed_not_differenced() -> None:
    base = torch.nn.Sequential(torch.nn.Linear(40, 60))
    tuned = torch.nn.Sequential(torch.nn.Linear(40, 60), torch.nn.Linear(60, 30))
    df = analyze(tuned, base_model=base)
    assert df.loc[1, "status"] == "skipped" and "base_model has no layer" in df.loc[1, "reason"]


@pytest.mark.parametrize("bad, message", [
    (dict(min_evals=50, max_evals=10), "must be smaller than max_evals"),
    (dict(fit="powerlaw"), "fit='powerlaw' is not a fit type"),
    (dict(xmax=0), "xmax=0 is refused"),
    (dict(fix_fingers="clip_xmax", xmax=-2), "cannot be combined"),
    (dict(pool=False), "not offered"),
    (dict(intra=True), "not offered"),
    (dict(randomise=True), "did you mean randomize"),
    (dict(start_ids=3), "start_ids = 3 must be 0 or 1"),
])
def test_invalid_options_are_refused_in_one_line(bad, message) -> None:
    with pytest.raises(LmlabError, match=message) as err:
        analyze(torch.nn.Linear(20, 30), **bad)
    assert "\n" not in str(err.value)


def test_defaults_weightwatcher_spells_out_are_accepted() -> None:
    plain = analyze(torch.nn.Linear(20, 30))
    spelled = analyze(torch.nn.Linear(20, 30), pool=True, ww2x=False, intra=False, fft=False,
                      channels=None, svd_method="accurate", pl_package="ww", ERG=False,
                      fix_fingers=False)
    assert plain.columns.tolist() == spelled.columns.tolist()


def test_every_option_column_comes_in_weightwatchers_order(ww_analyze) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(120, 200), torch.nn.ReLU(),
                                torch.nn.Linear(200, 150))  # M ≥ 100: one shuffle each
    options = dict(mp_fit=True, randomize=True, detX=True, vectors=True,
                   fix_fingers="clip_xmax")
    mine = analyze(model, **options)
    ref = ww_analyze(model, **options)
    assert [c for c in mine.columns if c not in ("reason", "fit_mode")] == list(ref.columns)
    assert mine.columns[-2:].tolist() == ["reason", "fit_mode"]
    assert (mine["fit_mode"] == "clip_xmax").all()
    ok = mine[mine["status"] == "success"]
    assert ok["num_spikes"].notna().all() and ok["rand_distance"].notna().all()
    assert ok["detX_num"].notna().all() and ok["tail_mean_loc_ratio"].notna().all()


def test_randomize_is_reproducible_from_the_seed() -> None:
    model = tiny_model("bert")
    a = analyze(model, randomize=True, seed=3)
    b = analyze(model, randomize=True, seed=3)
    c = analyze(model, randomize=True, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["rand_distance"].astype(float), c["rand_distance"].astype(float))


def test_tpl_fit_adds_lambda_where_weightwatcher_fails_every_layer(ww_analyze) -> None:
    model = tiny_model("llama")
    ref = ww_analyze(model, fit="TPL", pl_package="powerlaw")
    assert (ref["alpha"] == -1).all()  # weightwatcher 0.7.7 with powerlaw 2.0
    mine = analyze(model, fit="TPL", pl_package="powerlaw")
    ok = mine[mine["status"] == "success"]
    assert len(ok) == len(mine) and (ok["Lambda"] >= 0).all() and ok["alpha"].notna().all()
    assert (mine["fit_mode"] == "TPL").all()


def test_glorot_fix_undoes_glorot_scaling() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(300, 100, bias=False)
    torch.nn.init.xavier_normal_(layer.weight)  # variance 2 / (N + M)
    row = analyze(layer, glorot_fix=True, max_evals=0).iloc[0]
    assert row["norm"] / (300 * 100) == pytest.approx(1.0, rel=0.02)  # unit-variance entries
