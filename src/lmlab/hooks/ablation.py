"""Attention ablations by hook factories, per layer and per head.

Four modes, each named for what it does to the attention sub-layer of the chosen layers
(``o`` is the input of the output projection W_O: the heads' outputs side by side):

- ``zero``: the sub-layer's output (after W_O, bias included) is zeros; with ``heads``, those
  heads' slices of ``o`` are zeros (their contribution is gone, W_O's bias stays).
- ``uniform``: each head attends uniformly over its window: position t averages V over
  positions 0..t (causal models) or over every non-padding position (BERT).
- ``mean``: the sub-layer's output is its mean over a reference batch (with ``heads``: those
  heads' slices of ``o`` are their reference means).
- ``previous-token``: each head at position t copies V at t-1 (position 0 copies itself).

>>> import torch, transformers
>>> cfg = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50)
>>> model = transformers.GPT2LMHeadModel(cfg).eval()
>>> ids = torch.tensor([[1, 2, 3]])
>>> with ablate(model, "zero", layers=[1], heads=[0]):
...     logits = model(ids).logits
>>> logits.shape
torch.Size([1, 3, 50])
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lmlab.errors import LmlabError
from lmlab.hooks.cache import capture, first_tensor
from lmlab.hooks.families import AttentionLayout, locate
from lmlab.hooks.hook import Hook, attach, forward_hook, forward_pre_hook

__all__ = [
    "MODES",
    "ablate",
    "ablation_hooks",
    "mean_ablation",
    "previous_token_ablation",
    "uniform_ablation",
    "zero_ablation",
]

MODES: tuple[str, ...] = ("zero", "uniform", "mean", "previous-token")

Heads = Sequence[int] | None
Pairs = list[tuple[str, Hook]]
Reference = torch.Tensor | Mapping[str, torch.Tensor]


@dataclass
class _Batch:
    """What the current forward pass was given: its attention mask, if any, and the boolean
    key mask derived from it once per pass (not once per hooked layer: reading whether the
    mask is all ones waits for the device)."""

    mask: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    resolved: bool = False


def _indices(values: int | Sequence[int] | None, n: int, what: str) -> list[int]:
    if values is None:
        return list(range(n))
    chosen = [values] if isinstance(values, int) else list(values)
    if not chosen:
        raise LmlabError(f"empty {what} list; pass None for all {n} {what}")
    for v in chosen:
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < n:
            raise LmlabError(f"{what[:-1]} {v!r} out of range; valid {what}: 0..{n - 1}")
    return sorted(set(chosen))


class _OnDevice:
    """A constant tensor of a hook, copied to a device the first time a forward pass runs
    there and reused after (not copied again at every forward)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self._copies = {tensor.device: tensor}

    def on(self, device: torch.device) -> torch.Tensor:
        found = self._copies.get(device)
        if found is None:
            found = self._copies[device] = next(iter(self._copies.values())).to(device)
        return found


def _head_mask(layout: AttentionLayout, heads: Heads) -> torch.Tensor:
    chosen = _indices(heads, layout.dims.n_heads, "heads")
    mask = torch.zeros(layout.dims.n_heads, dtype=torch.bool)
    mask[chosen] = True
    return mask.view(1, 1, -1, 1)  # (1, 1, H, 1)


def _replace_heads(layout: AttentionLayout, heads: Heads,
                   new: Callable[[torch.Tensor], torch.Tensor]) -> Hook:
    """A pre-hook on W_O that replaces the chosen heads' slices of its input by ``new(o)``,
    where ``o`` is that input viewed as ``(B, T, H, d_head)``."""
    mask = _OnDevice(_head_mask(layout, heads))
    n_heads, d_head = layout.dims.n_heads, layout.dims.d_head

    def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        o = x.reshape(*x.shape[:-1], n_heads, d_head)  # (B, T, H, D)
        o = torch.where(mask.on(o.device), new(o).to(o.dtype), o)
        return (o.reshape(x.shape), *args[1:])

    return forward_pre_hook(hook)


