"""The three training phases of the charlm study: the fused MLP ensemble, the WaveNet and the
transformer. Each trains (or is taken back from its checkpoint), is evaluated, keeps its
weights, and returns what the study's ``Result`` needs as a typed dataclass.

Private to :mod:`lmlab.studies.charlm`.

>>> import numpy as np
>>> table = tanh_histogram({"e01": np.array([[-1.0, 0.0], [0.5, 0.99]])}, when="init")
>>> len(table), float(table["saturated"].iloc[0]), float(table["mean"].iloc[0])
(80, 0.5, 0.1225)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from lmlab.studies._charlm_train import (
    Sampler,
    Words,
    log_curves,
    mean_loss,
    module_state,
    save_weights,
    trained,
)

if TYPE_CHECKING:
    from lmlab.models.char_mlp import CharMLPEnsemble, MLPShape, MLPVariant
    from lmlab.runs import RunDir
    from lmlab.studies.charlm import MLPConfig, TransformerConfig, WaveNetConfig
    from lmlab.train.sampled import StepResult

__all__ = ["MLPPhase", "ModelPhase", "lecture2_biases", "run_mlp", "run_transformer",
           "run_wavenet", "tanh_histogram", "zero_init_evidence"]

Splits = dict[str, tuple[torch.Tensor, torch.Tensor]]

#: The MLP members whose tanh activations are drawn.
TANH_MEMBERS = ("e01", "bn-gaussian", "nobn", "nobn-gaussian")


@dataclass(frozen=True)
class MLPPhase:
    """The fused MLP ensemble, trained and evaluated.

    Attributes:
        names: the members, in order.
        rows: one loss-table row per member (model ``mlp-<name>``).
        curves: ``mlp-<name>`` -> the training loss of every step.
        summary: E01's numbers, the initial losses, the folding differences, the speed and the
            symmetry table, in ``summary.json``'s order.
        diagnostics: the loop's diagnostics (one row per member and recorded step; empty when
            none were recorded).
        update_ratio: E01's update-to-data ratios, one row per weight (``member``) and step.
        tanh: histograms of the tanh activations at initialisation and after training.
        symmetry: how different the hidden units are after training, one row per member.
        sampler_for: the next-token logits of one member, by name.
    """

    names: list[str]
    rows: list[dict[str, Any]]
    curves: dict[str, np.ndarray]
    summary: dict[str, Any]
    diagnostics: pd.DataFrame
    update_ratio: pd.DataFrame
    tanh: pd.DataFrame
    symmetry: pd.DataFrame
    sampler_for: Callable[[str], Sampler]


@dataclass(frozen=True)
class ModelPhase:
    """One trained ``nn.Module`` (the WaveNet or the transformer).

    Attributes:
        row: its loss-table row.
        curve: the training loss of every step.
        sampler: its next-token logits.
    """

    row: dict[str, Any]
    curve: np.ndarray
    sampler: Sampler


def _on(pair: tuple[torch.Tensor, torch.Tensor], device: torch.device
        ) -> tuple[torch.Tensor, torch.Tensor]:
    return pair[0].to(device), pair[1].to(device)


def _windows(words: Words, block_size: int, device: torch.device) -> Splits:
    """(X, Y) of every split: the contexts of ``block_size`` and their next characters."""
    from lmlab.data.names import context_windows

    return {s: _on(context_windows(words.split(s), words.vocab, block_size), device)
            for s in ("train", "dev", "test")}


def _ensemble_state(ens: CharMLPEnsemble, device: torch.device
                    ) -> tuple[Callable[[], Any], Callable[[Any], None]]:
    """``get_state``/``set_state`` of the fused ensemble for :func:`trained`."""

    def get_state() -> dict[str, Any]:
        return {"params": {n: t.cpu() for n, t in ens.params.items()},
                "running_mean": ens.running_mean.cpu(), "running_std": ens.running_std.cpu()}

    def set_state(state: dict[str, Any]) -> None:
        ens.params = {n: t.to(device) for n, t in state["params"].items()}
        ens.running_mean = state["running_mean"].to(device)
        ens.running_std = state["running_std"].to(device)

    return get_state, set_state


def run_mlp(cfg: MLPConfig, variants: list[MLPVariant], seed: int, words: Words,
            device: torch.device, run_dir: RunDir) -> MLPPhase:
    """Train the MLP variants as one fused ensemble (or take it back) and run every check.

    Writes ``checkpoints/trained-mlp.pt``, ``checkpoints/mlp_ensemble.pt``, the metrics rows
    and ``mlp_diagnostics.csv``.
    """
    from lmlab.models.char_mlp import CharMLPEnsemble, MLPShape
    from lmlab.train.sampled import train_ensemble

    shape = MLPShape(words.vocab.size, cfg.block_size, cfg.n_embd, cfg.n_hidden)
    splits = _windows(words, cfg.block_size, device)
    Xtr, Ytr = splits["train"]
    ens = CharMLPEnsemble(shape, variants, seed=seed, device=device)
    names = ens.names
    lecture2_biases(ens, seed)
    zero = next((v for v in variants if v.init == "zero"), None)
    evidence = (zero_init_evidence(shape, zero, seed, Xtr, Ytr, cfg.train.batch_size)
                if zero is not None else dict.fromkeys(ZERO_INIT_KEYS))
    init_loss = ens.loss(Xtr, Ytr, batch_stats=True).tolist()
    probe = Xtr[torch.randperm(Xtr.shape[0], generator=torch.Generator().manual_seed(0))[:2000]
                .to(device)]
    h_init = ens.hidden(probe, batch_stats=True).cpu()

    def train() -> StepResult:
        return train_ensemble(ens, Xtr, Ytr, cfg.train, diag_fn=ens.diagnostics, progress=True,
                              desc=f"MLP ensemble ({len(names)} variants)")

    res: StepResult = trained(run_dir, "mlp", *_ensemble_state(ens, device), train,
                              device=device)
    losses = {s: ens.loss(X, Y).tolist() for s, (X, Y) in splits.items()}
    h_end = ens.hidden(probe).cpu()
    rows = [{"model": f"mlp-{name}", "train": losses["train"][k], "dev": losses["dev"][k],
             "test": losses["test"][k], "parameters": ens.num_params(k),
             "seconds": round(res.seconds, 2), "init_loss": init_loss[k],
             "step0_loss": float(res.losses[k, 0])} for k, name in enumerate(names)]
    log_curves(run_dir, "mlp", names, res.losses)
    symmetry = _symmetry(ens, splits["dev"][0])
    summary = {**_mlp_summary(ens, splits["dev"][0], losses, init_loss, res, symmetry,
                              words.vocab.size), **evidence}
    save_weights(run_dir, "mlp_ensemble", {
        "names": names, "shape": dataclasses.asdict(shape), "vocab": words.vocab.itos,
        "params": {n: t.cpu() for n, t in ens.params.items()},
        "running_mean": ens.running_mean.cpu(), "running_std": ens.running_std.cpu()})
    diagnostics = pd.DataFrame(res.diagnostics)
    if not diagnostics.empty:
        run_dir.save_table("mlp_diagnostics.csv", diagnostics)
    keep = [k for k, n in enumerate(names) if n in TANH_MEMBERS]
    tanh = pd.concat([tanh_histogram({names[k]: h[k] for k in keep}, when=when)
                      for when, h in (("init", h_init), ("trained", h_end))], ignore_index=True)
    return MLPPhase(names, rows, {f"mlp-{n}": res.losses[k].numpy() for k, n in enumerate(names)},
                    summary, diagnostics, _update_ratio(diagnostics), tanh, symmetry,
                    _member_sampler(ens, cfg.block_size, device))


def _mlp_summary(ens: CharMLPEnsemble, Xdv: torch.Tensor, losses: dict[str, list[float]],
                 init_loss: list[float], res: StepResult, symmetry: pd.DataFrame,
                 vocab_size: int) -> dict[str, Any]:
    """E01's losses, the initial losses, the BatchNorm folding check and the speed.

    ``init_loss_unscaled`` and ``init_loss_zero`` are null when that variant did not train.
    """
    names = ens.names
    k01 = names.index("e01")
    bn = ens.preactivation(Xdv)
    folded = ens.preactivation(Xdv, folded=True)
    fold_diff = float((folded[k01] - bn[k01]).abs().max())
    logits_diff = float((ens.logits(Xdv, folded=True)[k01] - ens.logits(Xdv)[k01]).abs().max())
    return {
        "train_loss": losses["train"][k01], "dev_loss": losses["dev"][k01],
        "test_loss": losses["test"][k01], "init_loss_scaled": init_loss[k01],
        "init_loss_uniform": math.log(vocab_size), "bn_fold_max_abs_diff": fold_diff,
        "bn_fold_logits_max_abs_diff": logits_diff,
        "steps_per_second": round(res.steps_per_second, 1),
        "member_steps_per_second": round(res.steps_per_second * len(names), 1),
        "mlp_seconds": round(res.seconds, 2), "symmetry": symmetry.to_dict("records"),
        **{f"init_loss_{v}": init_loss[names.index(v)] if v in names else None
           for v in ("unscaled", "zero")},
        "min_batch_loss": float(res.losses[k01].min())}


#: The summary keys of :func:`zero_init_evidence`.
ZERO_INIT_KEYS = ("zero_init_h_max_abs", "zero_init_W1_grad_max_abs",
                  "zero_init_b2_grad_max_abs", "zero_init_step0_loss")


def zero_init_evidence(shape: MLPShape, variant: MLPVariant, seed: int, X: torch.Tensor,
                       Y: torch.Tensor, batch_size: int) -> dict[str, float]:
    """The zero-initialisation exercise at step 0, on the first minibatch the training loop
    draws: the tanh layer's largest |h| (0), the largest |dL/dW1| by autograd (0: no hidden
    unit moves, so they stay identical), the largest |dL/db2| (not 0: only the output bias
    learns) and the loss (−ln(1/vocab_size)).

    The weights are :class:`~lmlab.models.char_mlp.CharMLP`'s (the autograd reference) drawn
    from ``seed``; the minibatch continues that generator as the ensemble's loop does.

    >>> from lmlab.models.char_mlp import MLPShape, MLPVariant
    >>> X, Y = torch.zeros((100, 3), dtype=torch.long), torch.zeros(100, dtype=torch.long)
    >>> ev = zero_init_evidence(MLPShape(), MLPVariant("zero", init="zero"), 1, X, Y, 32)
    >>> ev["zero_init_h_max_abs"], ev["zero_init_W1_grad_max_abs"]
    (0.0, 0.0)
    >>> round(ev["zero_init_step0_loss"], 4), round(ev["zero_init_b2_grad_max_abs"], 4)
    (3.2958, 0.963)
    """
    from lmlab.models.char_mlp import CharMLP, CharMLPEnsemble

    gen = torch.Generator().manual_seed(seed)
    model = CharMLP(shape, variant, generator=gen)
    ix = torch.randint(0, X.shape[0], (batch_size,), generator=gen)
    xb, yb = X.cpu()[ix], Y.cpu()[ix]
    model.train()
    loss = torch.nn.functional.cross_entropy(model(xb), yb)
    loss.backward()
    h = CharMLPEnsemble(shape, [variant], seed=seed).hidden(xb, batch_stats=True)
    assert model.W1.grad is not None and model.b2.grad is not None
    return {"zero_init_h_max_abs": float(h.abs().max()),
            "zero_init_W1_grad_max_abs": float(model.W1.grad.abs().max()),
            "zero_init_b2_grad_max_abs": float(model.b2.grad.abs().max()),
            "zero_init_step0_loss": float(loss.detach())}


def lecture2_biases(ens: CharMLPEnsemble, seed: int, name: str = "lecture2") -> None:
    """Give member ``name`` (if any) lecture part 2's biases: b1 and b2 ~ N(0, 1), the draws of
    :func:`~lmlab.models.char_mlp.init_mlp_params` unscaled (it makes b1 · 0.01 and b2 = 0).

    >>> from lmlab.models.char_mlp import CharMLPEnsemble, MLPShape, MLPVariant
    >>> v = MLPVariant("lecture2", init="gaussian", last_layer_scale=1.0, batchnorm=False)
    >>> ens = CharMLPEnsemble(MLPShape(), [MLPVariant("e01"), v], seed=1)
    >>> lecture2_biases(ens, 1)
    >>> float(ens.params["b2"][0].abs().max()), float(ens.params["b2"][1].std()) > 0.5
    (0.0, True)
    """
    if name not in ens.names:
        return
    k, (V, T, E, H) = ens.names.index(name), dataclasses.astuple(ens.shape)
    gen = torch.Generator().manual_seed(seed)
    draws = [torch.randn(size, generator=gen) for size in ((V, E), (T * E, H), (H,), (H, V), (V,))]
    ens.params["b1"][k, 0] = draws[2].to(ens.params["b1"])  # the lecture's C, W1, b1, W2, b2
    ens.params["b2"][k, 0] = draws[4].to(ens.params["b2"])


def _member_sampler(ens: CharMLPEnsemble, block_size: int, device: torch.device
                    ) -> Callable[[str], Sampler]:
    """The next-token logits of the ensemble's member ``name`` (evaluation mode)."""

    def sampler_for(member: str) -> Sampler:
        k = ens.names.index(member)

        def sampler(context: list[int]) -> torch.Tensor:
            x = torch.tensor([context[-block_size:]], device=device)
            return ens.logits(x)[k, 0]

        return sampler

    return sampler_for


