"""Layer-by-layer distances between two models of one architecture (weightwatcher's
``distances()``).

Three measures, per layer, between the weights ``W1`` of ``model_a`` and ``W2`` of ``model_b``
(both as stored: ``(out, in)`` for ``nn.Linear``, ``(in, out)`` for Hugging Face ``Conv1D``,
``(vocab, d)`` for embeddings):

* ``"raw"`` — ``‖W1 − W2‖_F`` of the raw tensors (a conv2d kernel as its 4-D whole), and for
  ``dense`` layers with biases of one length also ``‖b1 − b2‖₂`` (``delta_b``);
* ``"euclidean"`` — ``‖W1 − W2‖_F`` averaged over the layer's matrices (one for dense layers,
  one per kernel position for conv2d);
* ``"cka"`` — weightwatcher's **uncentred, un-squared linear CKA** of the matrices, averaged
  likewise::

      cka(W1, W2) = ‖W1ᵀ W2‖_F / sqrt(‖W1ᵀ W1‖_F · ‖W2 W2ᵀ‖_F)

  i.e. the square root of the uncentred linear CKA of Kornblith et al. (2019) (the RV
  coefficient) with the rows of the stored matrices as the examples; no column is centred.
  It is 1 for ``W1 = W2`` (any scale), 0 for matrices whose columns span orthogonal spaces,
  and weightwatcher adds 1e-6 to the denominator when it is below 1e-6.

The result unpacks like weightwatcher's ``avg_dW, avg_db, details``; ``details`` has its
columns, in its order, indexed by ``layer_id``. lmlab computes in float64 (weightwatcher in
float32) and with the Gram matrices of the smaller side.

>>> import torch
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> a = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Linear(32, 16))
>>> avg_dW, avg_db, details = distances(a, a, method="cka")
>>> round(avg_dW, 12), list(details.columns)
(1.0, ['method', 'name', 'delta_W', 'delta_b', 'M', 'N', 'b_shape', 'longname'])
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
import torch

from lmlab.errors import LmlabError
from lmlab.spectral.analyze import select_layers
from lmlab.spectral.esd import matrices_of
from lmlab.spectral.layer import dims_of, skip_reason
from lmlab.spectral.options import AnalyzeOptions
from lmlab.spectral.pairing import pair_layers
from lmlab.spectral.sources import LayerRef, describe_source, iter_layers

__all__ = ["ModelDistances", "DistanceMethod", "distances", "matrix_distance",
           "DISTANCE_COLUMNS", "size_ok", "stored_key"]

DistanceMethod = Literal["raw", "euclidean", "cka"]
#: weightwatcher 0.7.7's ``distances()`` details columns, in its order (index: ``layer_id``).
DISTANCE_COLUMNS: tuple[str, ...] = ("method", "name", "delta_W", "delta_b", "M", "N",
                                     "b_shape", "longname")
_METHODS = ("raw", "euclidean", "cka")
_CKA_FLOOR = 1e-6


class ModelDistances(NamedTuple):
    """weightwatcher's ``(avg_dW, avg_db, details)``: the means over layers and one row each."""

    delta_W: float
    delta_b: float
    details: pd.DataFrame


def _as_array(W: Any) -> np.ndarray:
    """A NumPy view of ``W`` (half precision widened to float32; no copy otherwise)."""
    if isinstance(W, torch.Tensor):
        W = W.detach().to("cpu")
        if W.dtype in (torch.float16, torch.bfloat16):
            W = W.float()
        return W.numpy()
    return np.asarray(W)


def _wide(*arrays: np.ndarray) -> type:
    return np.complex128 if any(np.iscomplexobj(a) for a in arrays) else np.float64


def _fro(x: np.ndarray) -> float:
    flat = x.ravel()
    return math.sqrt(abs(float(np.vdot(flat, flat).real)))


