"""Pair the layers of two models by name: for W − W_base deltas and model-to-model distances.

Layers are matched by ``longname``; when the two sources name them differently (a module's
``transformer.h.0.attn.c_attn`` against a bare checkpoint's ``h.0.attn.c_attn``) a longname
matches the one it ends with, at a dot. A shape that differs (other than by a transpose) is
refused in one line: the models are not the same architecture.

>>> import torch
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
>>> refs, missing = delta_layers(iter_layers(a), iter_layers(b))
>>> bool(torch.equal(refs[0].load(), a.weight.detach() - b.weight.detach())), missing
(True, {})
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch

from lmlab.errors import LmlabError
from lmlab.spectral.sources import LayerRef, iter_layers

__all__ = ["pair_layers", "delta_layers", "iter_layers"]


def _match(longname: str, by_name: dict[str, LayerRef]) -> LayerRef | None:
    if longname in by_name:
        return by_name[longname]
    hits = [ref for name, ref in by_name.items()
            if name.endswith("." + longname) or longname.endswith("." + name)]
    return hits[0] if len(hits) == 1 else None


def pair_layers(refs: Iterable[LayerRef], base: Iterable[LayerRef]
                ) -> list[tuple[LayerRef, LayerRef | None]]:
    """Each layer of ``refs`` with its counterpart in ``base`` (None when base has none).

    Raises:
        LmlabError: when a pair's weight shapes differ other than by a transpose.
    """
    by_name = {ref.longname: ref for ref in base}
    pairs: list[tuple[LayerRef, LayerRef | None]] = []
    for ref in refs:
        other = _match(ref.longname, by_name)
        if other is not None and other.shape not in (ref.shape, ref.shape[::-1]):
            raise LmlabError(
                f"layer {ref.longname!r} has shape {tuple(ref.shape)} but the base model's has "
                f"{tuple(other.shape)}: the two models are not the same architecture"
            )
        pairs.append((ref, other))
    return pairs


def _delta_loader(ref: LayerRef, other: LayerRef):  # type: ignore[no-untyped-def]
    def load() -> torch.Tensor:
        w, w0 = ref.load().detach(), other.load().detach()
        dtype = torch.promote_types(torch.promote_types(w.dtype, w0.dtype), torch.float32)
        w, w0 = w.to("cpu", dtype), w0.to("cpu", dtype)
        if w0.shape != w.shape:
            w0 = w0.T
        return w - w0

    return load


def delta_layers(refs: Iterable[LayerRef], base: Iterable[LayerRef]
                 ) -> tuple[list[LayerRef], dict[int, str]]:
    """Layers whose ``load()`` gives W − W_base, and the ids of layers the base lacks (with the
    reason to show), which are not differenced.

    Raises:
        LmlabError: when the base model has none of the layers, or a shape differs.
    """
    from lmlab.spectral.adapters import LoraDelta, merged_layers

    refs = list(refs)
    if refs and all(isinstance(r.load, LoraDelta) for r in refs):
        # a LoRA adapter is already W − W_base: against its base, analyse W_base + s·B·A
        return merged_layers(refs, base), {}
    out: list[LayerRef] = []
    missing: dict[int, str] = {}
    pairs = pair_layers(refs, base)
    for ref, other in pairs:
        if other is None:
            missing[ref.layer_id] = "base_model has no layer of this name (no delta to analyse)"
            out.append(ref)
        else:
            out.append(dataclasses.replace(ref, load=_delta_loader(ref, other)))
    if pairs and len(missing) == len(pairs):
        raise LmlabError(f"base_model shares no layer name with the model (first: "
                         f"{pairs[0][0].longname!r}): pass the base of this fine-tune")
    return out, missing
