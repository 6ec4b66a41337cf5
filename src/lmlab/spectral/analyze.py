"""Model or checkpoint -> one row per layer: spectra, power-law fits and norm metrics.

:func:`analyze` reproduces weightwatcher 0.7.7's default ``analyze()`` — the same layers, the
same ``layer_id`` and the same numbers in every one of its columns — and adds:

* rows for layers it skips or cannot fit, with ``status`` (``success``/``failed``/``skipped``)
  and a ``reason`` (too small, N > max_N, NaN/Inf weights, all-zero matrix, no power-law tail);
  a failed fit has α = NaN, never a silent -1;
* streaming from files (``.safetensors``, sharded directories, ``.pt`` state dicts) tensor by
  tensor, so peak memory stays near the largest matrix;
* a faster eigen-route (Gram matrix of the smaller side), a float32 fast mode, a torch backend
  for GPUs, thread control and a progress bar;
* **complex weights are analysed, not truncated**: their ESD is the eigenvalues of the Hermitian
  Gram matrix WᴴW (real and ≥ 0: the squared singular values of W), computed in complex64 →
  complex128 as real weights go float32 → float64; the imaginary part is never dropped;
* files read as their index says: a sharded directory reads each tensor from the shard its
  ``model.safetensors.index.json`` names; a tensor held by two files without an index, a
  malformed index, a FIFO or device in place of a file, and a pickle holding anything but
  tensors (``torch.load(weights_only=True)``) are refused in one line naming the file;
* a ``layers`` entry that names no layer is refused, with the nearest valid names.

>>> import torch
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> df = analyze(torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Linear(4, 4)))
>>> df[["layer_id", "longname", "status"]].values.tolist()
[[1, '0', 'success'], [2, '1', 'skipped']]
>>> summarize(df)["n_layers"]
1
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from lmlab.errors import LmlabError
from lmlab.spectral.extras import extra_column_names
from lmlab.spectral.options import NOT_SUPPORTED, AnalyzeOptions, check_options
from lmlab.spectral.sources import LayerRef, describe_source, iter_layers

__all__ = ["analyze", "summarize", "layer_spectra", "check_layer_names", "options_from",
           "select_layers", "shifted_ids", "analyze_with_spectra",
           "split_filters", "columns_for",
           "WW_COLUMNS", "LMLAB_COLUMNS", "LAYER_TYPES", "FitMode"]

FitMode = Literal["ww", "xmin_peak"]

#: weightwatcher 0.7.7's default analyze() columns, in its order (``layer_id``, ``name``, then
#: alphabetical, as its table comes out; the columns of further options are sorted in likewise).
WW_COLUMNS: tuple[str, ...] = (
    "layer_id", "name", "D", "M", "N", "Q", "alpha", "alpha_weighted", "entropy", "has_esd",
    "lambda_max", "layer_type", "log_alpha_norm", "log_norm", "log_spectral_norm", "longname",
    "matrix_rank", "norm", "num_evals", "num_pl_spikes", "rank_loss", "rf", "sigma",
    "spectral_norm", "stable_rank", "status", "sv_max", "sv_min", "warning", "weak_rank_loss",
    "xmax", "xmin",
)
#: Columns lmlab adds after weightwatcher's.
LMLAB_COLUMNS: tuple[str, ...] = ("reason", "fit_mode")

_INT_COLUMNS = ("layer_id", "M", "N", "rf", "matrix_rank", "num_evals", "num_pl_spikes",
                "rank_loss", "weak_rank_loss", "num_fingers", "num_spikes", "rand_num_spikes",
                "num_traps")


def columns_for(opts: AnalyzeOptions) -> tuple[str, ...]:
    """The table's columns for these options: weightwatcher's (its order), then lmlab's."""
    ww = sorted(set(WW_COLUMNS[2:]) | set(extra_column_names(opts)))
    return ("layer_id", "name", *ww, *LMLAB_COLUMNS)


_FIELDS = {f.name for f in dataclasses.fields(AnalyzeOptions)}


