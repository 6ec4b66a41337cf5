"""The one JSON normaliser: every JSON file lmlab writes goes through :func:`to_jsonable`.

NaN policy: every JSON file lmlab writes is strict JSON, and a non-finite float (NaN, +inf,
-inf) is written as ``null``: ``config.json``, ``meta.json``, ``summary.json``,
``metrics.jsonl``, ``result/result.json``, ``report.json``, JSON tables, a sweep's
``cells.jsonl`` and the theory cache alike. Readers get ``None`` back where a non-finite number
was (in a pandas column: NaN); a reader that needs a float puts NaN there. Parquet tables and
``.npy`` arrays keep NaN and infinities as they are. Configs never hold non-finite numbers:
:mod:`lmlab.config` rejects them when a config is built, so a saved ``config.json`` always
reads back to the same config. :mod:`lmlab.runs.io` writes the files (and re-exports
:func:`to_jsonable`).

>>> _dumps({"loss": float("nan")}, indent=None)
'{"loss": null}'
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["to_jsonable"]


def _json_key(key: Any) -> str:
    """A mapping key as ``json.dumps`` writes it (``true``, ``null``, ``1``), else ``str``."""
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool):
        return json.dumps(key)
    return str(key)


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values, under lmlab's one NaN policy (see the module docstring).

    Non-finite floats become ``None``; tuples and sets become lists (sets sorted by ``repr``,
    so equal sets give equal JSON in every process); mapping keys become strings as
    ``json.dumps`` writes them; paths become strings, enums their value, dataclasses dicts of
    their fields. NumPy and torch scalars and arrays are converted with ``.tolist()`` /
    ``.item()``; pandas' missing values become ``None``; timestamps ``.isoformat()``;
    anything else ``str(obj)``.

    Args:
        obj: Any value.

    Returns:
        A value that ``json.dumps(..., allow_nan=False)`` accepts.

    >>> to_jsonable({"loss": float("nan"), "shape": (2, 3), 1: {"b", "a"}, None: -math.inf})
    {'loss': None, 'shape': [2, 3], '1': ['a', 'b'], 'null': None}
    """
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):  # NumPy's float64 too, as a plain float
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {_json_key(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return [to_jsonable(v) for v in sorted(obj, key=repr)]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy / torch arrays and scalars
        return to_jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):
        return to_jsonable(obj.item())
    if type(obj).__name__ in ("NAType", "NaTType"):  # pandas missing values
        return None
    if hasattr(obj, "isoformat") and callable(obj.isoformat):
        return obj.isoformat()
    return str(obj)


def _dumps(obj: Any, indent: int | None) -> str:
    return json.dumps(
        to_jsonable(obj), indent=indent, sort_keys=False, allow_nan=False, ensure_ascii=False
    )
