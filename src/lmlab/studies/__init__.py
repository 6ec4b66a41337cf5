"""The studies: one module each, with a frozen ``Config`` (``quick()``/``paper()`` presets),
``run(cfg, run_dir) -> Result`` and a registry that lists only what really runs.

>>> from lmlab.studies import study_names
>>> "spectral" in study_names()
True
"""

from lmlab.studies.registry import StudyInfo, get_study, study_names, study_table

__all__ = ["StudyInfo", "get_study", "study_names", "study_table"]
