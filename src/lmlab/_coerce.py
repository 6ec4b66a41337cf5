"""Type coercion for typed configs: annotations resolved, strings and JSON values converted.

This is the machinery behind :mod:`lmlab.config`; it raises :class:`BadValue` (naming the
expected type) and leaves the user-facing message to the caller.

>>> convert("[1, 2]", tuple[int, ...])
(1, 2)
>>> type_name(int | None)
'int or None'
>>> type_name(int | None, Range(1, 100))
'int in [1, 100] or None'
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from lmlab.runtime import MAX_SEED

__all__ = [
    "MAX_SEED",
    "BadValue",
    "Range",
    "SectionAssigned",
    "convert",
    "field_range",
    "field_types",
    "init_fields",
    "is_config_class",
    "is_union",
    "non_finite",
    "numbers",
    "ranged",
    "seed_field",
    "section_class",
    "type_name",
    "unquote",
]


_TRUE = frozenset({"true", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "0", "no", "n", "off"})
_NONE = frozenset({"none", "null"})


class BadValue(Exception):
    """A value that does not fit a type; carries the human name of the expected type."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def _num(x: float) -> str:
    """A bound as the user would type it: ``1``, ``0.5``, ``1e7``, ``4294967295``."""
    if float(x).is_integer():
        n = int(x)
        digits = str(abs(n))
        if abs(n) >= 10**5 and digits.rstrip("0") == "1":
            return f"{'-' if n < 0 else ''}1e{len(digits) - 1}"
        return str(n)
    return f"{x:g}"


@dataclass(frozen=True)
class Range:
    """The valid values of a number field (of each number, for a tuple field).

    Attributes:
        lo, hi: the bounds (None: unbounded on that side).
        open_lo, open_hi: whether the bound itself is excluded.
        why: what the upper bound is for (memory, time), shown with it.

    >>> str(Range(0, 1, open_hi=True)), str(Range(0, open_lo=True)), 0 in Range(0, open_lo=True)
    ('in [0, 1)', '> 0', False)
    """

    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    open_hi: bool = False
    why: str = ""

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return True  # not a number: the type check speaks for it
        if self.lo is not None and (value < self.lo or (self.open_lo and value == self.lo)):
            return False
        return not (self.hi is not None
                    and (value > self.hi or (self.open_hi and value == self.hi)))

    def __str__(self) -> str:
        if self.lo is not None and self.hi is not None:
            return (f"in {'(' if self.open_lo else '['}{_num(self.lo)}, {_num(self.hi)}"
                    f"{')' if self.open_hi else ']'}")
        if self.lo is not None:
            return f"{'>' if self.open_lo else '≥'} {_num(self.lo)}"
        if self.hi is not None:
            return f"{'<' if self.open_hi else '≤'} {_num(self.hi)}"
        return "any number"

    def above(self, value: float) -> bool:
        """Whether ``value`` is out of range on the high side (where ``why`` applies)."""
        return self.hi is not None and (value > self.hi or (self.open_hi and value == self.hi))


def ranged(default: Any, lo: float | None = None, hi: float | None = None, *,
           open_lo: bool = False, open_hi: bool = False, why: str = "",
           doc: str | None = None) -> Any:
    """A dataclass field whose valid range is declared with it (for a tuple: of each item).

    Checked whenever a config is built (:func:`lmlab.config.apply_overrides`,
    :func:`lmlab.config.config_from_dict`) and by :func:`lmlab.config.check_ranges`;
    ``lmlab study show`` prints it next to the type.

    Args:
        default: The default value.
        lo, hi: The bounds (None: unbounded on that side).
        open_lo, open_hi: Exclude the bound itself (``> 0`` rather than ``≥ 0``).
        why: What the upper bound is for (memory, time); said in errors and the reference.
        doc: The field's meaning, when the class's ``Attributes:`` section does not give it.

    >>> @dataclass(frozen=True)
    ... class C:
    ...     rate: float = ranged(0.5, 0, 1, open_lo=True)
    >>> str(field_range(dataclasses.fields(C)[0]))
    'in (0, 1]'
    """
    metadata: dict[str, Any] = {"range": Range(lo, hi, open_lo, open_hi, why)}
    if doc:
        metadata["doc"] = doc
    return dataclasses.field(default=default, metadata=metadata)


def seed_field(default: int, doc: str | None = None) -> Any:
    """A seed: an int in ``[0, 2**32 - 1]``, what :func:`lmlab.runtime.seed_everything` and
    NumPy accept."""
    return ranged(default, 0, MAX_SEED, why="the largest seed NumPy accepts", doc=doc)


def field_range(f: dataclasses.Field[Any]) -> Range | None:
    """The range declared for a dataclass field (by :func:`ranged`), or None."""
    rule = f.metadata.get("range")
    return rule if isinstance(rule, Range) else None


def numbers(value: Any) -> list[Any]:
    """The numbers a range applies to: the value itself, or the items of a tuple or list.

    >>> numbers((1, 2.5)), numbers(None), numbers(True)
    ([1, 2.5], [], [])
    """
    items = list(value) if isinstance(value, (tuple, list)) else [value]
    return [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]


def is_config_class(tp: Any) -> bool:
    """Whether ``tp`` is a dataclass type (not an instance)."""
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def init_fields(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields of a dataclass that its constructor accepts."""
    return [f for f in dataclasses.fields(cls) if f.init]


@functools.lru_cache(maxsize=256)
def field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of the init fields of a dataclass, in declaration order."""
    localns: dict[str, Any] = {cls.__name__: cls}
    for f in dataclasses.fields(cls):
        default: Any = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory
        if isinstance(default, type):
            localns.setdefault(default.__name__, default)
        elif dataclasses.is_dataclass(default):
            localns.setdefault(type(default).__name__, type(default))
    hints = typing.get_type_hints(cls, localns=localns)
    return {f.name: hints.get(f.name, Any) for f in init_fields(cls)}


def non_finite(value: Any) -> bool:
    """Whether ``value`` is, or holds in a list, tuple or mapping, a NaN or an infinity.

    >>> non_finite((1.0, float("inf"))), non_finite({"a": 0.5})
    (True, False)
    """
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (tuple, list)):
        return any(non_finite(v) for v in value)
    if isinstance(value, Mapping):
        return any(non_finite(v) for v in value.values())
    return False


