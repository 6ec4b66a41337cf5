"""The plumbing of the charlm study's phases: the words, a phase kept in its checkpoint, the
weights, the metrics rows, evaluation and sampling.

Private to :mod:`lmlab.studies.charlm` (the leading underscore keeps the registry from taking
it for a study).

>>> import torch
>>> from lmlab.data.names import Vocab
>>> vocab = Vocab.from_chars("ab")
>>> def prefers_a(context: list[int]) -> torch.Tensor:   # 'a' twice, then the end
...     return torch.tensor([0.0, 20.0, -20.0]) if sum(context) < 2 else torch.tensor(
...         [20.0, -20.0, -20.0])
>>> sample(prefers_a, 2, torch.Generator().manual_seed(0), vocab)
['aa', 'aa']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lmlab.errors import LmlabError
from lmlab.runs.io import atomic_save_torch

if TYPE_CHECKING:
    from lmlab.data.names import Vocab
    from lmlab.runs import RunDir
    from lmlab.studies.charlm import NamesData

__all__ = ["Sampler", "Words", "load_words", "log_curves", "mean_loss", "module_state",
           "sample", "save_weights", "trained"]

Sampler = Callable[[list[int]], torch.Tensor]
"""The next-token logits of a trained model for a context of token ids."""


@dataclass(frozen=True)
class Words:
    """The words split 80/10/10, their vocabulary and where they came from."""

    train: list[str]
    dev: list[str]
    test: list[str]
    vocab: Vocab
    source: str

    def split(self, name: str) -> list[str]:
        """The words of split ``name`` (``train``, ``dev`` or ``test``)."""
        return list(getattr(self, name))


def load_words(cfg: NamesData) -> Words:
    """The words of ``cfg``: read, checked against the vocabulary and split.

    Raises:
        LmlabError: If the file is missing or empty, a word has a character outside a fixed
            vocabulary, or there are too few words for the split.
    """
    from lmlab.data.names import Vocab, names_source, read_words, split_words, ssa_names

    words = read_words(cfg.path) if cfg.path else ssa_names(cfg.year)
    vocab = Vocab.from_chars(cfg.chars) if cfg.chars is not None else Vocab.from_words(words)
    vocab.check(words)
    train, dev, test = split_words(words, cfg.split_seed)
    if not (train and dev and test):
        raise LmlabError(f"{len(words)} words are too few for an 80/10/10 split; give at "
                         "least 10")
    return Words(train, dev, test, vocab, names_source(cfg.path, cfg.year))


def trained(run_dir: RunDir, phase: str, get_state: Callable[[], Any],
            set_state: Callable[[Any], None], train: Callable[[], Any],
            device: torch.device | str | None = None) -> Any:
    """Train one phase, or take it back from ``checkpoints/trained-<phase>.pt``.

    The file (weights and the loop's result: every step's loss, the diagnostics, the timing)
    is written as soon as the phase has trained, so a resumed run skips the phases that
    finished and ends with the same numbers and figures. A file that cannot be used (torn,
    foreign, of another configuration) is named on stderr and the phase trains again; nothing
    in it runs code.

    Args:
        run_dir: the run directory.
        phase: the phase's name (``mlp``, ``wavenet``, ``transformer``).
        get_state: the trained weights, to keep.
        set_state: puts kept weights back into the model.
        train: trains the model and returns the loop's result.
        device: where the phase trains; its type is kept in the file, and a file of another
            device type is refused (resume with the ``--device`` it was trained on).

    Returns:
        The loop's result, fresh or as it was kept.

    Raises:
        LmlabError: the file was written on another device type.
    """
    import dataclasses

    from lmlab.train.checkpoint import to_cpu

    kind = None if device is None else torch.device(device).type
    path = run_dir.checkpoints_dir / f"trained-{phase}.pt"
    if path.is_file():
        kept = _kept(path, phase, get_state, set_state, kind)
        if kept is not None:
            return kept
    result = train()
    atomic_save_torch(path, to_cpu({"phase": phase, "state": get_state(),
                                    "result": dataclasses.asdict(result), "device_type": kind}))
    return result


def _kept(path: Path, phase: str, get_state: Callable[[], Any],
          set_state: Callable[[Any], None], kind: str | None = None) -> Any | None:
    """The loop's result kept in ``path``, its weights put back into the model; or None, after
    one stderr line that names the file and why it cannot be used (the phase trains again).

    The file is read as tensors and plain values only (:func:`lmlab.train.checkpoint.read_torch`),
    so nothing in it can run code; its weights must have the layout of the model's own before
    any of them is put back, so a foreign file never leaves the model half loaded.
    """
    import sys

    from lmlab.errors import first_line
    from lmlab.train.checkpoint import read_torch
    from lmlab.train.sampled import StepResult

    again = f"training the {phase} phase again"
    try:
        saved = read_torch(path, what=f"the {phase} phase's checkpoint", advice=again)
    except LmlabError as e:
        print(f"lmlab: {e}", file=sys.stderr)
        return None
    was = saved.get("device_type") if isinstance(saved, dict) else None
    if kind is not None and was is not None and was != kind:
        raise LmlabError(f"{path} was trained on {was} and this run is on {kind}; a run "
                         f"resumes on the device type it started on: resume with --device {was}")
    try:
        if not (isinstance(saved, dict) and saved.get("phase") == phase):
            raise ValueError(f"it does not hold the {phase} phase")
        result = StepResult(**saved["result"])
        if not isinstance(result.losses, torch.Tensor):
            raise ValueError("its losses are not a tensor")
        if _layout(saved["state"]) != _layout(get_state()):
            raise ValueError("its weights do not fit the model (another configuration?)")
        set_state(saved["state"])
        return result
    except Exception as e:  # noqa: BLE001 - a foreign or older file: train again
        print(f"lmlab: cannot use {path} ({first_line(e)}); {again}", file=sys.stderr)
        return None


def _layout(state: Any) -> Any:
    """The names, shapes and dtypes of the tensors in nested dicts (other values by type)."""
    if isinstance(state, torch.Tensor):
        return tuple(state.shape), state.dtype
    if isinstance(state, dict):
        return {k: _layout(v) for k, v in state.items()}
    return type(state).__name__


def module_state(model: torch.nn.Module) -> tuple[Callable[[], Any], Callable[[Any], None]]:
    """``get_state``/``set_state`` of a module for :func:`trained`."""

    def get_state() -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}

    def set_state(state: dict[str, torch.Tensor]) -> None:
        model.load_state_dict(state)

    return get_state, set_state


def save_weights(run_dir: RunDir, name: str, state: dict[str, Any]) -> None:
    """Trained weights to ``checkpoints/<name>.pt`` (written atomically, from the CPU)."""
    from lmlab.train.checkpoint import to_cpu

    atomic_save_torch(run_dir.checkpoints_dir / f"{name}.pt", to_cpu(state))


def log_curves(run_dir: RunDir, model: str, names: list[str], losses: torch.Tensor,
               every: int = 100) -> None:
    """Metrics rows: the mean training loss of each block of ``every`` steps."""
    n = losses.shape[1] // every * every
    if n == 0:
        return
    means = losses[:, :n].reshape(losses.shape[0], -1, every).mean(-1)
    run_dir.log_metrics([{"model": model, "member": name, "step": (j + 1) * every,
                          "loss": float(means[k, j])}
                         for k, name in enumerate(names) for j in range(means.shape[1])])


@torch.no_grad()
def mean_loss(model: torch.nn.Module, X: torch.Tensor, Y: torch.Tensor,
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


def sample(next_logits: Sampler, n: int, gen: torch.Generator, vocab: Vocab,
           max_len: int = 40) -> list[str]:
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
