"""Hooks described as data, attached by module path and always removed.

A :class:`Hook` says which of PyTorch's hook kinds to register and with which function;
:func:`attach` registers a set of them on the modules (or parameters) named by their path in
``model.named_modules()`` / ``model.named_parameters()`` and removes every one of them when the
block ends, also when it ends with an exception.

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
>>> double = forward_hook(lambda module, args, output: 2 * output)
>>> x = torch.ones(1, 3)
>>> with attach(model, {"0": double}):
...     hooked = model(x)
>>> torch.allclose(hooked, 2 * model[0](x).relu())
True
>>> len(model[0]._forward_hooks)
0
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

from lmlab.errors import LmlabError

__all__ = [
    "Hook",
    "HookKind",
    "attach",
    "backward_hook",
    "backward_pre_hook",
    "forward_hook",
    "forward_pre_hook",
    "resolve",
    "tensor_hook",
]

HookKind = Literal["forward_pre", "forward", "backward", "backward_pre", "tensor"]
"""``forward_pre``: before ``forward`` (may replace its inputs); ``forward``: after it (may
replace its output); ``backward``: full backward hook, once the gradients w.r.t. the module's
inputs are known (may replace them); ``backward_pre``: before those are computed (may replace
the gradient w.r.t. the output); ``tensor``: on a parameter, when its gradient is computed (may
replace the gradient)."""

_KINDS: tuple[str, ...] = get_args(HookKind)


@dataclass(frozen=True)
class Hook:
    """One PyTorch hook to register: its kind, its function and registration options.

    The function's signature depends on ``kind`` (it is PyTorch's own):

    - ``forward_pre``: ``fn(module, args) -> None | new_args``; with ``with_kwargs=True``
      ``fn(module, args, kwargs) -> None | (new_args, new_kwargs)``.
    - ``forward``: ``fn(module, args, output) -> None | new_output``; with ``with_kwargs=True``
      ``fn(module, args, kwargs, output)``.
    - ``backward``: ``fn(module, grad_input, grad_output) -> None | new_grad_input``.
    - ``backward_pre``: ``fn(module, grad_output) -> None | new_grad_output``.
    - ``tensor``: ``fn(grad) -> None | new_grad`` (the path must name a parameter).

    Args:
        kind: Which hook kind to register.
        fn: The hook function.
        with_kwargs: Pass keyword arguments to forward(-pre) hooks.
        prepend: Run before the hooks already registered on the module.

    Example:
        >>> Hook("forward", lambda m, a, o: None).kind
        'forward'
    """

    kind: HookKind
    fn: Callable[..., Any]
    with_kwargs: bool = False
    prepend: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise LmlabError(f"unknown hook kind {self.kind!r}; use one of {', '.join(_KINDS)}")
        if not callable(self.fn):
            raise LmlabError(f"the {self.kind} hook's fn is not callable; pass a function")
        if self.with_kwargs and self.kind not in ("forward_pre", "forward"):
            raise LmlabError(f"with_kwargs applies to forward hooks only, not to {self.kind!r}")


def forward_pre_hook(fn: Callable[..., Any], *, with_kwargs: bool = False,
                     prepend: bool = False) -> Hook:
    """A hook run before ``module.forward``; it may return replacement inputs.

    Example:
        >>> forward_pre_hook(lambda module, args: None).kind
        'forward_pre'
    """
    return Hook("forward_pre", fn, with_kwargs=with_kwargs, prepend=prepend)


def forward_hook(fn: Callable[..., Any], *, with_kwargs: bool = False,
                 prepend: bool = False) -> Hook:
    """A hook run after ``module.forward``; it may return a replacement output.

    Example:
        >>> forward_hook(lambda module, args, output: None).kind
        'forward'
    """
    return Hook("forward", fn, with_kwargs=with_kwargs, prepend=prepend)


def backward_hook(fn: Callable[..., Any], *, prepend: bool = False) -> Hook:
    """A full backward hook: sees ``grad_input`` and ``grad_output``, may replace ``grad_input``.

    Example:
        >>> backward_hook(lambda module, grad_input, grad_output: None).kind
        'backward'
    """
    return Hook("backward", fn, prepend=prepend)


def backward_pre_hook(fn: Callable[..., Any], *, prepend: bool = False) -> Hook:
    """A full backward pre-hook: sees ``grad_output`` first and may replace it.

    Example:
        >>> backward_pre_hook(lambda module, grad_output: None).kind
        'backward_pre'
    """
    return Hook("backward_pre", fn, prepend=prepend)


def tensor_hook(fn: Callable[..., Any]) -> Hook:
    """A hook on a parameter's gradient: ``fn(grad)`` may return a replacement gradient.

    Example:
        >>> tensor_hook(lambda grad: 0 * grad).kind
        'tensor'
    """
    return Hook("tensor", fn)


def _nearest(path: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(path, candidates, n=3, cutoff=0.5)
    if not close:
        parent = path.rsplit(".", 1)[0]
        close = [c for c in candidates if c.startswith(parent + ".")][:3] or list(candidates[:3])
    return ", ".join(repr(c) for c in close)


def resolve(model: torch.nn.Module, path: str, *,
            parameter: bool = False) -> torch.nn.Module | torch.nn.Parameter:
    """The submodule (or, with ``parameter=True``, the parameter) of ``model`` at ``path``.

    Args:
        model: The root module; ``""`` names it.
        path: A dotted path as listed by ``model.named_modules()`` (or ``named_parameters()``).
        parameter: Look the path up among parameters instead of modules.

    Returns:
        The module or parameter.

    Raises:
        LmlabError: If there is no such path; the message names the nearest valid paths.

    Example:
        >>> import torch
        >>> resolve(torch.nn.Sequential(torch.nn.Linear(2, 2)), "0")
        Linear(in_features=2, out_features=2, bias=True)
    """
    if parameter:
        params = dict(model.named_parameters(remove_duplicate=False))
        if path in params:
            return params[path]
        raise LmlabError(f"no parameter {path!r} in {type(model).__name__}; "
                         f"nearest: {_nearest(path, list(params))}")
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        raise LmlabError(f"no module {path!r} in {type(model).__name__}; "
                         f"nearest: {_nearest(path, names)}") from None


def _register(target: torch.nn.Module | torch.nn.Parameter,
              hook: Hook) -> torch.utils.hooks.RemovableHandle:
    if hook.kind == "tensor":
        assert isinstance(target, torch.Tensor)
        return target.register_hook(hook.fn)
    assert isinstance(target, torch.nn.Module)
    if hook.kind == "forward_pre":
        return target.register_forward_pre_hook(hook.fn, with_kwargs=hook.with_kwargs,
                                                prepend=hook.prepend)
    if hook.kind == "forward":
        return target.register_forward_hook(hook.fn, with_kwargs=hook.with_kwargs,
                                            prepend=hook.prepend)
    if hook.kind == "backward":
        return target.register_full_backward_hook(hook.fn, prepend=hook.prepend)
    return target.register_full_backward_pre_hook(hook.fn, prepend=hook.prepend)


@contextlib.contextmanager
def attach(model: torch.nn.Module,
           hooks: Mapping[str, Hook] | Sequence[tuple[str, Hook]]) -> Iterator[None]:
    """Register ``hooks`` on ``model`` by path for the duration of a ``with`` block.

    Every path is checked before anything is registered; every registered hook is removed in a
    ``finally`` clause, so an exception inside the block leaves the model unhooked.

    Args:
        model: The root module.
        hooks: ``{path: hook}`` or a sequence of ``(path, hook)`` pairs (a path may repeat);
            hooks on one module run in the order given. ``tensor`` hooks take a parameter path
            (``"transformer.h.0.attn.c_proj.weight"``), the other kinds a module path.

    Yields:
        Nothing; the hooks are active inside the block.

    Raises:
        LmlabError: On an unknown path (naming the nearest valid ones) or a tensor hook on a
            module path.

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(2, 2)
        >>> seen = []
        >>> with attach(lin, [("", forward_hook(lambda m, a, o: seen.append(o.shape)))]):
        ...     _ = lin(torch.zeros(4, 2))
        >>> seen, len(lin._forward_hooks)
        ([torch.Size([4, 2])], 0)
    """
    pairs = list(hooks.items()) if isinstance(hooks, Mapping) else list(hooks)
    targets = []
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[1], Hook)):
            raise LmlabError(f"expected (path, Hook) pairs, got {pair!r}; "
                             "pass {path: Hook} or [(path, Hook), ...]")
        path, hook = pair
        targets.append((resolve(model, path, parameter=hook.kind == "tensor"), hook))
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for target, hook in targets:
            handles.append(_register(target, hook))
        yield
    finally:
        for handle in reversed(handles):
            handle.remove()
