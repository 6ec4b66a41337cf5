"""QK/OV circuit measurements over every checkpoint of a run at once (spec §6).

:func:`measure_runs` measures the settings of :func:`~lmlab.circuits.find_settings` (or any
setting → run folder mapping) and returns a long table: one row per (``setting``, ``step``,
``method``, ``rel_dist``). All checkpoints of a run are stacked into ``(N, d, d)`` arrays and
measured with batched NumPy SVDs; per checkpoint and option:

* ``W_qk = W_q1ᵀ R W_k1 / √d`` (layer ``cfg.layers[1]``) with ``R = rotary_R(d, rel_dist, θ,
  cfg.r_sign)`` (``rel_dist = 0``: ``R = I``, as the source's ``plot_qk_subspace_matching`` and
  ``plots_maker``), ``W_ov = W_o0 W_v0`` (layer ``cfg.layers[0]``), biases ignored;
* ``match_r{r}``: inner matching of ``V_qk[:, :r]`` and ``U_ov[:, :r]``, ``outer_match_r{r}``:
  ``V_ov[:, :r]`` and ``U_qk[:, :r]``, ``emb_ov_match_r{r}``: ``V_E[:, :r]`` and
  ``U_ov[:, :r]`` — each the largest principal cosine (``method="largest"``, σ_max) or the RMS
  of the ``r`` principal cosines (``"mean"``); ``baseline_r{r}``: the Haar-random baseline of
  the same method;
* ``zscore`` (diagonal z-score of ``W_qk W_ov``), ``mismatch`` (token mismatch of
  ``E W_qk W_ov Eᵀ`` along ``cfg.argmax_axis``);
* ScreeNOT ranks ``rank_{qk,ov,E,Enorm,Wq0,Wk0}_k{k}`` for ``k`` in ``cfg.screenot_k``:
  ``Enorm`` is E with unit-norm rows (the source's ``F.normalize(wte, dim=-1)``), ``Wq0``,
  ``Wk0`` the layer-0 (``cfg.layers[0]``) query and key weights;
* position matching of layer 0 (:func:`~lmlab.circuits.position_matching`):
  ``pos_frac_{q,k}_r{r}``, ``tok_frac_{q,k}_r{r}``, ``pos_match_{q,k}_r{r}``,
  ``tok_match_{q,k}_r{r}`` for ``r`` in ``cfg.position_ranks``, ``sv_{q,k}0_{i}``;
* the errors of ``err_arr.json`` at ``epoch = step − 1`` (:data:`ERR_COLUMNS`, NaN where
  absent);
* the conventions (``r_sign``, ``argmax_axis``, ``layernorm``, ``rotary_theta``) as columns.

``layernorm="fold"`` folds the LayerNorm gains into the circuits — ``W diag(γℓ)`` for every
W reading LN output, ``γℓ = h.ℓ.ln_1.weight`` — and centres each token's embedding
(``E − mean_d E``); ``"ignore"`` (default) uses the raw weights as the authors did.

:func:`circuit_matrices` gives ``W_qkov`` and ``QK0 = E W_qk W_ov Eᵀ`` at chosen steps, for
heat maps.

>>> import torch, tempfile
>>> from lmlab.circuits import checkpoint_shapes
>>> with tempfile.TemporaryDirectory() as tmp:
...     run = Path(tmp)
...     for k in (0, 200, 600):
...         sd = {key: torch.randn(shape) for key, shape in checkpoint_shapes().items()}
...         torch.save(sd, run / f"ckpt_{k}.pt")
...     cfg = MeasureConfig(ranks=(1, 5), baseline_draws=50)
...     df = measure_runs({"a": run}, cfg, methods=("largest", "mean"), rel_dists=(0, 1),
...                       baseline_cache_dir=run)
>>> len(df), df.attrs["missing"]
(12, {'a': ['ckpt_400.pt', 'config.json', 'err_arr.json']})
>>> df[["match_r5", "baseline_r5", "zscore", "mismatch", "rank_Wq0_k5"]].shape
(12, 5)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from lmlab.circuits.position import position_matching
from lmlab.circuits.runs import (
    ERR_COLUMNS,
    RunWeights,
    SettingsFound,
    _architecture,
    _file_problems,
    _load_state_dict,
    load_run,
    read_config,
    run_checkpoints,
)
from lmlab.circuits.screenot import Strategy, max_k, screenot_from_singular_values
from lmlab.circuits.subspace import (
    Method,
    diagonal_zscore,
    matching_curve,
    random_baseline,
    rotary_R,
    token_mismatch,
)
from lmlab.errors import LmlabError

__all__ = [
    "MeasureConfig",
    "circuit_matrices",
    "measure_run",
    "measure_runs",
]

_METHODS = ("largest", "mean")


@dataclass(frozen=True)
class MeasureConfig:
    """What to measure and under which conventions (all recorded with the results).

    The matching ``method`` and the rotary ``rel_dist`` are arguments of :func:`measure_runs`
    (several at once), not fields.

    Args:
        ranks: ranks ``r`` of the QK–OV and embedding–OV matchings.
        r_sign: ``+1``: key ``rel_dist`` positions after the query (the authors' ``R[t]``);
            ``-1``: before it (``Rᵀ``).
        argmax_axis: token mismatch by rows (query token) or columns (key token).
        layernorm: ``"ignore"`` the LayerNorm gains or ``"fold"`` them in (module docstring).
        screenot_k: rank bounds ``k`` of the ScreeNOT estimates.
        screenot_strategy: ScreeNOT's pseudo-noise strategy.
        outer: also compute ``outer_match_r{r}``.
        position_ranks: ranks of the layer-0 position matching.
        n_singular: singular values ``sv_{q,k}0_{i}`` of layer 0's W_q, W_k kept.
        baseline_draws: Haar draws of the random baseline.
        baseline_seed: seed of those draws.
        layers: ``(OV layer, QK layer)``; position matching and ``Wq0``/``Wk0`` use the first.
        rotary_theta: rotary base; ``None`` reads ``rotary_theta`` from ``config.json``
            (10000 when absent, as for older runs).

    >>> MeasureConfig().argmax_axis, MeasureConfig().position_ranks
    ('row', (5, 10, 15, 20))
    """

    ranks: tuple[int, ...] = tuple(range(1, 33))
    r_sign: Literal[1, -1] = 1
    argmax_axis: Literal["row", "col"] = "row"
    layernorm: Literal["ignore", "fold"] = "ignore"
    screenot_k: tuple[int, ...] = (5, 10, 20)
    screenot_strategy: Strategy = "i"
    outer: bool = True
    position_ranks: tuple[int, ...] = (5, 10, 15, 20)
    n_singular: int = 5
    baseline_draws: int = 1000
    baseline_seed: int = 0
    layers: tuple[int, int] = (0, 1)
    rotary_theta: float | None = None

    def __post_init__(self) -> None:
        choices = {"r_sign": (1, -1), "argmax_axis": ("row", "col"),
                   "layernorm": ("ignore", "fold"), "screenot_strategy": ("i", "w", "0")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise LmlabError(f"MeasureConfig.{name} must be one of {allowed}, "
                                 f"got {getattr(self, name)!r}")
        for name in ("ranks", "position_ranks", "screenot_k"):
            values = getattr(self, name)
            if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                       for v in values):
                raise LmlabError(f"MeasureConfig.{name} must be integers, got {values}")
        if not self.ranks or min((*self.ranks, *self.position_ranks)) < 1:
            raise LmlabError(f"MeasureConfig ranks must be positive integers, got "
                             f"{self.ranks} and position_ranks {self.position_ranks}")
        if self.baseline_draws < 1:
            raise LmlabError(f"baseline_draws must be >= 1, got {self.baseline_draws}")
        if self.n_singular < 0:
            raise LmlabError(f"n_singular must be >= 0, got {self.n_singular}")


def _options(methods: str | Iterable[str],
             rel_dists: int | Iterable[int]) -> tuple[tuple[Method, ...], tuple[int, ...]]:
    ms = (methods,) if isinstance(methods, str) else tuple(methods)
    ts = (rel_dists,) if isinstance(rel_dists, (int, np.integer)) else tuple(rel_dists)
    bad = [m for m in ms if m not in _METHODS]
    if not ms or bad:
        raise LmlabError(f"methods must be one or more of {_METHODS}, got {list(ms)}")
    if not ts or not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool)
                         and t >= 0 for t in ts):
        raise LmlabError(f"rel_dists must be integers >= 0 (0 means R = I), got {list(ts)}")
    unique: tuple[Any, ...] = tuple(dict.fromkeys(ms))
    return unique, tuple(int(t) for t in dict.fromkeys(ts))


def _validate(cfg: MeasureConfig, w: RunWeights) -> None:
    d, V = w.d_model, w.vocab_size
    if max(cfg.layers) >= w.num_layers:
        raise LmlabError(f"MeasureConfig.layers={cfg.layers} needs at least "
                         f"{max(cfg.layers) + 1} layers; the run has {w.num_layers}")
    top = max((*cfg.ranks, *cfg.position_ranks))
    if top > min(d, V):
        raise LmlabError(f"ranks must be <= min(d_model, vocab_size) = {min(d, V)}, got {top}")
    if d % 2:
        raise LmlabError(f"rotary needs an even d_model, got {d}")
    hi = max_k(min(d, V), cfg.screenot_strategy)
    bad = [k for k in cfg.screenot_k if not 0 <= k <= hi]
    if bad:
        raise LmlabError(f"screenot_k {bad} out of range: k must lie in [0, {hi}] for "
                         f"strategy {cfg.screenot_strategy!r} on {min(d, V)}-wide matrices")


def _svd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u, s, vh = np.linalg.svd(x, full_matrices=False)
    return u, s, vh


class _Circuits:
    """The float64 circuits of every checkpoint (no SVDs: those are the callers').

    Attributes:
        d: ``d_model``.
        theta: the rotary base.
        E: ``(N, V, d)`` embeddings (centred per token with ``layernorm="fold"``).
        W_ov: ``(N, d, d)`` ``W_o W_v`` of the OV layer.
        Wq0, Wk0: ``(N, d, d)`` query and key weights of the OV layer (γ folded in if asked).
    """

    def __init__(self, cfg: MeasureConfig, w: RunWeights) -> None:
        f64 = np.float64
        d, L_ov, L_qk = w.d_model, cfg.layers[0], cfg.layers[1]
        self.d, self.r_sign = d, cfg.r_sign
        self.theta = float(cfg.rotary_theta or w.config.get("rotary_theta") or 10000.0)
        E = w.E.astype(f64)                                       # (N, V, d)
        Wq, Wk = w.weight(L_qk, "q").astype(f64), w.weight(L_qk, "k").astype(f64)
        Wv, Wo = w.weight(L_ov, "v").astype(f64), w.weight(L_ov, "o").astype(f64)
        Wq0, Wk0 = w.weight(L_ov, "q").astype(f64), w.weight(L_ov, "k").astype(f64)
        if cfg.layernorm == "fold":
            g1 = w.params[f"h.{L_qk}.ln_1.weight"].astype(f64)[:, None, :]   # (N, 1, d)
            g0 = w.params[f"h.{L_ov}.ln_1.weight"].astype(f64)[:, None, :]
            Wq, Wk, Wv = Wq * g1, Wk * g1, Wv * g0                # W diag(γ): scale the columns
            Wq0, Wk0 = Wq0 * g0, Wk0 * g0
            E = E - E.mean(axis=-1, keepdims=True)
        self.E, self.WqT, self.Wk = E, np.swapaxes(Wq, -1, -2), Wk
        self.Wq0, self.Wk0 = Wq0, Wk0
        self.W_ov = Wo @ Wv                                       # (N, d, d)

    def qk(self, t: int) -> np.ndarray:
        """``(N, d, d)`` ``W_qk`` at relative distance ``t`` (``t = 0``: ``R = I``)."""
        R = rotary_R(self.d, t, self.theta, self.r_sign)
        return self.WqT @ R @ self.Wk / math.sqrt(self.d)


def _ranks(cfg: MeasureConfig, c: _Circuits, S_qk: Mapping[int, np.ndarray],
           S_ov: np.ndarray, S_E: np.ndarray) -> tuple[dict[str, np.ndarray],
                                                         dict[int, dict[str, np.ndarray]]]:
    """ScreeNOT ranks: those common to all rows, and ``rank_qk_k{k}`` per relative distance."""
    S_Enorm = np.linalg.svd(c.E / np.linalg.norm(c.E, axis=-1, keepdims=True),
                            compute_uv=False)
    S_q0 = np.linalg.svd(c.Wq0, compute_uv=False)
    S_k0 = np.linalg.svd(c.Wk0, compute_uv=False)
    ts = list(S_qk)
    square = np.stack([S_ov, S_q0, S_k0, *(S_qk[t] for t in ts)])    # (3 + T, N, d)
    wide = np.stack([S_E, S_Enorm])                                   # (2, N, min(V, d))
    common: dict[str, np.ndarray] = {}
    per_t: dict[int, dict[str, np.ndarray]] = {t: {} for t in ts}
    V = c.E.shape[-2]
    for k in cfg.screenot_k:
        _, r_sq = screenot_from_singular_values(square, (c.d, c.d), k, cfg.screenot_strategy)
        _, r_wd = screenot_from_singular_values(wide, (V, c.d), k, cfg.screenot_strategy)
        common.update({f"rank_ov_k{k}": r_sq[0], f"rank_E_k{k}": r_wd[0],
                       f"rank_Enorm_k{k}": r_wd[1], f"rank_Wq0_k{k}": r_sq[1],
                       f"rank_Wk0_k{k}": r_sq[2]})
        for i, t in enumerate(ts):
            per_t[t][f"rank_qk_k{k}"] = r_sq[3 + i]
    return common, per_t


def measure_run(run: str | Path | RunWeights, cfg: MeasureConfig | None = None, *,
                methods: str | Sequence[str] = ("largest",),
                rel_dists: int | Sequence[int] = (1,),
                baseline_cache_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per (checkpoint step, method, rel_dist) of one run (module docstring).

    Args:
        run: a run folder (read with ``load_run(strict=False)``) or weights from
            :func:`~lmlab.circuits.load_run`.
        cfg: what to measure; default :class:`MeasureConfig`.
        methods: ``"largest"``, ``"mean"`` or both.
        rel_dists: relative distances of the rotary ``R`` (0: ``R = I``).
        baseline_cache_dir: root of the random-baseline cache (default: lmlab's cache dir).

    Returns:
        A DataFrame ordered by method, rel_dist, step; ``attrs`` holds ``measure_config``,
        ``missing``, ``problems`` and ``run_dir``.
    """
    cfg = cfg or MeasureConfig()
    ms, ts = _options(methods, rel_dists)
    w = run if isinstance(run, RunWeights) else load_run(run, strict=False)
    _validate(cfg, w)
    c = _Circuits(cfg, w)
    n = len(w)
    U_ov, S_ov, Vh_ov = _svd(c.W_ov)
    _, S_E, Vh_E = _svd(c.E)
    W_qk = {t: c.qk(t) for t in ts}
    qk = {t: _svd(W_qk[t]) for t in ts}
    rank_common, rank_t = _ranks(cfg, c, {t: qk[t][1] for t in ts}, S_ov, S_E)
    ranks = list(cfg.ranks)
    base_ranks = sorted(set(cfg.ranks) | set(cfg.position_ranks))
    shared: dict[str, Any] = {**rank_common, **_err_columns(w)}
    per_t: dict[int, dict[str, Any]] = {}
    for t in ts:
        per_t[t] = {"zscore": diagonal_zscore(W_qk[t] @ c.W_ov),
                    "mismatch": token_mismatch(c.E, W_qk[t], c.W_ov, cfg.argmax_axis),
                    **rank_t[t]}
    blocks = []
    for m in ms:
        base = random_baseline(c.d, base_ranks, cfg.baseline_draws, cfg.baseline_seed,
                               baseline_cache_dir, method=m)
        emb = matching_curve(Vh_E @ U_ov, ranks, m)
        pos = position_matching(c.Wq0, c.Wk0, c.E, cfg.position_ranks, m, cfg.n_singular)
        for t in ts:
            U_qk, _, Vh_qk = qk[t]
            cols: dict[str, Any] = {"step": w.steps, "method": m, "rel_dist": t,
                                    "r_sign": cfg.r_sign, "argmax_axis": cfg.argmax_axis,
                                    "layernorm": cfg.layernorm, "rotary_theta": c.theta}
            curves = {"match": Vh_qk @ U_ov, **({"outer_match": Vh_ov @ U_qk} if cfg.outer
                                                 else {})}
            for name, C in curves.items():
                vals = matching_curve(C, ranks, m)
                cols.update({f"{name}_r{r}": vals[:, i] for i, r in enumerate(ranks)})
            cols.update({f"emb_ov_match_r{r}": emb[:, i] for i, r in enumerate(ranks)})
            cols.update({f"baseline_r{r}": np.full(n, base[i])
                         for i, r in enumerate(base_ranks)})
            cols.update(per_t[t])
            cols.update(shared)
            cols.update(pos)
            blocks.append(pd.DataFrame(cols))
    df = pd.concat(blocks, ignore_index=True)
    df = df[[*df.columns[:7], *[c for c in df.columns[7:] if c not in ERR_COLUMNS],
             *ERR_COLUMNS]]
    df.attrs.update(measure_config={**asdict(cfg), "methods": list(ms), "rel_dists": list(ts)},
                    missing=list(w.missing), problems=list(w.problems),
                    run_dir=str(w.run_dir) if w.run_dir else None)
    return df


def _err_columns(w: RunWeights) -> dict[str, np.ndarray]:
    """The :data:`ERR_COLUMNS` of ``err_arr.json`` at ``epoch = step − 1`` (NaN where absent)."""
    epochs, err = w.steps - 1, w.err
    return {c: err[c].reindex(epochs).to_numpy(dtype=np.float64)
            if err is not None and c in err else np.full(len(w), np.nan) for c in ERR_COLUMNS}


def measure_runs(run_dirs: Mapping[str, str | Path | RunWeights] | SettingsFound,
                 cfg: MeasureConfig | None = None, *,
                 methods: str | Sequence[str] = ("largest",),
                 rel_dists: int | Sequence[int] = (1,),
                 baseline_cache_dir: str | Path | None = None) -> pd.DataFrame:
    """:func:`measure_run` for several settings, stacked with a leading ``setting`` column.

    What can be measured is measured: a setting whose files have problems (no config, no
    ``err_arr.json``, missing, unreadable or foreign checkpoints, NaN weights) is measured on
    what is there, or left out, and each problem is one line of ``attrs["problems"]``.

    Args:
        run_dirs: setting name → run folder (or loaded weights), or :func:`find_settings`'s
            result (its problems are carried over).
        cfg: what to measure.
        methods: ``"largest"``, ``"mean"`` or both.
        rel_dists: relative distances of the rotary ``R`` (0: ``R = I``).
        baseline_cache_dir: root of the random-baseline cache.

    Returns:
        One row per (setting, step, method, rel_dist); ``attrs``: ``measure_config`` (with
        ``methods`` and ``rel_dists``), ``missing`` (setting → absent files), ``problems``
        (lines), ``run_dirs`` (setting → folder).

    Raises:
        LmlabError: nothing at all can be measured (one line naming the files), or a bad
            option.
    """
    cfg = cfg or MeasureConfig()
    _options(methods, rel_dists)
    problems: list[str] = []
    if isinstance(run_dirs, SettingsFound):
        problems += run_dirs.problems
        run_dirs = run_dirs.settings
    if not run_dirs:
        raise LmlabError("measure_runs needs at least one run folder")
    frames, missing, folders = [], {}, {}
    for name, run in run_dirs.items():
        if not isinstance(run, RunWeights):
            lines, ok = _file_problems(name, Path(run))
            problems += lines
            if not ok:
                continue
            try:
                run = load_run(run, strict=False)
            except LmlabError as exc:
                problems.append(f"{name}: {exc}: not measured")
                continue
        problems += [f"{name}: {p}" for p in run.problems]
        try:        # e.g. a 1-layer control run, or ranks wider than this model
            df = measure_run(run, cfg, methods=methods, rel_dists=rel_dists,
                             baseline_cache_dir=baseline_cache_dir)
        except LmlabError as exc:
            problems.append(f"{name}: {exc}: not measured")
            continue
        missing[name] = df.attrs["missing"]
        folders[name] = df.attrs["run_dir"]
        df.insert(0, "setting", name)
        frames.append(df)
    problems = list(dict.fromkeys(problems))
    if not frames:
        raise LmlabError("nothing can be measured: " + "; ".join(problems))
    out = pd.concat(frames, ignore_index=True)
    out.attrs = {"measure_config": frames[0].attrs["measure_config"], "missing": missing,
                 "problems": problems, "run_dirs": folders}
    return out


def circuit_matrices(run_dir: str | Path, steps: Iterable[int], *, rel_dist: int = 1,
                     cfg: MeasureConfig | None = None) -> dict[int, dict[str, np.ndarray]]:
    """The circuits of the checkpoints nearest to ``steps``, for heat maps.

    For each requested step the nearest checkpoint that can be read (ties: the earlier one;
    unreadable or foreign ones are passed over) gives, under ``cfg``'s conventions (``r_sign``,
    ``layernorm``, ``layers``, ``rotary_theta``):

    * ``"W_qk"`` (d × d) at ``rel_dist``, ``"W_ov"`` (d × d), ``"W_qkov" = W_qk W_ov``;
    * ``"QK0" = E W_qk W_ov Eᵀ`` (V × V): row = query token, column = copied key token.

    Args:
        run_dir: a run folder.
        steps: the steps wanted.
        rel_dist: relative distance of the rotary ``R`` (0: ``R = I``).
        cfg: conventions; default :class:`MeasureConfig`.

    Returns:
        checkpoint step → matrices, keyed by the step of the checkpoint used (requests that
        land on the same checkpoint share one entry).

    Raises:
        LmlabError: no checkpoint in ``run_dir`` can be read.
    """
    cfg = cfg or MeasureConfig()
    _options("largest", rel_dist)
    root, found = run_checkpoints(run_dir)
    config: dict[str, Any] = {}
    if (root / "config.json").is_file():
        try:
            config = read_config(root / "config.json")
        except LmlabError:
            config = {}
    out: dict[int, dict[str, np.ndarray]] = {}
    failed: list[str] = []
    for want in steps:
        for k in sorted(found, key=lambda s: (abs(s - int(want)), s)):
            if k in out:
                break
            sd = _usable(found[k], failed)
            if sd is None:
                continue
            w = RunWeights(np.array([k]), {key: v[None] for key, v in sd.items()}, config)
            _validate(MeasureConfig(ranks=(1,), position_ranks=(), screenot_k=(),
                                    layers=cfg.layers), w)
            c = _Circuits(cfg, w)
            W_qk = c.qk(rel_dist)[0]
            W_ov = c.W_ov[0]
            E = c.E[0]
            out[k] = {"W_qk": W_qk, "W_ov": W_ov, "W_qkov": W_qk @ W_ov,
                      "QK0": E @ W_qk @ W_ov @ E.T}
            break
        else:
            raise LmlabError(f"no checkpoint in {root} can be read: " + "; ".join(failed[:3]))
    return out


def _usable(path: Path, failed: list[str]) -> dict[str, np.ndarray] | None:
    """The float32 arrays of a checkpoint, or None (the reason appended to ``failed``)."""
    import torch

    try:
        sd = _load_state_dict(path)
    except LmlabError as exc:
        failed.append(str(exc))
        return None
    if _architecture(sd) is None:
        failed.append(f"{path.name} is not a rotary attention-only TFModel")
        return None
    arrays = {k: v.detach().to(torch.float32).numpy() for k, v in sd.items()}
    if not all(np.isfinite(a).all() for a in arrays.values()):
        failed.append(f"{path.name} holds NaN or inf")
        return None
    return arrays

