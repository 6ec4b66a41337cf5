"""``err_arr.json`` in every layout met, read into one DataFrame indexed by ``epoch``.

* the authors' dense list of one record per step (``synthetic-experiments/train.py::
  train_infinite``: ``{"epoch", "loss_train", "err_train", "loss_test", "err_test",
  "loss_ood", "err_ood"}`` for ``epoch = 0 … num_epoch − 1``, dumped by ``main.py``);
* lmlab's sparse list of records (every ``eval_every`` steps, ``epoch = −1`` for the initial
  weights with ``null`` training errors, ``"full": true`` entries with ``*_nofloor`` errors);
* a dict of columns, or a list of rows of 6 numbers (the authors' in-memory ``err_arr``:
  ``loss_train, err_train, loss_test, err_test, loss_ood, err_ood`` per step) or 7 (epoch
  first).

Entry ``epoch = k − 1`` belongs to the weights of ``ckpt_k.pt``; :func:`read_err_arr` has
the example.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmlab.errors import LmlabError, first_line

__all__ = ["ERR_COLUMNS", "read_err_arr"]

ERR_COLUMNS = ("loss_train", "err_train", "loss_test", "err_test", "loss_ood", "err_ood",
               "err_test_nofloor", "err_ood_nofloor")
"""Error columns of the measurement table (the last two only in lmlab's full evaluations)."""
_ROW_COLUMNS = ERR_COLUMNS[:6]          # the authors' in-memory err_arr column order


def _read_json(path: Path) -> Any:
    from lmlab._files import regular_file

    regular_file(path, hint="give the JSON file the run wrote")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LmlabError(f"cannot read {path}: {first_line(exc)}") from None


def _numeric(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    for col in df.columns:
        if col == "full":
            df[col] = df[col].map(lambda v: v is True)
            continue
        try:
            df[col] = pd.to_numeric(df[col].map(lambda v: np.nan if v is None else v),
                                    errors="raise").astype(np.float64)
        except (ValueError, TypeError):
            if col in ERR_COLUMNS or col == "epoch":
                raise LmlabError(f"{path}: column {col!r} holds values that are not numbers"
                                 ) from None
            df = df.drop(columns=col)  # an extra column of text is not ours to read
    return df


def read_err_arr(path: str | Path) -> pd.DataFrame:
    """``err_arr.json`` as a DataFrame indexed by ``epoch`` (float columns, NaN where absent).

    Layouts (module docstring): a list of records (dense or sparse; without ``"epoch"`` the
    position is the epoch), a dict of columns (``"epoch"`` optional), or a list of rows of 6
    numbers (the authors' ``err_arr`` order) or 7 (``epoch`` first). When an epoch appears
    twice, the entry marked ``"full": true`` wins, else the last one. Entry ``epoch = k − 1``
    belongs to the weights of ``ckpt_k.pt``.

    Raises:
        LmlabError: the file is missing, not JSON, or in none of these layouts.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = Path(tmp) / "err_arr.json"
    ...     _ = p.write_text('[{"epoch": 0, "err_ood": 0.9}, {"epoch": 1, "err_ood": 0.5}]')
    ...     read_err_arr(p)["err_ood"].tolist()
    [0.9, 0.5]
    """
    path = Path(path)
    data = _read_json(path)
    layout = ("a list of {'epoch': …, 'err_test': …} records, a dict of columns, or a list "
              "of rows of 6 numbers")
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        lengths = {len(v) for v in data.values()}
        if len(lengths) != 1:
            raise LmlabError(f"{path}: its columns have different lengths {sorted(lengths)}")
        df = pd.DataFrame(data)
    elif isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        df = pd.DataFrame.from_records(data)
    elif isinstance(data, list) and data and all(isinstance(r, list) for r in data):
        widths = {len(r) for r in data}
        if widths == {6}:
            df = pd.DataFrame(data, columns=list(_ROW_COLUMNS))
        elif widths == {7}:
            df = pd.DataFrame(data, columns=["epoch", *_ROW_COLUMNS])
        else:
            raise LmlabError(f"{path}: rows of {sorted(widths)} numbers; expected {layout}")
    elif isinstance(data, list) and not data:
        return pd.DataFrame(columns=list(ERR_COLUMNS), dtype=np.float64,
                            index=pd.Index([], name="epoch", dtype=np.int64))
    else:
        raise LmlabError(f"{path} is not an err_arr: expected {layout}")
    if "epoch" not in df:
        df.insert(0, "epoch", np.arange(len(df)))
    if not any(c in df for c in ERR_COLUMNS):
        raise LmlabError(f"{path} has none of the columns {list(_ROW_COLUMNS)}")
    df = _numeric(df, path)
    if df["epoch"].isna().any() or (df["epoch"] % 1 != 0).any():
        raise LmlabError(f"{path}: 'epoch' must be whole numbers")
    df["epoch"] = df["epoch"].astype(np.int64)
    df["_full"] = df["full"].astype(bool) if "full" in df else False
    df = df.sort_values(["epoch", "_full"], kind="stable")
    df = df.drop_duplicates("epoch", keep="last").drop(columns="_full")
    return df.set_index("epoch")