def options_from(**kwargs: Any) -> AnalyzeOptions:
    """An :class:`AnalyzeOptions` from weightwatcher-style keywords, checked.

    Accepts weightwatcher's spellings (``ERG`` for ``detX``, ``svd_method``, ``pl_package``,
    ``xmax="force"``, ``fit_mode``, ``max_n``): ``svd_method`` and ``pl_package`` pick among
    routes that give the same numbers in weightwatcher, and lmlab has one route for each
    (``method`` chooses lmlab's); ``xmax="force"`` ends the fit at λmax, where every lmlab
    fit ends. Refuses an unknown keyword with the nearest valid ones, and an option lmlab
    leaves out with the reason.

    >>> options_from(ERG=True, fit="TPL").detX
    True
    """
    kw = dict(kwargs)
    if kw.pop("ERG", False):
        kw["detX"] = True
    if "max_n" in kw:
        kw["max_N"] = kw.pop("max_n")
    fit_mode = kw.pop("fit_mode", None)
    if fit_mode not in (None, "ww", "xmin_peak"):
        raise LmlabError(f"fit_mode = {fit_mode!r} is not one of 'ww', 'xmin_peak'")
    if fit_mode == "xmin_peak":
        kw.setdefault("fix_fingers", "xmin_peak")
    svd_method = kw.pop("svd_method", None)
    if svd_method not in (None, "fast", "accurate"):
        raise LmlabError(f"svd_method = {svd_method!r} is not one of 'fast', 'accurate'")
    if kw.get("xmax") is False or kw.get("xmax") == "force":
        kw["xmax"] = None  # every lmlab fit ends at the largest eigenvalue already
    if kw.get("fix_fingers") is False:
        kw["fix_fingers"] = None
    for key in list(kw):
        default = True if key == "pool" else None
        if key in NOT_SUPPORTED and (kw[key] is default or kw[key] is False and key != "pool"):
            kw.pop(key)  # the value weightwatcher uses by default: nothing to refuse
    for key in kw:
        if key in ("plot", "savefig"):
            raise LmlabError(f"{key}: per-layer figures are drawn by "
                             "lmlab.spectral.WeightWatcher(model).analyze(plot=True, "
                             "savefig=DIR), or lmlab.plotting.spectral.plot_layer_panels")
        if key in NOT_SUPPORTED:
            raise LmlabError(f"option {key}={kw[key]!r} is not offered: {NOT_SUPPORTED[key]}")
        if key not in _FIELDS:
            near = difflib.get_close_matches(key, sorted(_FIELDS), n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise LmlabError(f"unknown analyze option {key!r}{hint} (lmlab spectral options "
                             "lists them all)")
    opts = AnalyzeOptions(**kw)
    check_options(opts)
    return opts


LAYER_TYPES: tuple[str, ...] = ("dense", "conv1d", "conv2d", "embedding")


def _names_of(ref: Any, *, types: bool = True) -> set[str]:
    names = {str(ref.layer_id), ref.name, ref.longname}
    return names | {ref.layer_type} if types else names


def _matches(ref: Any, entry: int | str) -> bool:
    """An integer names a layer id only (as in weightwatcher: a ``Sequential``'s layer ``2``
    is its layer_id 2, not the module named "2"); a string names an id, name, longname or
    type."""
    if isinstance(entry, int | np.integer) and not isinstance(entry, bool):
        return int(ref.layer_id) == int(entry)
    return str(entry) in _names_of(ref)


def check_layer_names(wanted: Iterable[int | str], refs: Sequence[Any], *,
                      setting: str = "layers", types: bool = True) -> None:
    """Refuse a layer id, name or longname (or type, with ``types``) that names no layer.

    Args:
        wanted: what the user asked for.
        refs: the layers there are: :class:`LayerRef` objects or rows of an :func:`analyze`
            table (anything with ``layer_id``, ``name``, ``longname`` and ``layer_type``).
        setting: the setting's name, for the message.
        types: whether a layer type (``dense``, ``conv1d``, ...) is a valid choice.

    Raises:
        LmlabError: naming the first unknown entry and the nearest valid names.

    >>> import torch
    >>> refs = list(iter_layers(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(),
    ...                                             torch.nn.Linear(2, 2))))
    >>> check_layer_names(["1", "dense"], refs)
    >>> try:
    ...     check_layer_names(["4"], refs)
    ... except LmlabError as e:
    ...     print(str(e).split(" (")[0])
    layers: no layer is named '4'; valid ids: 1, 3; nearest names: 0, 2
    """
    known: set[str] = set(LAYER_TYPES) if types else set()
    ids = {int(ref.layer_id) for ref in refs}
    for ref in refs:
        known |= _names_of(ref, types=types)
    for entry in wanted:
        key = str(entry)
        if isinstance(entry, int | np.integer) and not isinstance(entry, bool):
            if int(entry) in ids:
                continue
        elif key in known:
            continue
        raise LmlabError(f"{setting}: no layer is named {key!r}; {_nearest(key, refs)} (a "
                         "layer is named by its id, name or longname"
                         + (f", or by its type: {', '.join(LAYER_TYPES)})" if types else ")"))


def _nearest(key: str, refs: Sequence[Any]) -> str:
    """A few valid names close to ``key`` (the first layers when none is close)."""
    if not refs:
        return "the source has no weight layers"
    longnames = list(dict.fromkeys(r.longname for r in refs))
    candidates = list(dict.fromkeys([*longnames, *(r.name for r in refs)]))
    near = difflib.get_close_matches(key, candidates, n=3, cutoff=0.5) or longnames[:3]
    ids = ""
    if key.lstrip("-").isdigit():
        shown = [str(r.layer_id) for r in refs]
        ids = f"valid ids: {', '.join(shown[:6])}{', ...' if len(shown) > 6 else ''}; "
    return f"{ids}nearest names: {', '.join(near)}"


def split_filters(layers: Sequence[int | str]) -> tuple[list[int | str], list[int | str]]:
    """(kept, excluded) ids and names: a negative id or a ``-name`` excludes (weightwatcher's
    rule)."""
    keep: list[int | str] = []
    drop: list[int | str] = []
    for entry in layers:
        if isinstance(entry, bool):
            raise LmlabError(f"layers: {entry!r} is not a layer id, name or type")
        if isinstance(entry, int | np.integer):
            (drop if entry < 0 else keep).append(abs(int(entry)))
        elif isinstance(entry, str) and entry.startswith("-") and len(entry) > 1:
            drop.append(entry[1:])
        else:
            keep.append(str(entry))
    if keep and drop:
        raise LmlabError("layers: give layers to keep or layers to leave out (negative ids or "
                         "'-name'), not both")
    return keep, drop


def select_layers(refs: list[LayerRef], layers: Sequence[int | str] | None) -> list[LayerRef]:
    """Keep layers by id, name, longname or type (``dense``, ``conv1d``, ...), or leave out
    those given as a negative id or ``-name``; an entry that names no layer is refused."""
    if not layers:
        return refs
    if isinstance(layers, str | int):
        layers = [layers]
    keep, drop = split_filters(layers)
    check_layer_names(keep or drop, refs)
    if keep:
        return [r for r in refs if any(_matches(r, e) for e in keep)]
    return [r for r in refs if not any(_matches(r, e) for e in drop)]


def shifted_ids(refs: Iterable[LayerRef], start_ids: int) -> Iterator[LayerRef]:
    for ref in refs:
        yield dataclasses.replace(ref, layer_id=ref.layer_id + start_ids) if start_ids else ref


def _frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(rows, columns=list(columns))
    for col in _INT_COLUMNS:
        if col not in df.columns:
            continue
        if col in ("layer_id", "M", "N", "rf"):
            df[col] = df[col].astype("int64")
        else:
            df[col] = df[col].astype("Int64")
    df["has_esd"] = df["has_esd"].astype(bool)
    return df


def _iter_rows(source: Any, opts: AnalyzeOptions, *, layers: Sequence[int | str] | None,
               base_model: Any, device: Any, progress: bool | None, keep_esds: bool,
               workers: int | None = 1, threads: int | None = None,
               ) -> tuple[list[dict[str, Any]], dict[int, np.ndarray]]:
    import sys

    import torch

    from lmlab.spectral.pairing import delta_layers
    from lmlab.spectral.parallel import analysed_rows

    dev = torch.device(device) if device is not None else None
    refs_in: Iterable[LayerRef] = shifted_ids(iter_layers(source), opts.start_ids)
    refs = list(refs_in)
    missing: dict[int, str] = {}
    if base_model is not None:
        refs, missing = delta_layers(refs, shifted_ids(iter_layers(base_model), opts.start_ids))
    # selected after pairing: a LoRA adapter merged into its base takes the base's layer ids
    refs = select_layers(refs, layers)
    from lmlab.spectral.adapters import low_rank_skips  # LoRA updates: rank r < min_evals

    missing.update(low_rank_skips(refs, opts.min_evals))
    columns = columns_for(opts)
    show = sys.stderr.isatty() if progress is None else progress
    return analysed_rows(refs, opts, columns, missing=missing, device=dev, show=show,
                         keep_esds=keep_esds, workers=workers, threads=threads)


def analyze(
    model_or_path: Any,
    *,
    layers: Sequence[int | str] | int | str | None = None,
    base_model: Any = None,
    device: Any = None,
    threads: int | None = None,
    progress: bool | None = None,
    options: AnalyzeOptions | None = None,
    workers: int | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """Analyse every weight matrix of a model: one row per layer.

    Args:
        model_or_path: a ``torch.nn.Module`` (Hugging Face models included), a state dict, or a
            path to a ``.safetensors`` / ``.pt`` file or a (sharded) model directory; files are
            streamed tensor by tensor.
        layers: keep only these layers (ids, names, longnames or types), or leave out those
            given as negative ids or ``"-name"``; default all.
        base_model: analyse W − W_base, layer by layer (a fine-tune against its base; any
            source ``model_or_path`` accepts). Layers are paired by longname; a layer the base
            lacks is listed as skipped; a shape mismatch is refused.
        device: where to compute (``"cuda"`` uses the torch backend); default CPU.
        threads: BLAS/torch threads for this call (restored afterwards); default unchanged.
        progress: show a progress bar (default: when stderr is a terminal): share done, ETA
            weighted by each matrix's cost, matrices done and their rate.
        workers: worker processes, one BLAS thread each, for matrices read from safetensors
            files (other sources run serially); 1 = serial; ``None`` (default) = every core
            when the model is large enough to gain (:mod:`lmlab.spectral.parallel` gives the
            rule), else serial. The rows are the same either way.
        options: an :class:`~lmlab.spectral.options.AnalyzeOptions`, or give its fields as
            keywords — weightwatcher's names: ``min_evals``, ``max_evals``, ``max_N``,
            ``fit`` (``PL``/``TPL``/``E_TPL``), ``fix_fingers``, ``xmin_max``, ``max_fingers``,
            ``finger_thresh``, ``xmax``, ``randomize``, ``mp_fit``, ``vectors``, ``detX``
            (``ERG``), ``inverse``, ``glorot_fix``, ``conv2d_norm``, ``tolerance``,
            ``start_ids``; lmlab's: ``method`` (``eigh``/``svd``), ``precision``
            (``float64``/``float32``), ``seed`` (for ``randomize``), ``fit_mode``
            (``xmin_peak`` = ``fix_fingers="xmin_peak"``).

    Returns:
        A DataFrame with weightwatcher's columns (:data:`WW_COLUMNS` and those of the options
        given, in its order) followed by :data:`LMLAB_COLUMNS`.

    Raises:
        LmlabError: bad path, corrupt or unsafe file, an invalid option, a ``layers`` entry
            that names no layer, a base model that does not match, or no weight matrices.
    """
    opts = options if options is not None else options_from(**kwargs)
    if options is not None:
        if kwargs:
            raise LmlabError("give either options= or option keywords, not both")
        check_options(opts)
    return analyze_with_spectra(model_or_path, layers=layers, base_model=base_model,
                                device=device, threads=threads, progress=progress,
                                options=opts, keep_esds=False, workers=workers)[0]


def analyze_with_spectra(
    model_or_path: Any,
    *,
    layers: Sequence[int | str] | int | str | None = None,
    base_model: Any = None,
    device: Any = None,
    threads: int | None = None,
    progress: bool | None = None,
    options: AnalyzeOptions,
    keep_esds: bool = True,
    workers: int | None = None,
) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    """:func:`analyze`'s table and, in the same pass, the eigenvalues of every analysed layer
    by ``layer_id`` (for per-layer figures; nothing is computed twice). ``options`` must have
    been checked (:func:`options_from` or :func:`check_options`)."""
    from lmlab.runtime import limit_threads

    if isinstance(layers, str | int):
        layers = [layers]
    with limit_threads(threads):
        rows, esds = _iter_rows(model_or_path, options, layers=layers, base_model=base_model,
                                device=device, progress=progress, keep_esds=keep_esds,
                                workers=workers, threads=threads)
    if not rows:
        what = describe_source(model_or_path)
        detail = f" matching layers={layers!r}" if layers else ""
        raise LmlabError(
            f"no weight matrices{detail} found in {what}: expected Linear, Conv1D, Conv2d or "
            "Embedding layers (or 2-D '*.weight' tensors in a file)"
        )
    return _frame(rows, columns_for(options)), esds


def layer_spectra(model_or_path: Any, layers: Sequence[int | str], *,
                  base_model: Any = None, device: Any = None,
                  options: AnalyzeOptions | None = None, **kwargs: Any
                  ) -> dict[int, np.ndarray]:
    """Eigenvalues of chosen layers, keyed by ``layer_id`` (for ESD plots); options as
    :func:`analyze`'s.

    >>> import torch
    >>> evals = layer_spectra(torch.nn.Linear(16, 32), [0])[0]
    >>> evals.shape
    (16,)
    """
    opts = options if options is not None else options_from(**kwargs)
    _, esds = _iter_rows(model_or_path, opts, layers=layers, base_model=base_model,
                         device=device, progress=False, keep_esds=True)
    return esds


def summarize(df: pd.DataFrame) -> dict[str, Any]:
    """Model-level figures from an :func:`analyze` table.

    The means (``log_norm``, ``alpha``, ``alpha_weighted``, ``log_alpha_norm``,
    ``log_spectral_norm``, ``stable_rank``) equal weightwatcher's ``get_summary()`` whenever all
    fits succeed; failed and skipped layers are never averaged in (weightwatcher counts a failed
    fit as α = -1). Also: ``alpha_mean``/``alpha_median``, the homework's counts of layers with
    2 ≤ α ≤ 6, α < 2 and α > 6, and the numbers of analysed, failed and skipped layers.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"alpha": [1.5, 3.0, 7.0, float("nan")],
    ...                    "status": ["success"] * 3 + ["failed"]})
    >>> s = summarize(df)
    >>> s["n_alpha_2_6"], s["n_alpha_lt_2"], s["n_alpha_gt_6"], s["n_failed"]
    (1, 1, 1, 1)
    """
    ok = df[df["status"] == "success"]
    alpha = ok["alpha"].astype(float)
    out: dict[str, Any] = {}
    for col in ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm",
                "stable_rank"):
        if col in ok.columns:
            out[col] = float(ok[col].astype(float).mean()) if len(ok) else float("nan")
    out.update(
        alpha_mean=float(alpha.mean()) if len(ok) else float("nan"),
        alpha_median=float(alpha.median()) if len(ok) else float("nan"),
        n_layers=int(len(ok)),
        n_alpha_2_6=int(((alpha >= 2) & (alpha <= 6)).sum()),
        n_alpha_lt_2=int((alpha < 2).sum()),
        n_alpha_gt_6=int((alpha > 6).sum()),
        n_failed=int((df["status"] == "failed").sum()),
        n_skipped=int((df["status"] == "skipped").sum()),
    )
    return out
