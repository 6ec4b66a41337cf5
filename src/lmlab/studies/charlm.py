"""Study `charlm`: character-level language models of names — the MLP with BatchNorm, its
initialisation, direct connections, zero-init symmetry, BatchNorm folding, and two larger models.

After the makemore exercise sheet (Bengio et al. 2003's MLP on a names list, lecture parts 3–5)
and makemore's transformer. Claims under test: with Kaiming-scaled W1, a 0.01-scaled last layer
and BatchNorm, the sheet's MLP reaches dev loss ≈ 2.11 (2.1057 on the lecture's 2018 file); the
step-0 loss is −ln(1/27) = 3.2958 with the scaling and far higher without; zero initialisation
never breaks the symmetry of the hidden units; folding BatchNorm into W1 changes nothing but
round-off; a hierarchical (WaveNet-style) MLP or a small transformer gets below 2.00.

The MLP variants (E01, E03 and the initialisations) train together as one fused ensemble, the
same mathematics as training each alone and several times faster on a CPU.

Commands::

    lmlab run charlm --preset quick                  # ~1 min: every experiment, short training
    lmlab run charlm --preset paper                  # the sheet's 200,000 steps, and beyond
    lmlab run charlm --set data.path=names.txt       # any newline-separated word file

>>> cfg = Config.paper()
>>> cfg.mlp.train.steps, cfg.mlp.train.lr_decay_step, cfg.mlp.variants[0]
(200000, 100000, 'e01')
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from lmlab.errors import LmlabError
from lmlab.models.char_mlp import MLPVariant
from lmlab.runs import Report, RunDir, write_report
from lmlab.train.sampled import StepConfig

#: Read by the registry without importing this module.
STUDY = {"name": "charlm", "order": 5,
         "description": ("Character-level names models: MLP, BatchNorm, init, folding, "
                         "WaveNet, transformer"),
         "source": "makemore exercise sheet (Bengio et al. 2003); SSA names"}

__all__ = ["Config", "MLPConfig", "NamesData", "Result", "SUMMARY_KEYS", "TransformerConfig",
           "VARIANTS", "WaveNetConfig", "check", "run"]

VARIANTS: dict[str, MLPVariant] = {
    "e01": MLPVariant("e01"),
    "e03": MLPVariant("e03", direct=True),
    "unscaled": MLPVariant("unscaled", last_layer_scale=1.0),
    "zero": MLPVariant("zero", init="zero"),
    "bn-gaussian": MLPVariant("bn-gaussian", init="gaussian"),
    "nobn": MLPVariant("nobn", batchnorm=False),
    "nobn-gaussian": MLPVariant("nobn-gaussian", init="gaussian", batchnorm=False),
}
"""The MLP variants: E01 (the sheet's model), E03 (+ direct connections), the last layer not
scaled, every weight zero, W1 ~ N(0, 1) without the Kaiming scale (with BatchNorm: harmless),
and without BatchNorm with Kaiming W1 or with W1 ~ N(0, 1) (tanh saturates)."""

DESCRIPTIONS: dict[str, str] = {
    "mlp-e01": "the sheet's MLP: BatchNorm, Kaiming W1, last layer × 0.01",
    "mlp-e03": "E01 + direct connections emb → logits",
    "mlp-unscaled": "E01 with the last layer not scaled",
    "mlp-zero": "every weight zero",
    "mlp-bn-gaussian": "E01 with W1 ~ N(0, 1) (no Kaiming scale)",
    "mlp-nobn": "no BatchNorm, Kaiming W1, b1",
    "mlp-nobn-gaussian": "no BatchNorm, W1 ~ N(0, 1): tanh saturated",
    "wavenet": "hierarchical MLP, block 8 (lecture part 5)",
    "transformer": "causal transformer over whole words (makemore)",
}

# ``lmlab run ... --resume`` continues an interrupted run: each trained phase (the MLP ensemble,
# the WaveNet, the transformer) is kept in ``checkpoints/trained-<phase>.pt`` and not trained
# again; a phase cut short starts over.
RESUMES = True

SUMMARY_KEYS: dict[str, str] = {
    "train_loss, dev_loss, test_loss": "the E01 MLP's losses (evaluation mode)",
    "init_loss_scaled": "E01's loss at step 0 over the training split (last layer × 0.01)",
    "init_loss_unscaled": "the same with the last layer not scaled",
    "init_loss_uniform": "−ln(1/vocab_size), the loss of a uniform prediction",
    "bn_fold_max_abs_diff": "max |folded − BatchNorm| layer output on the dev split (E01)",
    "dev_loss_best, best_model": "the lowest dev loss of all models, and which",
    "steps_per_second": "fused MLP ensemble: steps per second (all members in each step)",
    "models": "per model: train/dev/test loss, parameters, seconds",
}


@dataclass(frozen=True)
class NamesData:
    """The words.

    Attributes:
        path: a newline-separated word file (empty lines skipped); none: the SSA names.
        year: the SSA year when no path is given (1880–2017; 2017 is the newest the offline
            table has; the lecture's file is 2018).
        chars: a fixed vocabulary (e.g. ``abcdefghijklmnopqrstuvwxyz``); a word with any other
            character is an error. None: the vocabulary is every character of the words.
        split_seed: ``random.seed`` of the 80/10/10 word split.
    """

    path: str | None = None
    year: int = 2017
    chars: str | None = None
    split_seed: int = 42


@dataclass(frozen=True)
class MLPConfig:
    """The MLP ensemble: shape, which variants, and the sheet's recipe."""

    n_embd: int = 10
    n_hidden: int = 200
    block_size: int = 3
    variants: tuple[str, ...] = tuple(VARIANTS)
    train: StepConfig = field(default_factory=StepConfig)


@dataclass(frozen=True)
class WaveNetConfig:
    """The hierarchical MLP of lecture part 5 (76K parameters)."""

    enabled: bool = True
    n_embd: int = 24
    n_hidden: int = 128
    block_size: int = 8
    train: StepConfig = field(default_factory=lambda: StepConfig(
        steps=200_000, lr_decay_step=150_000, diag_every=0))


@dataclass(frozen=True)
class TransformerConfig:
    """makemore's small causal transformer over whole words (≈ 200K parameters).

    20,000 steps: on the 2017 names its dev loss bottoms out near 2.00 around 20–24K steps of
    this recipe and rises after (it overfits 26K training words)."""

    enabled: bool = True
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64
    train: StepConfig = field(default_factory=lambda: StepConfig(
        steps=20_000, lr=5e-4, lr_decay_step=None, optimizer="adamw", weight_decay=0.01,
        diag_every=0))


@dataclass(frozen=True)
class Config:
    """The charlm study; ``seed`` seeds every initialisation and minibatch stream.

    ``threads`` is torch's CPU thread count while the study runs: its steps are many tiny
    operations, which gain nothing from more threads and slow down many-fold when another
    process holds a core (none: leave torch's setting alone).
    """

    data: NamesData = field(default_factory=NamesData)
    mlp: MLPConfig = field(default_factory=MLPConfig)
    wavenet: WaveNetConfig = field(default_factory=WaveNetConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    samples: int = 20
    seed: int = 2147483647
    device: str = "auto"
    threads: int | None = 1

    @classmethod
    def paper(cls) -> Config:
        """The sheet's setting: 200,000 steps of batch 32, lr 0.1 then 0.01 after 100,000."""
        return cls()

    @classmethod
    def quick(cls) -> Config:
        """Every experiment with short training (about a minute on 2 CPU cores)."""
        base = cls()
        return cls(
            mlp=dataclasses.replace(base.mlp, train=StepConfig(
                steps=20_000, lr_decay_step=10_000, diag_every=200)),
            wavenet=dataclasses.replace(base.wavenet, train=StepConfig(
                steps=8_000, lr_decay_step=6_000, diag_every=0)),
            transformer=dataclasses.replace(base.transformer, train=dataclasses.replace(
                base.transformer.train, steps=1_000)))

    def validate(self) -> None:
        """Known variants (E01 among them), positive sizes, sane recipes."""
        unknown = [v for v in self.mlp.variants if v not in VARIANTS]
        if unknown:
            raise LmlabError(f"unknown MLP variant(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(VARIANTS)}")
        if "e01" not in self.mlp.variants:
            raise LmlabError("mlp.variants must include e01 (the sheet's model)")
        for name in ("n_embd", "n_hidden", "block_size"):
            if getattr(self.mlp, name) < 1:
                raise LmlabError(f"mlp.{name} must be at least 1 "
                                 f"(got {getattr(self.mlp, name)})")
        self.mlp.train.validate()
        if self.mlp.train.optimizer != "sgd":
            raise LmlabError("mlp.train.optimizer must be sgd (the fused ensemble's update)")
        if self.wavenet.enabled:
            self.wavenet.train.validate()
            bs = self.wavenet.block_size
            if bs < 2 or bs & (bs - 1):
                raise LmlabError(f"wavenet.block_size must be a power of 2, ≥ 2 (got {bs})")
        if self.transformer.enabled:
            self.transformer.train.validate()
            if self.transformer.n_embd % self.transformer.n_head:
                raise LmlabError("transformer.n_embd must be a multiple of transformer.n_head")
        if self.samples < 0:
            raise LmlabError(f"samples must be ≥ 0 (got {self.samples})")


@dataclass(frozen=True)
class Result:
    """Losses of every model, per-step curves, diagnostics and the summary."""

    table: pd.DataFrame
    curves: dict[str, torch.Tensor]
    diagnostics: pd.DataFrame
    summary: dict[str, Any]


@dataclass(frozen=True)
class _Words:
    train: list[str]
    dev: list[str]
    test: list[str]
    vocab: Any
    source: str


def check(cfg: Config) -> None:
    """Fail before any work when the words cannot be used."""
    _load_words(cfg.data)


def _load_words(cfg: NamesData) -> _Words:
    from lmlab.data.names import Vocab, names_source, read_words, split_words, ssa_names

    words = read_words(cfg.path) if cfg.path else ssa_names(cfg.year)
    vocab = Vocab.from_chars(cfg.chars) if cfg.chars is not None else Vocab.from_words(words)
    vocab.check(words)
    train, dev, test = split_words(words, cfg.split_seed)
    if not (train and dev and test):
        raise LmlabError(f"{len(words)} words are too few for an 80/10/10 split; give at "
                         "least 10")
    return _Words(train, dev, test, vocab, names_source(cfg.path, cfg.year))


def run(cfg: Config, run_dir: RunDir) -> Result:
    """Train the MLP ensemble, the WaveNet and the transformer; every check; the report."""
    from lmlab.runtime import limit_threads

    with limit_threads(cfg.threads):
        return _run(cfg, run_dir)


def _run(cfg: Config, run_dir: RunDir) -> Result:
    from lmlab.runtime import resolve_device, seed_everything

    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    words = _load_words(cfg.data)
    run_dir.metrics_path.unlink(missing_ok=True)  # a resumed run logs every curve again
    run_dir.update_meta({"data_source": words.source})
    rows: list[dict[str, Any]] = []
    curves: dict[str, torch.Tensor] = {}
    summary: dict[str, Any] = {"data_source": words.source, "vocab_size": words.vocab.size,
                               "words": {"train": len(words.train), "dev": len(words.dev),
                                         "test": len(words.test)}}
    mlp = _run_mlp(cfg, words, device, run_dir, rows, curves, summary)
    _save_progress(run_dir, rows, summary)
    samplers: dict[str, Callable[[list[int]], torch.Tensor]] = {"e01": mlp["sampler_for"]("e01")}
    if cfg.wavenet.enabled:
        samplers["wavenet"] = _run_wavenet(cfg, words, device, run_dir, rows, curves)
        _save_progress(run_dir, rows, summary)
    if cfg.transformer.enabled:
        samplers["transformer"] = _run_transformer(cfg, words, device, run_dir, rows, curves)
    table = pd.DataFrame(rows)
    best = table.loc[table["dev"].idxmin()]
    summary.update({"dev_loss_best": float(best["dev"]), "best_model": str(best["model"]),
                    "models": {r["model"]: {k: r[k] for k in ("train", "dev", "test",
                                                             "parameters", "seconds")}
                               for r in rows}})
    best_name = summary["best_model"].removeprefix("mlp-")
    if best_name in mlp["names"] and best_name not in samplers:  # another MLP variant won
        samplers[best_name] = mlp["sampler_for"](best_name)
    gen = torch.Generator().manual_seed(cfg.seed)
    samples = {name: _sample(fn, cfg.samples, gen, words.vocab) for name, fn in samplers.items()
               if name in ("e01", best_name)}
    summary["samples"] = samples
    run_dir.save_summary(summary)
    result = Result(table, curves, mlp["diagnostics"], summary)
    _report(cfg, result, mlp, run_dir)
    return result


def _run_mlp(cfg: Config, words: _Words, device: torch.device, run_dir: RunDir,
             rows: list[dict[str, Any]], curves: dict[str, torch.Tensor],
             summary: dict[str, Any]) -> dict[str, Any]:
    from lmlab.data.names import context_windows
    from lmlab.models.char_mlp import CharMLPEnsemble, MLPShape
    from lmlab.train.sampled import train_ensemble

    m = cfg.mlp
    shape = MLPShape(words.vocab.size, m.block_size, m.n_embd, m.n_hidden)
    splits = {s: tuple(t.to(device) for t in context_windows(getattr(words, s), words.vocab,
                                                             m.block_size))
              for s in ("train", "dev", "test")}
    Xtr, Ytr = splits["train"]
    ens = CharMLPEnsemble(shape, [VARIANTS[v] for v in m.variants], seed=cfg.seed,
                          device=device)
    names = ens.names
    k01 = names.index("e01")
    init_loss = ens.loss(Xtr, Ytr, batch_stats=True).tolist()
    probe = Xtr[torch.randperm(Xtr.shape[0], generator=torch.Generator().manual_seed(0))[:2000]
                .to(device)]
    h_init = ens.hidden(probe, batch_stats=True).cpu()
    def get_state() -> dict[str, Any]:
        return {"params": {n: t.cpu() for n, t in ens.params.items()},
                "running_mean": ens.running_mean.cpu(), "running_std": ens.running_std.cpu()}

    def set_state(state: dict[str, Any]) -> None:
        ens.params = {n: t.to(device) for n, t in state["params"].items()}
        ens.running_mean = state["running_mean"].to(device)
        ens.running_std = state["running_std"].to(device)

    res = _trained(run_dir, "mlp", get_state, set_state, lambda: train_ensemble(
        ens, Xtr, Ytr, m.train, diag_fn=ens.diagnostics, progress=True,
        desc=f"MLP ensemble ({len(names)} variants)"))
    losses = {s: ens.loss(X, Y).tolist() for s, (X, Y) in splits.items()}
    h_end = ens.hidden(probe).cpu()
    for k, name in enumerate(names):
        curves[f"mlp-{name}"] = res.losses[k]
        rows.append({"model": f"mlp-{name}", "train": losses["train"][k],
                     "dev": losses["dev"][k], "test": losses["test"][k],
                     "parameters": ens.num_params(k), "seconds": round(res.seconds, 2),
                     "init_loss": init_loss[k], "step0_loss": float(res.losses[k, 0])})
    _log_curves(run_dir, "mlp", names, res.losses)
    Xdv = splits["dev"][0]
    bn = ens.preactivation(Xdv)
    folded = ens.preactivation(Xdv, folded=True)
    fold_diff = float((folded[k01] - bn[k01]).abs().max())
    logits_diff = float((ens.logits(Xdv, folded=True)[k01] - ens.logits(Xdv)[k01]).abs().max())
    symmetry = _symmetry(ens, Xdv)
    uniform = math.log(words.vocab.size)
    summary.update({
        "train_loss": losses["train"][k01], "dev_loss": losses["dev"][k01],
        "test_loss": losses["test"][k01], "init_loss_scaled": init_loss[k01],
        "init_loss_uniform": uniform, "bn_fold_max_abs_diff": fold_diff,
        "bn_fold_logits_max_abs_diff": logits_diff,
        "steps_per_second": round(res.steps_per_second, 1),
        "member_steps_per_second": round(res.steps_per_second * len(names), 1),
        "mlp_seconds": round(res.seconds, 2), "symmetry": symmetry.to_dict("records")})
    if "unscaled" in names:
        summary["init_loss_unscaled"] = init_loss[names.index("unscaled")]
    if "zero" in names:
        summary["init_loss_zero"] = init_loss[names.index("zero")]
    _save_weights(run_dir, "mlp_ensemble", {
        "names": names, "shape": dataclasses.asdict(shape), "vocab": words.vocab.itos,
        "params": {n: t.cpu() for n, t in ens.params.items()},
        "running_mean": ens.running_mean.cpu(), "running_std": ens.running_std.cpu()})
    diagnostics = pd.DataFrame(res.diagnostics)
    if not diagnostics.empty:
        run_dir.save_table("mlp_diagnostics.csv", diagnostics)

    def sampler_for(member: str) -> Callable[[list[int]], torch.Tensor]:
        k = names.index(member)

        def sampler(context: list[int]) -> torch.Tensor:
            x = torch.tensor([context[-m.block_size:]], device=device)
            return ens.logits(x)[k, 0]

        return sampler

    return {"sampler_for": sampler_for, "diagnostics": diagnostics, "h_init": h_init,
            "h_end": h_end, "names": names, "symmetry": symmetry, "uniform": uniform}


def _save_progress(run_dir: RunDir, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """The losses and summary so far, so an interrupted run keeps its finished models."""
    run_dir.save_table("losses.csv", pd.DataFrame(rows))
    run_dir.save_summary({**summary, "models_finished": [r["model"] for r in rows]})


def _trained(run_dir: RunDir, phase: str, get_state: Callable[[], Any],
             set_state: Callable[[Any], None], train: Callable[[], Any]) -> Any:
    """Train one phase, or take it back from ``checkpoints/trained-<phase>.pt``.

    The file (weights and the loop's result: every step's loss, the diagnostics, the timing)
    is written as soon as the phase has trained, so a resumed run skips the phases that
    finished and ends with the same numbers and figures.
    """
    import io

    from lmlab.runs.io import atomic_write_bytes

    path = run_dir.checkpoints_dir / f"trained-{phase}.pt"
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001 - a file from an older layout: train again
            saved = None
        if isinstance(saved, dict) and saved.get("phase") == phase:
            set_state(saved["state"])
            return saved["result"]
    result = train()
    buffer = io.BytesIO()
    torch.save({"phase": phase, "state": get_state(), "result": result}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return result


def _module_state(model: torch.nn.Module) -> tuple[Callable[[], Any], Callable[[Any], None]]:
    """``get_state``/``set_state`` of a module for :func:`_trained`."""

    def get_state() -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}

    def set_state(state: dict[str, torch.Tensor]) -> None:
        model.load_state_dict(state)

    return get_state, set_state


def _save_weights(run_dir: RunDir, name: str, state: dict[str, Any]) -> None:
    """Trained weights to ``checkpoints/<name>.pt`` (written atomically)."""
    import io

    from lmlab.runs.io import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(run_dir.checkpoints_dir / f"{name}.pt", buffer.getvalue())


def _symmetry(ens: Any, X: torch.Tensor) -> pd.DataFrame:
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


def _log_curves(run_dir: RunDir, model: str, names: list[str], losses: torch.Tensor,
                every: int = 100) -> None:
    """Metrics rows: the mean training loss of each block of ``every`` steps."""
    n = losses.shape[1] // every * every
    if n == 0:
        return
    means = losses[:, :n].reshape(losses.shape[0], -1, every).mean(-1)
    run_dir.log_metrics([{"model": model, "member": name, "step": (j + 1) * every,
                          "loss": float(means[k, j])}
                         for k, name in enumerate(names) for j in range(means.shape[1])])


def _run_wavenet(cfg: Config, words: _Words, device: torch.device, run_dir: RunDir,
                 rows: list[dict[str, Any]], curves: dict[str, torch.Tensor]
                 ) -> Callable[[list[int]], torch.Tensor]:
    from lmlab.data.names import context_windows
    from lmlab.models.char_wavenet import CharWaveNet
    from lmlab.train.sampled import train_module

    w = cfg.wavenet
    torch.manual_seed(cfg.seed)
    model = CharWaveNet(words.vocab.size, n_embd=w.n_embd, n_hidden=w.n_hidden,
                        block_size=w.block_size).to(device)
    splits = {s: tuple(t.to(device) for t in context_windows(getattr(words, s), words.vocab,
                                                             w.block_size))
              for s in ("train", "dev", "test")}
    X, Y = splits["train"]
    res = _trained(run_dir, "wavenet", *_module_state(model), lambda: train_module(
        model, X, Y, w.train, name="wavenet", progress=True,
        generator=torch.Generator().manual_seed(cfg.seed)))
    _finish(run_dir, "wavenet", model, splits, res, rows, curves,
            {"config": dataclasses.asdict(w), "vocab": words.vocab.itos})

    @torch.no_grad()
    def sampler(context: list[int]) -> torch.Tensor:
        return model(torch.tensor([context[-w.block_size:]], device=device))[0]

    return sampler


def _run_transformer(cfg: Config, words: _Words, device: torch.device, run_dir: RunDir,
                     rows: list[dict[str, Any]], curves: dict[str, torch.Tensor]
                     ) -> Callable[[list[int]], torch.Tensor]:
    from lmlab.data.names import word_sequences
    from lmlab.models.char_transformer import CharTransformer, sequence_loss
    from lmlab.train.sampled import train_module

    t = cfg.transformer
    longest = max(len(x) for x in words.train + words.dev + words.test)
    splits = {s: tuple(a.to(device) for a in word_sequences(getattr(words, s), words.vocab,
                                                            longest))
              for s in ("train", "dev", "test")}
    torch.manual_seed(cfg.seed)
    model = CharTransformer(words.vocab.size, longest + 1, n_layer=t.n_layer, n_head=t.n_head,
                            n_embd=t.n_embd).to(device)
    X, Y = splits["train"]
    res = _trained(run_dir, "transformer", *_module_state(model), lambda: train_module(
        model, X, Y, t.train, loss_fn=sequence_loss, name="transformer", progress=True,
        generator=torch.Generator().manual_seed(cfg.seed)))
    _finish(run_dir, "transformer", model, splits, res, rows, curves,
            {"config": dataclasses.asdict(t), "block_size": longest + 1,
             "vocab": words.vocab.itos})

    @torch.no_grad()
    def sampler(context: list[int]) -> torch.Tensor:
        ids = [0] + [i for i in context if i != 0][-longest:]
        return model(torch.tensor([ids], device=device))[0, -1]

    return sampler


@torch.no_grad()
def _mean_loss(model: torch.nn.Module, X: torch.Tensor, Y: torch.Tensor,
               chunk: int = 4096) -> float:
    """Mean cross-entropy per target character (targets −1 are padding and not scored)."""
    total, count = 0.0, 0
    for i in range(0, X.shape[0], chunk):
        logits, y = model(X[i:i + chunk]), Y[i:i + chunk]
        total += float(torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-1,
            reduction="sum"))
        count += int((y >= 0).sum())
    return total / max(count, 1)


def _finish(run_dir: RunDir, name: str, model: torch.nn.Module,
            splits: dict[str, tuple[torch.Tensor, ...]], res: Any, rows: list[dict[str, Any]],
            curves: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Evaluate a trained model on every split; keep its weights, curve and table row."""
    model.eval()
    losses = {s: _mean_loss(model, X, Y) for s, (X, Y) in splits.items()}
    _save_weights(run_dir, name, {**meta, "state_dict": model.state_dict()})
    curves[name] = res.losses[0]
    _log_curves(run_dir, name, [name], res.losses)
    rows.append({"model": name, **losses, "parameters": sum(p.numel() for p in model.parameters()),
                 "seconds": round(res.seconds, 2), "init_loss": float("nan"),
                 "step0_loss": float(res.losses[0, 0])})


def _sample(next_logits: Callable[[list[int]], torch.Tensor], n: int, gen: torch.Generator,
            vocab: Any, max_len: int = 40) -> list[str]:
    """``n`` words drawn one character at a time until the boundary token."""
    out = []
    for _ in range(n):
        context, word = [0] * max_len, []
        for _ in range(max_len):
            probs = next_logits(context).float().softmax(-1).cpu()
            ix = int(torch.multinomial(probs, 1, generator=gen))
            if ix == 0:
                break
            word.append(ix)
            context = context[1:] + [ix]
        out.append(vocab.decode(word))
    return out


def _report(cfg: Config, res: Result, mlp: dict[str, Any], run_dir: RunDir) -> None:
    from lmlab.plotting import figure_of
    from lmlab.plotting.charlm import (
        plot_diagnostic,
        plot_first_steps,
        plot_loss_curves,
        plot_tanh_hist,
    )

    s, names = res.summary, mlp["names"]
    steps = max(len(c) for c in res.curves.values())
    smooth = max(1, min(1000, steps // 50))
    run_dir.save_figure(figure_of(plot_loss_curves(res.curves, smooth=smooth)), "loss_curves")
    first = {n: res.curves[f"mlp-{n}"] for n in ("e01", "unscaled", "zero", "nobn-gaussian")
             if n in names}
    run_dir.save_figure(figure_of(plot_first_steps(first, steps=min(1000, steps),
                                                   uniform=mlp["uniform"])), "first_steps")
    keep = [k for k, n in enumerate(names) if n in ("e01", "bn-gaussian", "nobn",
                                                      "nobn-gaussian")]
    run_dir.save_figure(figure_of(plot_tanh_hist(
        {names[k]: mlp["h_init"][k] for k in keep},
        title="tanh activations at initialisation (2,000 training contexts)")), "tanh_init")
    run_dir.save_figure(figure_of(plot_tanh_hist(
        {names[k]: mlp["h_end"][k] for k in keep},
        title="tanh activations after training (evaluation mode)")), "tanh_trained")
    diag = res.diagnostics
    if not diag.empty:
        run_dir.save_figure(figure_of(plot_diagnostic(
            diag, "tanh_saturation", ylabel="share of |tanh| > 0.97",
            title="tanh saturation during training")), "saturation")
        e01 = diag[diag["member"] == "e01"]
        long = pd.concat([e01.assign(member=w)[["step", "member", f"ud_log10_{w}"]]
                          .rename(columns={f"ud_log10_{w}": "ud"}) for w in ("C", "W1", "W2")])
        run_dir.save_figure(figure_of(plot_diagnostic(
            long, "ud", ylabel="log10 std(lr·grad) / std(weight)", hline=-3.0,
            title="Update-to-data ratio per weight (E01); dashed: 1e-3")), "update_ratio")
    table = res.table.copy()
    run_dir.save_table("losses.csv", table)
    table.insert(1, "what", table["model"].map(DESCRIPTIONS))
    for col in ("train", "dev", "test", "init_loss", "step0_loss"):
        table[col] = table[col].map(lambda v: "" if v != v else f"{v:.4f}")

    report = Report("Character-level language models of names")
    report.add_text(
        f"Words: **{s['data_source']}** — {s['words']['train']:,} train / "
        f"{s['words']['dev']:,} dev / {s['words']['test']:,} test words (split "
        f"`random.seed({cfg.data.split_seed})`), vocabulary of {s['vocab_size']} tokens "
        "('.' marks start and end). Losses are the mean cross-entropy per character in "
        "evaluation mode (BatchNorm with its running statistics).")
    report.add_heading("E01 — the MLP with BatchNorm")
    tr = cfg.mlp.train
    report.add_text(
        f"n_embd {cfg.mlp.n_embd}, hidden {cfg.mlp.n_hidden}, block {cfg.mlp.block_size}, "
        f"batch {tr.batch_size}, {tr.steps:,} steps, SGD lr {tr.lr} then {tr.lr_decayed} "
        f"after {tr.lr_decay_step:,}. **train {s['train_loss']:.4f} / dev {s['dev_loss']:.4f} / "
        f"test {s['test_loss']:.4f}** (reference on the lecture's 2018 file at 200,000 steps: "
        "2.0674 / 2.1057).")
    report.add_table(table, caption="Every model: losses per split, parameters, training time")
    report.add_figure("figures/loss_curves.png", "Training loss of every model (log10, "
                      f"mean of {smooth} steps).")
    report.add_heading("E02 — the initial loss")
    unscaled = s.get("init_loss_unscaled")
    report.add_text(
        f"Loss at step 0 over the whole training split: **{s['init_loss_scaled']:.4f}** with "
        f"the last layer × 0.01, against −ln(1/{s['vocab_size']}) = {s['init_loss_uniform']:.4f}"
        + (f"; **{unscaled:.4f}** without the scaling — the confident wrong start of the "
           "hockey stick." if unscaled is not None else "."))
    report.add_figure("figures/first_steps.png", "Minibatch losses of the first steps.")
    report.add_figure("figures/tanh_init.png", "tanh outputs at initialisation: without "
                      "BatchNorm and without the Kaiming scale (nobn-gaussian) most units "
                      "saturate; with BatchNorm the scale of W1 does not matter (bn-gaussian).")
    report.add_figure("figures/tanh_trained.png", "tanh outputs after training.")
    if not diag.empty:
        report.add_figure("figures/saturation.png", "Share of saturated tanh units per step.")
        report.add_figure("figures/update_ratio.png", "Update-to-data ratios of E01.")
    report.add_heading("E03 — direct connections")
    if "e03" in names:
        e01 = res.table.set_index("model").loc["mlp-e01"]
        e03 = res.table.set_index("model").loc["mlp-e03"]
        report.add_text(f"logits = h·W2 + b2 + emb·W_skip (W_skip starts at 0): dev "
                        f"{e03['dev']:.4f} against E01's {e01['dev']:.4f} "
                        f"({int(e03['parameters'] - e01['parameters']):+,} parameters).")
    report.add_heading("Zero initialisation — the symmetry is never broken")
    report.add_text("With every weight zero, every hidden unit computes the same function and "
                    "receives the same gradient, so they stay identical however long training "
                    "runs (one distinct unit); only the output bias learns. E01 for contrast:")
    report.add_table(mlp["symmetry"], caption="How different the hidden units are after training")
    report.add_heading("BatchNorm folding")
    report.add_text(
        "W1' = γ·W1/σ and b' = β − γ·μ/σ (running μ, σ) replace W1 and the BatchNorm layer at "
        f"inference. On the dev split the folded layer's output differs from BatchNorm's by at "
        f"most **{s['bn_fold_max_abs_diff']:.2e}**, the logits by "
        f"{s['bn_fold_logits_max_abs_diff']:.2e} (float32 round-off).")
    report.add_heading("Samples")
    for name, words in s["samples"].items():
        report.add_text(f"**{name}**: " + ", ".join(words))
    report.add_heading("Speed")
    report.add_text(
        f"The {len(names)} MLP variants trained together as one fused ensemble: "
        f"{s['steps_per_second']:,.0f} steps/s ({s['member_steps_per_second']:,.0f} model-steps/s)"
        f", {s['mlp_seconds']:.0f} s for {tr.steps:,} steps of all of them.")
    write_report(run_dir, report)
