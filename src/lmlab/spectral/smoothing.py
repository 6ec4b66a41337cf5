"""SVD smoothing and sharpening of a model's weights (weightwatcher's ``SVDSmoothing`` and
``SVDSharpness``), on a copy in memory or file to file.

Each weight layer that weightwatcher's iterator keeps is replaced by a truncation of its SVD:

* **smoothing** keeps the top ``k`` singular components, with ``k`` set by ``method``:
  ``"detX"`` (the default, weightwatcher's too: the fewest top eigenvalues whose product is
  below 1, the ESD rescaled to mean 1), ``"svd"`` (``int(percent·M·rf)``;
  a negative ``percent`` removes that many top components instead), ``"alpha_min"`` (the
  power-law tail: eigenvalues ≥ xmin), ``"rmt"`` (the spikes above the Marchenko–Pastur bulk),
  ``"auto"`` (``rmt`` when α > 6, else ``detX``);
* **sharpening** removes the top ``s`` components, ``s`` being the number of spikes the ESD of
  the *randomly permuted* matrix shows above the MP bulk (outlier entries, a mean offset).

A conv2d kernel is cut per kernel position, keeping ``ceil(k / rf)`` components of each slice.
The result is the exact truncation (Eckart–Young: the best rank-``k`` approximation, error
``sqrt(Σ dropped σ²)``), computed in float64 from the eigenvectors of the Gram matrix of the
smaller side and stored back in the weight's own dtype.

Differences from weightwatcher 0.7.7, deliberate:

* the input is never modified: a copy is returned (weightwatcher smooths the model in place);
* weightwatcher truncates with scikit-learn's randomized ``TruncatedSVD`` (7 power iterations;
  on GPUs ``torch.svd_lowrank``, 2), which is exact only when ``k + 10 ≥ M``; lmlab is exact;
* a weight shared by two modules (tied embeddings) is transformed once; weightwatcher
  transforms it again from its truncated value (the same for ``percent > 0``; with
  ``percent < 0`` it removes the top components twice);
* ``"rmt"``/``"auto"``/sharpening count spikes with :func:`lmlab.spectral.mp.fit_mp`
  (weightwatcher's fit; another ``spike_counter`` may be given); where that fit is undefined
  the layer is left alone (weightwatcher's -1 would keep, or remove, one component);
* fp16/bf16 weights keep their dtype (weightwatcher stores float32 back); an unknown method is
  refused (weightwatcher falls back to ``"svd"``); NaN/Inf weights are refused.

>>> import torch
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> model = torch.nn.Sequential(torch.nn.Linear(32, 16))
>>> smooth = svd_smoothing(model, method="svd", percent=0.25)
>>> int(torch.linalg.matrix_rank(smooth[0].weight)), int(torch.linalg.matrix_rank(model[0].weight))
(4, 16)
"""

from __future__ import annotations

import copy
import functools
import json
import math
import shutil
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import torch

from lmlab.errors import LmlabError
from lmlab.spectral.analyze import select_layers
from lmlab.spectral.detx import detx_constraint
from lmlab.spectral.distances import size_ok, stored_key
from lmlab.spectral.esd import matrices_of, spectrum_of
from lmlab.spectral.mp import fit_mp
from lmlab.spectral.powerlaw import fit_power_law
from lmlab.spectral.sources import LayerRef, iter_layers, torch_file_error

__all__ = ["svd_smoothing", "svd_sharpness", "svd_smoothing_files", "svd_sharpness_files",
           "low_rank", "SmoothMethod", "SpikeCounter"]

SmoothMethod = Literal["detX", "svd", "alpha_min", "rmt", "auto"]
#: (ascending eigenvalues of WᵀW, N, M) -> number of spikes above the MP bulk.
SpikeCounter = Callable[[np.ndarray, int, int], int]
_METHODS = ("detX", "svd", "alpha_min", "rmt", "auto")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack",
                    ".onnx", ".gguf")
_TORCH_NAMES = ("pytorch_model.bin", "model.pt", "model.bin")  # sources' order
_Limits = tuple[int | None, int | None, int | None]


