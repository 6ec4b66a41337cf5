"""Model-to-model distances: parity with weightwatcher's ``distances()`` and known answers."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.spectral.distances import DISTANCE_COLUMNS, distances, matrix_distance
from tests.conftest import tiny_model

METHODS = ("raw", "euclidean", "cka")


def _with_biases(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random biases (tiny models start with zero biases, which would make delta_b trivial)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def _ww_distances(ww_module, a, b, **kw):
    with contextlib.redirect_stdout(io.StringIO()):
        return ww_module.WeightWatcher().distances(a, b, **kw)


def _cnn(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(),
                               torch.nn.Conv2d(16, 32, (3, 2)), torch.nn.Flatten(),
                               torch.nn.Linear(32, 10))


@pytest.fixture
def ww_float64(ww_module, monkeypatch):
    """weightwatcher reading weights in float64 (it casts to float32): its own formulas, with
    the rounding of its float32 input taken out, for a parity test at 1e-9."""
    import weightwatcher.weightwatcher as wwm

    monkeypatch.setattr(wwm, "torch_T_to_np", lambda t: t.detach().cpu().double().numpy())
    return ww_module


def _same_frame(ours, theirs, rtol: float) -> None:
    assert list(ours.columns) == list(theirs.columns) == list(DISTANCE_COLUMNS)
    assert ours.index.name == theirs.index.name == "layer_id"
    assert list(ours.index) == list(theirs.index)
    for col in ("method", "name", "longname", "M", "N"):
        assert list(ours[col]) == list(theirs[col]), col
    assert [str(x) for x in ours["b_shape"]] == [str(x) for x in theirs["b_shape"]]
    np.testing.assert_allclose(ours["delta_W"], theirs["delta_W"].astype(float), rtol=rtol)
    np.testing.assert_allclose(ours["delta_b"], theirs["delta_b"].astype(float), rtol=rtol,
                               atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_parity_with_weightwatcher(ww_module, family, method):
    """Stock weightwatcher computes in float32: the same rows, values within float32 rounding."""
    a, b = tiny_model(family, 0), _with_biases(tiny_model(family, 1), 1)
    avg_dW, avg_db, theirs = _ww_distances(ww_module, a, b, method=method)
    ours = distances(a, b, method)
    _same_frame(ours.details, theirs, rtol=2e-6)
    assert ours.delta_W == pytest.approx(float(avg_dW), rel=2e-6)
    assert ours.delta_b == pytest.approx(float(avg_db), rel=2e-6, abs=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("make", ["bert", "gpt2", "cnn"])
def test_parity_with_weightwatcher_in_float64(ww_float64, method, make):
    """weightwatcher's own code fed float64 weights agrees to 1e-9 (conv2d kernels included)."""
    if make == "cnn":
        a, b = _cnn(0), _cnn(1)
    else:
        a, b = tiny_model(make, 0), _with_biases(tiny_model(make, 1), 1)
    avg_dW, avg_db, theirs = _ww_distances(ww_float64, a, b, method=method)
    ours = distances(a, b, method)
    _same_frame(ours.details, theirs, rtol=1e-9)
    assert ours.delta_W == pytest.approx(avg_dW, rel=1e-9)
    if method == "raw" and make == "bert":
        assert ours.delta_b > 0.1  # biases do differ, and agree above


def test_layers_selection_matches_weightwatcher(ww_module):
    a, b = tiny_model("gpt2", 0), tiny_model("gpt2", 1)
    theirs = _ww_distances(ww_module, a, b, method="euclidean", layers=[9, 10])[2]
    ours = distances(a, b, "euclidean", layers=[9, 10]).details
    _same_frame(ours, theirs, rtol=2e-6)


def test_known_answers_self_distance():
    model = tiny_model("llama", 0)
    assert distances(model, model, "raw").delta_W == 0.0
    assert distances(model, model, "euclidean").details["delta_W"].eq(0.0).all()
    np.testing.assert_allclose(distances(model, model, "cka").details["delta_W"], 1.0,
                               rtol=1e-12)


