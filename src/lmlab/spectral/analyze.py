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

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from lmlab.errors import LmlabError
from lmlab.spectral.esd import Method, Precision, Spectrum, matrices_of, spectrum_of
from lmlab.spectral.powerlaw import EVALS_THRESH, PowerLawFit, fit_power_law
from lmlab.spectral.sources import LayerRef, describe_source, iter_layers

__all__ = ["analyze", "summarize", "layer_spectra", "check_layer_names", "WW_COLUMNS",
           "LMLAB_COLUMNS", "LAYER_TYPES", "FitMode"]

FitMode = Literal["ww", "xmin_peak"]

#: weightwatcher 0.7.7's default analyze() columns, in its order.
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
                "rank_loss", "weak_rank_loss")
_WEAK_RANK_TOL = 1e-6
_EPSILON = 1e-10
OVER_TRAINED, UNDER_TRAINED = 2.0, 6.0


# ----------------------------------------------------------------------------- per layer


def _dims(ref: LayerRef) -> tuple[int, int, int]:
    """(N, M, rf) from the weight shape alone, before loading it."""
    shape = ref.shape
    if ref.layer_type == "conv2d" and len(shape) == 4:
        n, m, kh, kw = shape
        if n + m >= kh + kw:
            return max(n, m), min(n, m), kh * kw
        return max(kh, kw), min(kh, kw), n * m
    if len(shape) != 2:
        return 0, 0, 1
    return max(shape), min(shape), 1


def _skip_reason(N: int, M: int, rf: int, ref: LayerRef, min_evals: int, max_evals: int,
                 max_N: int | None) -> str:
    if ref.layer_type != "conv2d" and len(ref.shape) != 2:
        return f"unsupported weight shape {ref.shape} for a {ref.layer_type} layer"
    if min_evals and M * rf < min_evals:
        return f"too small: {M * rf} eigenvalues < min_evals {min_evals}"
    if max_evals and M * rf > max_evals:
        return f"too large: {M * rf} eigenvalues > max_evals {max_evals}"
    if max_N is not None and N > max_N:
        return f"N = {N} > max_N {max_N} (weightwatcher's rule; lift it with max_N=None)"
    return ""


def _base_row(ref: LayerRef, N: int, M: int, rf: int, fit_mode: str) -> dict[str, Any]:
    row: dict[str, Any] = {c: np.nan for c in WW_COLUMNS}
    row.update(
        layer_id=ref.layer_id, name=ref.name, longname=ref.longname, layer_type=ref.layer_type,
        N=N, M=M, rf=rf, Q=(N / M if M > 0 else -1.0), has_esd=False, warning="",
        reason="", fit_mode=fit_mode,
    )
    return row


def _matrix_entropy(sv: np.ndarray, rank: int) -> float:
    evals = sv * sv
    p = evals / np.sum(evals) + _EPSILON
    return float(-np.sum(p * np.log(p)) / np.log(rank + _EPSILON))


def _metrics(spec: Spectrum, fit: PowerLawFit, N: int) -> dict[str, Any]:
    """weightwatcher's ESD, fit and norm columns for one layer."""
    evals = spec.evals
    norm = float(np.sum(evals))
    spectral_norm = float(np.max(evals))
    sv = np.sqrt(evals)
    rank = int(np.count_nonzero(sv > np.max(sv) * N * np.finfo(sv.dtype).eps))
    out: dict[str, Any] = dict(
        has_esd=True, num_evals=len(evals), sv_max=spec.sv_max, sv_min=spec.sv_min,
        rank_loss=spec.rank_loss, weak_rank_loss=int(np.count_nonzero(evals < _WEAK_RANK_TOL)),
        lambda_max=spectral_norm, norm=norm, log_norm=math.log10(norm),
        spectral_norm=spectral_norm, log_spectral_norm=math.log10(spectral_norm),
        stable_rank=norm / spectral_norm, matrix_rank=rank, entropy=_matrix_entropy(sv, rank),
    )
    if fit.ok:
        alpha = fit.alpha
        with np.errstate(over="ignore", divide="ignore"):
            log_alpha_norm = float(np.log10(np.sum(evals**alpha)))
        out.update(
            alpha=alpha, xmin=fit.xmin, xmax=fit.xmax, D=fit.D, sigma=fit.sigma,
            num_pl_spikes=int(np.count_nonzero(evals >= fit.xmin)),
            alpha_weighted=alpha * out["log_spectral_norm"], log_alpha_norm=log_alpha_norm,
            status="success",
            warning=("over-trained" if alpha < OVER_TRAINED
                     else "under-trained" if alpha > UNDER_TRAINED else ""),
        )
    else:
        out.update(status="failed", reason=f"power-law fit failed: {fit.reason}")
    return out