def _mp_spikes(evals: np.ndarray, N: int, M: int) -> int:
    """weightwatcher's MP-fit spike count (0 when the fit is undefined; weightwatcher's -1
    would keep or remove one component)."""
    fit = fit_mp(evals, N, M)
    return int(fit.num_spikes) if fit.ok else 0


def _detx_count(evals: np.ndarray) -> int:
    """weightwatcher's detX count (0 for fewer than two distinct eigenvalues, as it does)."""
    try:
        return detx_constraint(evals)[0]
    except LmlabError:
        return 0


def low_rank(W: torch.Tensor, k: int) -> torch.Tensor:
    """The top ``k`` singular components of ``W`` (``k < 0``: ``W`` without its top ``|k|``;
    ``k = 0`` or ``k ≥ min(W.shape)``: ``W`` itself), batched over leading dimensions.

    Exact (Eckart–Young), in ``W``'s dtype: pass float64 for full precision.

    >>> W = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    >>> torch.diagonal(low_rank(W, 2)).tolist(), torch.diagonal(low_rank(W, -1)).tolist()
    ([3.0, 2.0, 0.0], [0.0, 2.0, 1.0])
    """
    r, c = W.shape[-2:]
    m = min(r, c)
    if k == 0 or k >= m:
        return W
    if k <= -m:
        return torch.zeros_like(W)
    right = r >= c  # the Gram matrix of the smaller side: WᴴW (c×c) or WWᴴ (r×r)
    _, V = torch.linalg.eigh(W.mH @ W if right else W @ W.mH)  # ascending
    n_keep = k if k > 0 else m + k
    keep = V[..., m - k:] if k > 0 else V[..., : m + k]
    drop = V[..., : m - k] if k > 0 else V[..., m + k:]
    small = keep if n_keep <= m - n_keep else drop
    part = (W @ small) @ small.mH if right else small @ (small.mH @ W)
    return part if small is keep else W - part


@dataclass(frozen=True)
class _Rule:
    """How many components to keep (> 0) or remove (< 0) for one weight tensor."""

    method: str
    percent: float
    spike_counter: SpikeCounter
    seed: int | None  # set: sharpen (the ESD of the permuted matrix)

    def count(self, W: torch.Tensor, ref: LayerRef) -> int:
        W32 = W.detach().to("cpu", torch.complex64 if W.is_complex() else torch.float32).numpy()
        if not np.all(np.isfinite(W32)):
            raise LmlabError(f"layer {ref.longname!r} has NaN/Inf weights and cannot be "
                             "truncated; repair the checkpoint or leave it out with layers=")
        mats, N, M, rf = matrices_of(W32, ref.layer_type)
        if self.seed is not None:  # one stream per layer name: the same in every route
            rng = np.random.default_rng([self.seed, zlib.crc32(ref.longname.encode())])
            mats = [rng.permutation(m.ravel()).reshape(m.shape) for m in mats]
            return -int(self.spike_counter(spectrum_of(mats, N=N).evals, N, M))
        if self.method == "svd":
            return int(self.percent * M * rf)
        evals = spectrum_of(mats, N=N).evals
        if self.method == "rmt":
            return int(self.spike_counter(evals, N, M))
        if self.method in ("alpha_min", "auto"):
            fit = fit_power_law(evals)
            if self.method == "alpha_min":
                return int(np.count_nonzero(evals >= fit.xmin)) if fit.ok else 0
            if fit.ok and fit.alpha > 6:
                return int(self.spike_counter(evals, N, M))
        return _detx_count(evals)


def _transform(W: torch.Tensor, layer_type: str, num: int) -> torch.Tensor:
    """``W`` truncated to ``num`` components (per kernel position for conv2d), same dtype."""
    Wd = W.detach().to(torch.complex128 if W.is_complex() else torch.float64)
    if layer_type != "conv2d":
        return low_rank(Wd, num).to(W.dtype)
    n, m, kh, kw = Wd.shape
    if n + m >= kh + kw:  # (out, in, kh, kw): one slice per kernel position
        per = math.ceil(num / (kh * kw))
        return low_rank(Wd.permute(2, 3, 0, 1), per).permute(2, 3, 0, 1).to(W.dtype)
    return low_rank(Wd, math.ceil(num / (n * m))).to(W.dtype)