def zero_ablation(layout: AttentionLayout, layer: int, heads: Heads = None) -> Pairs:
    """Zero the attention output of ``layer`` (all heads: W_O's output, bias included;
    chosen heads: their slices of W_O's input).

    Example:
        >>> from lmlab.hooks.families import FAMILIES, AttentionDims
        >>> layout = AttentionLayout(FAMILIES["gpt2"], AttentionDims(1, 2, 2, 4), "h")
        >>> [(path, hook.kind) for path, hook in zero_ablation(layout, 0)]
        [('h.0.attn.c_proj', 'forward')]
    """
    path = layout.path("out_proj", layer)
    if heads is None:
        return [(path, forward_hook(lambda module, args, output: torch.zeros_like(output)))]
    return [(path, _replace_heads(layout, heads, torch.zeros_like))]


def mean_ablation(layout: AttentionLayout, layer: int, mean: torch.Tensor,
                  heads: Heads = None) -> Pairs:
    """Replace the chosen heads' slices of W_O's input in ``layer`` by ``mean``, the mean of
    that input over a reference batch, shape ``(n_heads * d_head,)``. With every head, W_O's
    output is then the reference mean of the attention output.

    Example:
        >>> from lmlab.hooks.families import FAMILIES, AttentionDims
        >>> layout = AttentionLayout(FAMILIES["gpt2"], AttentionDims(1, 2, 2, 4), "h")
        >>> [hook.kind for _, hook in mean_ablation(layout, 0, torch.zeros(8))]
        ['forward_pre']
    """
    per_head = _OnDevice(mean.view(layout.dims.n_heads, layout.dims.d_head))
    return [(layout.path("out_proj", layer),
             _replace_heads(layout, heads, lambda o: per_head.on(o.device).expand_as(o)))]


def _value_hook(layout: AttentionLayout, slot: dict[str, torch.Tensor]) -> Hook:
    """A forward hook on the value projection that keeps V, shape ``(B, T, H, d_head)`` with
    key/value heads repeated to the query heads."""
    dims = layout.dims
    width = dims.n_kv_heads * dims.d_head

    def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        out = first_tensor(output, layout.family.value)
        v = out[..., -width:] if layout.family.fused_qkv else out  # (B, T, n_kv * D)
        v = v.reshape(*v.shape[:-1], dims.n_kv_heads, dims.d_head)  # (B, T, n_kv, D)
        slot["v"] = v.repeat_interleave(dims.group, dim=-2) if dims.group > 1 else v

    return forward_hook(hook)


def _key_mask(batch: _Batch, v: torch.Tensor) -> torch.Tensor | None:
    mask = batch.mask
    if mask is None:
        return None
    if mask.dim() != 2 or mask.shape != v.shape[:2]:
        raise LmlabError(f"attention_mask of shape {tuple(mask.shape)} does not match the "
                         f"sequence {tuple(v.shape[:2])}; pass a (batch, seq) mask of 0/1")
    if not batch.resolved:
        batch.keys = None if bool(mask.all()) else mask.to(dtype=torch.bool)
        batch.resolved = True
    if batch.keys is not None and batch.keys.device != v.device:
        batch.keys = batch.keys.to(v.device)  # moved once (per device of a split model)
    return batch.keys


def _uniform_mix(v: torch.Tensor, keys: torch.Tensor | None, causal: bool) -> torch.Tensor:
    """Each position's uniform average of V over its window. ``v``: (B, T, H, D)."""
    T = v.shape[1]
    if keys is None and causal:
        counts = torch.arange(1, T + 1, device=v.device, dtype=v.dtype).view(1, T, 1, 1)
        return v.cumsum(dim=1) / counts
    if keys is None:
        return v.mean(dim=1, keepdim=True).expand_as(v)
    allowed = keys[:, None, :].expand(-1, T, -1)  # (B, T_query, T_key)
    if causal:
        allowed = allowed & torch.ones(T, T, dtype=torch.bool, device=v.device).tril()
    pattern = allowed.to(v.dtype)
    pattern = pattern / pattern.sum(dim=-1, keepdim=True).clamp_min(1)
    return torch.einsum("bts,bshd->bthd", pattern, v)