def is_union(tp: Any) -> bool:
    """Whether ``tp`` is ``X | Y`` or ``Optional[X]``."""
    return get_origin(tp) in (Union, types.UnionType)


def section_class(tp: Any) -> type | None:
    """The dataclass behind a section type (``Sub`` or ``Sub | None``), else None."""
    if is_config_class(tp):
        return tp
    if is_union(tp):
        classes = [a for a in get_args(tp) if is_config_class(a)]
        if len(classes) == 1:
            return classes[0]
    return None


def type_name(tp: Any, rule: Range | None = None) -> str:
    """A short human name for a type, used in error messages and option tables; with
    ``rule``, every number in it carries its range (``int ≥ 1``, ``float in (0, 1)``)."""
    if tp is type(None):
        return "None"
    if is_union(tp):
        return " or ".join(type_name(a, rule) for a in get_args(tp))
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (tuple, list):
        args = get_args(tp)
        if origin is tuple and args and (len(args) != 2 or args[1] is not Ellipsis):
            if rule is not None and len(set(args)) == 1:
                return f"{len(args)} comma-separated values, each {type_name(args[0], rule)}"
            names = ", ".join(type_name(a, rule) for a in args)
            return f"{len(args)} comma-separated values ({names})"
        item = type_name(args[0], rule) if args else "str"
        return f"comma-separated list of {item}"
    if tp is Path:
        return "path"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.name) for m in tp)
    name = getattr(tp, "__name__", str(tp))
    return f"{name} {rule}" if rule is not None and tp in (int, float) else name


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise BadValue("bool (true/false)")


def split_list(text: str) -> list[str]:
    """Split ``"a, b"`` or ``"[a, b]"`` into stripped, unquoted items."""
    text = text.strip()
    if len(text) >= 2 and (text[0], text[-1]) in {("[", "]"), ("(", ")")}:
        text = text[1:-1]
    items = [item.strip() for item in text.split(",")]
    return [unquote(item) for item in items if item]


def unquote(text: str) -> str:
    """Remove one pair of matching single or double quotes around ``text``."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def convert(value: Any, tp: Any) -> Any:
    """Coerce ``value`` (a string from the command line or a JSON/TOML value) to ``tp``."""
    if tp is Any:
        return value
    if is_union(tp):
        args = get_args(tp)
        if type(None) in args and (
            value is None or (isinstance(value, str) and value.strip().lower() in _NONE)
        ):
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(value, arg)
            except BadValue:
                continue
        raise BadValue(type_name(tp))
    if value is None:
        raise BadValue(type_name(tp))
    section = section_class(tp)
    if section is not None:
        if isinstance(value, section):
            return value
        raise SectionAssigned()
    origin = get_origin(tp)
    if origin is Literal:
        for allowed in get_args(tp):
            if _literal_matches(value, allowed):
                return allowed
        raise BadValue(type_name(tp))
    if origin in (tuple, list) or tp in (tuple, list):
        return _convert_sequence(value, tp)
    if tp is bool:
        return _parse_bool(value)
    if tp is int:
        return _parse_int(value)
    if tp is float:
        if isinstance(value, bool):
            raise BadValue("float")
        try:
            return float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise BadValue("float") from None
    if tp is str:
        if isinstance(value, str):
            return value
        raise BadValue("str")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value).expanduser()
        raise BadValue("path")
    if origin is dict or tp is dict:
        return _convert_mapping(value, tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        for member in tp:
            if str(value).strip() in (member.name, str(member.value)):
                return member
        raise BadValue(type_name(tp))
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise BadValue(type_name(tp))


def _literal_matches(value: Any, allowed: Any) -> bool:
    if isinstance(value, str) and not isinstance(allowed, str):
        try:
            return convert(value, type(allowed)) == allowed
        except BadValue:
            return False
    return type(value) is type(allowed) and value == allowed


def _parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise BadValue("int")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            as_float = float(text)
        except ValueError:
            raise BadValue("int") from None
        if math.isfinite(as_float) and as_float.is_integer():
            return int(as_float)
    raise BadValue("int")


def _convert_sequence(value: Any, tp: Any) -> tuple[Any, ...] | list[Any]:
    origin = get_origin(tp) or tp
    args = get_args(tp)
    if isinstance(value, str):
        items: Sequence[Any] = split_list(value)
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise BadValue(type_name(tp))
    try:
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(items) != len(args):
                raise BadValue(type_name(tp))
            converted = [convert(v, a) for v, a in zip(items, args, strict=True)]
        else:
            item_type = args[0] if args else Any
            converted = [convert(v, item_type) for v in items]
    except BadValue:
        raise BadValue(type_name(tp)) from None
    return tuple(converted) if origin is tuple else converted


def _convert_mapping(value: Any, tp: Any) -> dict[Any, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise BadValue("JSON object") from None
    if not isinstance(value, Mapping):
        raise BadValue("JSON object")
    args = get_args(tp)
    if len(args) != 2:
        return dict(value)
    return {convert(k, args[0]): convert(v, args[1]) for k, v in value.items()}


class SectionAssigned(Exception):
    """A scalar was given for a key that names a whole config section."""
