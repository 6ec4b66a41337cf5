"""Where weight matrices come from: a module, a state dict, or checkpoint files streamed lazily.

Every source yields :class:`LayerRef` objects in the same order and with the same ``layer_id``,
``name``, ``longname`` and ``layer_type`` as weightwatcher's walk over ``model.named_modules()``:
``layer_id`` counts every module from 0, and a module is a layer when its class (by isinstance or
by substring of its lower-cased type string) is linear → ``dense``, conv1d (which catches Hugging
Face GPT-2's ``Conv1D``) → ``conv1d``, conv2d → ``conv2d``, embedding → ``embedding``.

Files (``.safetensors``, a sharded safetensors directory with its index, ``.pt``/``.bin`` state
dicts) are read **as their index says** — each tensor from the shard that
``model.safetensors.index.json`` names; without an index, a name held by two files is refused —
and only when they are regular files (a FIFO or a device would block: refused from its metadata).
``.pt``/``.bin`` files load with ``torch.load(weights_only=True)``: a pickle that would run code
is refused in lmlab's words (:func:`torch_file_error`). They are read **tensor by tensor**: a
``LayerRef`` holds a loader, not the tensor, so peak memory stays near the largest matrix.
When a ``config.json`` sits beside the weights, the model's module tree is built on the ``meta``
device (no memory) to recover the in-memory layer ids and types; without one, ``layer_id``
counts the tensors of the file in order and types come from names.

>>> import torch
>>> refs = list(iter_layers(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())))
>>> [(r.layer_id, r.longname, r.layer_type, r.shape) for r in refs]
[(1, '0', 'dense', (3, 4))]
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmlab._files import regular_file, torch_file_error
from lmlab.errors import LmlabError, first_line

__all__ = ["LayerRef", "StoredTensor", "check_weights", "describe_source", "iter_layers",
           "layer_type_of", "regular_file", "torch_file_error", "torch_load"]

_SAFETENSORS_INDEX = "model.safetensors.index.json"
_BIN_INDEX = "pytorch_model.bin.index.json"
_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


@dataclass(frozen=True)
class LayerRef:
    """One candidate weight matrix, loaded only when asked.

    Attributes:
        layer_id: position in the module walk (weightwatcher's layer_id).
        name: last component of ``longname``.
        longname: the module path, e.g. ``transformer.h.0.attn.c_attn``.
        layer_type: ``dense``, ``conv1d``, ``conv2d`` or ``embedding``.
        shape: shape of the weight tensor.
        load: returns the weight tensor (possibly memory-mapped).
    """

    layer_id: int
    name: str
    longname: str
    layer_type: str
    shape: tuple[int, ...]
    load: Callable[[], torch.Tensor]


@dataclass(frozen=True)
class StoredTensor:
    """The loader of a tensor kept in a file or a state dict: calling it reads the tensor;
    ``store`` and ``key`` say where it is (a layer's bias, its file for blocked reads).

    >>> StoredTensor({"w": torch.ones(2)}, "w")().tolist()
    [1.0, 1.0]
    """

    store: Any  # anything with get(key); a file's store also has shapes and location(key)
    key: str

    def __call__(self) -> torch.Tensor:
        return self.store.get(self.key)  # type: ignore[no-any-return]


def layer_type_of(module: torch.nn.Module) -> str | None:
    """weightwatcher's layer classification of a module (None: not a weight layer).

    >>> layer_type_of(torch.nn.Embedding(3, 2)), layer_type_of(torch.nn.LayerNorm(2))
    ('embedding', None)
    """
    typestr = str(type(module)).lower()
    if isinstance(module, torch.nn.Linear) or "linear" in typestr:
        return "dense"
    if isinstance(module, torch.nn.Conv1d) or "conv1d" in typestr:
        return "conv1d"
    if isinstance(module, torch.nn.Conv2d) or "conv2d" in typestr:
        return "conv2d"
    if isinstance(module, torch.nn.Embedding) or "embedding" in typestr:
        return "embedding"
    return None


def _leaf(longname: str) -> str:
    return longname.split(".")[-1] if longname else ""


def _module_layers(model: torch.nn.Module) -> Iterator[tuple[int, str, str, torch.nn.Module]]:
    """(layer_id, longname, layer_type, module) for each module with a weight tensor."""
    for layer_id, (longname, module) in enumerate(model.named_modules()):
        kind = layer_type_of(module)
        if kind is None:
            continue
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor):
            yield layer_id, longname, kind, module


def _from_module(model: torch.nn.Module) -> Iterator[LayerRef]:
    for layer_id, longname, kind, module in _module_layers(model):
        w = module.weight
        assert isinstance(w, torch.Tensor)
        yield LayerRef(layer_id, _leaf(longname), longname, kind, tuple(w.shape), w.detach)


# ----------------------------------------------------------------------------- tensor stores


class _TensorStore:
    """Name -> lazily loaded tensor, with shapes known up front."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], getter: Callable[[str], torch.Tensor],
                 owner: Mapping[str, Path] | None = None):
        self.shapes = shapes
        self._get = getter
        self._owner = owner

    def get(self, key: str) -> torch.Tensor:
        return self._get(key)

    def location(self, key: str) -> Path | None:
        """The safetensors file that holds ``key`` (None for other stores): read block by
        block, or by a worker process (:func:`lmlab.spectral.blocks.location_of`)."""
        return None if self._owner is None else self._owner.get(key)




def _safetensors_shapes(f: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from the header of one safetensors file (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    regular_file(f)
    try:
        with safe_open(str(f), framework="pt") as h:
            return {k: tuple(h.get_slice(k).get_shape()) for k in h.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise LmlabError(
            f"cannot read safetensors file {f}: {e}; the file is corrupt or truncated"
        ) from None


def _safetensors_reader(owner: dict[str, Path]) -> Callable[[str], torch.Tensor]:
    from safetensors import safe_open

    def get(key: str) -> torch.Tensor:
        with safe_open(str(owner[key]), framework="pt") as h:
            return h.get_tensor(key)

    return get


def _safetensors_store(files: list[Path]) -> _TensorStore:
    """The tensors of ``files`` (no index): a name held by two files is refused."""
    shapes: dict[str, tuple[int, ...]] = {}
    owner: dict[str, Path] = {}
    for f in files:
        for k, shape in _safetensors_shapes(f).items():
            if k in owner:
                raise LmlabError(
                    f"the tensor {k!r} is in both {owner[k]} and {f}; keep one copy, or add "
                    f"a {_SAFETENSORS_INDEX} that says which file holds each tensor")
            shapes[k], owner[k] = shape, f
    return _TensorStore(shapes, _safetensors_reader(owner), owner)


def _read_index(index: Path) -> dict[str, str]:
    """The ``weight_map`` (tensor name -> shard file name) of a shard index, checked."""
    regular_file(index, allow_empty=True)
    shards = "*.safetensors" if index.name == _SAFETENSORS_INDEX else "pytorch_model-*.bin"
    hint = f"re-save the model, or delete the index to read every {shards} file"
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise LmlabError(f"cannot read the shard index {index}: {first_line(e)}; {hint}"
                         ) from None
    if not isinstance(data, dict):
        raise LmlabError(f"the shard index {index} holds a JSON {type(data).__name__}, not an "
                         f"object with a 'weight_map'; {hint}")
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        if weight_map is None:
            what = "has no 'weight_map'"
        elif isinstance(weight_map, dict):
            what = "has an empty 'weight_map'"
        else:
            what = f"has a 'weight_map' that is a JSON {type(weight_map).__name__}"
        raise LmlabError(f"the shard index {index} {what}, not an object of tensor name -> "
                         f"shard file; {hint}")
    for name, file in weight_map.items():
        inside = isinstance(file, str) and file and not Path(file).is_absolute() \
            and ".." not in Path(file).parts
        if not inside:
            raise LmlabError(f"the shard index {index} maps {name!r} to {file!r}, not a file "
                             f"name inside {index.parent}; {hint}")
    return weight_map


def _indexed_store(directory: Path, index: Path) -> _TensorStore:
    """The tensors a safetensors index names, each read from the shard the index gives."""
    weight_map = _read_index(index)
    shards = sorted(set(weight_map.values()))
    missing = [s for s in shards if not (directory / s).exists()]
    if missing:
        raise LmlabError(f"the shard index {index} names shard(s) that are missing: "
                         f"{', '.join(missing)}; download them again or fix the index")
    shapes: dict[str, tuple[int, ...]] = {}
    owner: dict[str, Path] = {}
    for shard in shards:
        f = directory / shard
        held = _safetensors_shapes(f)
        wanted = [k for k, s in weight_map.items() if s == shard]
        absent = [k for k in wanted if k not in held]
        if absent:
            raise LmlabError(f"the shard index {index} puts {absent[0]!r} in {f}, which does "
                             "not hold it; download the shards again or fix the index")
        for k, shape in held.items():  # the shard's own order, as without an index
            if weight_map.get(k) == shard:
                shapes[k], owner[k] = shape, f
    return _TensorStore(shapes, _safetensors_reader(owner), owner)


def _unwrap_state_dict(obj: Any, path: Path) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and any(
                    isinstance(v, torch.Tensor) for v in inner.values()):
                return {k: v for k, v in inner.items() if isinstance(v, torch.Tensor)}
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise LmlabError(f"{path} holds no state dict of tensors (found {type(obj).__name__})")


def torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` memory-mapped (plain for the legacy format), quiet."""
    with warnings.catch_warnings():  # torch's pickle-protocol warnings are not the user's
        warnings.simplefilter("ignore")
        try:
            return torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as e:
            if "mmap" not in str(e).lower():
                raise
        # the legacy (non-zip) format cannot be memory-mapped
        return torch.load(str(path), map_location="cpu", weights_only=True)


def _torch_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    """The tensors of a ``.pt``/``.bin`` file (memory-mapped where the format allows)."""
    regular_file(path)
    try:
        obj = torch_load(path)
    except Exception as e:  # noqa: BLE001 - zip, stream and unpickling errors of many kinds
        raise torch_file_error(path, e) from None
    return _unwrap_state_dict(obj, path)


def _torch_store(path: Path) -> _TensorStore:
    sd = _torch_state_dict(path)
    return _TensorStore({k: tuple(v.shape) for k, v in sd.items()}, lambda k: sd[k])


def _torch_shards_store(directory: Path, index: Path | None) -> _TensorStore:
    """Sharded ``pytorch_model-*.bin`` files: as their index says, or (without one) every
    shard, a name held by two shards refused. Shards are memory-mapped, not read."""
    weight_map = _read_index(index) if index is not None else None
    if weight_map is not None:
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (directory / s).exists()]
        if missing:
            raise LmlabError(f"the shard index {index} names shard(s) that are missing: "
                             f"{', '.join(missing)}; download them again or fix the index")
        files = [directory / s for s in shards]
    else:
        files = sorted(directory.glob("pytorch_model-*.bin"))
    shapes: dict[str, tuple[int, ...]] = {}
    owner: dict[str, Mapping[str, torch.Tensor]] = {}
    for f in files:
        sd = _torch_state_dict(f)
        if weight_map is not None:
            absent = [k for k, s in weight_map.items() if s == f.name and k not in sd]
            if absent:
                raise LmlabError(f"the shard index {index} puts {absent[0]!r} in {f}, which "
                                 "does not hold it; download the shards again or fix the index")
        for k, v in sd.items():
            if weight_map is not None and weight_map.get(k) != f.name:
                continue
            if k in owner:
                raise LmlabError(f"the tensor {k!r} is in two shards of {directory}; keep one "
                                 f"copy, or add a {_BIN_INDEX} that says which holds each")
            shapes[k], owner[k] = tuple(v.shape), sd
    return _TensorStore(shapes, lambda k: owner[k][k])


def _open_directory(path: Path) -> _TensorStore:
    index = path / _SAFETENSORS_INDEX
    if index.exists() or index.is_symlink():
        return _indexed_store(path, index)
    files = sorted(path.glob("*.safetensors"))
    if files:
        return _safetensors_store(files)
    bin_index = path / _BIN_INDEX
    if bin_index.exists() or bin_index.is_symlink():
        return _torch_shards_store(path, bin_index)
    if any(path.glob("pytorch_model-*.bin")):
        return _torch_shards_store(path, None)
    for name in ("pytorch_model.bin", "model.pt", "model.bin"):
        if (path / name).exists() or (path / name).is_symlink():
            return _torch_store(path / name)
    raise LmlabError(
        f"{path} holds no weights: expected *.safetensors, {_SAFETENSORS_INDEX}, "
        f"pytorch_model.bin, or pytorch_model-*.bin shards with {_BIN_INDEX}"
    )


def _open_store(path: Path) -> tuple[_TensorStore, Path | None]:
    """Open weights at ``path``; also return the directory holding a config.json, if any."""
    if not path.exists():
        raise LmlabError(f"no such file or directory: {path}; check the path or the model name")
    if path.is_dir():
        config_dir = path if (path / "config.json").is_file() else None
        return _open_directory(path), config_dir
    config_dir = path.parent if (path.parent / "config.json").is_file() else None
    if path.suffix == ".safetensors":
        return _safetensors_store([path]), config_dir
    if path.suffix in _TORCH_SUFFIXES:
        return _torch_store(path), config_dir
    raise LmlabError(
        f"unsupported weights file {path}: use .safetensors, .pt/.pth/.bin, or a model directory"
    )


# ----------------------------------------------------------------------------- layer walks


def _skeleton(config_dir: Path) -> torch.nn.Module | None:
    """The model's module tree on the meta device, from its config.json (None if unknown)."""
    try:
        import transformers

        config = transformers.AutoConfig.from_pretrained(str(config_dir))
        arch = (getattr(config, "architectures", None) or [None])[0]
        cls = getattr(transformers, arch, None) if arch else None
        with torch.device("meta"):
            if cls is not None:
                return cls(config)
            return transformers.AutoModel.from_config(config)
    except Exception:  # noqa: BLE001 - an unknown architecture falls back to names
        return None


def _from_store_with_skeleton(store: _TensorStore, model: torch.nn.Module) -> Iterator[LayerRef]:
    aliases: dict[int, list[str]] = {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(p), []).append(pname)
    prefix = getattr(model, "base_model_prefix", "") or ""

    def candidates(pname: str) -> list[str]:
        out = [pname]
        if prefix and pname.startswith(prefix + "."):
            out.append(pname[len(prefix) + 1 :])
        elif prefix:
            out.append(f"{prefix}.{pname}")
        return out

    for layer_id, longname, kind, module in _module_layers(model):
        names = aliases.get(id(module.weight), [f"{longname}.weight"])
        key = next((k for n in names for k in candidates(n) if k in store.shapes), None)
        if key is None:
            continue
        yield LayerRef(
            layer_id, _leaf(longname), longname, kind, store.shapes[key],
            StoredTensor(store, key),
        )


def _kind_from_name(key: str, ndim: int) -> str | None:
    if ndim == 4:
        return "conv2d"
    if ndim != 2:
        return None
    lowered = key.lower()
    if "embed" in lowered or lowered.endswith(("wte.weight", "wpe.weight")):
        return "embedding"
    return "dense"


def _from_store_by_name(store: _TensorStore) -> Iterator[LayerRef]:
    for layer_id, (key, shape) in enumerate(store.shapes.items()):
        if not key.endswith(".weight"):
            continue
        kind = _kind_from_name(key, len(shape))
        if kind is None:
            continue
        longname = key[: -len(".weight")]
        yield LayerRef(layer_id, _leaf(longname), longname, kind, shape,
                       StoredTensor(store, key))


def iter_layers(source: Any) -> Iterator[LayerRef]:
    """Candidate weight layers of ``source``, in module order, each loaded lazily.

    Args:
        source: a ``torch.nn.Module``, a state dict (name -> tensor), or a path to a
            ``.safetensors``/``.pt``/``.bin`` file or a model directory. A LoRA adapter
            (directory with ``adapter_config.json``) yields one ΔW = s·B·A per adapted layer
            (:mod:`lmlab.spectral.adapters`); an object with an ``lmlab_layers()`` method
            (:func:`~lmlab.spectral.adapters.merge_adapter`) yields its layers.

    Raises:
        LmlabError: for a missing path; an unreadable, empty or corrupt file; a FIFO or device
            in place of a file; a malformed shard index, or a tensor in two files without one;
            a pickle holding more than tensors; or an object that is none of the above.
    """
    if isinstance(source, torch.nn.Module):
        yield from _from_module(source)
        return
    if isinstance(source, Mapping):
        sd = {k: v for k, v in source.items() if isinstance(v, torch.Tensor)}
        shapes = {k: tuple(v.shape) for k, v in sd.items()}
        yield from _from_store_by_name(_TensorStore(shapes, sd.__getitem__))
        return
    if callable(getattr(source, "lmlab_layers", None)):  # e.g. adapters.MergedAdapter
        yield from source.lmlab_layers()
        return
    if isinstance(source, str | Path):
        from lmlab.spectral.adapters import adapter_layers, is_adapter

        if is_adapter(source):  # a LoRA adapter: one ΔW = s·B·A per adapted layer
            yield from adapter_layers(source)
            return
        store, config_dir = _open_store(Path(source).expanduser())
        skeleton = _skeleton(config_dir) if config_dir is not None else None
        if skeleton is not None:
            yield from _from_store_with_skeleton(store, skeleton)
        else:
            yield from _from_store_by_name(store)
        return
    raise LmlabError(
        f"cannot analyse an object of type {type(source).__name__}: pass a torch.nn.Module, a "
        "state dict, or a path to weights"
    )


def check_weights(source: Any) -> None:
    """Open a weights path as :func:`iter_layers` does — the shard index, every file header,
    the pickle's safety — without loading a tensor or building the model (a fast pre-check).
    Objects in memory pass.

    Raises:
        LmlabError: as :func:`iter_layers`.

    >>> check_weights(torch.nn.Linear(2, 2))
    """
    from lmlab.spectral.adapters import is_adapter, read_adapter

    if isinstance(source, str | Path):
        if is_adapter(source):
            read_adapter(source)
            return
        _open_store(Path(source).expanduser())
    elif callable(getattr(source, "lmlab_layers", None)):  # a merged adapter: both parts
        check_weights(getattr(source, "base", None))
        read_adapter(source.adapter)


def describe_source(source: Any) -> str:
    """A short human-readable name for a source (for reports and errors).

    >>> describe_source(torch.nn.Linear(2, 2))
    'Linear (in memory)'
    """
    if isinstance(source, torch.nn.Module):
        return f"{type(source).__name__} (in memory)"
    if isinstance(source, Mapping):
        return f"state dict of {len(source)} tensors (in memory)"
    return str(source)
