"""The studies: one module each, with a frozen ``Config`` (``quick()``/``paper()`` presets),
``run(cfg, run_dir) -> Result``, ``plot(result)`` and ``report(result, figures)``; a registry
derived from the modules (see :mod:`lmlab.studies.pattern`).

Run one from Python as the command line does (``lmlab run charlm --set samples=5``)::

    from lmlab.studies import build_config, run_study
    cfg = build_config("charlm", "quick", ["samples=5"])
    run = run_study("charlm", preset="quick", cfg=cfg)   # a RunDir; run.read_summary()

>>> from lmlab.studies import study_names
>>> "spectral" in study_names()
True
"""

from lmlab.studies.pattern import Summary, SummaryKey, load_result, redraw
from lmlab.studies.registry import StudyInfo, get_study, study_names, study_table
from lmlab.studies.runner import build_config, run_study

__all__ = ["StudyInfo", "Summary", "SummaryKey", "build_config", "get_study", "load_result",
           "redraw", "run_study", "study_names", "study_table"]