def _rule(method: str, percent: float, spike_counter: SpikeCounter | None,
          rng: np.random.Generator | None) -> _Rule:
    """The checked rule; ``rng`` (sharpening) gives the seed of the per-layer streams."""
    if method not in _METHODS:
        raise LmlabError(f"unknown smoothing method {method!r}; use one of {', '.join(_METHODS)}")
    if not math.isfinite(percent):
        raise LmlabError(f"percent = {percent} is not a number; give e.g. percent=0.8")
    seed = None if rng is None else int(rng.integers(2**63))
    return _Rule(method, float(percent), spike_counter or _mp_spikes, seed)


def _plan(source: Any, layers: Sequence[int | str] | None, limits: _Limits
          ) -> list[LayerRef]:
    """The layers weightwatcher's iterator keeps, among those ``layers`` selects."""
    return [r for r in select_layers(list(iter_layers(source)), layers) if size_ok(r, *limits)]


def _transformed(W: torch.Tensor | None, ref: LayerRef, rule: _Rule) -> torch.Tensor | None:
    """``W`` (default: loaded) after the rule; None when the rule leaves it as it is."""
    W = ref.load() if W is None else W
    num = rule.count(W, ref)
    return _transform(W, ref.layer_type, num) if num else None


def _smooth_dict(tensors: dict[str, Any], plan: list[LayerRef], rule: _Rule) -> None:
    """Replace the planned tensors of a state dict; names sharing storage (tied) once."""
    made: dict[tuple[int, int, tuple[int, ...]], torch.Tensor] = {}
    for ref in plan:
        key = stored_key(ref)[1]
        W = tensors.get(key) if key is not None else None
        if key is None or not isinstance(W, torch.Tensor):
            continue
        sid = (W.untyped_storage().data_ptr(), int(W.storage_offset()), tuple(W.shape))
        if sid not in made:
            new = _transformed(W, ref, rule)
            made[sid] = W if new is None else new
        tensors[key] = made[sid]


def _in_memory(source: Any, rule: _Rule, layers: Sequence[int | str] | None,
               limits: _Limits) -> Any:
    if isinstance(source, torch.nn.Module):
        model = copy.deepcopy(source)
        done: set[int] = set()
        for ref in _plan(model, layers, limits):
            param = model.get_submodule(ref.longname).weight
            if not isinstance(param, torch.Tensor) or id(param) in done:
                continue  # a tied weight is transformed once
            done.add(id(param))
            new = _transformed(param, ref, rule)
            if new is not None:
                with torch.no_grad():
                    param.copy_(new)
        return model
    if isinstance(source, Mapping):
        out = dict(source)
        _smooth_dict(out, _plan(source, layers, limits), rule)
        return out
    if isinstance(source, str | Path):
        raise LmlabError(f"{source} is a path: to transform files use svd_smoothing_files / "
                         "svd_sharpness_files(path_in, path_out)")
    raise LmlabError(f"cannot transform an object of type {type(source).__name__}: pass a "
                     "torch.nn.Module or a state dict")


def svd_smoothing(source: Any, *, method: SmoothMethod = "detX", percent: float = 0.8,
                  layers: Sequence[int | str] | None = None, min_evals: int | None = 8,
                  max_evals: int | None = 15000, max_N: int | None = 50000,
                  spike_counter: SpikeCounter | None = None) -> Any:
    """A copy of ``source`` with each weight layer replaced by its top singular components.

    Args:
        source: a ``torch.nn.Module`` or a state dict (name -> tensor); left unchanged.
        method: how many components to keep (module docstring): ``"detX"``, ``"svd"``,
            ``"alpha_min"``, ``"rmt"`` or ``"auto"``.
        percent: for ``"svd"``: keep ``int(percent·M·rf)``; negative: remove that many.
        layers: transform only these layers (ids, names, longnames or types).
        min_evals, max_evals, max_N: weightwatcher's layer rules; other layers stay as they are.
        spike_counter: ``(evals, N, M) -> spikes`` for ``"rmt"``/``"auto"``.

    Returns:
        The transformed copy (a module, or a new dict sharing the untouched tensors).

    Raises:
        LmlabError: unknown method, a ``layers`` entry naming no layer, NaN/Inf weights, or a
            path (use :func:`svd_smoothing_files`).
    """
    return _in_memory(source, _rule(method, percent, spike_counter, None), layers,
                      (min_evals, max_evals, max_N))


