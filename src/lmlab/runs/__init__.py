"""Run directories, atomic writes and reports.

>>> from lmlab.runs import RunDir, Report
>>> Report("t").title
't'
"""

from lmlab.runs.io import (
    atomic_directory,
    atomic_save_torch,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    atomic_write_with,
    save_figure,
    save_table,
    to_jsonable,
)
from lmlab.runs.report import Report, render_report, write_report
from lmlab.runs.rundir import RunDir

__all__ = [
    "Report",
    "RunDir",
    "atomic_directory",
    "atomic_save_torch",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_write_with",
    "render_report",
    "save_figure",
    "save_table",
    "to_jsonable",
    "write_report",
]
