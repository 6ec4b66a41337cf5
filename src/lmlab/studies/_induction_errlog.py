"""The error log of an `induction` training run: evaluation on the fixed test sets, and
``err_arr.json`` in lmlab's layout or the authors' (spec §4).

* ``err_layout="lmlab"`` (default): ``err_arr.json`` is a list of entries, one every
  ``eval_every`` steps on the cheap test prefixes and one at every checkpoint on the full test
  sets (``"full": true``, with the floor-free errors ``err_test_nofloor``, ``err_ood_nofloor``),
  plus ``epoch = −1`` for the initial weights.
* ``err_layout="authors"``: ``err_arr.json`` is exactly what the authors' ``train.py`` writes —
  one record per step ``epoch = 0 … steps − 1`` with the seven keys of :data:`ERR_KEYS` and
  nothing else, so that ``err_arr[k − 1]`` belongs to ``ckpt_k.pt`` (this needs
  ``eval_every = 1``); records at checkpoint steps hold the full evaluation, the others the
  cheap one. The full evaluations with their extra keys (and ``epoch = −1``) go to
  ``err_full.json``.

>>> entries = [{"epoch": -1, **dict.fromkeys(ERR_KEYS[1:], 0.9), "full": True},
...            {"epoch": 0, **dict.fromkeys(ERR_KEYS[1:], 0.8)}]
>>> files = err_files(entries, "authors")
>>> sorted(files), [e["epoch"] for e in files["err_arr.json"]], list(files["err_arr.json"][0])[:2]
(['err_arr.json', 'err_full.json'], [0], ['epoch', 'loss_train'])
>>> merge_err_files(files["err_arr.json"], files["err_full.json"]) == entries
True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.nn import functional as F

from lmlab.data.copying import copy_mask, error_rate
from lmlab.errors import LmlabError, first_line
from lmlab.models.rotary_tf import TFModel

__all__ = ["ERR_KEYS", "ErrLayout", "EvalSet", "entry", "err_files", "merge_err_files",
           "read_err_files"]

ERR_KEYS: tuple[str, ...] = (
    "epoch", "loss_train", "err_train", "loss_test", "err_test", "loss_ood", "err_ood",
)
"""The keys of every ``err_arr.json`` entry (lmlab's full entries add ``full`` and
``*_nofloor``)."""

ErrLayout = Literal["lmlab", "authors"]
FULL_FILE = "err_full.json"
_EVAL_CHUNK = 500


class EvalSet:
    """A fixed test set as tensors, with both masks."""

    def __init__(self, tokens: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> None:
        T = tokens.shape[1]
        self.tokens_np = tokens
        self.tokens = torch.from_numpy(tokens)
        self.mask = copy_mask(starts, lens, T)
        self.mask_nofloor = copy_mask(starts, lens, T, floor_free=True)

    def head(self, n: int) -> EvalSet:
        """The first ``n`` sequences."""
        out = EvalSet.__new__(EvalSet)
        out.tokens_np, out.tokens = self.tokens_np[:n], self.tokens[:n]
        out.mask, out.mask_nofloor = self.mask[:n], self.mask_nofloor[:n]
        return out


@torch.no_grad()
def _evaluate(model: TFModel, data: EvalSet) -> tuple[float, float, float]:
    """(mean next-token CE at every position, error, floor-free error), in eval mode."""
    was_training = model.training
    model.eval()
    total, preds = 0.0, []
    device = next(model.parameters()).device
    for i in range(0, len(data.tokens), _EVAL_CHUNK):
        x = data.tokens[i : i + _EVAL_CHUNK].to(device)
        logits = model(x)[:, :-1]  # (b, T-1, V)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                 reduction="sum").item()
        preds.append(logits.argmax(-1).cpu().numpy())
    model.train(was_training)
    pred = np.concatenate(preds)
    loss = total / pred.size
    return (loss, error_rate(pred, data.tokens_np, data.mask),
            error_rate(pred, data.tokens_np, data.mask_nofloor))


def entry(epoch: int, model: TFModel, train: EvalSet | None, test: EvalSet, ood: EvalSet,
          full: bool) -> dict[str, Any]:
    """The error-log entry of ``model`` (the weights after ``epoch + 1`` steps)."""
    loss_train = err_train = None
    if train is not None:
        loss_train, err_train, _ = _evaluate(model, train)
    loss_test, err_test, err_test_nf = _evaluate(model, test)
    loss_ood, err_ood, err_ood_nf = _evaluate(model, ood)
    out: dict[str, Any] = {
        "epoch": epoch, "loss_train": loss_train, "err_train": err_train,
        "loss_test": loss_test, "err_test": err_test, "loss_ood": loss_ood, "err_ood": err_ood,
    }
    if full:
        out.update(full=True, err_test_nofloor=err_test_nf, err_ood_nofloor=err_ood_nf)
    return out


def err_files(entries: list[dict[str, Any]], layout: ErrLayout) -> dict[str, list[Any]]:
    """The files of the error log in ``layout``: ``{file name: its JSON list}``."""
    if layout == "lmlab":
        return {"err_arr.json": entries}
    return {"err_arr.json": [{k: e[k] for k in ERR_KEYS} for e in entries if e["epoch"] >= 0],
            FULL_FILE: [e for e in entries if e.get("full")]}


def merge_err_files(dense: list[dict[str, Any]],
                    full: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries of lmlab's layout from the two files of the authors' layout."""
    by_epoch = {e["epoch"]: e for e in dense}
    by_epoch.update({e["epoch"]: e for e in full})
    return [by_epoch[k] for k in sorted(by_epoch)]


def _read_list(path: Path, start: int, again: str, out: Path) -> list[dict[str, Any]]:
    """A JSON list of entries with an integer epoch, or a one-line refusal naming ``path``."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # missing, unreadable, not UTF-8 or not JSON
        raise LmlabError(f"cannot resume {out} at step {start}: cannot read {path} "
                         f"({first_line(exc)}); {again}") from None
    if not (isinstance(saved, list)
            and all(isinstance(e, dict) and isinstance(e.get("epoch"), int) for e in saved)):
        raise LmlabError(f"cannot resume {out} at step {start}: {path} is not a list "
                         f"of entries with an epoch; {again}")
    return saved


def read_err_files(out: Path, layout: ErrLayout, start: int,
                   again: str) -> list[dict[str, Any]]:
    """The error log as the last checkpoint left it, in lmlab's layout in memory."""
    dense = _read_list(out / "err_arr.json", start, again, out)
    if layout == "lmlab":
        return dense
    return merge_err_files(dense, _read_list(out / FULL_FILE, start, again, out))
