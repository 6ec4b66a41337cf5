"""LoRA adapters (the PEFT file layout): the update ΔW = s·B·A alone, or merged into a base.

A PEFT adapter is a directory holding ``adapter_config.json`` (``r``, ``lora_alpha``,
``use_rslora``, ``fan_in_fan_out``, ``target_modules``, ...) and ``adapter_model.safetensors``
(or ``adapter_model.bin``, read only through ``torch.load(weights_only=True)``: a pickle that
would run code is refused). Its tensors are named
``base_model.model.<module path>.lora_A.weight`` (r × in) and ``...lora_B.weight`` (out × r);
an adapted embedding holds ``lora_embedding_A`` (r × vocab) and ``lora_embedding_B`` (dim × r).
The update of a layer is

    ΔW = s · B·A,   s = lora_alpha / r   (``use_rslora``: s = lora_alpha / √r),

transposed to the base weight's layout when ``fan_in_fan_out`` (GPT-2's ``Conv1D``) and for
embeddings; ``rank_pattern`` / ``alpha_pattern`` override r and lora_alpha per layer.

Two analyses, both through :func:`lmlab.spectral.analyze`:

* ``analyze(adapter_dir)``: one row per adapted layer, the spectrum of ΔW itself. ΔW has rank
  ≤ r, so its ESD holds at most r non-zero eigenvalues (the others are zero, and the power-law
  fit never sees values ≤ 1e-5). α is therefore the tail exponent of those r eigenvalues; when
  r < ``min_evals`` the layer is **skipped** with that reason, as a matrix with too few
  eigenvalues is (weightwatcher's size rule applied to the rank, not to the shape).
* ``analyze(adapter_dir, base_model=base)``: the adapted layers of the fine-tuned model,
  W + ΔW, with the base's layer ids and names. (For a full fine-tune ``base_model`` subtracts
  the base; an adapter *is* already the difference, so there it adds the base back.)
  :func:`merge_adapter` gives the whole merged model — every layer of the base, the adapted
  ones merged — as a source for ``analyze`` or ``lmlab spectral compare``.

Adapter layers are paired to base layers by longname (the ``base_model.model.`` prefix
removed; a bare checkpoint's shorter names match at a dot). A layer the base lacks, a shape
that does not fit, a corrupt file, or a non-LoRA / DoRA adapter is refused in one line.

>>> import json, tempfile, torch
>>> from safetensors.torch import save_file
>>> tmp = tempfile.mkdtemp()
>>> A, B = torch.ones(2, 3), torch.ones(4, 2)
>>> save_file({"base_model.model.fc.lora_A.weight": A, "base_model.model.fc.lora_B.weight": B},
...           f"{tmp}/adapter_model.safetensors")
>>> _ = open(f"{tmp}/adapter_config.json", "w").write(json.dumps(
...     {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["fc"]}))
>>> [(r.longname, r.shape) for r in adapter_layers(tmp)]
[('fc', (4, 3))]
>>> next(adapter_layers(tmp)).load()[0, 0].item()   # s·(B·A) = 2 · 2
4.0
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmlab.errors import LmlabError, first_line
from lmlab.spectral.sources import LayerRef, StoredTensor

__all__ = ["ADAPTER_CONFIG", "LoraAdapter", "LoraDelta", "MergedAdapter", "adapter_layers",
           "is_adapter", "low_rank_skips", "merge_adapter", "merged_layers", "read_adapter"]

ADAPTER_CONFIG = "adapter_config.json"
_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_PREFIX = "base_model.model."
_KEY = re.compile(r"^(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B)"
                  r"(?:\.(?P<adapter>[^.]+))?(?:\.weight)?$")


def is_adapter(path: Any) -> bool:
    """Whether ``path`` is a PEFT adapter: a directory with ``adapter_config.json``, or an
    ``adapter_model.safetensors``/``.bin`` file.

    >>> is_adapter("no/such/dir"), is_adapter(torch.nn.Linear(2, 2))
    (False, False)
    """
    if not isinstance(path, str | Path):
        return False
    p = Path(path).expanduser()
    if p.is_dir():
        return (p / ADAPTER_CONFIG).is_file()
    return p.name in _WEIGHTS


@dataclass(frozen=True)
class LoraDelta:
    """Loads ΔW = s·B·A of one layer, in the base weight's layout (float64).

    Attributes:
        load_a, load_b: load A (r × in) and B (out × r) from the adapter file.
        scaling: s = lora_alpha / r (or / √r with rsLoRA).
        rank: r of this layer.
        transpose: return (B·A)ᵀ (``fan_in_fan_out`` layers and embeddings).
    """

    load_a: Any
    load_b: Any
    scaling: float
    rank: int
    transpose: bool

    def __call__(self) -> torch.Tensor:
        a = self.load_a().detach().to("cpu", torch.float64)
        b = self.load_b().detach().to("cpu", torch.float64)
        delta = self.scaling * (b @ a)
        return delta.T.contiguous() if self.transpose else delta


@dataclass(frozen=True)
class LoraAdapter:
    """A LoRA adapter read from disk: its config and one lazily loaded ΔW per layer.

    Attributes:
        path: the adapter directory (or weights file).
        config: the parsed ``adapter_config.json``.
        layers: the adapted layers as :class:`LayerRef` (``load`` is a :class:`LoraDelta`),
            longnames without PEFT's ``base_model.model.`` prefix, in file order.
        ignored: tensor names that are not LoRA factors (e.g. ``modules_to_save`` copies),
            not applied.
    """

    path: Path
    config: dict[str, Any]
    layers: tuple[LayerRef, ...]
    ignored: tuple[str, ...] = ()


def _config_path(path: Path) -> tuple[Path, Path]:
    """(adapter_config.json, weights file) of an adapter directory or weights file."""
    if path.is_dir():
        directory = path
        files = [directory / n for n in _WEIGHTS if (directory / n).exists()]
        if not files:
            raise LmlabError(f"the adapter directory {path} holds {ADAPTER_CONFIG} but no "
                             f"{' or '.join(_WEIGHTS)}; save the adapter again")
        weights = files[0]
    else:
        directory, weights = path.parent, path
    config = directory / ADAPTER_CONFIG
    if not config.is_file():
        raise LmlabError(f"the adapter weights {weights} have no {ADAPTER_CONFIG} beside them "
                         "(it gives r and lora_alpha); pass the adapter's directory")
    return config, weights


def _read_config(config: Path) -> dict[str, Any]:
    from lmlab.spectral.sources import regular_file

    regular_file(config, allow_empty=True)
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise LmlabError(f"cannot read the adapter config {config}: {first_line(e)}; save the "
                         "adapter again") from None
    if not isinstance(data, dict):
        raise LmlabError(f"the adapter config {config} holds a JSON {type(data).__name__}, "
                         "not an object")
    peft_type = str(data.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise LmlabError(f"{config}: peft_type {peft_type!r} is not supported; only LoRA "
                         "adapters (peft_type LORA) have an update s·B·A to analyse")
    if data.get("use_dora"):
        raise LmlabError(f"{config}: DoRA adapters (use_dora) rescale each column of W, so "
                         "the merged weight is not W + s·B·A; they are not supported")
    for key in ("r", "lora_alpha"):
        value = data.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise LmlabError(f"{config}: {key} = {value!r} must be a positive number")
    return data


def _pattern_value(patterns: Any, module: str, default: float) -> float:
    """``rank_pattern``/``alpha_pattern``: a key matches a module path at a dot (PEFT's rule)."""
    if isinstance(patterns, Mapping):
        for key, value in patterns.items():
            if re.match(rf"(.*\.)?{key}$", module):
                return float(value)
    return default


def _targeted(config: Mapping[str, Any], module: str) -> bool:
    """Whether ``target_modules`` covers ``module`` (a list: a name equal to its last parts;
    a string: a regex matching the whole path; ``all-linear`` or none: every module)."""
    targets = config.get("target_modules")
    if targets is None or targets == "all-linear":
        return True
    if isinstance(targets, str):
        return re.fullmatch(targets, module) is not None
    return any(module == t or module.endswith("." + str(t)) for t in targets)


def _open_weights(weights: Path) -> Any:
    from lmlab.spectral.sources import _safetensors_store, _torch_store

    if weights.suffix == ".safetensors":
        return _safetensors_store([weights])
    return _torch_store(weights)


def read_adapter(path: str | Path) -> LoraAdapter:
    """Read a LoRA adapter's config and tensor headers (no tensor is loaded).

    Raises:
        LmlabError: no config, a corrupt config or weights file, a non-LoRA or DoRA adapter,
            a factor without its partner, a layer outside ``target_modules``, or a rank that
            differs from the config's.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise LmlabError(f"no such file or directory: {p}; check the adapter path")
    config_file, weights = _config_path(p)
    config = _read_config(config_file)
    store = _open_weights(weights)
    parts: dict[str, dict[str, str]] = {}
    ignored: list[str] = []
    for key in store.shapes:
        m = _KEY.match(key)
        if m is None:
            ignored.append(key)
            continue
        module = m["module"][len(_PREFIX):] if m["module"].startswith(_PREFIX) else m["module"]
        parts.setdefault(module, {})[m["part"].replace("embedding_", "")] = key
    if not parts:
        raise LmlabError(f"{weights} holds no LoRA factors (no '*.lora_A.weight' / "
                         "'*.lora_B.weight' tensors); is it a LoRA adapter?")
    layers = []
    for layer_id, (module, keys) in enumerate(parts.items()):
        layers.append(_layer_ref(layer_id, module, keys, store, config, config_file))
    return LoraAdapter(p, config, tuple(layers), tuple(ignored))


def _layer_ref(layer_id: int, module: str, keys: Mapping[str, str], store: Any,
               config: Mapping[str, Any], config_file: Path) -> LayerRef:
    if set(keys) != {"lora_A", "lora_B"}:
        have = next(iter(keys.values()))
        raise LmlabError(f"the adapter holds {have!r} without its partner factor "
                         f"({'lora_B' if 'lora_A' in keys else 'lora_A'}); the file is "
                         "incomplete, save the adapter again")
    if not _targeted(config, module):
        raise LmlabError(f"the adapter adapts {module!r}, which its target_modules "
                         f"{config.get('target_modules')!r} do not name; {config_file} does "
                         "not belong to these weights")
    a_shape, b_shape = store.shapes[keys["lora_A"]], store.shapes[keys["lora_B"]]
    embedding = ".lora_embedding_" in keys["lora_A"]
    if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[0] != b_shape[1]:
        raise LmlabError(f"layer {module!r}: LoRA factors of shapes A {tuple(a_shape)}, "
                         f"B {tuple(b_shape)} do not multiply to a matrix (conv LoRA is not "
                         "supported)")
    r = int(a_shape[0])
    r_config = _pattern_value(config.get("rank_pattern"), module, float(config["r"]))
    if r != int(r_config):
        raise LmlabError(f"layer {module!r}: the adapter's factors have rank {r} but "
                         f"{config_file.name} says r = {int(r_config)}; the config does not "
                         "belong to these weights")
    alpha = _pattern_value(config.get("alpha_pattern"), module, float(config["lora_alpha"]))
    scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    transpose = embedding or bool(config.get("fan_in_fan_out"))
    shape = (int(a_shape[1]), int(b_shape[0])) if transpose else (int(b_shape[0]),
                                                                   int(a_shape[1]))
    delta = LoraDelta(StoredTensor(store, keys["lora_A"]), StoredTensor(store, keys["lora_B"]),
                      scaling, r, transpose)
    return LayerRef(layer_id, module.split(".")[-1], module,
                    "embedding" if embedding else "dense", shape, delta)


def adapter_layers(path: str | Path) -> Iterator[LayerRef]:
    """The adapted layers of a LoRA adapter; ``load()`` gives ΔW = s·B·A (float64)."""
    yield from read_adapter(path).layers


def low_rank_skips(refs: Iterable[LayerRef], min_evals: int) -> dict[int, str]:
    """Layer ids of LoRA updates with fewer possible non-zero eigenvalues (r) than
    ``min_evals``, with the reason to show (merged layers are full rank: never skipped).

    >>> ref = LayerRef(0, "fc", "fc", "dense", (64, 64), LoraDelta(None, None, 1.0, 4, False))
    >>> low_rank_skips([ref], 8)
    {0: 'LoRA update of rank r = 4: at most 4 non-zero eigenvalues < min_evals 8'}
    """
    out: dict[int, str] = {}
    for ref in refs:
        if isinstance(ref.load, LoraDelta) and min_evals and ref.load.rank < min_evals:
            r = ref.load.rank
            out[ref.layer_id] = (f"LoRA update of rank r = {r}: at most {r} non-zero "
                                 f"eigenvalues < min_evals {min_evals}")
    return out


def _merged_loader(base: LayerRef, delta: LoraDelta) -> Any:
    def load() -> torch.Tensor:
        w = base.load().detach().to("cpu")
        return w.to(torch.complex128 if w.is_complex() else torch.float64) + delta()

    return load


def merged_layers(adapter: Iterable[LayerRef], base: Iterable[LayerRef], *,
                  keep_unadapted: bool = False) -> list[LayerRef]:
    """Base layers with their LoRA update added: W + s·B·A (computed in float64).

    Args:
        adapter: the adapter's layers (:func:`adapter_layers`).
        base: the base model's layers (:func:`~lmlab.spectral.sources.iter_layers`).
        keep_unadapted: also return the base layers the adapter leaves alone (unchanged).

    Raises:
        LmlabError: naming an adapted layer that the base lacks, or whose shape differs.
    """
    from lmlab.spectral.pairing import _match

    base_refs = list(base)
    by_name = {ref.longname: ref for ref in base_refs}
    merged: dict[int, LayerRef] = {}
    for ref in adapter:
        other = _match(ref.longname, by_name)
        if other is None:
            raise LmlabError(f"the adapter adapts layer {ref.longname!r}, which the base model "
                             "does not have; pass the base model this adapter was trained on")
        if tuple(other.shape) != tuple(ref.shape):
            hint = (" (check fan_in_fan_out in adapter_config.json)"
                    if tuple(other.shape) == tuple(ref.shape)[::-1] else "")
            raise LmlabError(f"layer {ref.longname!r}: the adapter's update has shape "
                             f"{tuple(ref.shape)} but the base weight {tuple(other.shape)}"
                             f"{hint}; pass the base model this adapter was trained on")
        assert isinstance(ref.load, LoraDelta)
        merged[id(other)] = dataclasses.replace(other, load=_merged_loader(other, ref.load))
    if keep_unadapted:
        return [merged.get(id(r), r) for r in base_refs]
    return [merged[id(r)] for r in base_refs if id(r) in merged]


@dataclass(frozen=True)
class MergedAdapter:
    """A base model with a LoRA adapter merged in: every base layer, adapted ones as
    W + s·B·A. A source for :func:`~lmlab.spectral.analyze` and ``iter_layers``."""

    base: Any
    adapter: Any

    def lmlab_layers(self) -> Iterator[LayerRef]:
        """The merged model's layers (the base's ids and names)."""
        from lmlab.spectral.sources import iter_layers

        yield from merged_layers(adapter_layers(self.adapter), iter_layers(self.base),
                                 keep_unadapted=True)

    def __str__(self) -> str:
        return f"{self.base} + LoRA {self.adapter}"


def merge_adapter(base: Any, adapter: str | Path) -> MergedAdapter:
    """The merged model ``base`` + ``adapter`` as a source (nothing is read yet).

    >>> str(merge_adapter("base_dir", "adapter_dir"))
    'base_dir + LoRA adapter_dir'
    """
    return MergedAdapter(base, adapter)
