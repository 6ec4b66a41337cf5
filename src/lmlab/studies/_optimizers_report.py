"""The optimizers study's numbers over seeds, as the figures and the report show them.

>>> import pandas as pd
>>> t = pd.DataFrame({"optimizer": ["sgd"], "seeds": [2], "loss_noise": [0.3],
...                   "loss_noise_std": [0.05], "parameters": [10]})
>>> shown_table(t).to_dict("records")
[{'optimizer': 'sgd', 'seeds': 2, 'loss_noise': '0.3 ± 0.05', 'parameters': 10}]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from lmlab.studies._seeds import spread_text

if TYPE_CHECKING:
    from lmlab.studies.optimizers import Config, Result

__all__ = ["MEASURED", "noise_text", "over_seeds_text", "rolling_noise", "seeded",
           "shown_table"]

#: The numbers measured per run, reduced over seeds to a mean and a spread.
MEASURED = ["final_train_loss", "val_perplexity", "loss_noise", "seconds"]


def seeded(df: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """``df`` with a ``seed`` column (a result saved before seeds had one: ``cfg.seed``)."""
    return df if "seed" in df else df.assign(seed=cfg.seed)


def over_seeds_text(cfg: Config, *, band: bool = True) -> str:
    """A sentence on the seeds that ran (and what the band or the ± means)."""
    if cfg.seeds == 1:
        return f" One run per optimiser (seed {cfg.seed})."
    what = ("the band spans their minimum to maximum" if band else "a seed sets the data "
            "order; numbers are the mean ± the sample standard deviation over seeds")
    return f" Mean over {cfg.seeds} seeds ({cfg.seed} to {cfg.seed + cfg.seeds - 1}); {what}."


def rolling_noise(history: pd.DataFrame, window: int) -> pd.DataFrame:
    """The loss noise at every step of every run (``optimizer``, ``seed``, ``step``)."""
    from lmlab.train.noise import rolling_loss_noise

    parts = []
    for _, g in history.groupby(["optimizer", "seed"], sort=False):
        g = g.sort_values("step")
        parts.append(g.assign(loss_noise=rolling_loss_noise(g["loss"].to_numpy(), window)))
    return pd.concat(parts)[["optimizer", "seed", "step", "loss_noise"]]


def shown_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table with each measured mean and its spread in one ``mean ± std`` cell."""
    shown: dict[str, Any] = {"optimizer": table["optimizer"],
                             "seeds": table["seeds"] if "seeds" in table else 1}
    for col in MEASURED:
        if col in table:
            spread = table.get(f"{col}_std", pd.Series(float("nan"), index=table.index))
            shown[col] = [spread_text(m, sd) for m, sd in zip(table[col], spread, strict=True)]
    shown["parameters"] = table["parameters"]
    return pd.DataFrame(shown)


def noise_text(result: Result) -> str:
    """The loss noise of each optimiser, and SGD against AdamW seed by seed."""
    cfg, t = result.config, result.table
    text = (f"**Loss noise** (the sample standard deviation of the last {cfg.noise_window} "
            "step-to-step changes of the training loss; the source's claim: SGD is noisier): "
            + "; ".join(f"{o} {spread_text(m, sd)}" for o, m, sd in
                        zip(t["optimizer"], t["loss_noise"], t["loss_noise_std"], strict=True))
            + ". It is the spread of the changes around their mean over the window: a descent "
            "in uneven steps counts as noise too, so a fast optimiser can score higher.")
    by = {str(o).lower(): g.set_index("seed")["loss_noise"] for o, g in
          result.runs.groupby("optimizer", sort=False)}
    if "sgd" in by and "adamw" in by:
        noisier, n = int((by["sgd"] > by["adamw"]).sum()), len(by["sgd"])
        text += f" SGD's loss noise is above AdamW's in {noisier} of {n} seed{'s' * (n > 1)}."
    return text
