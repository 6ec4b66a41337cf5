"""Typed configs: frozen dataclasses, ``key=value`` overrides, dict and file round-trips.

A config is a frozen dataclass whose fields may themselves be frozen dataclasses (sections).
Leaf keys are addressed by dotted paths such as ``train.lr``. Every value coming from the user
(an override string, a TOML or JSON file) is checked and coerced against the field's annotated
type, and any mistake raises :class:`~lmlab.errors.LmlabError` with a one-line message that
names the nearest valid key or the expected type.

>>> from dataclasses import dataclass, field
>>> @dataclass(frozen=True)
... class Train:
...     lr: float = 0.1
...     steps: int = 10
>>> @dataclass(frozen=True)
... class Cfg:
...     seed: int = 0
...     train: Train = field(default_factory=Train)
>>> apply_overrides(Cfg(), ["train.lr=0.5", "seed=3"])
Cfg(seed=3, train=Train(lr=0.5, steps=10))
>>> config_keys(Cfg)
['seed', 'train.lr', 'train.steps']
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, get_args

from lmlab._coerce import (
    MAX_SEED,
    BadValue,
    Range,
    SectionAssigned,
    convert,
    field_range,
    field_types,
    init_fields,
    is_config_class,
    is_union,
    non_finite,
    numbers,
    ranged,
    section_class,
    seed_field,
    unquote,
)
from lmlab._dotted import _expand_dotted, config_diff, flatten_dotted
from lmlab.errors import LmlabError

__all__ = [
    "MAX_SEED",
    "Range",
    "apply_overrides",
    "check_ranges",
    "flatten_dotted",
    "config_diff",
    "config_from_dict",
    "config_keys",
    "config_to_dict",
    "load_config_file",
    "ranged",
    "read_settings_file",
    "seed_field",
]

T = TypeVar("T")

MAX_TEXT = 4096
"""The longest string a config field takes (PATH_MAX on Linux)."""


def _coerce_or_raise(value: Any, tp: Any, key: str, root: type) -> Any:
    try:
        converted = convert(value, tp)
    except BadValue as exc:
        shown = value if isinstance(value, str) else json.dumps(value, default=str)
        raise LmlabError(
            f"invalid value for '{key}': expected {exc.expected}, got {shown!r}"
        ) from None
    except SectionAssigned:
        raise _section_error(key, root) from None
    _check_finite(converted, key, shown=value)
    return converted


def _check_finite(value: Any, key: str, shown: Any = None) -> None:
    """Reject NaN and infinities (JSON has none: see the NaN policy of :mod:`lmlab.runs.io`).

    No config field needs one; ``None`` is how a config says "no limit".
    """
    if non_finite(value):
        shown = value if shown is None else shown
        raise LmlabError(f"'{key}' must be a finite number, got {shown!r}")


def check_ranges(cfg: Any, prefix: str = "") -> None:
    """Check the values of ``cfg``'s own fields (not its sections): finite numbers, each in
    its declared range, and strings neither empty nor longer than ``MAX_TEXT``.

    A class's ``validate()`` may call it first, so that its cross-field rules can count on
    every single value being in range.

    Raises:
        LmlabError: ``'train.lr' must be > 0, got -1.0``.

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Train:
    ...     lr: float = ranged(0.1, 0, open_lo=True)
    ...     steps: int = ranged(10, 1, 10**7, why="kept in memory")
    >>> check_ranges(Train(steps=10**9), prefix="train.")
    Traceback (most recent call last):
    ...
    lmlab.errors.LmlabError: 'train.steps' must be in [1, 1e7], got 1000000000 (kept in memory)
    """
    cls: type = type(cfg)
    hints = field_types(cls)
    for f in init_fields(cls):
        value = getattr(cfg, f.name, None)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            continue
        key = prefix + f.name
        _check_finite(value, key)
        rule = field_range(f)
        bad = [x for x in numbers(value) if x not in rule] if rule is not None else []
        if rule is not None and bad:
            what = f"'{key}' values" if isinstance(value, (tuple, list)) else f"'{key}'"
            why = f" ({rule.why})" if rule.why and rule.above(bad[0]) else ""
            raise LmlabError(f"{what} must be {rule}, got {bad[0]!r}{why}")
        if isinstance(value, str) and not value.strip() and not f.metadata.get("empty_ok"):
            tp = hints.get(f.name)
            hint = ", or none" if is_union(tp) and type(None) in get_args(tp) else ""
            raise LmlabError(f"'{key}' is empty; give a value{hint} (lmlab study show lists "
                             "what each key takes)")
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise LmlabError(f"'{key}' is {len(value)} characters long; at most {MAX_TEXT} (no "
                             "path, name or template needs more)")


def _leaf_keys(cls: type, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, tp in field_types(cls).items():
        section = section_class(tp)
        if section is None:
            keys.append(prefix + name)
        else:
            keys.extend(_leaf_keys(section, prefix + name + "."))
    return keys


def config_keys(cls_or_cfg: Any) -> list[str]:
    """All dotted leaf keys of a config class or instance, in declaration order.

    Args:
        cls_or_cfg: A dataclass type or instance.

    Returns:
        Keys such as ``["seed", "train.lr"]``; sections themselves are not listed.

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class C:
    ...     a: int = 1
    >>> config_keys(C())
    ['a']
    """
    cls = cls_or_cfg if isinstance(cls_or_cfg, type) else type(cls_or_cfg)
    if not is_config_class(cls):
        raise TypeError(f"expected a dataclass config, got {cls!r}")
    return _leaf_keys(cls)


def _unknown_key_error(key: str, root: type) -> LmlabError:
    keys = _leaf_keys(root)
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    if not close:
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in keys}
        close = [by_leaf[m] for m in difflib.get_close_matches(leaf, list(by_leaf), n=3)]
    if close:
        hint = " or ".join(f"'{k}'" for k in close)
        return LmlabError(f"unknown config key '{key}'; did you mean {hint}?")
    return LmlabError(f"unknown config key '{key}'; valid keys are: {', '.join(keys)}")


def _section_error(key: str, root: type) -> LmlabError:
    example = next((k for k in _leaf_keys(root) if k.startswith(key + ".")), key + ".<field>")
    return LmlabError(
        f"'{key}' is a config section, not a value; set one of its keys, e.g. '{example}=...'"
    )


def _resolve_key(root: type, key: str) -> Any:
    """The annotated type of a dotted leaf key, or an LmlabError naming the nearest key."""
    parts = key.split(".")
    cls: type = root
    for i, part in enumerate(parts):
        hints = field_types(cls)
        if part not in hints:
            raise _unknown_key_error(key, root)
        tp = hints[part]
        section = section_class(tp)
        if i == len(parts) - 1:
            if section is not None and not (is_union(tp) and type(None) in get_args(tp)):
                raise _section_error(key, root)
            return tp
        if section is None:
            raise _unknown_key_error(key, root)
        cls = section
    raise _unknown_key_error(key, root)  # pragma: no cover - loop always returns


def _validate(cfg: Any, prefix: str = "") -> None:
    """Check every section (innermost first), then every value of the config (finite, in its
    declared range, not empty), then run its ``validate()`` (the cross-field rules)."""
    for f in init_fields(type(cfg)):
        value = getattr(cfg, f.name, None)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _validate(value, f"{prefix}{f.name}.")
    check_ranges(cfg, prefix)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as exc:
            raise LmlabError(f"invalid config: {exc}") from exc


def _replace(cfg: Any, updates: dict[tuple[str, ...], Any]) -> Any:
    direct: dict[str, Any] = {}
    nested: dict[str, dict[tuple[str, ...], Any]] = {}
    for path, value in updates.items():
        if len(path) == 1:
            direct[path[0]] = value
        else:
            nested.setdefault(path[0], {})[path[1:]] = value
    for name, sub_updates in nested.items():
        current = getattr(cfg, name)
        if current is None:
            section = section_class(field_types(type(cfg))[name])  # type: ignore[arg-type]
            assert section is not None
            try:
                current = section()
            except TypeError as exc:
                raise LmlabError(
                    f"cannot fill the empty section '{name}' from defaults: {exc}"
                ) from exc
        direct[name] = _replace(current, sub_updates)
    try:
        return dataclasses.replace(cfg, **direct)
    except ValueError as exc:
        raise LmlabError(f"invalid config: {exc}") from exc


def apply_overrides(cfg: T, overrides: Sequence[str]) -> T:
    """Return a copy of ``cfg`` with ``key=value`` overrides applied and validated.

    Values are coerced to each field's annotated type: int, float, bool (true/false/1/0/yes/no),
    str, Path, ``X | None`` (``none``/``null``), ``Literal[...]`` and tuples (comma-separated,
    optionally in brackets). Afterwards every section's and the config's ``validate()`` runs.

    Args:
        cfg: A frozen dataclass config.
        overrides: Strings such as ``"train.lr=0.01"``; later ones win.

    Returns:
        A new config of the same type.

    Raises:
        LmlabError: On a malformed override, an unknown key (naming the nearest valid key), a
            value that does not parse, an assignment to a whole section, or a failed validation.

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class C:
    ...     widths: tuple[int, ...] = (1,)
    >>> apply_overrides(C(), ["widths=[8, 16]"]).widths
    (8, 16)
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"expected a dataclass config instance, got {cfg!r}")
    if isinstance(overrides, str):
        overrides = [overrides]
    root = type(cfg)
    updates: dict[tuple[str, ...], Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise LmlabError(f"bad override {item!r}; use the form key=value, e.g. train.lr=0.01")
        tp = _resolve_key(root, key)
        value = _coerce_or_raise(unquote(raw.strip()), tp, key, root)
        path = tuple(key.split("."))
        for existing in [p for p in updates if p[: len(path)] == path or path[: len(p)] == p]:
            del updates[existing]
        updates[path] = value
    new = _replace(cfg, updates) if updates else cfg
    _validate(new)
    return new


def _sections_as_dicts(value: Any) -> Any:
    """Sections as dicts of their constructor fields, enums as their names; the rest as is."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _sections_as_dicts(getattr(value, f.name))
                for f in init_fields(type(value))}
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, (tuple, list)):
        return [_sections_as_dicts(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _sections_as_dicts(v) for k, v in value.items()}
    return value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-safe nested dict of a config (tuples become lists, paths strings).

    Values go through :func:`lmlab.runs.io.to_jsonable`, the normaliser of every JSON file
    lmlab writes; a config never holds NaN or infinities (they are rejected when it is built
    by :func:`apply_overrides` or :func:`config_from_dict`), so the dict reads back to an
    equal config.

    Args:
        cfg: A dataclass config instance.

    Returns:
        A dict of plain Python values.

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class C:
    ...     sizes: tuple[int, ...] = (2, 4)
    >>> config_to_dict(C())
    {'sizes': [2, 4]}
    """
    from lmlab.runs.io import to_jsonable  # lmlab.runs imports this module: import on use

    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"expected a dataclass config instance, got {cfg!r}")
    result: dict[str, Any] = to_jsonable(_sections_as_dicts(cfg))
    return result


