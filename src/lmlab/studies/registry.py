"""The registry of studies: name -> module, imported only when the study is used.

A study module defines ``Config`` (a frozen dataclass with ``quick()`` and ``paper()``
classmethods), ``run(cfg, run_dir) -> Result`` with ``Result.summary`` a dict, optionally
``check(cfg)`` (raises before any work when an input cannot be used), and a module docstring
with the citation, the claim and the exact command.

>>> get_study("spectral").Config.quick().model
'all-minilm-l6-v2'
>>> try:
...     get_study("spectrl")
... except LmlabError as e:
...     print(e)
unknown study 'spectrl'; did you mean 'spectral'? (lmlab study list shows all)
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from types import ModuleType

from lmlab.errors import LmlabError

__all__ = ["StudyInfo", "get_study", "study_names", "study_table", "PRESETS"]

PRESETS = ("quick", "paper")


@dataclass(frozen=True)
class StudyInfo:
    """A registered study: its CLI name, module and one-line description."""

    name: str
    module: str
    description: str
    source: str


_STUDIES: tuple[StudyInfo, ...] = (
    StudyInfo(
        "spectral", "lmlab.studies.spectral",
        "Heavy-tailed spectral analysis of a model's weights: α per layer, ESDs, summary",
        "Martin & Mahoney, JMLR 2021; weightwatcher 0.7.7",
    ),
    StudyInfo(
        "finetune-spectral", "lmlab.studies.finetune_spectral",
        "Fine-tune a causal LM; α per layer before, during and after, with perplexity",
        "spectral fine-tuning homework; IR-Triplets (InductiveSLM)",
    ),
    StudyInfo(
        "optimizers", "lmlab.studies.optimizers",
        "AdamW vs SGD (or any torch optimiser) on the same fine-tune: loss, perplexity, time",
        "optimizer/hooks mini-study; WikiText-2",
    ),
    StudyInfo(
        "ablation", "lmlab.studies.ablation",
        "Attention ablations (zero, uniform, mean, previous-token): trained and untrained",
        "optimizer/hooks mini-study; WikiText-2",
    ),
    StudyInfo(
        "charlm", "lmlab.studies.charlm",
        "Character-level names models: MLP, BatchNorm, init, folding, WaveNet, transformer",
        "makemore exercise sheet (Bengio et al. 2003); SSA names",
    ),
    StudyInfo(
        "attention-phase", "lmlab.studies.attention_phase",
        "Positional vs semantic attention: the phase transition in α = n/d, simulation + theory",
        "Cui, Behrens, Krzakala, Zdeborová, NeurIPS 2024",
    ),
    StudyInfo(
        "induction", "lmlab.studies.induction",
        "Induction heads: copying, pattern diversity, OOD generalisation and QK–OV composition",
        "Song, Xu, Zhong, PNAS 2025",
    ),
)


def study_names() -> list[str]:
    """The names of the studies that run."""
    return [s.name for s in _STUDIES]


def study_table() -> list[StudyInfo]:
    """All registered studies."""
    return list(_STUDIES)


def get_study(name: str) -> ModuleType:
    """Import and return a study module by name (an unknown name names the nearest one)."""
    for info in _STUDIES:
        if info.name == name:
            return importlib.import_module(info.module)
    close = difflib.get_close_matches(name, study_names(), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; studies: {', '.join(study_names())}"
    raise LmlabError(f"unknown study '{name}'{hint} (lmlab study list shows all)")
