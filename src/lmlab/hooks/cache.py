"""Activation capture by module path (``run_with_cache``, but with the model's real names).

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
>>> x = torch.randn(2, 3)
>>> with capture(model, ["0", "1"]) as cache:
...     y = model(x)
>>> sorted(cache), torch.equal(cache["1"], y), cache["0"].requires_grad
(['0', '1'], True, False)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from lmlab.errors import LmlabError
from lmlab.hooks.hook import Hook, attach, forward_hook, forward_pre_hook

__all__ = ["ActivationCache", "capture", "first_tensor"]


class ActivationCache(dict[str, torch.Tensor]):
    """A dict of captured activations, keyed by module path.

    Example:
        >>> ActivationCache({"h.0": torch.zeros(2)}).shapes()
        {'h.0': (2,)}
    """

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every activation, by path."""
        return {name: tuple(value.shape) for name, value in self.items()}


def first_tensor(value: Any, where: str = "") -> torch.Tensor:
    """The tensor in a module's input or output: itself, or the first element of a tuple,
    list or mapping (such as a ``ModelOutput``).

    Raises:
        LmlabError: If there is no tensor there.

    Example:
        >>> first_tensor((torch.ones(1), None)).tolist()
        [1.0]
    """
    if isinstance(value, Mapping):
        value = next(iter(value.values()), None)
    elif isinstance(value, (tuple, list)):
        value = value[0] if value else None
    if not isinstance(value, torch.Tensor):
        raise LmlabError(f"module {where!r} gave {type(value).__name__}, not a tensor; "
                         "capture a submodule whose output is a tensor")
    return value


@contextlib.contextmanager
def capture(model: torch.nn.Module, paths: str | Sequence[str], *,
            device: str | torch.device | None = None, detach: bool = True,
            inputs: bool = False) -> Iterator[ActivationCache]:
    """Capture module outputs (or inputs) by path while the block runs.

    The output of a module that returns a tuple is its first element. A module that runs more
    than once (several forward passes in the block) keeps its last activation. Hooks on one
    module run in the order attached: to capture activations under an ablation, enter
    ``ablate`` before ``capture``.

    Args:
        model: The root module.
        paths: One path or several, as in ``model.named_modules()``.
        device: Move each activation there (e.g. ``"cpu"``); ``None`` leaves it in place.
        detach: Detach from the autograd graph (the default); ``False`` keeps gradients.
        inputs: Capture each module's first positional input instead of its output.

    Yields:
        An :class:`ActivationCache` filled as the model runs.

    Raises:
        LmlabError: On an unknown path (naming the nearest valid ones).

    Example:
        >>> lin = torch.nn.Linear(2, 3)
        >>> with capture(lin, "", inputs=True, device="cpu") as cache:
        ...     _ = lin(torch.ones(1, 2))
        >>> cache[""].tolist()
        [[1.0, 1.0]]
    """
    names = [paths] if isinstance(paths, str) else list(paths)
    cache = ActivationCache()

    def store(name: str, value: Any) -> None:
        tensor = first_tensor(value, name)
        if detach:
            tensor = tensor.detach()
        if device is not None:
            tensor = tensor.to(device)
        cache[name] = tensor

    def make(name: str) -> Hook:
        if inputs:
            return forward_pre_hook(lambda module, args: store(name, args))
        return forward_hook(lambda module, args, output: store(name, output))

    with attach(model, [(name, make(name)) for name in names]):
        yield cache
