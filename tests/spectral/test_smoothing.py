"""SVD smoothing and sharpening: parity with weightwatcher's SVDSmoothing / SVDSharpness,
Eckart–Young known answers, and the file routes (equal to the in-memory route, input intact)."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lmlab.errors import LmlabError
from lmlab.spectral.smoothing import (
    low_rank,
    svd_sharpness,
    svd_sharpness_files,
    svd_smoothing,
    svd_smoothing_files,
)
from tests.conftest import tiny_model


def _ww(ww_module, name: str, model: torch.nn.Module, **kw) -> torch.nn.Module:
    """weightwatcher's SVDSmoothing / SVDSharpness on a copy (it works in place)."""
    target = copy.deepcopy(model)
    with contextlib.redirect_stdout(io.StringIO()):
        getattr(ww_module.WeightWatcher(), name)(model=target, **kw)
    return target


def _exact_truncation(W: np.ndarray, k: int) -> np.ndarray:
    """The best rank-k approximation by numpy's SVD (the test's own reference)."""
    u, s, vt = np.linalg.svd(W.astype(np.float64), full_matrices=False)
    return ((u[:, :k] * s[:k]) @ vt[:k]).astype(W.dtype)


@pytest.fixture
def ww_exact(ww_module, monkeypatch):
    """weightwatcher reading weights in float64, its randomized TruncatedSVD replaced by an
    exact truncation: its own choice of layers and of k, its own SVD for negative k, without
    the error of the randomized SVD or of float32 arithmetic."""
    import weightwatcher.RMT_Util as rmt
    import weightwatcher.weightwatcher as wwm

    monkeypatch.setattr(rmt, "_smooth_W_fast", _exact_truncation)
    monkeypatch.setattr(wwm, "torch_T_to_np", lambda t: t.detach().cpu().double().numpy())
    return ww_module


def _assert_weights_close(ours: torch.nn.Module, theirs: torch.nn.Module, rel: float) -> None:
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        scale = max(float(b[key].abs().max()), 1e-30)
        err = float((a[key].double() - b[key].double()).abs().max()) / scale
        assert err <= rel, f"{key}: {err:.2e}"


def _sv(t: torch.Tensor) -> np.ndarray:
    return np.linalg.svd(t.detach().double().numpy(), compute_uv=False)


# ----------------------------------------------------------------------------- parity


@pytest.mark.parametrize(("family_name", "options"), [
    ("gpt2", dict(method="svd", percent=0.9)), ("bert", dict(method="svd", percent=0.9)),
    ("bert", dict()), ("llama", dict())], ids=["gpt2-svd-0.9", "bert-svd-0.9", "bert-detX",
                                              "llama-detX"])
