"""A drop-in for weightwatcher's ``WeightWatcher`` class: change one import, keep the script.

``from lmlab.spectral import WeightWatcher`` gives the same constructor and methods —
``analyze(**options)``, ``get_details``, ``get_summary``, ``describe``, ``get_ESD``,
``get_Weights``, ``distances``, ``SVDSmoothing``, ``SVDSharpness``, ``analyze_vectors`` —
computed by :mod:`lmlab.spectral` (exact where weightwatcher is deterministic, working where
it fails). Differences a script may notice, all deliberate:

* a layer whose fit fails has α = NaN and ``status = "failed"`` with a ``reason`` column,
  never α = −1; :meth:`get_summary` averages successful layers only;
* the table ends with lmlab's ``reason`` and ``fit_mode`` columns; layers the size rules skip
  are left out as weightwatcher leaves them out (:attr:`WeightWatcher.table` keeps them, with
  the reason);
* ``plot=True`` saves one figure per layer under ``savefig`` (default ``ww-img``) and shows
  nothing; nothing is printed and no global logging or warning state is touched;
* an option lmlab does not offer, or an invalid one, raises :class:`~lmlab.errors.LmlabError`
  in one line instead of being logged and ignored.

>>> import torch
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> watcher = WeightWatcher(model=torch.nn.Sequential(torch.nn.Linear(64, 128)))
>>> details = watcher.analyze(mp_fit=True)
>>> details[["layer_id", "name", "status"]].values.tolist()
[[1, '0', 'success']]
>>> sorted(watcher.get_summary())[:3]
['alpha', 'alpha_weighted', 'log_alpha_norm']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmlab.errors import LmlabError

__all__ = ["WeightWatcher"]

_SUMMARY_METRICS = ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm",
                    "log_spectral_norm", "stable_rank", "mp_softrank")
_DESCRIBE_COLUMNS = ("layer_id", "name", "M", "N", "Q", "layer_type", "longname", "num_evals",
                     "rf")


def _as_layers(layers: Any) -> list[Any] | None:
    if layers is None:
        return None
    if isinstance(layers, int | str):
        return [layers]
    out = list(layers)
    return out or None


def _refuse_unoffered(**given: Any) -> None:
    """Refuse a model-level option that is not weightwatcher's default, in one line."""
    defaults = {"pool": True, "channels": None, "fit": "PL", "plot": False, "start_ids": 0}
    for key, value in given.items():
        if value != defaults[key]:
            raise LmlabError(f"{key}={value!r} is not offered here (lmlab uses {key}="
                             f"{defaults[key]!r}); drop it")


