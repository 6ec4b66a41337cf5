"""Dotted keys: nested tables flattened to ``a.b.c`` and back, and the diff of two configs.

>>> flatten_dotted({"train": {"lr": 0.1}})
{'train.lr': 0.1}
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

__all__ = ["config_diff", "flatten_dotted"]


def flatten_dotted(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as one level with dotted keys (the inverse of how ``--set`` keys nest).

    >>> flatten_dotted({"train": {"lr": 0.1, "steps": 5}, "seed": 0})
    {'train.lr': 0.1, 'train.steps': 5, 'seed': 0}
    """
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            out.update(flatten_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any], *,
                ignore: Collection[str] = ()) -> list[str]:
    """The dotted keys whose values differ between two config dicts, one line each.

    Both sides are flattened with :func:`flatten_dotted` (nested or dotted keys alike); a key
    missing on one side counts as ``None`` there. Top-level metadata keys (``_study``,
    ``_preset``: any key starting with ``_``) and the keys in ``ignore`` are skipped.

    Args:
        old: The saved config, e.g. a run's ``config.json``.
        new: The config wanted now, e.g. ``config_to_dict(cfg)``.
        ignore: Dotted keys not compared (e.g. an output folder).

    Returns:
        Lines ``"key: <old> in the run, <new> now"`` in sorted key order; empty if equal.

    >>> config_diff({"_study": "a", "train": {"lr": 0.1, "steps": 5}, "seed": 0},
    ...             {"_study": "b", "train.lr": 0.2, "train.steps": 5, "seed": 0})
    ['train.lr: 0.1 in the run, 0.2 now']
    """
    a, b = flatten_dotted(old), flatten_dotted(new)
    skip = set(ignore)
    return [f"{key}: {a.get(key)!r} in the run, {b.get(key)!r} now"
            for key in sorted(set(a) | set(b))
            if not key.startswith("_") and key not in skip and a.get(key) != b.get(key)]


def _expand_dotted(d: Mapping[str, Any]) -> dict[str, Any]:
    """Turn ``{"train.lr": 1}`` into ``{"train": {"lr": 1}}``, merging tables deeply.

    >>> _expand_dotted({"a.b.c": 1, "a.b.d": 2, "a": {"e": 3}})
    {'a': {'b': {'c': 1, 'd': 2}, 'e': 3}}
    """
    out: dict[str, Any] = {}
    for key, value in d.items():
        head, dot, rest = str(key).partition(".")
        if dot:
            value = {rest: value}
        if isinstance(value, Mapping):
            value = _expand_dotted(value)
            if isinstance(out.get(head), dict):
                out[head] = _merge(out[head], value)
                continue
        out[head] = value
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
