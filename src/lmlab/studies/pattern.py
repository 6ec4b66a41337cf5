"""The one shape of a study, and what the runner does with it.

A study module defines:

- ``STUDY = {"name": ..., "description": ..., "source": ...}``: a literal dict, read by the
  registry without importing the module (an optional ``"order"`` sorts the list);
- ``SUMMARY``: a :class:`Summary` schema, the keys of ``summary.json`` with their types;
- ``Config``: a frozen dataclass with ``quick()`` and ``paper()`` presets (and ``validate()``);
- ``Result``: a dataclass holding everything the figures and the report need, saved in open
  formats by :func:`publish` and read back by :func:`load_result`;
- ``run(cfg, run_dir) -> Result``: the computation (checkpoints and metrics go to ``run_dir``);
- ``plot(result) -> dict[str, Figure]``: every figure from the ``Result`` alone, captions set
  with :func:`lmlab.plotting.captioned`; nothing is written;
- ``report(result, figures) -> Report``: the report's blocks;
- optionally ``check(cfg)`` (inputs that cannot work fail before a run directory exists) and
  ``RESUMES = True`` (the study continues from its checkpoints under ``--resume``).

``lmlab report RUN_DIR`` calls :func:`redraw`: the saved ``Result`` in, figures and report out,
no model and no training.

>>> s = Summary(SummaryKey("loss", float, "final loss", headline=True),
...             SummaryKey("<opt>.time", float, "seconds per optimiser"))
>>> s.problems({"loss": 1.5, "adamw": {"time": 2.0}})
[]
>>> s.problems({"loss": "high"})
["summary key 'loss' is str, expected float"]
>>> s.headline()
['loss']
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from lmlab.errors import LmlabError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from lmlab.runs import RunDir

__all__ = ["Summary", "SummaryKey", "load_result", "publish", "redraw"]

_NUMBER = (int, float)


@dataclass(frozen=True)
class SummaryKey:
    """One key of ``summary.json``.

    Attributes:
        key: its dotted path; a segment in angle brackets (``<mode>``) stands for any name,
            so ``<mode>.perplexity`` is ``summary[m]["perplexity"]`` for every mode ``m``.
        type: the type of its value (``float`` accepts ints; ``None`` is always accepted: a
            value that could not be computed, or a non-finite number, is written as null).
        doc: what it means, one line.
        headline: a headline number, read by the example notebook and the lab index.
    """

    key: str
    type: type | tuple[type, ...]
    doc: str
    headline: bool = False

    @property
    def templated(self) -> bool:
        """Whether the key has a ``<name>`` segment."""
        return "<" in self.key

    def types(self) -> tuple[type, ...]:  # type: ignore[valid-type]
        """The accepted Python types."""
        tps = self.type if isinstance(self.type, tuple) else (self.type,)
        return tuple({t for tp in tps for t in ((int, float) if tp is float else (tp,))})


class Summary:
    """The schema of a study's ``summary.json``: its keys, their types and meaning."""

    def __init__(self, *keys: SummaryKey) -> None:
        self.keys = keys

    def __iter__(self) -> Any:
        return iter(self.keys)

    def headline(self) -> list[str]:
        """The headline keys (never templated)."""
        return [k.key for k in self.keys if k.headline and not k.templated]

    def docs(self) -> dict[str, str]:
        """``{key: meaning}`` in declaration order."""
        return {k.key: k.doc for k in self.keys}

    def problems(self, summary: Mapping[str, Any]) -> list[str]:
        """What in ``summary`` does not match the schema (an empty list when all is well).

        A fixed key must be present with a value of its type (or null); every entry that a
        templated key matches must be of its type.
        """
        from lmlab.config import flatten_dotted

        flat = flatten_dotted(summary)
        out: list[str] = []
        for k in self.keys:
            pattern = re.compile(r"\.".join(
                r"[^.]+" if seg.startswith("<") else re.escape(seg) for seg in k.key.split("."))
                + "$")
            hits = {name: v for name, v in flat.items() if pattern.match(name)}
            if not k.templated and k.key in summary and isinstance(summary[k.key], Mapping):
                hits = {k.key: summary[k.key]}
            if not hits and not k.templated:
                out.append(f"summary key '{k.key}' is missing")
            for name, value in hits.items():
                ok = (value is None or isinstance(value, k.types())
                      and not (isinstance(value, bool) and bool not in k.types()))
                if not ok:
                    expected = "/".join(t.__name__ for t in
                                        (k.type if isinstance(k.type, tuple) else (k.type,)))
                    out.append(f"summary key '{name}' is {type(value).__name__}, "
                               f"expected {expected}")
        return out

    def markdown(self) -> str:
        """The schema as a Markdown table (key, type, meaning)."""
        rows = ["| key | type | meaning |", "|---|---|---|"]
        for k in self.keys:
            tps = k.type if isinstance(k.type, tuple) else (k.type,)
            rows.append(f"| `{k.key}` | {'/'.join(t.__name__ for t in tps)} | {k.doc} |")
        return "\n".join(rows)