class WeightWatcher:
    """weightwatcher's entry point, backed by :func:`lmlab.spectral.analyze`.

    Args:
        model: a ``torch.nn.Module``, a state dict, or a path to weights (a file or a model
            directory, streamed).
        base_model: when given, every analysis is of W − W_base (a fine-tune against its base).
        framework, log_level: accepted for compatibility; lmlab infers the source itself and
            logs nothing.
    """

    def __init__(self, model: Any = None, framework: Any = None, base_model: Any = None,
                 log_level: Any = None) -> None:
        self.model = model
        self.base_model = base_model
        self.details: pd.DataFrame | None = None
        #: the last analysis with every layer, skipped ones included (with the reason).
        self.table: pd.DataFrame | None = None

    def __repr__(self) -> str:
        return f"WeightWatcher(model={type(self.model).__name__})  # lmlab.spectral"

    # ----------------------------------------------------------------------------- helpers

    def _model(self, model: Any) -> Any:
        if model is not None:
            self.model = model
        if self.model is None:
            raise LmlabError("no model to analyse: pass model= to WeightWatcher(...) or to "
                             "this method")
        return self.model

    def _base(self, base_model: Any) -> Any:
        return base_model if base_model is not None else self.base_model

    # ----------------------------------------------------------------------------- analysis

    def analyze(self, model: Any = None, layers: Any = None, *, plot: bool = False,
                savefig: bool | str = "ww-img", base_model: Any = None,
                **options: Any) -> pd.DataFrame:
        """weightwatcher's ``analyze``: one row per analysed layer.

        Every weightwatcher option is accepted by name (see
        :class:`~lmlab.spectral.options.AnalyzeOptions`); those lmlab leaves out are refused
        with the reason. ``plot=True`` saves one figure per layer under ``savefig``.
        """
        from lmlab.spectral.analyze import analyze_with_spectra, options_from

        table, esds = analyze_with_spectra(
            self._model(model), layers=_as_layers(layers), base_model=self._base(base_model),
            progress=False, options=options_from(**options), keep_esds=plot)
        self.table = table
        self.details = table[table["status"] != "skipped"].reset_index(drop=True)
        if plot:
            self._save_layer_figures(esds, savefig)
        return self.details

    def get_details(self) -> pd.DataFrame | None:
        """The table of the last :meth:`analyze`."""
        return self.details

    def get_summary(self, details: pd.DataFrame | None = None) -> dict[str, float]:
        """Means of weightwatcher's summary metrics over the layers whose fit succeeded."""
        df = self.details if details is None else details
        if df is None:
            raise LmlabError("no analysis yet: call analyze() first, or pass details=")
        ok = df[df["status"] == "success"] if "status" in df.columns else df
        return {m: float(ok[m].astype(float).mean()) for m in _SUMMARY_METRICS
                if m in ok.columns}

    def describe(self, model: Any = None, layers: Any = None, min_evals: int = 8,
                 max_evals: int = 15000, max_N: int | None = 50000, start_ids: int = 0,
                 base_model: Any = None, **ignored: Any) -> pd.DataFrame:
        """The layers :meth:`analyze` would look at, from shapes alone (no weight is read)."""
        from lmlab.spectral.analyze import select_layers, shifted_ids
        from lmlab.spectral.layer import dims_of, skip_reason
        from lmlab.spectral.options import AnalyzeOptions
        from lmlab.spectral.sources import iter_layers

        opts = AnalyzeOptions(min_evals=min_evals, max_evals=max_evals, max_N=max_N,
                              start_ids=start_ids)
        refs = select_layers(list(shifted_ids(iter_layers(self._model(model)), start_ids)),
                       _as_layers(layers))
        rows = []
        for ref in refs:
            N, M, rf = dims_of(ref)
            if skip_reason(N, M, rf, ref, opts):
                continue
            rows.append(dict(layer_id=ref.layer_id, name=ref.name, M=M, N=N,
                             Q=N / M if M else -1.0, layer_type=ref.layer_type,
                             longname=ref.longname, num_evals=M * rf, rf=rf))
        return pd.DataFrame(rows, columns=list(_DESCRIBE_COLUMNS))

    def _one_layer(self, model: Any, layer: Any) -> Any:
        from lmlab.spectral.analyze import select_layers
        from lmlab.spectral.sources import iter_layers

        if layer is None:
            raise LmlabError("name the layer: layer=<id or name>")
        refs = select_layers(list(iter_layers(self._model(model))), [layer])
        return refs[0]

    def get_Weights(self, model: Any = None, layer: Any = None) -> list[np.ndarray]:
        """The matrices of one layer (by id or name), as the ESD sees them (float32)."""
        from lmlab.spectral.esd import matrices_of
        from lmlab.spectral.layer import _to_numpy

        ref = self._one_layer(model, layer)
        mats, *_ = matrices_of(_to_numpy(ref.load()), ref.layer_type)
        return [np.array(m) for m in mats]

    def get_ESD(self, model: Any = None, layer: Any = None, random: bool = False,
                seed: int = 0) -> np.ndarray:
        """The sorted eigenvalues of one layer (by id or name); ``random=True``: of the layer
        with its elements randomly permuted (seeded by ``seed``). As weightwatcher's, conv2d
        kernels are not scaled by √(1/2) here (its ``analyze`` scales them)."""
        from lmlab.spectral.layer import layer_row
        from lmlab.spectral.options import AnalyzeOptions

        ref = self._one_layer(model, layer)
        opts = AnalyzeOptions(min_evals=0, max_evals=0, max_N=None, seed=seed,
                              conv2d_norm=False)
        if not random:
            _, evals = layer_row(ref, opts, columns=())
            return evals if evals is not None else np.empty(0)
        from lmlab.spectral.randomize import randomized_evals_of_layer

        return randomized_evals_of_layer(ref, opts)

    # ----------------------------------------------------------------------------- figures

    def _save_layer_figures(self, esds: dict[int, np.ndarray], savefig: bool | str) -> None:
        """One four-panel figure per analysed layer, from the eigenvalues of the analysis."""
        from lmlab.plotting.spectral import figure_of, plot_layer_panels

        assert self.details is not None
        if savefig is False:
            return
        directory = Path("ww-img" if savefig is True or savefig == "" else str(savefig))
        directory.mkdir(parents=True, exist_ok=True)
        for row in self.details[self.details["has_esd"]].itertuples():
            evals = esds.get(int(row.layer_id))
            if evals is not None:
                fig = figure_of(plot_layer_panels(evals, row._asdict()))
                fig.savefig(directory / f"ww.layer{int(row.layer_id)}.esd.png", dpi=90)

    # ----------------------------------------------------------------------------- others

    def distances(self, model_1: Any, model_2: Any, method: str = "raw", layers: Any = None,
                  start_ids: int = 0, pool: bool = True, channels: Any = None) -> Any:
        """``(avg_dW, avg_db, details)`` between the layers of two models, as weightwatcher's
        (see :func:`lmlab.spectral.distances.distances`; CKA is linear CKA of the weights)."""
        from lmlab.spectral.distances import distances

        _refuse_unoffered(pool=pool, channels=channels)
        result = distances(model_1, model_2, method=method,  # type: ignore[arg-type]
                           layers=_as_layers(layers))
        if start_ids:
            details = result.details.copy()
            details.index = details.index + start_ids
            result = result._replace(details=details)
        return result

    def SVDSmoothing(self, model: Any = None, percent: float = 0.8, pool: bool = True,
                     layers: Any = None, method: str = "detX", fit: str = "PL",
                     plot: bool = False, start_ids: int = 0, svd_method: str = "fast") -> Any:
        """A smoothed copy of the model: each layer keeps its top components (``method``:
        ``detX``, ``svd`` with ``percent``, ...; see :func:`lmlab.spectral.svd_smoothing`).
        The input is left intact — weightwatcher changes it in place — so use the return
        value. For checkpoint files, :func:`lmlab.spectral.svd_smoothing_files`."""
        from lmlab.spectral.smoothing import svd_smoothing

        _refuse_unoffered(pool=pool, fit=fit, plot=plot, start_ids=start_ids)
        return svd_smoothing(self._model(model), percent=percent,
                             method=method,  # type: ignore[arg-type]
                             layers=_as_layers(layers))

    def SVDSharpness(self, model: Any = None, pool: bool = True, layers: Any = None,
                     plot: bool = False, start_ids: int = 0, seed: int = 0) -> Any:
        """A sharpened copy of the model (spikes a shuffled copy of W would have are
        removed; the input is left intact). See :func:`lmlab.spectral.svd_sharpness`."""
        import numpy as np

        from lmlab.spectral.smoothing import svd_sharpness

        _refuse_unoffered(pool=pool, plot=plot, start_ids=start_ids)
        return svd_sharpness(self._model(model), layers=_as_layers(layers),
                             rng=np.random.default_rng(seed))

    def analyze_vectors(self, model: Any = None, layers: Any = None, min_evals: int = 8,
                        max_evals: int = 15000, max_N: int | None = 50000,
                        **ignored: Any) -> pd.DataFrame:
        """Eigenvector localisation metrics of every eigenvector of every layer: one row per
        eigenvector (``layer_id``, ``longname``, ``eval``, ``vec_entropy``, ``loc_ratio``,
        ``part_ratio``). weightwatcher's method raises ``AttributeError`` in 0.7.7 (and would
        return ``None``); its ``analyze(vectors=True)`` summary columns are also offered."""
        from lmlab.spectral.analyze import select_layers
        from lmlab.spectral.esd import matrices_of
        from lmlab.spectral.extras import prepared_matrices
        from lmlab.spectral.layer import _to_numpy, dims_of, skip_reason
        from lmlab.spectral.options import AnalyzeOptions
        from lmlab.spectral.sources import iter_layers
        from lmlab.spectral.vectors import eigenvector_metrics

        opts = AnalyzeOptions(min_evals=min_evals, max_evals=max_evals, max_N=max_N)
        frames = []
        for ref in select_layers(list(iter_layers(self._model(model))), _as_layers(layers)):
            if skip_reason(*dims_of(ref), ref, opts):
                continue
            mats, N, M, rf = matrices_of(_to_numpy(ref.load()), ref.layer_type)
            mats, scale = prepared_matrices(mats, N, M, rf, ref.layer_type, opts)
            table = eigenvector_metrics(mats, scale=scale)
            table.insert(0, "longname", ref.longname)
            table.insert(0, "layer_id", ref.layer_id)
            frames.append(table)
        if not frames:
            raise LmlabError("no layer to analyse: every layer was skipped by the size rules")
        return pd.concat(frames, ignore_index=True)
