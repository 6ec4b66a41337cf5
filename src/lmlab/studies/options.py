"""Every option of a study: the ``--set`` keys with their type, defaults and meaning.

What ``lmlab study show STUDY`` prints. The meaning of a field comes from the ``Attributes:``
section of its config class's docstring (Google style), or from ``field(metadata={"doc": ...})``;
its valid values from its type (``Literal`` choices) and its declared range
(:func:`lmlab.config.ranged`).

>>> opts = {o.key: o for o in study_options("spectral")}
>>> opts["method"].type, opts["method"].quick, opts["method"].paper
("one of 'eigh', 'svd'", 'eigh', 'svd')
>>> opts["method"].doc.startswith("``eigh``")
True
>>> {o.key: o for o in study_options("charlm")}["mlp.train.steps"].allowed
'int in [1, 1e7]'
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Option", "field_docs", "format_options", "markdown_reference",
           "reference_page", "study_options"]


@dataclass(frozen=True)
class Option:
    """One ``--set`` key of a study.

    Attributes:
        key: the dotted ``--set`` key.
        type: the bare type (``int``, ``one of 'a', 'b'``, ``comma-separated list of float``).
        quick, paper: the presets' values, as ``--set`` takes them.
        doc: the meaning (and what an upper bound is for).
        allowed: the type with the valid range of its numbers (``int ≥ 1 or None``).
    """

    key: str
    type: str
    quick: str
    paper: str
    doc: str
    allowed: str = ""


def field_docs(cls: type) -> dict[str, str]:
    """``{field: one-line meaning}`` from a class's ``Attributes:`` docstring section.

    >>> class C:
    ...     '''A config.
    ...
    ...     Attributes:
    ...         lr: the learning
    ...             rate.
    ...         steps, epochs: how many.
    ...     '''
    >>> field_docs(C)
    {'lr': 'the learning rate.', 'steps': 'how many.', 'epochs': 'how many.'}
    """
    text = inspect.getdoc(cls) or ""
    docs: dict[str, str] = {}
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return docs
    indent: int | None = None
    current: list[str] | None = None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        if depth < indent:
            break
        match = re.match(r"\s*(\w+(?:,\s*\w+)*)(?:\s*\([^)]*\))?:\s*(.*)$", line)
        if depth == indent and match:
            current = [name.strip() for name in match.group(1).split(",")]
            for name in current:
                docs[name] = match.group(2).strip()
        elif current is not None:
            for name in current:
                docs[name] = f"{docs[name]} {line.strip()}".strip()
    return docs


def _shown(value: Any) -> str:
    from lmlab.config import config_to_dict

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = config_to_dict(value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)):
        return ",".join(_shown(v) for v in value) if value else "(empty)"
    return str(value)


def _walk(quick: Any, paper: Any, prefix: str) -> list[Option]:
    from lmlab._coerce import field_range, field_types, section_class, type_name

    out: list[Option] = []
    cls: Any = type(quick)
    hints = field_types(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        q, p = getattr(quick, f.name), getattr(paper, f.name)
        section = section_class(hints[f.name])
        if section is not None and dataclasses.is_dataclass(q) and dataclasses.is_dataclass(p):
            out += _walk(q, p, f"{prefix}{f.name}.")
            continue
        doc = " ".join(str(f.metadata.get("doc") or docs.get(f.name, "")).split())
        rule = field_range(f)
        if rule is not None and rule.why:
            doc += f" (upper bound: {rule.why})"
        out.append(Option(prefix + f.name, type_name(hints[f.name]), _shown(q), _shown(p),
                          doc, type_name(hints[f.name], rule)))
    return out


def study_options(study: str) -> list[Option]:
    """Every leaf ``--set`` key of ``study`` with its type, its ``quick`` and ``paper`` default
    and its meaning, in the order of the config's fields."""
    from lmlab.studies.registry import get_study

    config = get_study(study).Config
    return _walk(config.quick(), config.paper(), "")


def format_options(study: str, width: int = 100) -> str:
    """``study_options`` as an aligned plain-text table, for the terminal."""
    opts = study_options(study)
    key_w = max(len(o.key) for o in opts)
    lines = []
    for o in opts:
        same = o.quick == o.paper
        default = o.quick if same else f"quick {o.quick} | paper {o.paper}"
        lines.append(f"{o.key:<{key_w}}  {o.allowed or o.type}  [default: {default}]")
        if o.doc:
            lines.append(" " * (key_w + 2) + (o.doc if len(o.doc) + key_w + 2 <= width * 3
                                                else o.doc[: width * 3] + "…"))
    return "\n".join(lines)


def _md(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def markdown_reference(study: str) -> str:
    """The study's options and summary keys as Markdown tables (``lmlab study show --markdown``;
    ``docs/reference.md`` is made of these)."""
    from lmlab.studies.registry import get_study

    module = get_study(study)
    rows = [f"## `{study}`", "", f"`lmlab run {study} --set KEY=VALUE`:", "",
            "| key | type | quick | paper | meaning |", "|---|---|---|---|---|"]
    for o in study_options(study):
        rows.append(f"| `{o.key}` | {_md(o.allowed or o.type)} | `{_md(o.quick)}` | "
                    f"`{_md(o.paper)}` | "
                    f"{_md(o.doc)} |")
    schema = getattr(module, "SUMMARY", None)
    if schema is not None:
        rows += ["", "`summary.json` (a `<name>` segment stands for each name):", "",
                 schema.markdown()]
    return "\n".join(rows) + "\n"


def reference_page() -> str:
    """``docs/reference.md``: every built-in study's options and summary keys."""
    from lmlab.studies.registry import study_table

    parts = ["# Options and summary keys of every study", "",
             "Made by `lmlab study show all` from the study modules (their `Config` docstrings "
             "and `SUMMARY`); the test suite checks that this page is current.", ""]
    for info in study_table():
        if info.module.startswith("lmlab.studies."):
            parts.append(markdown_reference(info.name))
    return "\n".join(parts)