def test_parity_with_weightwatcher(ww_module, family_name, options):
    """Where weightwatcher's randomized SVD is exact (k + 10 ≥ M), the weights agree."""
    model = tiny_model(family_name, 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ours = svd_smoothing(model, **options)
    _assert_weights_close(ours, _ww(ww_module, "SVDSmoothing", model, **options), 2e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # intact


@pytest.mark.parametrize("options", [
    dict(method="alpha_min"), dict(method="svd", percent=0.3), dict(method="svd", percent=-0.2),
    pytest.param(dict(method="auto"), marks=pytest.mark.slow),  # weightwatcher's MP fit: slow
    pytest.param(dict(method="rmt"), marks=pytest.mark.slow)],
    ids=["alpha_min", "svd-0.3", "svd-minus-0.2", "auto", "rmt"])
@pytest.mark.parametrize("family_name", ["bert", "llama"])
def test_parity_with_exact_weightwatcher(ww_exact, family_name, options):
    """weightwatcher's layers and k, truncated exactly: lmlab's weights agree."""
    model = tiny_model(family_name, 0)
    _assert_weights_close(svd_smoothing(model, **options),
                          _ww(ww_exact, "SVDSmoothing", model, **options), 1e-6)


def test_rmt_keeps_planted_spikes(ww_exact):
    """Two strong directions planted in noise: "rmt" keeps exactly those (the best rank-2
    approximation), as weightwatcher does."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128))
    gen = torch.Generator().manual_seed(1)
    u = torch.linalg.qr(torch.randn(128, 2, generator=gen))[0]
    v = torch.linalg.qr(torch.randn(64, 2, generator=gen))[0]
    with torch.no_grad():
        model[0].weight.add_(4.0 * u @ v.T)
    ours = svd_smoothing(model, method="rmt")
    want = _exact_truncation(model[0].weight.detach().double().numpy(), 2)
    np.testing.assert_allclose(ours[0].weight.detach().numpy(), want, atol=1e-6)
    _assert_weights_close(ours, _ww(ww_exact, "SVDSmoothing", model, method="rmt"), 1e-6)


def test_parity_conv2d_with_exact_weightwatcher(ww_exact):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3), torch.nn.Conv2d(16, 32, (3, 2)))
    for options in (dict(method="svd", percent=0.5), dict()):
        ours = svd_smoothing(model, **options)
        _assert_weights_close(ours, _ww(ww_exact, "SVDSmoothing", model, **options), 1e-6)
    assert np.linalg.matrix_rank(ours[0].weight[:, :, 1, 1].detach().numpy()) < 8


def test_lmlab_is_the_best_approximation_weightwatcher_approaches(ww_module):
    """At small k weightwatcher's randomized SVD keeps the same number of components but
    misses the optimum; lmlab reaches the Eckart–Young error."""
    model = tiny_model("bert", 0)
    ours = svd_smoothing(model, method="alpha_min").state_dict()
    theirs = _ww(ww_module, "SVDSmoothing", model, method="alpha_min").state_dict()
    W0 = model.state_dict()["encoder.layer.0.intermediate.dense.weight"]
    key = "encoder.layer.0.intermediate.dense.weight"
    s0 = _sv(W0)
    k = int(np.sum(_sv(ours[key]) > 1e-4 * s0[0]))
    assert k == int(np.sum(_sv(theirs[key]) > 1e-4 * s0[0])) < len(s0)
    optimum = float(np.sqrt(np.sum(s0[k:] ** 2)))
    assert float(torch.linalg.norm(W0.double() - ours[key].double())) == pytest.approx(
        optimum, rel=1e-6)
    assert float(torch.linalg.norm(W0.double() - theirs[key].double())) > optimum * (1 + 1e-5)


def test_tied_weights_transformed_once(ww_module):
    """GPT-2 ties lm_head to wte: weightwatcher removes the top components once per module
    (twice in all) with a negative percent; lmlab once, keeping the tie."""
    model = tiny_model("gpt2", 0)
    ours = svd_smoothing(model, method="svd", percent=-0.1)
    theirs = _ww(ww_module, "SVDSmoothing", model, method="svd", percent=-0.1)
    assert ours.lm_head.weight is ours.transformer.wte.weight
    s0 = _sv(model.transformer.wte.weight)
    assert np.allclose(_sv(ours.transformer.wte.weight)[:10], s0[6:16], rtol=1e-5)
    assert np.allclose(_sv(theirs.transformer.wte.weight)[:10], s0[12:22], rtol=1e-5)


# ----------------------------------------------------------------------------- known answers


def test_low_rank_known_answers():
    rng = np.random.default_rng(0)
    rank3 = rng.standard_normal((40, 3)) @ rng.standard_normal((3, 30))
    W = torch.from_numpy(rank3)
    for k in (3, 10, 30, 99):
        assert torch.allclose(low_rank(W, k), W, atol=1e-12)  # keeping ≥ r changes nothing
    A = rng.standard_normal((50, 20))
    s = np.linalg.svd(A, compute_uv=False)
    for shape_of in (lambda x: x, lambda x: x.T):
        M = torch.from_numpy(shape_of(A).copy())
        for k in (1, 5, 12, 19):
            Wk = low_rank(M, k).numpy()
            assert np.linalg.norm(M.numpy() - Wk) == pytest.approx(
                np.sqrt(np.sum(s[k:] ** 2)), rel=1e-10)  # Eckart–Young
            np.testing.assert_allclose(np.linalg.svd(Wk, compute_uv=False)[:k], s[:k],
                                       rtol=1e-10)
        np.testing.assert_allclose(np.linalg.svd(low_rank(M, -4).numpy(), compute_uv=False),
                                   np.concatenate([s[4:], np.zeros(4)]), atol=1e-10)
    assert torch.count_nonzero(low_rank(M, -20)) == 0


def test_detx_keeps_the_detx_tail():
    """ESD 4, 2, 1, 0.5, 0.3, 0.1, 0.06, 0.04 (σ² of a made layer, mean 1 already): the
    products of the top 1…6 are 4, 8, 8, 4, 1.2, 0.12, so detX keeps 6 components."""
    evals = np.array([4.0, 2.0, 1.0, 0.5, 0.3, 0.1, 0.06, 0.04])
    rng = np.random.default_rng(0)
    U = np.linalg.qr(rng.standard_normal((40, 8)))[0]
    V = np.linalg.qr(rng.standard_normal((8, 8)))[0]
    layer = torch.nn.Linear(8, 40, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy((U * np.sqrt(evals)) @ V.T))
    out = svd_smoothing(layer)
    assert int(np.sum(_sv(out.weight) > 1e-9)) == 6
    np.testing.assert_allclose(out.weight.detach().numpy(),
                               _exact_truncation(layer.weight.detach().numpy(), 6), atol=1e-12)


def test_smoothing_a_rank_r_layer_keeps_it(ww_module):
    rng = np.random.default_rng(0)
    layer = torch.nn.Linear(30, 40, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(rng.standard_normal((40, 4))
                                            @ rng.standard_normal((4, 30))))
    out = svd_smoothing(layer, method="svd", percent=0.5)  # keeps 15 ≥ 4
    assert torch.allclose(out.weight, layer.weight, atol=1e-12)
    assert out.weight.dtype == torch.float64


# ----------------------------------------------------------------------------- sharpening


def test_sharpness_parity_with_weightwatcher(ww_module):
    """A mean offset survives the permutation as one spike: both remove exactly the top
    component of that layer, and leave the random layers alone."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Linear(64, 128))
    with torch.no_grad():
        model[0].weight.add_(0.1)
    W = model[0].weight.detach().double().numpy()
    u, s, vt = np.linalg.svd(W, full_matrices=False)
    want = W - s[0] * np.outer(u[:, 0], vt[0])
    for seed in range(2):
        ours = svd_sharpness(model, rng=np.random.default_rng(seed))
        np.testing.assert_allclose(ours[0].weight.detach().numpy(), want, atol=1e-6)
        assert torch.equal(ours[1].weight, model[1].weight)
        np.random.seed(seed)
        theirs = _ww(ww_module, "SVDSharpness", model)
        np.testing.assert_allclose(theirs[0].weight.detach().numpy(), want, atol=1e-5)
        assert torch.equal(theirs[1].weight, model[1].weight)


# ----------------------------------------------------------------------------- files


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_dir(directory: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(directory.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def test_file_routes_equal_the_in_memory_route(tmp_path):
    model = tiny_model("gpt2", 0)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.add_(0.05)  # something for sharpening to do
    model.save_pretrained(tmp_path / "one")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    (tmp_path / "sharded" / "pytorch_model.bin").write_bytes(b"stale")
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    inputs = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    hashes = {p: _sha(p) for p in inputs}

    want = svd_smoothing(model, method="svd", percent=0.5).state_dict()
    for src in ("one", "sharded", "one/model.safetensors"):
        out = svd_smoothing_files(tmp_path / src, tmp_path / "out" / src, method="svd",
                                  percent=0.5)
        got = _load_dir(out) if out.is_dir() else load_file(out)
        assert len(got) >= 27 and all(torch.equal(got[k], want[k]) for k in got), src
    assert (tmp_path / "out/sharded/model.safetensors.index.json").is_file()
    assert (tmp_path / "out/sharded/config.json").is_file()
    assert not (tmp_path / "out/sharded/pytorch_model.bin").exists()  # stale weights left out
    got = torch.load(svd_smoothing_files(tmp_path / "sd.pt", tmp_path / "out.pt",
                                         method="svd", percent=0.5), weights_only=True)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert got["lm_head.weight"].data_ptr() == got["transformer.wte.weight"].data_ptr()

    sharp = svd_sharpness(model).state_dict()
    got = _load_dir(svd_sharpness_files(tmp_path / "sharded", tmp_path / "sharp"))
    assert all(torch.equal(got[k], sharp[k]) for k in got)
    key = "transformer.h.0.mlp.c_fc.weight"
    assert not torch.equal(got[key], model.state_dict()[key])
    assert {p: _sha(p) for p in inputs} == hashes  # the input is never modified


def test_state_dict_in_memory(tmp_path):
    model = tiny_model("llama", 0)
    sd = model.state_dict()
    out = svd_smoothing(sd, method="svd", percent=0.25)
    want = svd_smoothing(model, method="svd", percent=0.25).state_dict()
    assert all(torch.equal(out[k], want[k]) for k in out)
    assert out["model.norm.weight"] is sd["model.norm.weight"]


def test_half_precision_keeps_its_dtype():
    model = torch.nn.Sequential(torch.nn.Linear(64, 32)).to(torch.bfloat16)
    out = svd_smoothing(model, method="svd", percent=0.25)
    assert out[0].weight.dtype == torch.bfloat16
    assert int(np.sum(_sv(out[0].weight.float()) > 1e-2 * _sv(model[0].weight.float())[0])) == 8


def test_refusals(tmp_path):
    model = tiny_model("gpt2", 0)
    model.save_pretrained(tmp_path / "m")
    for bad_out in (tmp_path / "m", tmp_path / "m" / "sub", tmp_path):
        with pytest.raises(LmlabError, match="would overwrite the input"):
            svd_smoothing_files(tmp_path / "m", bad_out)
    with pytest.raises(LmlabError, match="would overwrite the input"):
        svd_smoothing_files(tmp_path / "m" / "model.safetensors", tmp_path / "m")
    with pytest.raises(LmlabError, match="unknown smoothing method 'pca'"):
        svd_smoothing(model, method="pca")  # type: ignore[arg-type]
    with pytest.raises(LmlabError, match="svd_smoothing_files"):
        svd_smoothing(tmp_path / "m")
    with pytest.raises(LmlabError, match="no such file"):
        svd_smoothing_files(tmp_path / "missing.safetensors", tmp_path / "o.safetensors")
    (tmp_path / "bad.pt").write_bytes(b"not a zip")
    with pytest.raises(LmlabError, match="bad.pt"):
        svd_smoothing_files(tmp_path / "bad.pt", tmp_path / "o.pt")
    broken = torch.nn.Linear(16, 16)
    with torch.no_grad():
        broken.weight[0, 0] = float("nan")
    with pytest.raises(LmlabError, match="NaN/Inf") as e:
        svd_smoothing(broken)
    assert "\n" not in str(e.value)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary left behind
