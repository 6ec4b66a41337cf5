"""Plotting (matplotlib only, imported lazily): ``plot_*(result, ax=None) -> Axes``.

>>> import lmlab.plotting as p
>>> "plot_esd" in p.__all__
True
"""

from lmlab.plotting.spectral import (
    captioned,
    figure_of,
    new_axes,
    plot_alpha_by_layer,
    plot_alpha_hist,
    plot_alpha_over_training,
    plot_esd,
)

__all__ = [
    "captioned",
    "figure_of",
    "new_axes",
    "plot_esd",
    "plot_alpha_by_layer",
    "plot_alpha_hist",
    "plot_alpha_over_training",
]
