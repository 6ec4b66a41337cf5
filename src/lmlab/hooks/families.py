"""Where the attention lives in each supported model family: a small registry.

A :class:`Family` names, relative to one transformer block, the attention module, the
projection whose output holds the values V and the output projection W_O, and reads the head
counts from the model. :func:`locate` finds the family of a model (by ``config.model_type`` or
by class name) and returns the absolute paths, layer by layer.

>>> sorted(FAMILIES)
['bert', 'gpt2', 'llama']
>>> FAMILIES["gpt2"].out_proj
'attn.c_proj'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from lmlab.errors import LmlabError

__all__ = ["AttentionDims", "AttentionLayout", "FAMILIES", "Family", "locate", "register_family"]


@dataclass(frozen=True)
class AttentionDims:
    """Head counts of one model: ``n_heads`` query heads, ``n_kv_heads`` key/value heads (fewer
    with grouped-query attention), each of size ``d_head``.

    Example:
        >>> AttentionDims(n_layers=2, n_heads=4, n_kv_heads=2, d_head=16).group
        2
    """

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int

    @property
    def group(self) -> int:
        """How many query heads share one key/value head."""
        return self.n_heads // self.n_kv_heads


@dataclass(frozen=True)
class Family:
    """How to find the attention of one model family.

    Args:
        name: The family's name.
        blocks: Path suffix of the ``ModuleList`` of blocks (``"h"`` for GPT-2); any prefix
            (``transformer.``, ``model.``, ``bert.``) is found by search.
        attention: The attention sub-layer, relative to a block.
        value: The module whose output holds V, relative to a block.
        out_proj: The output projection W_O, relative to a block; its input is the heads'
            outputs concatenated, ``(B, T, n_heads * d_head)``.
        dims: Reads :class:`AttentionDims` from the model.
        causal: Whether attention is causal.
        fused_qkv: ``value`` outputs Q, K and V concatenated on the last axis (GPT-2
            ``c_attn``); V is the last third.
        model_types: ``config.model_type`` values that select this family.
        classes: Model class names that select it (for models without a config).

    Example:
        >>> FAMILIES["llama"].value
        'self_attn.v_proj'
    """

    name: str
    blocks: str
    attention: str
    value: str
    out_proj: str
    dims: Callable[[torch.nn.Module], AttentionDims]
    causal: bool = True
    fused_qkv: bool = False
    model_types: tuple[str, ...] = ()
    classes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class AttentionLayout:
    """The attention of one model, by absolute path, per layer.

    Example:
        >>> import torch
        >>> layout = AttentionLayout(FAMILIES["gpt2"], AttentionDims(1, 2, 2, 4), "h")
        >>> layout.path("out_proj", 0)
        'h.0.attn.c_proj'
    """

    family: Family
    dims: AttentionDims
    blocks: str

    def path(self, part: str, layer: int) -> str:
        """The path of ``part`` (``"attention"``, ``"value"``, ``"out_proj"``) in ``layer``."""
        return f"{self.blocks}.{layer}.{getattr(self.family, part)}"


def _cfg(model: torch.nn.Module) -> Any:
    config = getattr(model, "config", None)
    if config is None:
        raise LmlabError(f"{type(model).__name__} has no .config to read head counts from; "
                         "register a Family whose dims reads them from the model")
    return config


def _gpt2_dims(model: torch.nn.Module) -> AttentionDims:
    c = _cfg(model)
    return AttentionDims(c.n_layer, c.n_head, c.n_head, c.n_embd // c.n_head)


def _llama_dims(model: torch.nn.Module) -> AttentionDims:
    c = _cfg(model)
    heads = c.num_attention_heads
    kv = getattr(c, "num_key_value_heads", None) or heads
    d_head = getattr(c, "head_dim", None) or c.hidden_size // heads
    return AttentionDims(c.num_hidden_layers, heads, kv, d_head)


def _bert_dims(model: torch.nn.Module) -> AttentionDims:
    c = _cfg(model)
    heads = c.num_attention_heads
    return AttentionDims(c.num_hidden_layers, heads, heads, c.hidden_size // heads)


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add (or replace) a family in the registry and return it.

    Example:
        >>> register_family(FAMILIES["gpt2"]).name
        'gpt2'
    """
    FAMILIES[family.name] = family
    return family


register_family(Family("gpt2", blocks="h", attention="attn", value="attn.c_attn",
                       out_proj="attn.c_proj", dims=_gpt2_dims, fused_qkv=True,
                       model_types=("gpt2",)))
register_family(Family("llama", blocks="layers", attention="self_attn",
                       value="self_attn.v_proj", out_proj="self_attn.o_proj", dims=_llama_dims,
                       model_types=("llama", "mistral", "qwen2")))
register_family(Family("bert", blocks="encoder.layer", attention="attention",
                       value="attention.self.value", out_proj="attention.output.dense",
                       dims=_bert_dims, causal=False, model_types=("bert",)))


def _family_of(model: torch.nn.Module) -> Family:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    cls = type(model).__name__
    for family in FAMILIES.values():
        if model_type in family.model_types or cls in family.classes:
            return family
    supported = "; ".join(f"{f.name} ({', '.join(f.model_types + f.classes)})"
                          for f in FAMILIES.values())
    raise LmlabError(f"no attention layout for {cls} (model_type={model_type!r}); "
                     f"supported families: {supported}; add one with register_family")


def locate(model: torch.nn.Module) -> AttentionLayout:
    """Find the family of ``model`` and the path of its blocks.

    Raises:
        LmlabError: If the model belongs to no registered family (listing the supported ones).

    Example:
        >>> import torch
        >>> locate(torch.nn.Linear(2, 2))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        lmlab.errors.LmlabError: no attention layout for Linear (model_type=None); supported...
    """
    family = _family_of(model)
    suffix = family.blocks
    prefix = getattr(model, "base_model_prefix", "")
    for path in (suffix, f"{prefix}.{suffix}" if prefix else suffix):  # the usual places first
        module = model.get_submodule(path) if _has(model, path) else None
        if isinstance(module, torch.nn.ModuleList):
            return AttentionLayout(family, family.dims(model), path)
    found = [name for name, module in model.named_modules()
             if (name == suffix or name.endswith("." + suffix))
             and isinstance(module, torch.nn.ModuleList)]
    if not found:
        raise LmlabError(f"{type(model).__name__} looks like {family.name} but has no block list "
                         f"named '*{suffix}'; register a Family with the right paths")
    return AttentionLayout(family, family.dims(model), min(found, key=len))


def _has(model: torch.nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True