def _symmetry(ens: CharMLPEnsemble, X: torch.Tensor) -> pd.DataFrame:
    """Per member: how different the hidden units are (0: all identical)."""
    p = ens.params
    h = ens.hidden(X)                                                  # (K, N, H)
    out = []
    for k, name in enumerate(ens.names):
        out.append({
            "member": name,
            "max |W1[:, j] − W1[:, 0]|": float((p["W1"][k] - p["W1"][k][:, :1]).abs().max()),
            "max |W2[j] − W2[0]|": float((p["W2"][k] - p["W2"][k][:1]).abs().max()),
            "max |h_j − h_0| (dev)": float((h[k] - h[k][:, :1]).abs().max()),
            "distinct hidden units": int(torch.unique(h[k].T.round(decimals=6), dim=0).shape[0]),
        })
    return pd.DataFrame(out)


def _update_ratio(diag: pd.DataFrame, member: str = "e01") -> pd.DataFrame:
    """``member``'s update-to-data ratios as one line per weight: columns step, member (the
    weight: C, W1, W2) and ud (empty when no diagnostics were recorded)."""
    if diag.empty:
        return pd.DataFrame()
    rows = diag[diag["member"] == member]
    return pd.concat([rows.assign(member=w)[["step", "member", f"ud_log10_{w}"]]
                      .rename(columns={f"ud_log10_{w}": "ud"}) for w in ("C", "W1", "W2")],
                     ignore_index=True)


