"""The registry of studies, derived from the study modules themselves.

Every module of this package (and of each folder named in the ``LMLAB_STUDY_PATH``
environment variable, separated by ``os.pathsep``) that assigns a literal dict ``STUDY = {"name":
..., "description": ..., "source": ...}`` at module level is a study. The registry reads that
dict from the source text, so listing the studies imports none of them; a study module is
imported only when it is used. See :mod:`lmlab.studies.pattern` for what a study defines.

>>> get_study("spectral").Config.quick().model
'all-minilm-l6-v2'
>>> try:
...     get_study("spectrl")
... except LmlabError as e:
...     print(e)
unknown study 'spectrl'; did you mean 'spectral'? (lmlab study list shows all)
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from lmlab.errors import LmlabError

__all__ = ["PRESETS", "STUDY_PATH_ENV", "StudyInfo", "get_study", "study_names", "study_table"]

PRESETS = ("quick", "paper")
STUDY_PATH_ENV = "LMLAB_STUDY_PATH"
_KEYS = ("name", "description", "source")


@dataclass(frozen=True)
class StudyInfo:
    """A registered study: its CLI name, module and one-line description.

    ``module`` is a dotted module name, or the path of a ``.py`` file for a study found on
    ``LMLAB_STUDY_PATH``.
    """

    name: str
    module: str
    description: str
    source: str
    order: int = 100


def _declared(path: Path) -> dict[str, object] | None:
    """The literal ``STUDY`` dict assigned at the top level of a module file, or None."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, expr = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, expr = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "STUDY" for t in targets):
            try:
                value = ast.literal_eval(expr)
            except ValueError:
                raise LmlabError(f"{path}: STUDY must be a literal dict of strings") from None
            if not isinstance(value, dict) or not all(isinstance(value.get(k), str)
                                                      for k in _KEYS):
                raise LmlabError(f"{path}: STUDY must give name, description and source as "
                                 "strings")
            return value
    return None


def _scan(folder: Path, package: str | None) -> list[StudyInfo]:
    found = []
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        d = _declared(path)
        if d is not None:
            module = f"{package}.{path.stem}" if package else str(path)
            order = d.get("order", 100)
            found.append(StudyInfo(str(d["name"]), module, str(d["description"]),
                                   str(d["source"]), order if isinstance(order, int) else 100))
    return found


def study_table() -> list[StudyInfo]:
    """All registered studies, built-in first (in their declared order), then the user's."""
    return list(_table(os.environ.get(STUDY_PATH_ENV, "")))


@functools.lru_cache(maxsize=8)
def _table(study_path: str) -> tuple[StudyInfo, ...]:
    """The registry for one value of ``LMLAB_STUDY_PATH`` (read once per process)."""
    studies = _scan(Path(__file__).parent, __package__)
    for folder in filter(None, study_path.split(os.pathsep)):
        studies += _scan(Path(folder).expanduser(), None)
    seen: dict[str, StudyInfo] = {}
    for info in sorted(studies, key=lambda s: (s.order, s.name)):
        if info.name in seen:
            raise LmlabError(f"two studies are named '{info.name}' ({seen[info.name].module} "
                             f"and {info.module}); rename one")
        seen[info.name] = info
    return tuple(seen.values())


def study_names() -> list[str]:
    """The names of the studies that run."""
    return [s.name for s in study_table()]


def _import_file(path: str) -> ModuleType:
    name = "lmlab_user_study_" + Path(path).stem.replace("-", "_")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LmlabError(f"cannot import the study module {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and type hints look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[name]
        raise
    return module


def get_study(name: str) -> ModuleType:
    """Import and return a study module by name (an unknown name names the nearest one)."""
    table = study_table()
    for info in table:
        if info.name == name:
            if info.module.endswith(".py"):
                return _import_file(info.module)
            return importlib.import_module(info.module)
    names = [s.name for s in table]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; studies: {', '.join(names)}"
    raise LmlabError(f"unknown study '{name}'{hint} (lmlab study list shows all)")
