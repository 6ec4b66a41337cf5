"""An example notebook for any study, generated from its module.

The built-in studies ship hand-written notebooks in ``examples/``; a study without one (a new
study, or one of your own on ``LMLAB_STUDY_PATH``) gets this one: the study's docstring, a
``parameters`` cell, a cell that runs the quick preset and prints the headline numbers of its
``SUMMARY``, a cell that shows every figure, and how to change a setting.

>>> nb = study_notebook("spectral")
>>> [c["cell_type"] for c in nb["cells"]]
['markdown', 'code', 'code', 'code', 'markdown']
>>> "parameters" in nb["cells"][1]["metadata"]["tags"]
True
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

__all__ = ["study_notebook", "write_notebook"]


def _cell(kind: str, source: str, tags: tuple[str, ...] = ()) -> dict[str, Any]:
    cell: dict[str, Any] = {"cell_type": kind, "metadata": {"tags": list(tags)} if tags else {},
                            "source": source.strip("\n").splitlines(keepends=True)}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def study_notebook(study: str) -> dict[str, Any]:
    """The notebook (nbformat 4, as a dict) that runs ``study``'s quick preset."""
    from lmlab.studies.registry import get_study

    module = get_study(study)
    doc = inspect.getdoc(module) or study
    schema = getattr(module, "SUMMARY", None)
    keys = schema.headline() if schema is not None else []
    run = f'''from IPython.display import Image, display

from lmlab.studies.runner import build_config, run_study

cfg = build_config("{study}", preset, overrides)  # the preset, overrides applied
run = run_study("{study}", preset=preset, cfg=cfg, out=out)  # a new run directory
summary = run.read_summary()  # the run's summary.json
print("run directory:", run.path)
for key in {keys!r}:
    print(f"{{key:>16}}: {{summary.get(key)}}")
'''
    show = '''# Every figure of the run; the full report is run.path / "report.html".
for png in sorted(run.figures_dir.glob("*.png")):
    display(Image(filename=png))
'''
    cells = [
        _cell("markdown", f"# `{study}`\n\n{doc}"),
        _cell("code", f'# Config fields as "key=value", as in `lmlab run {study} --set '
                      'key=value`.\noverrides = []\npreset = "quick"\nout = "runs"\n',
              ("parameters",)),
        _cell("code", run),
        _cell("code", show),
        _cell("markdown", f"## Your turn\n\n`lmlab study show {study}` lists every key that "
                          "`overrides` takes, with its type, defaults and meaning."),
    ]
    return {"cells": cells, "nbformat": 4, "nbformat_minor": 4,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                        "language": "python"}}}


def write_notebook(study: str, path: str | Path) -> Path:
    """Write :func:`study_notebook` to ``path`` (atomically)."""
    from lmlab.runs.io import atomic_write_text

    return atomic_write_text(Path(path), json.dumps(study_notebook(study), indent=1) + "\n")