def _xmin_range(evals: np.ndarray, fit_mode: FitMode) -> tuple[float, float] | None:
    """The xmin search range of a fit mode (None: weightwatcher's, unrestricted)."""
    if fit_mode == "ww":
        return None
    nz = evals[evals > EVALS_THRESH]
    if nz.size < 2:
        return None
    counts, edges = np.histogram(np.log10(nz), bins=100)
    peak = 10 ** edges[int(np.argmax(counts))]
    return 0.95 * peak, 1.5 * peak


def _to_numpy(tensor: Any) -> np.ndarray:
    """float32 (complex64 for complex weights: the imaginary part is kept, never dropped)."""
    import torch

    t = tensor.detach().to("cpu")
    if t.is_complex():
        return t.to(torch.complex64).numpy()
    return t.float().numpy()


def _energy(flat: np.ndarray) -> float:
    """Σ|w|² in one pass (NaN/Inf propagate; zero means an all-zero matrix)."""
    if np.iscomplexobj(flat):
        return float(np.vdot(flat, flat).real)
    return float(np.dot(flat, flat))


def _layer_row(ref: LayerRef, *, min_evals: int, max_evals: int, max_N: int | None,
               method: Method, precision: Precision, fit_mode: FitMode,
               backend: str, device: Any) -> tuple[dict[str, Any], np.ndarray | None]:
    N, M, rf = _dims(ref)
    row = _base_row(ref, N, M, rf, fit_mode)
    reason = _skip_reason(N, M, rf, ref, min_evals, max_evals, max_N)
    if reason:
        row.update(status="skipped", reason=reason)
        return row, None
    W = _to_numpy(ref.load())
    flat = W.ravel()
    energy = _energy(flat)
    if not math.isfinite(energy):
        bad = int(flat.size - np.count_nonzero(np.isfinite(flat)))
        if bad:
            row.update(status="failed", reason=f"weights contain {bad} NaN/Inf values")
            return row, None
    elif energy == 0.0:
        row.update(status="failed", reason="all-zero weight matrix")
        return row, None
    mats, N, M, rf = matrices_of(W, ref.layer_type)
    scale = math.sqrt(0.5) if ref.layer_type == "conv2d" else 1.0
    if backend == "torch":
        from lmlab.spectral.esd_torch import spectrum_of_torch

        spec = spectrum_of_torch(mats, N=N, scale=scale, precision=precision, device=device)
    else:
        spec = spectrum_of(mats, N=N, scale=scale, method=method, precision=precision)
    fit = fit_power_law(spec.evals, xmin_range=_xmin_range(spec.evals, fit_mode))
    row.update(_metrics(spec, fit, N))
    return row, spec.evals


# ----------------------------------------------------------------------------- public API


LAYER_TYPES: tuple[str, ...] = ("dense", "conv1d", "conv2d", "embedding")


def _names_of(ref: Any, *, types: bool = True) -> set[str]:
    names = {str(ref.layer_id), ref.name, ref.longname}
    return names | {ref.layer_type} if types else names


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
    for ref in refs:
        known |= _names_of(ref, types=types)
    for entry in wanted:
        key = str(entry)
        if key in known:
            continue
        raise LmlabError(f"{setting}: no layer is named {key!r}; {_nearest(key, refs)} (a "
                         "layer is named by its id, name or longname"
                         + (f", or by its type: {', '.join(LAYER_TYPES)})" if types else ")"))


def _nearest(key: str, refs: Sequence[Any]) -> str:
    """A few valid names close to ``key`` (the first layers when none is close)."""
    import difflib

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


def _select(refs: list[LayerRef], layers: Sequence[int | str] | None) -> list[LayerRef]:
    """Keep layers by id, name, longname or type (``dense``, ``conv1d``, ...); an entry that
    names no layer is refused."""
    if not layers:
        return refs
    check_layer_names(layers, refs)
    wanted = {str(x) for x in layers}
    return [r for r in refs if _names_of(r) & wanted]


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(rows, columns=[*WW_COLUMNS, *LMLAB_COLUMNS])
    for col in _INT_COLUMNS:
        if col in ("layer_id", "M", "N", "rf"):
            df[col] = df[col].astype("int64")
        else:
            df[col] = df[col].astype("Int64")
    df["has_esd"] = df["has_esd"].astype(bool)
    return df