def svd_sharpness(source: Any, *, layers: Sequence[int | str] | None = None,
                  rng: np.random.Generator | None = None, min_evals: int | None = 8,
                  max_evals: int | None = 15000, max_N: int | None = 50000,
                  spike_counter: SpikeCounter | None = None) -> Any:
    """A copy of ``source`` without the top ``s`` singular components of each weight layer,
    ``s`` being the spikes of its randomly permuted matrix's ESD (weightwatcher draws the
    permutation from NumPy's global state; lmlab from ``rng``, default seed 0).

    Args and Raises: as :func:`svd_smoothing`.
    """
    rule = _rule("rmt", 0.0, spike_counter, rng or np.random.default_rng(0))
    return _in_memory(source, rule, layers, (min_evals, max_evals, max_N))


# ----------------------------------------------------------------------------- file to file


def _safetensors_header(path: Path) -> tuple[int, dict[str, Any]]:
    """(offset of the data, header) of a safetensors file (already checked by sources)."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        return 8 + size, json.loads(f.read(size))


def _patched_copy(src: Path, patches: Mapping[str, Callable[[], torch.Tensor | None]]
                  ) -> Callable[[IO[bytes]], None]:
    """A writer copying ``src`` byte for byte, then overwriting the named tensors in place
    (their dtype and shape are unchanged, so the header is too), one tensor at a time."""
    start, header = _safetensors_header(src)

    def write(handle: IO[bytes]) -> None:
        with open(src, "rb") as f:
            shutil.copyfileobj(f, handle, 1 << 24)
        for key, make in patches.items():
            new = make()
            if new is None:
                continue
            begin, end = header[key]["data_offsets"]
            data = new.contiguous().view(torch.uint8).numpy().tobytes()
            if len(data) != end - begin:
                raise LmlabError(f"tensor {key!r} of {src} changed size while smoothed")
            handle.seek(start + begin)
            handle.write(data)

    return write


def _pt_tensors(obj: Any) -> dict[str, Any]:
    """The dict of tensors inside a torch checkpoint (itself, or under a usual key)."""
    if not isinstance(obj, dict):
        return {}
    inner = [obj[k] for k in ("state_dict", "model_state_dict", "model")
             if isinstance(obj.get(k), dict)]
    return inner[0] if inner else obj


def _write_pt(src: Path, dst: Path, plan: list[LayerRef], rule: _Rule) -> None:
    from lmlab.runs.io import atomic_save_torch
    from lmlab.spectral.sources import torch_load

    try:
        obj = torch_load(src)
    except Exception as e:  # noqa: BLE001 - the same refusal as when reading it
        raise torch_file_error(src, e) from None
    _smooth_dict(_pt_tensors(obj), plan, rule)
    atomic_save_torch(dst, obj)


def _check_paths(path_in: Path, path_out: Path) -> None:
    a, b = path_in.resolve(), path_out.resolve()
    if a == b or a in b.parents or b in a.parents:
        raise LmlabError(f"path_out {path_out} would overwrite the input {path_in}; choose "
                         "another path (the input is never modified)")


def _files(path_in: Any, path_out: Any, rule: _Rule, layers: Sequence[int | str] | None,
           limits: _Limits) -> Path:
    from lmlab.runs.guard import check_free_space
    from lmlab.runs.io import atomic_directory, atomic_write_with

    src, dst = Path(path_in).expanduser(), Path(path_out).expanduser()
    _check_paths(src, dst)
    plan: dict[str, LayerRef] = {}
    for ref in _plan(src, layers, limits):  # opens and checks the input
        key = stored_key(ref)[1]
        if key is not None:
            plan.setdefault(key, ref)  # a tied tensor (two layers, one name) once

    def write_safetensors(shard: Path, out: Path, owned: set[str]) -> None:
        check_free_space(out.parent, shard.stat().st_size, str(out))
        patches = {k: functools.partial(_transformed, None, ref, rule)
                   for k, ref in plan.items() if k in owned}
        atomic_write_with(out, _patched_copy(shard, patches))

    if src.is_file():
        if src.suffix == ".safetensors":
            write_safetensors(src, dst, set(plan))
        else:
            _write_pt(src, dst, list(plan.values()), rule)
        return dst
    index = src / "model.safetensors.index.json"
    shards = sorted(src.glob("*.safetensors"))
    owner = json.loads(index.read_text())["weight_map"] if index.exists() else None
    torch_file = next((src / n for n in _TORCH_NAMES if (src / n).exists()), None)
    with atomic_directory(dst) as tmp:
        for item in sorted(src.iterdir()):
            if item in shards:
                held = set(_safetensors_header(item)[1]) - {"__metadata__"}
                write_safetensors(item, tmp / item.name, {
                    k for k in held if owner is None or owner.get(k) == item.name})
            elif not shards and item == torch_file:
                _write_pt(item, tmp / item.name, list(plan.values()), rule)
            elif item.suffix in _WEIGHT_SUFFIXES:
                continue  # other weight files would hold stale, untransformed weights
            elif item.is_dir():
                shutil.copytree(item, tmp / item.name)
            else:
                shutil.copy2(item, tmp / item.name)
    return dst


def svd_smoothing_files(path_in: Any, path_out: Any, *, method: SmoothMethod = "detX",
                        percent: float = 0.8, layers: Sequence[int | str] | None = None,
                        min_evals: int | None = 8, max_evals: int | None = 15000,
                        max_N: int | None = 50000, spike_counter: SpikeCounter | None = None
                        ) -> Path:
    """:func:`svd_smoothing` from checkpoint files to new ones, tensor by tensor.

    ``path_in`` is a ``.safetensors`` file, a ``.pt``/``.bin`` state dict, or a model
    directory (sharded safetensors with or without index, or ``pytorch_model.bin``); the
    output has the same form at ``path_out``, written atomically (a temporary beside it,
    renamed when complete). Safetensors are copied byte for byte with the transformed tensors
    overwritten in place, so memory stays near the largest matrix; a ``.pt`` file is rewritten
    whole. A directory's other files (config, tokenizer) are copied; other weight files in it
    (``*.bin`` beside safetensors, ...) are left out: they would hold untransformed weights.

    Args:
        path_in, path_out: the input and the output (``path_out`` may not be or hold the input).
        method, percent, layers, min_evals, max_evals, max_N, spike_counter: as
            :func:`svd_smoothing`.

    Returns:
        ``path_out``.

    Raises:
        LmlabError: as :func:`svd_smoothing`, a bad or corrupt input, an output that would
            overwrite the input, or an unwritable output.
    """
    return _files(path_in, path_out, _rule(method, percent, spike_counter, None), layers,
                  (min_evals, max_evals, max_N))


def svd_sharpness_files(path_in: Any, path_out: Any, *,
                        layers: Sequence[int | str] | None = None,
                        rng: np.random.Generator | None = None, min_evals: int | None = 8,
                        max_evals: int | None = 15000, max_N: int | None = 50000,
                        spike_counter: SpikeCounter | None = None) -> Path:
    """:func:`svd_sharpness` from checkpoint files to new ones, as :func:`svd_smoothing_files`."""
    rule = _rule("rmt", 0.0, spike_counter, rng or np.random.default_rng(0))
    return _files(path_in, path_out, rule, layers, (min_evals, max_evals, max_N))
