"""attach(): registration by path, every hook kind, removal also on exceptions."""

from __future__ import annotations

import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.hooks import (
    Hook,
    attach,
    backward_hook,
    backward_pre_hook,
    forward_hook,
    forward_pre_hook,
    resolve,
    tensor_hook,
)
from tests.hooks.conftest import out, tiny


def _no_hooks_left(model: torch.nn.Module) -> bool:
    modules = all(not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                       or m._backward_pre_hooks or m._forward_hooks_with_kwargs
                       or m._forward_pre_hooks_with_kwargs)
                  for m in model.modules())
    params = all(not getattr(p, "_backward_hooks", None) for p in model.parameters())
    return modules and params


def test_forward_hook_replaces_output_and_is_removed() -> None:
    model = tiny("gpt2")
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        plain = out(model, ids)
        hooks = {"lm_head": forward_hook(lambda m, a, o: o + 1.0)}
        with attach(model, hooks):
            hooked = out(model, ids)
        after = out(model, ids)
    torch.testing.assert_close(hooked, plain + 1.0)
    torch.testing.assert_close(after, plain, rtol=0, atol=0)
    assert _no_hooks_left(model)


def test_sequence_of_pairs_runs_in_order_and_pre_hook_with_kwargs() -> None:
    lin = torch.nn.Linear(2, 2)
    order: list[str] = []
    pairs = [("", forward_pre_hook(lambda m, a, k: order.append("pre"), with_kwargs=True)),
             ("", forward_hook(lambda m, a, o: order.append("a"))),
             ("", forward_hook(lambda m, a, o: order.append("b")))]
    with attach(lin, pairs):
        lin(torch.zeros(1, 2))
    assert order == ["pre", "a", "b"]


def test_pre_hook_replaces_input() -> None:
    lin = torch.nn.Linear(2, 2)
    x = torch.randn(3, 2)
    with attach(lin, {"": forward_pre_hook(lambda m, args: (2 * args[0],))}):
        y = lin(x)
    torch.testing.assert_close(y, lin(2 * x))


def test_backward_hooks_and_tensor_hook() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    x = torch.randn(4, 3)
    model(x).sum().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    seen: dict[str, tuple[int, ...]] = {}

    def note(key: str, grad: torch.Tensor) -> None:
        seen[key] = tuple(grad.shape)

    hooks = [
        ("0.weight", tensor_hook(lambda g: 2 * g)),
        ("2", backward_pre_hook(lambda m, g_out: note("pre", g_out[0]))),
        ("2", backward_hook(lambda m, g_in, g_out: note("full", g_in[0]))),
    ]
    with attach(model, hooks):
        model(x).sum().backward()
    torch.testing.assert_close(model[0].weight.grad, 2 * ref["0.weight"])
    torch.testing.assert_close(model[2].weight.grad, ref["2.weight"])
    assert seen == {"pre": (4, 1), "full": (4, 3)}
    assert _no_hooks_left(model)


def test_backward_hook_can_replace_grad_input() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    with attach(model, {"1": backward_hook(lambda m, g_in, g_out: (torch.zeros_like(g_in[0]),))}):
        model(torch.randn(2, 3)).sum().backward()
    assert torch.count_nonzero(model[0].weight.grad) == 0
    assert torch.count_nonzero(model[1].weight.grad) > 0


def test_hooks_removed_after_exception(fam: str, ids: torch.Tensor) -> None:
    model = tiny(fam)
    with torch.no_grad():
        plain = out(model, ids)
    first = next(n for n, _ in model.named_parameters())
    hooks = [(name, forward_hook(lambda m, a, o: None)) for name, _ in model.named_modules()]
    hooks += [(name, forward_pre_hook(lambda m, a: None)) for name, _ in model.named_modules()]
    hooks += [("", backward_hook(lambda m, gi, go: None)), (first, tensor_hook(lambda g: g))]
    with pytest.raises(RuntimeError, match="boom"), attach(model, hooks):
        assert not _no_hooks_left(model)
        raise RuntimeError("boom")
    assert _no_hooks_left(model)
    with torch.no_grad():
        torch.testing.assert_close(out(model, ids), plain, rtol=0, atol=0)


def test_unknown_path_names_nearest() -> None:
    model = tiny("gpt2")
    with pytest.raises(LmlabError, match=r"transformer\.h\.0\.attn'") as err:
        with attach(model, {"transformer.h.0.atn": forward_hook(lambda m, a, o: None)}):
            pass
    assert "\n" not in str(err.value)
    assert _no_hooks_left(model)


def test_validation_before_registration() -> None:
    model = tiny("gpt2")
    good = ("transformer.h.0", forward_hook(lambda m, a, o: None))
    bad = ("transformer.h.9", forward_hook(lambda m, a, o: None))
    with pytest.raises(LmlabError, match="nearest"), attach(model, [good, bad]):
        pass
    assert _no_hooks_left(model)


def test_bad_arguments() -> None:
    model = tiny("gpt2")
    with pytest.raises(LmlabError, match="unknown hook kind"):
        Hook("sideways", print)  # type: ignore[arg-type]
    with pytest.raises(LmlabError, match="with_kwargs"):
        Hook("backward", print, with_kwargs=True)
    with pytest.raises(LmlabError, match="no parameter"):
        with attach(model, {"transformer.h.0.attn": tensor_hook(lambda g: g)}):
            pass
    with pytest.raises(LmlabError, match=r"\(path, Hook\)"):
        with attach(model, [("lm_head", print)]):  # type: ignore[list-item]
            pass
    assert isinstance(resolve(model, "lm_head.weight", parameter=True), torch.nn.Parameter)