def matrix_distance(W1: Any, W2: Any, method: DistanceMethod = "euclidean") -> float:
    """Distance (``raw``/``euclidean``: ``‖W1 − W2‖_F``) or CKA overlap (``cka``) of two arrays
    of one shape (vectors too), in float64. See the module docstring for the CKA formula.

    Raises:
        LmlabError: for an unknown method or two shapes that differ.

    >>> import numpy as np
    >>> matrix_distance(np.zeros((2, 2)), np.array([[3.0, 0], [0, 4]]))
    5.0
    >>> round(matrix_distance(np.eye(3), 7 * np.eye(3), "cka"), 12)
    1.0
    """
    _check_method(method)
    A, B = _as_array(W1), _as_array(W2)
    if A.shape != B.shape:
        raise LmlabError(f"cannot compare weights of shapes {A.shape} and {B.shape}; give "
                         "arrays of one shape")
    wide = _wide(A, B)
    if method != "cka":
        return _fro(np.subtract(A, B, dtype=wide))  # exact for float32 inputs
    A, B = A.astype(wide, copy=False), B.astype(wide, copy=False)
    if A.ndim == 1:
        A, B = A[:, None], B[:, None]
    rows, cols = A.shape[0], int(np.prod(A.shape[1:]))
    A, B = A.reshape(rows, cols), B.reshape(rows, cols)
    Ah, Bh = (A.conj().T, B.conj().T) if np.iscomplexobj(A) else (A.T, B.T)  # .T: BLAS syrk
    if rows <= cols:  # ‖AᵀB‖² = ⟨AAᵀ, BBᵀ⟩ on the smaller (rows × rows) side
        Ga, Gb = A @ Ah, B @ Bh
        cross = math.sqrt(max(float(np.vdot(Ga, Gb).real), 0.0))
    else:
        Ga, Gb = Ah @ A, Bh @ B
        cross = _fro(Ah @ B)
    norm = math.sqrt(_fro(Ga) * _fro(Gb))
    if norm < _CKA_FLOOR:
        norm += _CKA_FLOOR
    return cross / norm


def _check_method(method: str) -> None:
    if method not in _METHODS:
        raise LmlabError(f"unknown distance method {method!r}; use one of {', '.join(_METHODS)}")


# ----------------------------------------------------------------------------- layer plumbing


def size_ok(ref: LayerRef, min_evals: int | None, max_evals: int | None,
            max_N: int | None) -> bool:
    """weightwatcher's layer rules (:func:`lmlab.spectral.layer.skip_reason`): a 2-D (4-D
    conv2d) weight with min_evals ≤ M·rf ≤ max_evals and N ≤ max_N (its iterator drops the
    other layers silently)."""
    if len(ref.shape) != (4 if ref.layer_type == "conv2d" else 2):
        return False
    opts = AnalyzeOptions(min_evals=min_evals or 0, max_evals=max_evals or 0, max_N=max_N)
    return not skip_reason(*dims_of(ref), ref, opts)


def stored_key(ref: LayerRef) -> tuple[Any, str | None]:
    """(tensor store, tensor name) behind a layer read from a file or state dict (its loader
    is a :class:`~lmlab.spectral.sources.StoredTensor`), else ``(None, None)``."""
    from lmlab.spectral.sources import StoredTensor

    if isinstance(ref.load, StoredTensor):
        return ref.load.store, ref.load.key
    return None, None


def _bias(source: Any, ref: LayerRef) -> torch.Tensor | None:
    """The bias of a dense layer (weightwatcher reads biases of ``dense`` layers only)."""
    if ref.layer_type != "dense":
        return None
    if isinstance(source, torch.nn.Module):
        b = getattr(source.get_submodule(ref.longname), "bias", None)
        return b.detach() if isinstance(b, torch.Tensor) else None
    store, key = stored_key(ref)
    if store is None or key is None or not key.endswith(".weight"):
        return None
    bias_key = key[: -len("weight")] + "bias"
    if bias_key in getattr(store, "shapes", {}):
        return store.get(bias_key)
    return None


def _paired(model_a: Any, model_b: Any, layers: Sequence[int | str] | None,
            min_evals: int | None, max_evals: int | None, max_N: int | None
            ) -> list[tuple[LayerRef, LayerRef]]:
    rules = functools.partial(size_ok, min_evals=min_evals, max_evals=max_evals, max_N=max_N)
    refs_a = [r for r in select_layers(list(iter_layers(model_a)), layers) if rules(r)]
    refs_b = [r for r in iter_layers(model_b) if rules(r)]
    pairs = pair_layers(refs_a, refs_b)
    for ref, other in pairs:
        if other is None:
            raise LmlabError(
                f"model_b has no layer {ref.longname!r} (layer {ref.layer_id} of model_a): the "
                "models differ in architecture; compare two models of one architecture, or "
                "pass layers=[...] naming layers both have")
    if not layers:
        matched = {other.longname for _, other in pairs if other is not None}
        extra = next((r for r in refs_b if r.longname not in matched), None)
        if extra is not None:
            raise LmlabError(
                f"model_a has no layer {extra.longname!r} (layer {extra.layer_id} of model_b): "
                "the models differ in architecture; compare two models of one architecture, "
                "or pass layers=[...] naming layers both have")
    return [(a, b) for a, b in pairs if b is not None]


