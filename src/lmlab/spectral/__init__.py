"""Heavy-tailed spectral analysis of weight matrices (weightwatcher-exact, faster, streaming).

``from lmlab.spectral import WeightWatcher`` is a drop-in for weightwatcher's class.

>>> import torch
>>> from lmlab.spectral import analyze, summarize
>>> df = analyze(torch.nn.Linear(32, 64))
>>> int(df.loc[0, "num_evals"])
32
"""

from lmlab.spectral.adapters import merge_adapter, read_adapter
from lmlab.spectral.analyze import (
    LMLAB_COLUMNS,
    WW_COLUMNS,
    analyze,
    layer_spectra,
    summarize,
)
from lmlab.spectral.distances import ModelDistances, distances
from lmlab.spectral.esd import Spectrum, spectrum_of
from lmlab.spectral.mp import MPSplit, mp_edges, mp_pdf, mp_split
from lmlab.spectral.options import AnalyzeOptions
from lmlab.spectral.powerlaw import PowerLawFit, fit_power_law
from lmlab.spectral.smoothing import (
    svd_sharpness,
    svd_sharpness_files,
    svd_smoothing,
    svd_smoothing_files,
)
from lmlab.spectral.sources import LayerRef, iter_layers
from lmlab.spectral.tracker import SpectralTracker
from lmlab.spectral.watcher import WeightWatcher

__all__ = [
    "analyze", "summarize", "layer_spectra", "WW_COLUMNS", "LMLAB_COLUMNS",
    "Spectrum", "spectrum_of", "PowerLawFit", "fit_power_law",
    "mp_edges", "mp_pdf", "mp_split", "MPSplit",
    "LayerRef", "iter_layers", "SpectralTracker", "WeightWatcher", "AnalyzeOptions",
    "distances", "ModelDistances", "svd_smoothing", "svd_sharpness", "svd_smoothing_files",
    "svd_sharpness_files", "merge_adapter", "read_adapter",
]
