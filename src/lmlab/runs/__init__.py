"""Run directories, atomic writes and reports.

>>> from lmlab.runs import RunDir, Report
>>> Report("t").title
't'
"""

from lmlab.runs.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    save_figure,
    save_table,
)
from lmlab.runs.report import Report, render_report, write_report
from lmlab.runs.rundir import RunDir

__all__ = [
    "Report",
    "RunDir",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "render_report",
    "save_figure",
    "save_table",
    "write_report",
]