def _layer_row(ref: LayerRef, W1: np.ndarray, W2: np.ndarray,
               method: DistanceMethod, b1: torch.Tensor | None, b2: torch.Tensor | None
               ) -> dict[str, Any]:
    row: dict[str, Any] = dict(layer_id=ref.layer_id, method=method, name=ref.name,
                               delta_b=0.0, b_shape="unknown", longname=ref.longname)
    if W2.shape != W1.shape:  # stored transposed in model_b (pairing allows it)
        W2 = W2.T
    if method == "raw":
        row.update(M=int(min(W1.shape)), N=int(max(W1.shape)),
                   delta_W=matrix_distance(W1, W2, "raw"))
        if b1 is not None and b2 is not None and b1.numel() == b2.numel():
            row.update(b_shape=int(b1.numel()),
                       delta_b=matrix_distance(b1.reshape(-1), b2.reshape(-1), "raw"))
        return row
    mats1, N, M, _ = matrices_of(W1, ref.layer_type)
    mats2 = matrices_of(W2, ref.layer_type)[0]
    values = [matrix_distance(a, b, method) for a, b in zip(mats1, mats2, strict=True)]
    row.update(M=M, N=N, delta_W=float(np.mean(values)))
    return row


def distances(
    model_a: Any,
    model_b: Any,
    method: DistanceMethod = "raw",
    *,
    layers: Sequence[int | str] | None = None,
    min_evals: int | None = 8,
    max_evals: int | None = 15000,
    max_N: int | None = 50000,
) -> ModelDistances:
    """Per-layer distances between two models of one architecture, and their means.

    Layers are paired by ``longname`` (a module against its own checkpoint pairs too), over the
    layers weightwatcher's iterator keeps (the size rules below).

    Args:
        model_a, model_b: ``torch.nn.Module``, state dict, or path to ``.safetensors`` /
            ``.pt`` weights or a (sharded) model directory; files are read tensor by tensor.
        method: ``"raw"``, ``"euclidean"`` or ``"cka"`` (see the module docstring).
        layers: compare only these layers of ``model_a`` (ids, names, longnames or types).
        min_evals, max_evals, max_N: weightwatcher's layer rules (M·rf and N bounds).

    Returns:
        ``(delta_W, delta_b, details)``: the means of the ``delta_W`` and ``delta_b`` columns,
        and one row per layer with :data:`DISTANCE_COLUMNS`, indexed by ``layer_id`` (of
        ``model_a``). ``b_shape`` is the bias length (raw, dense layers) or ``"unknown"``.

    Raises:
        LmlabError: unknown method; bad path or corrupt file; a ``layers`` entry naming no
            layer; a layer one model has and the other lacks, or shapes that differ (the first
            one is named); no layer to compare.
    """
    _check_method(method)
    rows = []
    for ref, other in _paired(model_a, model_b, layers, min_evals, max_evals, max_N):
        W1, W2 = _as_array(ref.load()), _as_array(other.load())
        b1 = _bias(model_a, ref) if method == "raw" else None
        b2 = _bias(model_b, other) if method == "raw" else None
        rows.append(_layer_row(ref, W1, W2, method, b1, b2))
    if not rows:
        detail = f" matching layers={list(layers)}" if layers else ""
        raise LmlabError(f"no weight layers{detail} to compare in {describe_source(model_a)}: "
                         "expected Linear, Conv1D, Conv2d or Embedding layers")
    details = pd.DataFrame.from_records(rows, columns=["layer_id", *DISTANCE_COLUMNS])
    details["b_shape"] = details["b_shape"].astype(object)
    details = details.set_index("layer_id")
    return ModelDistances(float(details["delta_W"].mean()), float(details["delta_b"].mean()),
                          details)

