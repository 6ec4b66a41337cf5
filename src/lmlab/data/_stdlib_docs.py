"""Collects the docstrings of the Python standard library (standard library only).

Run as a script with an output path, it writes the collected docstrings there as a JSON list;
:mod:`lmlab.data.text_sources` runs it in a fresh interpreter so that importing some 250
modules neither touches the caller's process nor depends on what the caller already patched.

>>> names = _public_modules()
>>> "json" in names, "this" in names, names == sorted(names)
(True, False, True)
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import json
import sys
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any

__all__ = ["collect"]

# Modules left out: GUI toolkits and demos (they may open windows), modules that print or open
# a browser on import, test suites, a deprecated package that third-party tools replace
# (distutils), and modules that change the interpreter's line editing when imported.
_SKIP = frozenset({
    "antigravity", "distutils", "idlelib", "lib2to3", "readline", "rlcompleter", "test",
    "this", "tkinter", "turtle", "turtledemo",
})


def _public_modules() -> list[str]:
    names = getattr(sys, "stdlib_module_names", ())
    return [
        name for name in sorted(names)
        if not name.startswith(("_", "xx")) and name not in _SKIP
    ]


def _quiet_import(name: str) -> ModuleType | None:
    """Import ``name`` with output and warnings swallowed; ``None`` if the import fails."""
    sink = io.StringIO()
    try:
        with (
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except (Exception, SystemExit):
        return None


def _public_names(module: ModuleType) -> list[str]:
    exported = getattr(module, "__all__", None)
    if isinstance(exported, (list, tuple)) and all(isinstance(n, str) for n in exported):
        names = set(exported)
    else:
        names = set(vars(module))
    return sorted(n for n in names if not n.startswith("_"))


def _defined_in(obj: Any, module: str, *, unknown: bool) -> bool:
    """Whether ``obj`` comes from ``module`` or its submodules (``unknown`` if it doesn't say)."""
    if isinstance(obj, property):
        obj = obj.fget
    elif isinstance(obj, (classmethod, staticmethod)):
        obj = obj.__func__
    owner = getattr(obj, "__module__", None)
    if not isinstance(owner, str):
        return unknown
    return owner == module or owner.startswith(module + ".")


def _module_docstrings(module: ModuleType) -> Iterator[Any]:
    """The module's docstring, then those of its public classes (each followed by its public
    methods) and functions defined in it, in name order."""
    yield module.__doc__
    for name in _public_names(module):
        try:
            obj = getattr(module, name)
        except Exception:
            continue
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        if not _defined_in(obj, module.__name__, unknown=False):
            continue
        if not inspect.isclass(obj):
            yield obj.__doc__
            continue
        yield vars(obj).get("__doc__")
        for attr, member in sorted(vars(obj).items()):
            is_method = inspect.isroutine(member) or isinstance(
                member, (property, classmethod, staticmethod)
            )
            if attr.startswith("_") or not is_method:
                continue
            if _defined_in(member, module.__name__, unknown=True):
                yield getattr(member, "__doc__", None)


def collect() -> list[str]:
    """The cleaned, de-duplicated docstrings of the public standard library, in a fixed order.

    Returns:
        Docstrings in module-name order, first occurrence kept.
    """
    seen: set[str] = set()
    docs: list[str] = []
    for name in _public_modules():
        module = _quiet_import(name)
        if module is None:
            continue
        try:
            raw = list(_module_docstrings(module))
        except Exception:
            continue
        for doc in raw:
            if not isinstance(doc, str):
                continue
            text = inspect.cleandoc(doc).strip()
            if text and text not in seen:
                seen.add(text)
                docs.append(text)
    return docs


if __name__ == "__main__":
    docs = collect()
    with open(sys.argv[1], "w", encoding="utf-8") as out:
        json.dump(docs, out)
