"""A study's ``Result`` saved in its run directory in open formats, and read back.

A result is a dataclass. :func:`save_result` writes it to ``result/`` inside the run
directory: every table (``pandas.DataFrame``) as ``result/<field>.parquet``, every array
(``numpy.ndarray`` or ``torch.Tensor``) as ``result/<field>.npy``, and everything else
(numbers, strings, lists, dicts, the config) in ``result/result.json``, where a table or an
array stands as ``{"$table": file}`` or ``{"$array": file}``. Tables and arrays may also sit
inside dicts and lists. JSON follows the project's one NaN policy: a non-finite float is
written as ``null`` (see :func:`lmlab.runs.io.to_jsonable`); tables and arrays keep NaN.

:func:`read_result` rebuilds the dataclass from those files using its type hints (a field
typed as a config dataclass is rebuilt and validated, a ``tuple`` field becomes a tuple again).
Nothing is unpickled: arrays are read with ``allow_pickle=False``.

>>> import dataclasses, tempfile, numpy as np, pandas as pd
>>> @dataclasses.dataclass(frozen=True)
... class R:
...     table: pd.DataFrame
...     curve: np.ndarray
...     summary: dict
>>> with tempfile.TemporaryDirectory() as tmp:
...     _ = save_result(tmp, R(pd.DataFrame({"x": [1.5]}), np.arange(3.0), {"a": 1}))
...     back = read_result(R, tmp)
>>> back.table.x.tolist(), back.curve.tolist(), back.summary
([1.5], [0.0, 1.0, 2.0], {'a': 1})
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

from lmlab.errors import LmlabError, first_line
from lmlab.runs.io import atomic_write_bytes, atomic_write_json, save_table

__all__ = ["RESULT_DIR", "read_result", "save_result"]

RESULT_DIR = "result"
_INDEX = "result.json"
_FORMAT = 1
T = TypeVar("T")


def _root(run_dir: Any) -> Path:
    return Path(getattr(run_dir, "path", run_dir)).expanduser()


def _file_stem(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path).strip("._") or "value"


def _encode(value: Any, where: str, out: Path) -> Any:
    """JSON for ``value``; tables and arrays go to files named after ``where``."""
    import numpy as np
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        name = f"{_file_stem(where)}.parquet"
        save_table(value, out / name)
        return {"$table": name}
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise LmlabError(f"result field {where} is an object array; store numbers or a table")
        name = f"{_file_stem(where)}.npy"
        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)
        atomic_write_bytes(out / name, buf.getvalue())
        return {"$array": name}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        from lmlab.config import config_to_dict

        return config_to_dict(value)
    if isinstance(value, dict):
        return {str(k): _encode(v, f"{where}.{k}", out) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{where}.{i}", out) for i, v in enumerate(value)]
    return value


def save_result(run_dir: Any, result: Any) -> Path:
    """Write ``result`` (a dataclass) into ``run_dir/result/``; return the index path.

    Raises:
        LmlabError: If ``result`` is not a dataclass or the directory cannot be written.
    """
    if not dataclasses.is_dataclass(result) or isinstance(result, type):
        raise LmlabError(f"a study's run() must return a Result dataclass, got {result!r:.60}")
    out = _root(run_dir) / RESULT_DIR
    fields = {f.name: _encode(getattr(result, f.name), f.name, out)
              for f in dataclasses.fields(result)}
    index = {"format": _FORMAT, "class": f"{type(result).__module__}.{type(result).__qualname__}",
             "fields": fields}
    return atomic_write_json(out / _INDEX, index)


def _decode(value: Any, tp: Any, where: str, base: Path) -> Any:
    """Rebuild one value from its JSON form, guided by the annotated type ``tp``."""
    if isinstance(value, dict) and len(value) == 1 and ("$table" in value or "$array" in value):
        return _read_file(base, value, where)
    origin, args = get_origin(tp), get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        options = [a for a in args if a is not type(None)]
        tp = options[0] if len(options) == 1 else Any
        origin, args = get_origin(tp), get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(value, dict):
        from lmlab.config import config_from_dict

        return config_from_dict(tp, value)
    if isinstance(value, dict):
        sub = args[1] if origin is dict and len(args) == 2 else Any
        return {k: _decode(v, sub, f"{where}.{k}", base) for k, v in value.items()}
    if isinstance(value, list):
        if origin is tuple:
            subs = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
            subs = list(subs) + [Any] * (len(value) - len(subs))
            return tuple(_decode(v, s, f"{where}.{i}", base)
                         for i, (v, s) in enumerate(zip(value, subs, strict=False)))
        sub = args[0] if origin is list and args else Any
        return [_decode(v, sub, f"{where}.{i}", base) for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _read_file(base: Path, ref: dict[str, str], where: str) -> Any:
    import numpy as np
    import pandas as pd

    name = str(ref.get("$table") or ref.get("$array"))
    path = base / name
    if Path(name).name != name or not path.is_file():
        raise LmlabError(f"the saved result lacks {path} (field {where}); run the study again")
    try:
        if "$table" in ref:
            return pd.read_parquet(path)
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise LmlabError(f"cannot read {path} (field {where}): {first_line(exc)}; the file is "
                         "corrupt, run the study again") from None


def _hints(cls: type) -> dict[str, Any]:
    """The resolved field types of ``cls`` (``Any`` where a hint cannot be resolved)."""
    import numpy as np
    import pandas as pd

    try:
        return typing.get_type_hints(cls, localns={"pd": pd, "np": np, "Any": Any})
    except (NameError, TypeError, AttributeError):
        return {}


def read_result(cls: type[T], run_dir: Any) -> T:
    """Rebuild a ``cls`` dataclass saved by :func:`save_result` in ``run_dir``.

    Raises:
        LmlabError: If the result is missing, corrupt, or saved by another class.
    """
    base = _root(run_dir) / RESULT_DIR
    index_path = base / _INDEX
    if not index_path.is_file():
        raise LmlabError(f"{_root(run_dir)} has no saved result ({RESULT_DIR}/{_INDEX}); it was "
                         "written by an older lmlab or did not finish: run the study again")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        fields = index["fields"]
        if not isinstance(fields, dict):
            raise TypeError("'fields' is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LmlabError(f"{index_path} is corrupt ({type(exc).__name__}); run the study "
                         "again") from None
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in fields:
            kwargs[f.name] = _decode(fields[f.name], hints.get(f.name, Any), f.name, base)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise LmlabError(f"{index_path} lacks the field '{f.name}' of {cls.__name__}; it "
                             "was saved by another version of lmlab: run the study again")
    return cls(**kwargs)

