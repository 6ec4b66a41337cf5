"""The homework's questions of `finetune-spectral`, answered from a finished run's tables.

The homework prints the parameter count and ``train_result.training_loss`` and asks: is the
mean α inside the 2–6 band before and after fine-tuning (Q1b), which layers moved most and in
which direction, and did perplexity and α move together. Everything here reads the study's
tables (``stages``, ``delta``, ``history``), so an old run directory is answered the same way
when its report is redrawn.

>>> stages = pd.DataFrame({"stage": ["pre-trained", "fine-tuned"],
...                        "mean_alpha": [6.4, 5.9], "perplexity": [27.1, 20.9]})
>>> delta = pd.DataFrame({"longname": ["a.q", "a.v"], "delta": [-0.5, 0.1]})
>>> a = homework_answers(stages, delta)
>>> a["alpha_mean_in_2_6_before"], a["alpha_mean_in_2_6_after"], a["alpha_ppl_same_direction"]
(False, True, True)
>>> a["top_delta_alpha_layers"], a["top_delta_alpha"]
(['a.q', 'a.v'], [-0.5, 0.1])
>>> mean_train_loss([{"kind": "train", "loss": 2.0}, {"kind": "eval", "loss": 9.0},
...                  {"kind": "train", "loss": 1.0}])
1.5
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    import torch

__all__ = ["ANSWER_KEYS", "answer_sentences", "homework_answers", "mean_train_loss",
           "trainable_params"]

#: The keys :func:`homework_answers` returns.
ANSWER_KEYS = ("alpha_mean_in_2_6_before", "alpha_mean_in_2_6_after", "top_delta_alpha_layers",
               "top_delta_alpha", "alpha_ppl_same_direction")

LOW, HIGH = 2.0, 6.0


def trainable_params(model: torch.nn.Module) -> int:
    """Parameters that receive gradients (a tied weight counted once, as ``parameters()`` does).

    >>> import torch
    >>> net = torch.nn.Linear(3, 2)
    >>> net.bias.requires_grad_(False)  # doctest: +ELLIPSIS
    Parameter ...
    >>> trainable_params(net)
    6
    """
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def mean_train_loss(history: Sequence[Mapping[str, Any]]) -> float | None:
    """The mean of the per-step training losses (``None`` before any step).

    Hugging Face Trainer's ``training_loss`` is the same quantity: the sum of every step's loss
    divided by the number of steps (``_total_loss_scalar / num_steps_trained``), not only of
    the logged ones. Trainer counts the steps of its last ``train()`` call; this counts every
    step of the run, a resumed one included.
    """
    losses = [float(r["loss"]) for r in history if r.get("kind", "train") == "train"]
    return sum(losses) / len(losses) if losses else None


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _in_band(x: float | None) -> bool | None:
    return None if x is None else bool(LOW <= x <= HIGH)


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def homework_answers(stages: pd.DataFrame, delta: pd.DataFrame, top: int = 3) -> dict[str, Any]:
    """The answers as ``summary.json`` entries (keys :data:`ANSWER_KEYS`).

    Args:
        stages: two rows, ``pre-trained`` then ``fine-tuned``, with ``mean_alpha`` and
            ``perplexity``.
        delta: one row per layer with ``longname`` and ``delta`` (Δα = after − before).
        top: how many layers of largest ``|Δα|`` to name (ties: the shallower layer first).

    Returns:
        ``alpha_mean_in_2_6_before``/``_after``: whether 2 ≤ mean α ≤ 6 (``None`` without a
        fit); ``top_delta_alpha_layers`` and ``top_delta_alpha``: the layers of largest |Δα|
        and their signed Δα, largest first; ``alpha_ppl_same_direction``: whether mean α and
        perplexity both rose or both fell (``None`` when either did not change or is missing).
    """
    rows = stages.set_index("stage")
    a0, a1 = (_finite(rows["mean_alpha"].get(s)) for s in ("pre-trained", "fine-tuned"))
    p0, p1 = (_finite(rows["perplexity"].get(s)) for s in ("pre-trained", "fine-tuned"))
    same: bool | None = None
    if None not in (a0, a1, p0, p1):
        da, dp = _sign(a1 - a0), _sign(p1 - p0)  # type: ignore[operator]
        same = None if da == 0 or dp == 0 else da == dp
    d = delta[["longname", "delta"]].dropna().reset_index(drop=True)
    order = d["delta"].abs().sort_values(ascending=False, kind="stable").index[:top]
    return {
        "alpha_mean_in_2_6_before": _in_band(a0),
        "alpha_mean_in_2_6_after": _in_band(a1),
        "top_delta_alpha_layers": [str(d.at[i, "longname"]) for i in order],
        "top_delta_alpha": [float(d.at[i, "delta"]) for i in order],
        "alpha_ppl_same_direction": same,
    }


def _band_word(alpha: float | None) -> str:
    if alpha is None:
        return "no fit"
    if alpha < LOW:
        return f"no, {alpha:.3f} < 2"
    if alpha > HIGH:
        return f"no, {alpha:.3f} > 6"
    return f"yes, {alpha:.3f}"


def answer_sentences(stages: pd.DataFrame, delta: pd.DataFrame,
                     history: Sequence[Mapping[str, Any]],
                     params: int | None = None) -> list[str]:
    """The answers as report sentences, one paragraph each.

    >>> stages = pd.DataFrame({"stage": ["pre-trained", "fine-tuned"],
    ...                        "mean_alpha": [6.4, 5.9], "perplexity": [27.1, 20.9]})
    >>> delta = pd.DataFrame({"longname": ["a.q", "a.v"], "delta": [-0.5, 0.1]})
    >>> for s in answer_sentences(stages, delta, [{"loss": 3.0}, {"loss": 2.0}], params=1234):
    ...     print(s)  # doctest: +NORMALIZE_WHITESPACE
    The model fine-tuned has 1,234 trainable parameters; the mean training loss over its
    2 steps (the homework's `train_result.training_loss`) is 2.5000.
    Is the mean α inside 2–6 (Q1b)? Before fine-tuning: no, 6.400 > 6; after: yes, 5.900.
    Layers that moved most (largest |Δα|): a.q (-0.500, down: heavier tail),
    a.v (+0.100, up: lighter tail).
    Mean α fell by 0.500 and perplexity fell by 6.200 (27.100 → 20.900):
    they moved the same way.
    """
    a = homework_answers(stages, delta)
    rows = stages.set_index("stage")
    a0, a1 = (_finite(rows["mean_alpha"].get(s)) for s in ("pre-trained", "fine-tuned"))
    p0, p1 = (_finite(rows["perplexity"].get(s)) for s in ("pre-trained", "fine-tuned"))
    out = []
    loss = mean_train_loss(history)
    n = sum(1 for r in history if r.get("kind", "train") == "train")
    head = (f"The model fine-tuned has {params:,} trainable parameters; the mean"
            if params is not None else "The mean")
    if loss is not None:
        out.append(f"{head} training loss over its {n} step{'' if n == 1 else 's'} (the homework's "
                   f"`train_result.training_loss`) is {loss:.4f}.")
    elif params is not None:
        out.append(f"The model fine-tuned has {params:,} trainable parameters; it took no step.")
    out.append(f"Is the mean α inside 2–6 (Q1b)? Before fine-tuning: {_band_word(a0)}; "
               f"after: {_band_word(a1)}.")
    if a["top_delta_alpha_layers"]:
        parts = [f"{name} ({v:+.3f}, " + ("up: lighter tail" if v > 0 else
                                          "down: heavier tail" if v < 0 else "unchanged") + ")"
                 for name, v in zip(a["top_delta_alpha_layers"], a["top_delta_alpha"],
                                    strict=True)]
        out.append("Layers that moved most (largest |Δα|): " + ", ".join(parts) + ".")
    else:
        out.append("No layer had a power-law fit both before and after training.")
    if None in (a0, a1, p0, p1):
        out.append("Whether perplexity and α moved together cannot be told: a value is missing.")
    else:
        def moved(name: str, x0: float, x1: float) -> str:
            verb = "rose" if x1 > x0 else "fell" if x1 < x0 else "did not change"
            d = abs(x1 - x0)  # a tiny change keeps 2 significant digits, never "0.000"
            return f"{name} {verb}" + (f" by {d:.3f}" if d >= 1e-3 else f" by {d:.2g}"
                                       if d else "")

        same = a["alpha_ppl_same_direction"]
        verdict = ("they moved the same way" if same else "they moved in opposite directions"
                   if same is False else "one of them did not move")
        out.append(f"{moved('Mean α', a0, a1)} and {moved('perplexity', p0, p1)} "  # type: ignore[arg-type]
                   f"({p0:.3f} → {p1:.3f}): {verdict}.")
    return out