def _check_result(module: ModuleType, result: Any) -> None:
    if not isinstance(result, module.Result):
        raise LmlabError(f"{module.__name__}.run() returned {type(result).__name__}, "
                         "not its Result")
    schema = getattr(module, "SUMMARY", None)
    summary = getattr(result, "summary", None)
    if schema is not None and isinstance(summary, Mapping):
        problems = schema.problems(summary)
        if problems:
            raise LmlabError(f"{module.__name__} wrote a summary that does not match its "
                             f"SUMMARY schema: {problems[0]}")


def draw(run_dir: RunDir, module: ModuleType, result: Any) -> dict[str, Figure]:
    """Draw every figure of ``result``, save them under ``figures/`` and write the report."""
    from lmlab.runs import write_report

    figures = module.plot(result)
    for name, fig in figures.items():
        run_dir.save_figure(fig, name)
    write_report(run_dir, module.report(result, figures))
    return figures


def publish(run_dir: RunDir, module: ModuleType, result: Any) -> Any:
    """Save ``result`` (``result/`` and ``summary.json``), then draw figures and report."""
    from lmlab.runs.result import save_result

    _check_result(module, result)
    save_result(run_dir, result)
    summary = getattr(result, "summary", None)
    if isinstance(summary, Mapping):
        run_dir.save_summary(summary)
    draw(run_dir, module, result)
    return result


def _study_of(run_dir: RunDir) -> ModuleType:
    from lmlab.studies.registry import get_study

    study = run_dir.read_meta().get("study") or run_dir.read_config().get("_study")
    if not study:
        raise LmlabError(f"{run_dir.path} does not say which study wrote it (no 'study' in "
                         "meta.json); it is not an lmlab run directory")
    return get_study(str(study))


def load_result(run_dir: Any) -> Any:
    """The saved ``Result`` of a finished run, as its study's ``Result`` dataclass.

    Raises:
        LmlabError: If the directory is not a run directory or holds no saved result.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     try:
    ...         load_result(tmp)
    ...     except LmlabError as e:
    ...         print("no config.json" in str(e))
    True
    """
    from lmlab.runs import RunDir
    from lmlab.runs.result import read_result

    rd = run_dir if isinstance(run_dir, RunDir) else RunDir.open(run_dir)
    return read_result(_study_of(rd).Result, rd)


def redraw(run_dir: Any) -> RunDir:
    """Draw a finished run's figures and report again from its saved ``Result`` alone."""
    from lmlab.runs import RunDir

    rd = run_dir if isinstance(run_dir, RunDir) else RunDir.open(run_dir)
    module = _study_of(rd)
    result = load_result(rd)
    rd.lock()  # a run still being written (or redrawn) elsewhere is refused, not raced
    try:
        draw(rd, module, result)
    finally:
        rd.unlock()
    return rd

