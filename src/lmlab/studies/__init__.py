"""The studies: one module each, with a frozen ``Config`` (``quick()``/``paper()`` presets),
``run(cfg, run_dir) -> Result`` and a registry that lists only what really runs.

Run one from Python as the command line does (``lmlab run charlm --set samples=5``)::

    from lmlab.studies import build_config, run_study
    cfg = build_config("charlm", "quick", ["samples=5"])
    run = run_study("charlm", preset="quick", cfg=cfg)   # a RunDir; run.read_summary()

>>> from lmlab.studies import study_names
>>> "spectral" in study_names()
True
"""

from lmlab.studies.registry import StudyInfo, get_study, study_names, study_table
from lmlab.studies.runner import build_config, run_study

__all__ = ["StudyInfo", "build_config", "get_study", "run_study", "study_names", "study_table"]
