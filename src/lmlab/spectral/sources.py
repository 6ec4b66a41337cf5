"""Where weight matrices come from: a module, a state dict, or checkpoint files streamed lazily.

Every source yields :class:`LayerRef` objects in the same order and with the same ``layer_id``,
``name``, ``longname`` and ``layer_type`` as weightwatcher's walk over ``model.named_modules()``:
``layer_id`` counts every module from 0, and a module is a layer when its class (by isinstance or
by substring of its lower-cased type string) is linear → ``dense``, conv1d (which catches Hugging
Face GPT-2's ``Conv1D``) → ``conv1d``, conv2d → ``conv2d``, embedding → ``embedding``.

Files (``.safetensors``, a sharded safetensors directory with its index, ``.pt``/``.bin`` state
dicts) are read **tensor by tensor**: a ``LayerRef`` holds a loader, not the tensor, so peak memory
stays near the largest matrix. When a ``config.json`` sits beside the weights, the model's module
tree is built on the ``meta`` device (no memory) to recover the in-memory layer ids and types;
without one, ``layer_id`` counts the tensors of the file in order and types come from names.

>>> import torch
>>> refs = list(iter_layers(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())))
>>> [(r.layer_id, r.longname, r.layer_type, r.shape) for r in refs]
[(1, '0', 'dense', (3, 4))]
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmlab.errors import LmlabError, first_line

__all__ = ["LayerRef", "iter_layers", "layer_type_of", "describe_source"]

_SAFETENSORS_INDEX = "model.safetensors.index.json"


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

    def __init__(self, shapes: dict[str, tuple[int, ...]], getter: Callable[[str], torch.Tensor]):
        self.shapes = shapes
        self._get = getter

    def get(self, key: str) -> torch.Tensor:
        return self._get(key)


def _safetensors_store(files: list[Path], weight_map: dict[str, str] | None) -> _TensorStore:
    from safetensors import SafetensorError, safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    owner: dict[str, Path] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as h:
                for k in h.keys():
                    shapes[k] = tuple(h.get_slice(k).get_shape())
                    owner[k] = f
        except (SafetensorError, OSError, ValueError) as e:
            raise LmlabError(
                f"cannot read safetensors file {f}: {e}; the file is corrupt or truncated"
            ) from None
    if weight_map is not None:
        missing = sorted(set(weight_map.values()) - {f.name for f in files})
        if missing:
            raise LmlabError(f"the safetensors index names shard(s) that are missing: {missing}")

    def get(key: str) -> torch.Tensor:
        with safe_open(str(owner[key]), framework="pt") as h:
            return h.get_tensor(key)

    return _TensorStore(shapes, get)


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


def _torch_store(path: Path) -> _TensorStore:
    try:
        obj = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    except RuntimeError as e:
        if "mmap" not in str(e).lower():
            raise LmlabError(
                f"cannot read {path}: {first_line(e)}; the file is corrupt or not a torch "
                "checkpoint") from None
        try:  # legacy (non-zip) format cannot be memory-mapped
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e2:  # noqa: BLE001 - any failure here is a bad file
            raise LmlabError(f"cannot read {path}: {first_line(e2)}") from None
    except Exception as e:  # noqa: BLE001 - pickle/zip errors of many kinds
        raise LmlabError(
            f"cannot read {path}: {first_line(e)}; the file is corrupt, truncated or not a "
            "torch state dict (save model.state_dict(), not the pickled module)"
        ) from None
    sd = _unwrap_state_dict(obj, path)
    return _TensorStore({k: tuple(v.shape) for k, v in sd.items()}, lambda k: sd[k])


def _open_store(path: Path) -> tuple[_TensorStore, Path | None]:
    """Open weights at ``path``; also return the directory holding a config.json, if any."""
    if not path.exists():
        raise LmlabError(f"no such file or directory: {path}; check the path or the model name")
    if path.is_dir():
        config_dir = path if (path / "config.json").exists() else None
        index = path / _SAFETENSORS_INDEX
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError) as e:
                raise LmlabError(f"cannot read the shard index {index}: {e}") from None
            files = [path / f for f in sorted(set(weight_map.values())) if (path / f).exists()]
            return _safetensors_store(files, weight_map), config_dir
        files = sorted(path.glob("*.safetensors"))
        if files:
            return _safetensors_store(files, None), config_dir
        for name in ("pytorch_model.bin", "model.pt", "model.bin"):
            if (path / name).exists():
                return _torch_store(path / name), config_dir
        raise LmlabError(
            f"{path} holds no weights: expected *.safetensors, {_SAFETENSORS_INDEX} or "
            "pytorch_model.bin"
        )
    config_dir = path.parent if (path.parent / "config.json").exists() else None
    if path.suffix == ".safetensors":
        return _safetensors_store([path], None), config_dir
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
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
            functools.partial(store.get, key),
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
                       functools.partial(store.get, key))


def iter_layers(source: Any) -> Iterator[LayerRef]:
    """Candidate weight layers of ``source``, in module order, each loaded lazily.

    Args:
        source: a ``torch.nn.Module``, a state dict (name -> tensor), or a path to a
            ``.safetensors``/``.pt``/``.bin`` file or a model directory.

    Raises:
        LmlabError: for a missing path, an unreadable or corrupt file, or an object that is
            none of the above.
    """
    if isinstance(source, torch.nn.Module):
        yield from _from_module(source)
        return
    if isinstance(source, Mapping):
        sd = {k: v for k, v in source.items() if isinstance(v, torch.Tensor)}
        shapes = {k: tuple(v.shape) for k, v in sd.items()}
        yield from _from_store_by_name(_TensorStore(shapes, sd.__getitem__))
        return
    if isinstance(source, str | Path):
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