def test_known_answers_hand_made_matrices():
    assert matrix_distance(np.zeros((2, 2)), np.array([[3.0, 0.0], [0.0, 4.0]])) == 5.0
    assert matrix_distance(np.ones(4), np.zeros(4), "raw") == 2.0
    # cka(I, diag(1, 2)) = ‖diag(1, 2)‖ / sqrt(‖I‖·‖diag(1, 4)‖) = √5 / (√2·√17)^½
    got = matrix_distance(np.eye(2), np.diag([1.0, 2.0]), "cka")
    assert got == pytest.approx(math.sqrt(5) / (math.sqrt(2) * math.sqrt(17)) ** 0.5, rel=1e-14)
    # columns in orthogonal spaces: W1ᵀW2 = 0
    W1, W2 = np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [0.0, 1.0]])
    assert matrix_distance(W1, W2, "cka") == 0.0
    rng = np.random.default_rng(0)
    W = rng.standard_normal((40, 7))
    assert matrix_distance(W, -3.0 * W, "cka") == pytest.approx(1.0, rel=1e-13)
    # wide and tall matrices take different routes; ‖W1ᵀW2‖ checked against the definition
    for shape in ((7, 40), (40, 7)):
        A, B = rng.standard_normal(shape), rng.standard_normal(shape)
        want = np.linalg.norm(A.T @ B) / math.sqrt(np.linalg.norm(A.T @ A)
                                                   * np.linalg.norm(B @ B.T))
        assert matrix_distance(A, B, "cka") == pytest.approx(want, rel=1e-12)
    assert matrix_distance(np.zeros((3, 3)), np.zeros((3, 3)), "cka") == 0.0  # floored


def test_known_answer_bias_distance():
    a, b = torch.nn.Linear(8, 16), torch.nn.Linear(8, 16)
    with torch.no_grad():
        b.weight.copy_(a.weight)
        a.bias.zero_()
        b.bias.zero_()
        b.bias[:2] = torch.tensor([3.0, 4.0])
    avg_dW, avg_db, details = distances(a, b, "raw")
    assert (avg_dW, avg_db) == (0.0, pytest.approx(5.0, rel=1e-7))
    assert details["b_shape"].tolist() == [16]
    assert distances(a, b, "euclidean").details["b_shape"].tolist() == ["unknown"]


def test_model_against_its_own_files(tmp_path):
    model = tiny_model("gpt2", 0)
    model.save_pretrained(tmp_path / "hf")
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    for other in (tmp_path / "hf", tmp_path / "sd.pt", model.state_dict()):
        for method in ("raw", "cka"):
            result = distances(model, other, method)
            assert len(result.details) == 11
            assert result.delta_W == pytest.approx(1.0 if method == "cka" else 0.0, abs=1e-12)


def test_files_give_the_same_rows_as_modules(tmp_path):
    a, b = tiny_model("bert", 0), _with_biases(tiny_model("bert", 1), 1)
    b.save_pretrained(tmp_path / "b")
    torch.save(b.state_dict(), tmp_path / "b.pt")
    want = distances(a, b, "raw")
    assert want.delta_b > 0.1
    for other in (tmp_path / "b", tmp_path / "b.pt"):
        got = distances(a, other, "raw")
        assert got.details.equals(want.details), other
        assert got[:2] == want[:2]


def test_mismatched_models_are_refused():
    with pytest.raises(LmlabError, match="model_b has no layer 'transformer.wte'") as e:
        distances(tiny_model("gpt2"), tiny_model("llama"))
    assert "\n" not in str(e.value)
    small = torch.nn.Sequential(torch.nn.Linear(8, 16))
    big = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 16))
    with pytest.raises(LmlabError, match="model_a has no layer '1'"):
        distances(small, big)
    assert len(distances(big, small, layers=["0"]).details) == 1  # the layers both have
    with pytest.raises(LmlabError, match="not the same architecture"):
        distances(torch.nn.Linear(8, 16), torch.nn.Linear(8, 32))


def test_bad_inputs_are_refused(tmp_path):
    model = torch.nn.Linear(8, 16)
    with pytest.raises(LmlabError, match="unknown distance method 'cosine'"):
        distances(model, model, "cosine")  # type: ignore[arg-type]
    with pytest.raises(LmlabError, match="no such file"):
        distances(model, tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(LmlabError, match="corrupt"):
        distances(model, tmp_path / "bad.safetensors")
    with pytest.raises(LmlabError, match="no layer is named"):
        distances(model, model, layers=["nope"])
    with pytest.raises(LmlabError, match="no weight layers"):
        distances(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))  # M = 2 < min_evals
    with pytest.raises(LmlabError, match="shapes"):
        matrix_distance(np.zeros(3), np.zeros(4))