def _iter_rows(source: Any, *, layers: Sequence[int | str] | None, min_evals: int,
               max_evals: int, max_N: int | None, method: Method, precision: Precision,
               fit_mode: FitMode, device: Any, progress: bool | None,
               keep_esds: bool) -> tuple[list[dict[str, Any]], dict[int, np.ndarray]]:
    import sys

    import torch
    from tqdm.auto import tqdm

    dev = torch.device(device) if device is not None else torch.device("cpu")
    backend = "torch" if dev.type != "cpu" else "numpy"
    refs = _select(list(iter_layers(source)), layers)
    show = sys.stderr.isatty() if progress is None else progress
    rows, esds = [], {}
    bar = tqdm(refs, desc="spectra", unit="layer", disable=not show, leave=False)
    for ref in bar:
        bar.set_postfix_str(ref.longname[-40:], refresh=False)
        row, evals = _layer_row(
            ref, min_evals=min_evals, max_evals=max_evals, max_N=max_N, method=method,
            precision=precision, fit_mode=fit_mode, backend=backend, device=dev,
        )
        rows.append(row)
        if keep_esds and evals is not None:
            esds[ref.layer_id] = evals
    return rows, esds


def analyze(
    model_or_path: Any,
    *,
    layers: Sequence[int | str] | None = None,
    min_evals: int = 8,
    max_evals: int = 15000,
    max_N: int | None = 50000,
    method: Method = "eigh",
    precision: Precision = "float64",
    fit_mode: FitMode = "ww",
    device: Any = None,
    threads: int | None = None,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Analyse every weight matrix of a model: one row per layer.

    Args:
        model_or_path: a ``torch.nn.Module`` (Hugging Face models included), a state dict, or a
            path to a ``.safetensors`` / ``.pt`` file or a (sharded) model directory; files are
            streamed tensor by tensor.
        layers: keep only these layers (ids, names, longnames or types); default all.
        min_evals, max_evals: weightwatcher's size rules on the number of eigenvalues (M·rf).
        max_N: skip matrices whose larger side exceeds this (weightwatcher: 50000, which skips
            GPT-2's ``wte``); ``None`` lifts the rule.
        method: ``"eigh"`` (Gram matrix, fast, the default) or ``"svd"``.
        precision: ``"float64"`` (weightwatcher parity) or ``"float32"`` (fast mode).
        fit_mode: ``"ww"`` (every eigenvalue a candidate xmin: weightwatcher's choice) or
            ``"xmin_peak"`` (xmin searched within [0.95, 1.5]× the peak of the log-ESD, a guard
            against spuriously large α from "fingers"). Recorded in the ``fit_mode`` column.
        device: where to compute (``"cuda"`` uses the torch backend); default CPU.
        threads: BLAS/torch threads for this call (restored afterwards); default unchanged.
        progress: show a progress bar (default: when stderr is a terminal).

    Returns:
        A DataFrame with weightwatcher's columns (:data:`WW_COLUMNS`, same order) followed by
        :data:`LMLAB_COLUMNS`.

    Raises:
        LmlabError: bad path, corrupt or unsafe file, a ``layers`` entry that names no layer,
            or no weight matrices at all.
    """
    from lmlab.runtime import limit_threads

    with limit_threads(threads):
        rows, _ = _iter_rows(
            model_or_path, layers=layers, min_evals=min_evals, max_evals=max_evals, max_N=max_N,
            method=method, precision=precision, fit_mode=fit_mode, device=device,
            progress=progress, keep_esds=False,
        )
    if not rows:
        what = describe_source(model_or_path)
        detail = f" matching layers={list(layers)}" if layers else ""
        raise LmlabError(
            f"no weight matrices{detail} found in {what}: expected Linear, Conv1D, Conv2d or "
            "Embedding layers (or 2-D '*.weight' tensors in a file)"
        )
    return _frame(rows)


def layer_spectra(model_or_path: Any, layers: Sequence[int | str], **kwargs: Any
                  ) -> dict[int, np.ndarray]:
    """Eigenvalues of chosen layers, keyed by ``layer_id`` (for ESD plots).

    >>> import torch
    >>> evals = layer_spectra(torch.nn.Linear(16, 32), [0])[0]
    >>> evals.shape
    (16,)
    """
    defaults: dict[str, Any] = dict(
        min_evals=8, max_evals=15000, max_N=50000, method="eigh", precision="float64",
        fit_mode="ww", device=None, progress=False,
    )
    defaults.update(kwargs)
    _, esds = _iter_rows(model_or_path, layers=layers, keep_esds=True, **defaults)
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