def _previous(v: torch.Tensor, keys: torch.Tensor | None) -> torch.Tensor:
    """V at t-1 for each position t (position 0, and a position whose predecessor is padding,
    takes its own V). ``v``: (B, T, H, D)."""
    shifted = torch.cat([v[:, :1], v[:, :-1]], dim=1)
    if keys is None:
        return shifted
    prev_ok = torch.cat([keys[:, :1], keys[:, :-1]], dim=1)[:, :, None, None]
    return torch.where(prev_ok, shifted, v)


def _mixing_ablation(layout: AttentionLayout, layer: int, heads: Heads, batch: _Batch,
                     mix: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]) -> Pairs:
    slot: dict[str, torch.Tensor] = {}

    def new(o: torch.Tensor) -> torch.Tensor:
        v = slot.pop("v", None)
        if v is None or v.shape[:2] != o.shape[:2]:
            raise LmlabError("the value projection did not run on this sequence before W_O "
                             "(a KV cache?); run the full sequence with use_cache=False")
        return mix(v, _key_mask(batch, v))

    return [(layout.path("value", layer), _value_hook(layout, slot)),
            (layout.path("out_proj", layer), _replace_heads(layout, heads, new))]


def uniform_ablation(layout: AttentionLayout, layer: int, heads: Heads = None,
                     batch: _Batch | None = None) -> Pairs:
    """Uniform attention in ``layer``: W_O's input becomes, per chosen head, the average of V
    over positions 0..t (causal) or over all non-padding positions (non-causal).

    Example:
        >>> from lmlab.hooks.families import FAMILIES, AttentionDims
        >>> layout = AttentionLayout(FAMILIES["gpt2"], AttentionDims(1, 2, 2, 4), "h")
        >>> [(path, hook.kind) for path, hook in uniform_ablation(layout, 0)]
        [('h.0.attn.c_attn', 'forward'), ('h.0.attn.c_proj', 'forward_pre')]
    """
    causal = layout.family.causal
    return _mixing_ablation(layout, layer, heads, batch or _Batch(),
                            lambda v, keys: _uniform_mix(v, keys, causal))


def previous_token_ablation(layout: AttentionLayout, layer: int, heads: Heads = None,
                            batch: _Batch | None = None) -> Pairs:
    """Previous-token attention in ``layer``: W_O's input becomes, per chosen head, V shifted
    by one position (position 0 keeps its own V).

    Example:
        >>> from lmlab.hooks.families import FAMILIES, AttentionDims
        >>> layout = AttentionLayout(FAMILIES["llama"], AttentionDims(1, 2, 1, 4), "layers")
        >>> [path for path, _ in previous_token_ablation(layout, 0)]
        ['layers.0.self_attn.v_proj', 'layers.0.self_attn.o_proj']
    """
    return _mixing_ablation(layout, layer, heads, batch or _Batch(), _previous)


