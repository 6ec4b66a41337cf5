"""Activation access and attention ablation by hooks, attached by module path, always removed.

>>> import torch
>>> from lmlab.hooks import capture
>>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh())
>>> with capture(model, "0") as cache:
...     _ = model(torch.ones(1, 2))
>>> cache["0"].shape
torch.Size([1, 2])
"""

from lmlab.hooks.ablation import (
    MODES,
    ablate,
    ablation_hooks,
    mean_ablation,
    previous_token_ablation,
    uniform_ablation,
    zero_ablation,
)
from lmlab.hooks.cache import ActivationCache, capture
from lmlab.hooks.families import (
    FAMILIES,
    AttentionDims,
    AttentionLayout,
    Family,
    locate,
    register_family,
)
from lmlab.hooks.hook import (
    Hook,
    HookKind,
    attach,
    backward_hook,
    backward_pre_hook,
    forward_hook,
    forward_pre_hook,
    resolve,
    tensor_hook,
)

__all__ = [
    "Hook", "HookKind", "attach", "resolve",
    "forward_pre_hook", "forward_hook", "backward_hook", "backward_pre_hook", "tensor_hook",
    "ActivationCache", "capture",
    "MODES", "ablate", "ablation_hooks",
    "zero_ablation", "uniform_ablation", "mean_ablation", "previous_token_ablation",
    "FAMILIES", "Family", "AttentionDims", "AttentionLayout", "locate", "register_family",
]