def tanh_histogram(activations: Mapping[str, Any], *, when: str) -> pd.DataFrame:
    """Histograms of tanh outputs over 80 bins of [−1, 1], one block of rows per member.

    Args:
        activations: member -> its tanh outputs (any shape; flattened).
        when: a label for every row (``init`` or ``trained``).

    Returns:
        Columns ``when, member, tanh`` (bin centre), ``density``, and each member's ``mean``,
        ``std`` and ``saturated`` share (|h| > 0.97), repeated on its rows.
    """
    bins = np.linspace(-1, 1, 81)
    parts = []
    for name, h in activations.items():
        values = np.asarray(h, dtype=np.float64).ravel()
        hist, edges = np.histogram(values, bins=bins, density=True)
        parts.append(pd.DataFrame({
            "when": when, "member": name, "tanh": (edges[:-1] + edges[1:]) / 2, "density": hist,
            "mean": values.mean(), "std": values.std(),
            "saturated": float(np.mean(np.abs(values) > 0.97))}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def run_wavenet(cfg: WaveNetConfig, seed: int, words: Words, device: torch.device,
                run_dir: RunDir) -> ModelPhase:
    """Train the hierarchical MLP (or take it back); keep ``checkpoints/wavenet.pt``."""
    from lmlab.models.char_wavenet import CharWaveNet
    from lmlab.train.sampled import train_module

    torch.manual_seed(seed)
    model = CharWaveNet(words.vocab.size, n_embd=cfg.n_embd, n_hidden=cfg.n_hidden,
                        block_size=cfg.block_size).to(device)
    splits = _windows(words, cfg.block_size, device)
    X, Y = splits["train"]
    res = trained(run_dir, "wavenet", *module_state(model), lambda: train_module(
        model, X, Y, cfg.train, name="wavenet", progress=True,
        generator=torch.Generator().manual_seed(seed)), device=device)
    row, curve = _finish(run_dir, "wavenet", model, splits, res,
                         {"config": dataclasses.asdict(cfg), "vocab": words.vocab.itos})

    @torch.no_grad()
    def sampler(context: list[int]) -> torch.Tensor:
        return model(torch.tensor([context[-cfg.block_size:]], device=device))[0]

    return ModelPhase(row, curve, sampler)


def run_transformer(cfg: TransformerConfig, seed: int, words: Words, device: torch.device,
                    run_dir: RunDir) -> ModelPhase:
    """Train the causal transformer over whole words (or take it back); keep
    ``checkpoints/transformer.pt``."""
    from lmlab.data.names import word_sequences
    from lmlab.models.char_transformer import CharTransformer, sequence_loss
    from lmlab.train.sampled import train_module

    longest = max(len(x) for x in words.train + words.dev + words.test)
    splits = {s: _on(word_sequences(words.split(s), words.vocab, longest), device)
              for s in ("train", "dev", "test")}
    torch.manual_seed(seed)
    model = CharTransformer(words.vocab.size, longest + 1, n_layer=cfg.n_layer,
                            n_head=cfg.n_head, n_embd=cfg.n_embd).to(device)
    X, Y = splits["train"]
    res = trained(run_dir, "transformer", *module_state(model), lambda: train_module(
        model, X, Y, cfg.train, loss_fn=sequence_loss, name="transformer", progress=True,
        generator=torch.Generator().manual_seed(seed)), device=device)
    row, curve = _finish(run_dir, "transformer", model, splits, res,
                         {"config": dataclasses.asdict(cfg), "block_size": longest + 1,
                          "vocab": words.vocab.itos})

    @torch.no_grad()
    def sampler(context: list[int]) -> torch.Tensor:
        ids = [0] + [i for i in context if i != 0][-longest:]
        return model(torch.tensor([ids], device=device))[0, -1]

    return ModelPhase(row, curve, sampler)


def _finish(run_dir: RunDir, name: str, model: torch.nn.Module, splits: Splits,
            res: StepResult, meta: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
    """Evaluate a trained model on every split and keep its weights; its table row and curve."""
    model.eval()
    losses = {s: mean_loss(model, X, Y) for s, (X, Y) in splits.items()}
    save_weights(run_dir, name, {**meta, "state_dict": model.state_dict()})
    log_curves(run_dir, name, [name], res.losses)
    row = {"model": name, **losses, "parameters": sum(p.numel() for p in model.parameters()),
           "seconds": round(res.seconds, 2), "init_loss": float("nan"),
           "step0_loss": float(res.losses[0, 0])}
    return row, res.losses[0].numpy()