@functools.lru_cache(maxsize=64)
def _signature(func: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(func)


def _batch_hook(model: torch.nn.Module, batch: _Batch) -> Hook:
    """A pre-hook on the model that records the attention mask and refuses a KV cache."""
    forward = model.forward
    func = getattr(forward, "__func__", None)
    signature = _signature(func) if func is not None else inspect.signature(forward)
    bound_method = func is not None

    def hook(module: torch.nn.Module, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> None:
        try:
            call = (module, *args) if bound_method else args
            bound = signature.bind_partial(*call, **kwargs).arguments
        except TypeError:
            bound = kwargs
        past = bound.get("past_key_values")
        if past is not None and getattr(past, "get_seq_length", lambda: 1)() > 0:
            raise LmlabError("uniform and previous-token ablations need the whole sequence in "
                             "one pass; call the model without past_key_values")
        mask = bound.get("attention_mask")
        batch.mask = mask if isinstance(mask, torch.Tensor) else None
        batch.keys, batch.resolved = None, False

    return forward_pre_hook(hook, with_kwargs=True)


def _reference_means(model: torch.nn.Module, layout: AttentionLayout, layers: list[int],
                     reference: Reference) -> dict[int, torch.Tensor]:
    paths = {layer: layout.path("out_proj", layer) for layer in layers}
    inputs = dict(reference) if isinstance(reference, Mapping) else {"input_ids": reference}
    with torch.no_grad(), capture(model, list(paths.values()), inputs=True) as cache:
        model(**inputs)
    mask = inputs.get("attention_mask")
    means = {}
    for layer, path in paths.items():
        o = cache[path].float()  # (B, T, H * D)
        if mask is None:
            mean = o.mean(dim=(0, 1))
        else:
            w = mask.to(device=o.device, dtype=o.dtype)[..., None]  # (B, T, 1)
            mean = (o * w).sum(dim=(0, 1)) / w.sum().clamp_min(1)
        means[layer] = mean.to(cache[path].dtype)
    return means


def ablation_hooks(model: torch.nn.Module, mode: str, *,
                   layers: int | Sequence[int] | None = None, heads: Heads = None,
                   reference: Reference | None = None) -> Pairs:
    """The ``(path, Hook)`` pairs that ablate attention in ``model``; see :func:`ablate`.

    Example:
        >>> import transformers
        >>> model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        ...     n_layer=2, n_embd=16, n_head=2, vocab_size=50))
        >>> [path for path, _ in ablation_hooks(model, "zero", layers=[1])]
        ['transformer.h.1.attn.c_proj']
    """
    name = mode.replace("_", "-") if isinstance(mode, str) else mode
    if name not in MODES:
        raise LmlabError(f"unknown ablation mode {mode!r}; use one of {', '.join(MODES)}")
    layout = locate(model)
    chosen = _indices(layers, layout.dims.n_layers, "layers")
    if heads is not None:
        _indices(heads, layout.dims.n_heads, "heads")
    if reference is not None and name != "mean":
        raise LmlabError(f"reference is used by mode 'mean' only, not {name!r}; drop it")
    pairs: Pairs = []
    if name == "zero":
        for layer in chosen:
            pairs += zero_ablation(layout, layer, heads)
    elif name == "mean":
        if reference is None:
            raise LmlabError("mode 'mean' needs reference=a batch of input_ids "
                             "(or a dict with input_ids and attention_mask)")
        means = _reference_means(model, layout, chosen, reference)
        for layer in chosen:
            pairs += mean_ablation(layout, layer, means[layer], heads)
    else:
        batch = _Batch()
        factory = uniform_ablation if name == "uniform" else previous_token_ablation
        pairs.append(("", _batch_hook(model, batch)))
        for layer in chosen:
            pairs += factory(layout, layer, heads, batch)
    return pairs


@contextlib.contextmanager
def ablate(model: torch.nn.Module, mode: str, *, layers: int | Sequence[int] | None = None,
           heads: Heads = None, reference: Reference | None = None) -> Iterator[None]:
    """Ablate attention in ``model`` inside a ``with`` block; the hooks go away at its end.

    Args:
        model: A model of a registered family (GPT-2, Llama-like, BERT; see ``FAMILIES``).
        mode: ``"zero"``, ``"uniform"``, ``"mean"`` or ``"previous-token"``.
        layers: Layer indices (default: all).
        heads: Head indices, the same in every chosen layer (default: all).
        reference: For ``"mean"``: a batch of ``input_ids``, or a dict of model inputs with an
            optional ``attention_mask`` (padding positions then do not count). It runs once,
            unablated, when the block starts.

    Yields:
        Nothing; the ablation is active inside the block.

    Raises:
        LmlabError: On an unknown mode, an unsupported model, a layer or head out of range, or
            a missing/unused ``reference``.

    Example:
        >>> import torch, transformers
        >>> model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        ...     n_layer=1, n_embd=16, n_head=2, vocab_size=50)).eval()
        >>> ids = torch.tensor([[1, 2, 3, 4]])
        >>> with ablate(model, "mean", reference=torch.tensor([[5, 6, 7]])):
        ...     ablated = model(ids).logits
        >>> bool(torch.equal(ablated, model(ids).logits))
        False
    """
    with attach(model, ablation_hooks(model, mode, layers=layers, heads=heads,
                                      reference=reference)):
        yield