def _from_mapping(cls: type, d: Mapping[str, Any], prefix: str, root: type | None) -> Any:
    root = root or cls
    hints = field_types(cls)
    kwargs: dict[str, Any] = {}
    for name, value in _expand_dotted(d).items():
        if not prefix and name.startswith("_"):
            continue  # top-level metadata such as "_study" / "_preset"
        key = prefix + name
        if name not in hints:
            raise _unknown_key_error(key, root)
        tp = hints[name]
        section = section_class(tp)
        if section is not None and isinstance(value, Mapping):
            kwargs[name] = _from_mapping(section, value, key + ".", root)
        else:
            kwargs[name] = _coerce_or_raise(value, tp, key, root)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        missing = [
            prefix + f.name
            for f in init_fields(cls)
            if f.name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise LmlabError(
                f"config is missing required key(s): {', '.join(missing)}; add them"
            ) from exc
        raise
    except ValueError as exc:
        raise LmlabError(f"invalid config: {exc}") from exc


def config_from_dict(cls: type[T], d: Mapping[str, Any]) -> T:
    """Build a config from a (possibly partial) nested dict, checking every key and value.

    Missing keys keep their defaults; lists become tuples; keys may also be dotted
    (``{"train.lr": 0.1}``). Top-level keys starting with ``_`` are metadata and are skipped.

    Args:
        cls: The config dataclass.
        d: A mapping as produced by :func:`config_to_dict` or read from a file.

    Returns:
        A validated config instance.

    Raises:
        LmlabError: On an unknown key (naming the nearest valid key) or a bad value.

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class C:
    ...     sizes: tuple[int, ...] = ()
    >>> config_from_dict(C, {"sizes": [1, 2]})
    C(sizes=(1, 2))
    """
    if not is_config_class(cls):
        raise TypeError(f"expected a dataclass config class, got {cls!r}")
    if not isinstance(d, Mapping):
        raise LmlabError(f"a config must be a table of key/value pairs, got {type(d).__name__}")
    cfg: T = _from_mapping(cls, d, prefix="", root=cls)
    _validate(cfg)
    return cfg


def load_config_file(cls: type[T], path: str | Path) -> T:
    """Read a config from a ``.toml``, ``.yaml`` or ``.json`` file (partial files keep the
    defaults).

    Args:
        cls: The config dataclass.
        path: The file; the format is chosen by suffix.

    Returns:
        A validated config instance.

    Raises:
        LmlabError: If the file is missing, unreadable, malformed or has bad keys/values.

    >>> import json, tempfile, pathlib
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class C:
    ...     lr: float = 0.1
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = pathlib.Path(tmp) / "c.json"
    ...     _ = p.write_text(json.dumps({"lr": 0.5}))
    ...     load_config_file(C, p)
    C(lr=0.5)
    """
    return config_from_dict(cls, read_settings_file(path))


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """The table of settings in a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file.

    Raises:
        LmlabError: If the file is missing, unreadable, malformed or not a table.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = pathlib.Path(tmp) / "c.yaml"
    ...     _ = p.write_text("train: {lr: 0.5}")
    ...     read_settings_file(p)
    {'train': {'lr': 0.5}}
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json", ".yaml", ".yml"):
        raise LmlabError(f"unsupported config file {path}; use a .toml, .yaml or .json file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LmlabError(f"config file not found: {path}; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LmlabError(f"cannot read config file {path}: {exc}") from None
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            data = _parse_toml(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # json, tomllib and yaml each raise their own error type
        if isinstance(exc, LmlabError):
            raise
        detail = " ".join(str(exc).split())
        raise LmlabError(f"cannot parse config file {path}: {detail}") from None
    if not isinstance(data, Mapping):
        raise LmlabError(f"config file {path} must contain a table/object of settings")
    return dict(data)


def _parse_toml(text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise LmlabError(
                "reading TOML needs Python 3.11+ or the 'tomli' package; "
                "install tomli or use a .json config"
            ) from None
    data: dict[str, Any] = tomllib.loads(text)
    return data
