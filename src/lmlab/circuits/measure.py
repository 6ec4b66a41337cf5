"""QK/OV circuit measurements over every checkpoint of a run at once (spec §6).

A run directory (spec §4) holds ``config.json``, ``ckpt_{k}.pt`` (state dicts of a 2-layer rotary
attention-only ``TFModel``) and ``err_arr.json``. :func:`load_run` stacks all checkpoints into
``(N, ...)`` arrays; :func:`measure_run` computes, per checkpoint, with batched NumPy SVDs of the
``(N, d, d)`` stacks:

* ``W_qk = W_q1ᵀ R W_k1 / √d`` (layer ``cfg.layers[1]``), ``W_ov = W_o0 W_v0`` (layer
  ``cfg.layers[0]``), biases ignored; ``R = rotary_R(d, cfg.rel_dist, θ, cfg.r_sign)``;
* ``match_r{r}``: ``σ_max(V_qk[:, :r]ᵀ U_ov[:, :r])`` (inner matching), ``outer_match_r{r}``:
  ``σ_max(V_ov[:, :r]ᵀ U_qk[:, :r])``, ``emb_ov_match_r{r}``: ``σ_max(V_E[:, :r]ᵀ U_ov[:, :r])``,
  ``baseline_r{r}``: the Haar-random baseline;
* ``zscore`` (diagonal z-score of ``W_qk W_ov``), ``mismatch`` (token mismatch of
  ``E W_qk W_ov Eᵀ`` along ``cfg.argmax_axis``);
* ScreeNOT ranks ``rank_qk_k{k}``, ``rank_ov_k{k}``, ``rank_E_k{k}``;
* per relative distance ``t`` in ``cfg.rel_dists``: ``zscore_rd{t}``, ``match_r{s}_rd{t}``
  (``s = cfg.sweep_rank``), ``mismatch_rd{t}``;
* the errors of ``err_arr.json`` at ``epoch = step − 1`` (NaN where absent);
* the conventions used (``rel_dist``, ``r_sign``, ``argmax_axis``, ``layernorm``, ``method``,
  ``rotary_theta``) as columns, and the whole config in ``df.attrs["measure_config"]``.

``layernorm="fold"`` folds the LayerNorm gains into the circuits — ``W_q1 diag(γ1)``,
``W_k1 diag(γ1)``, ``W_v0 diag(γ0)`` with ``γℓ = h.ℓ.ln_1.weight`` — and centres each token's
embedding (``E − mean_d E``); ``"ignore"`` (default) uses the raw weights as the authors did.

>>> import torch, tempfile
>>> from pathlib import Path
>>> with tempfile.TemporaryDirectory() as tmp:
...     run = Path(tmp)
...     for k in (0, 200, 600):
...         sd = {key: torch.randn(shape) for key, shape in checkpoint_shapes().items()}
...         torch.save(sd, run / f"ckpt_{k}.pt")
...     cfg = MeasureConfig(ranks=(1, 5), baseline_draws=50)
...     df = measure_run(run, cfg, baseline_cache_dir=run)
>>> df["step"].tolist(), df.attrs["missing"]
([0, 200, 600], ['ckpt_400.pt', 'config.json', 'err_arr.json'])
>>> df[["match_r5", "baseline_r5", "zscore", "mismatch", "rank_qk_k5"]].shape
(3, 5)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

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
    "ERR_COLUMNS",
    "MeasureConfig",
    "RunWeights",
    "checkpoint_shapes",
    "load_run",
    "measure_run",
    "measure_runs",
]

ERR_COLUMNS = ("loss_train", "err_train", "loss_test", "err_test", "loss_ood", "err_ood")
_CKPT_RE = re.compile(r"^ckpt_(\d+)\.pt$")
_REWRITE = "write it again with torch.save(model.state_dict(), path), or train the run again"


@dataclass(frozen=True)
class MeasureConfig:
    """What to measure and under which conventions (all recorded with the results).

    Args:
        ranks: ranks ``r`` of the subspace matchings.
        rel_dist: relative distance of the rotary ``R`` in the main ``W_qk``.
        rel_dists: relative distances of the cheap sweep (z, matching at ``sweep_rank``,
            mismatch).
        r_sign: ``+1``: key ``rel_dist`` positions after the query (the authors' ``R[t]``);
            ``-1``: before it (``Rᵀ``).
        argmax_axis: token mismatch by rows (query token) or columns (key token).
        layernorm: ``"ignore"`` the LayerNorm gains or ``"fold"`` them in (module docstring).
        screenot_k: rank bounds ``k`` of the ScreeNOT estimates.
        screenot_strategy: ScreeNOT's pseudo-noise strategy.
        sweep_rank: rank of ``match_r{sweep_rank}_rd{t}``.
        outer: also compute ``outer_match_r{r}``.
        method: ``"largest"`` principal cosine or ``"mean"`` (RMS) for every matching.
        baseline_draws: Haar draws of the random baseline.
        baseline_seed: seed of those draws.
        layers: ``(OV layer, QK layer)``.
        rotary_theta: rotary base; ``None`` reads ``rotary_theta`` from ``config.json``
            (10000 when absent, as for older runs).

    >>> MeasureConfig().rel_dist, MeasureConfig().argmax_axis
    (1, 'row')
    """

    ranks: tuple[int, ...] = tuple(range(1, 33))
    rel_dist: int = 1
    rel_dists: tuple[int, ...] = (0, 5, 10, 15, 20, 25, 30, 35)
    r_sign: Literal[1, -1] = 1
    argmax_axis: Literal["row", "col"] = "row"
    layernorm: Literal["ignore", "fold"] = "ignore"
    screenot_k: tuple[int, ...] = (5, 10, 20)
    screenot_strategy: Strategy = "i"
    sweep_rank: int = 5
    outer: bool = True
    method: Method = "largest"
    baseline_draws: int = 1000
    baseline_seed: int = 0
    layers: tuple[int, int] = (0, 1)
    rotary_theta: float | None = None

    def __post_init__(self) -> None:
        choices = {"r_sign": (1, -1), "argmax_axis": ("row", "col"),
                   "layernorm": ("ignore", "fold"), "method": ("largest", "mean"),
                   "screenot_strategy": ("i", "w", "0")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise LmlabError(f"MeasureConfig.{name} must be one of {allowed}, "
                                 f"got {getattr(self, name)!r}")
        ints = (*self.ranks, self.sweep_rank)
        if not self.ranks or min(ints) < 1:
            raise LmlabError(f"MeasureConfig ranks must be positive integers, got {self.ranks}")
        if min((self.rel_dist, *self.rel_dists)) < 0:
            raise LmlabError("MeasureConfig rel_dist and rel_dists must be >= 0")
        if self.baseline_draws < 1:
            raise LmlabError(f"baseline_draws must be >= 1, got {self.baseline_draws}")


def checkpoint_shapes(vocab_size: int = 64, d_model: int = 64,
                      num_layers: int = 2) -> dict[str, tuple[int, ...]]:
    """State-dict keys and shapes of the rotary attention-only ``TFModel`` (spec §1).

    >>> len(checkpoint_shapes()), checkpoint_shapes()["h.1.mha.W_q.weight"]
    (29, (64, 64))
    """
    d, V = d_model, vocab_size
    shapes: dict[str, tuple[int, ...]] = {"embed.embed.weight": (V, d)}
    for i in range(num_layers):
        for w in "qkvo":
            shapes[f"h.{i}.mha.W_{w}.weight"] = (d, d)
            shapes[f"h.{i}.mha.W_{w}.bias"] = (d,)
        for ln in (1, 2):
            shapes[f"h.{i}.ln_{ln}.weight"] = (d,)
            shapes[f"h.{i}.ln_{ln}.bias"] = (d,)
    shapes.update({"ln_f.weight": (d,), "ln_f.bias": (d,), "fc.weight": (V, d), "fc.bias": (V,)})
    return shapes


@dataclass
class RunWeights:
    """All checkpoints of one run, stacked along a leading step axis.

    Attributes:
        steps: ``(N,)`` training steps, ascending.
        params: state-dict key → ``(N, *shape)`` array (dtype as stored).
        config: ``config.json`` (empty if absent).
        err: ``err_arr.json`` as a DataFrame indexed by ``epoch`` (the ``"full"`` entry wins
            when an epoch appears twice), or ``None``.
        missing: what is absent: grid checkpoints ``ckpt_{k}.pt``, ``config.json``,
            ``err_arr.json``.
        run_dir: where it was read from.
    """

    steps: np.ndarray
    params: dict[str, np.ndarray]
    config: dict[str, Any] = field(default_factory=dict)
    err: pd.DataFrame | None = None
    missing: list[str] = field(default_factory=list)
    run_dir: Path | None = None

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def num_layers(self) -> int:
        return sum(1 for k in self.params if k.endswith(".mha.W_q.weight"))

    @property
    def E(self) -> np.ndarray:
        """``(N, V, d)`` token embeddings."""
        return self.params["embed.embed.weight"]

    @property
    def d_model(self) -> int:
        return int(self.E.shape[-1])

    @property
    def vocab_size(self) -> int:
        return int(self.E.shape[-2])

    def weight(self, layer: int, name: Literal["q", "k", "v", "o"]) -> np.ndarray:
        """``(N, d, d)`` stack of ``h.{layer}.mha.W_{name}.weight`` (nn.Linear ``(out, in)``)."""
        return self.params[f"h.{layer}.mha.W_{name}.weight"]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LmlabError(f"cannot read {path}: {exc}") from None


def _read_err(path: Path) -> pd.DataFrame:
    rows = _read_json(path)
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "epoch" in r for r in rows):
        raise LmlabError(f"{path} is not a list of {{'epoch': ..., ...}} records")
    df = pd.DataFrame(rows)
    df["_full"] = df["full"].fillna(False).astype(bool) if "full" in df else False
    df = df.sort_values(["epoch", "_full"], kind="stable")
    df = df.drop_duplicates("epoch", keep="last").drop(columns="_full")
    return df.set_index("epoch")


def _load_state_dict(path: Path) -> dict[str, Any]:
    """A state dict read as tensors and plain values only: nothing in the file can run code."""
    import torch

    from lmlab.train.checkpoint import read_torch

    sd = read_torch(path, advice=_REWRITE)
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise LmlabError(f"{path} is not a state_dict of tensors; {_REWRITE}")
    return dict(sd)



def load_run(run_dir: str | Path, *, grid: int | None = None) -> RunWeights:
    """Read and stack every ``ckpt_{k}.pt`` of a run directory, with its config and errors.

    Missing grid checkpoints (``0, grid, 2·grid, …`` up to ``num_epoch`` from the config, else
    up to the last step found), a missing ``config.json`` or ``err_arr.json`` are listed in
    ``.missing``; loading continues with what is there.

    Args:
        run_dir: the run directory.
        grid: checkpoint spacing; default ``num_epoch // n_save`` from the config, else 200.

    Raises:
        LmlabError: no directory or no checkpoints; a checkpoint whose keys or shapes do not
            match the architecture (the message names the keys); an unreadable file.
    """
    root = Path(run_dir)
    found = _find_checkpoints(root)
    cfg_path = root / "config.json"
    has_config = cfg_path.is_file()
    config: dict[str, Any] = _read_json(cfg_path) if has_config else {}
    steps = sorted(found)
    params = _stack_checkpoints(root, [found[step] for step in steps], config)
    V, d = params["embed.embed.weight"].shape[1:]
    for key, size in (("d_model", d), ("vocab_size", V)):
        if key in config and int(config[key]) != size:
            raise LmlabError(f"config.json says {key}={config[key]} but embed.embed.weight "
                             f"is {V}×{d}")
    absent = _missing_checkpoints(config, found, grid)
    err_path = root / "err_arr.json"
    err = _read_err(err_path) if err_path.is_file() else None
    missing = [*absent,
               *([] if has_config else ["config.json"]),
               *([] if err is not None else ["err_arr.json"])]
    return RunWeights(np.asarray(steps, dtype=np.int64), params, config, err, missing, root)


def _find_checkpoints(root: Path) -> dict[int, Path]:
    """Step → ``ckpt_{step}.pt`` of a run directory, raising LmlabError when there are none."""
    if not root.is_dir():
        raise LmlabError(f"no such run directory: {root}")
    found = {int(m.group(1)): p for p in root.iterdir()
             if (m := _CKPT_RE.match(p.name)) and p.is_file()}  # a FIFO would hang
    if not found:
        raise LmlabError(f"no checkpoints ckpt_<step>.pt in {root}")
    return found


def _stack_checkpoints(root: Path, paths: list[Path],
                       config: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Load the checkpoints in order and stack each key into a ``(N, *shape)`` array.

    The architecture (layers, vocabulary, width) is read from ``config`` and the first
    checkpoint; every checkpoint must have exactly its keys and shapes.
    """
    first = _load_state_dict(paths[0])
    n_layers = int(config.get("num_layers") or sum(k.endswith(".mha.W_q.weight") for k in first))
    emb = first.get("embed.embed.weight")
    V, d = tuple(emb.shape) if emb is not None and emb.ndim == 2 else (64, 64)
    expected = checkpoint_shapes(V, d, n_layers)
    stacks: dict[str, list[np.ndarray]] = {k: [] for k in expected}
    for i, path in enumerate(paths):
        sd = first if i == 0 else _load_state_dict(path)
        _check_state_dict(sd, expected, path, root, n_layers)
        for key in expected:
            stacks[key].append(sd[key].detach().numpy())
    return {k: np.stack(v) for k, v in stacks.items()}


def _check_state_dict(sd: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]],
                      path: Path, root: Path, n_layers: int) -> None:
    """Raise LmlabError naming the keys or the shape by which ``sd`` differs from ``expected``."""
    lost, extra = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    if lost or extra:
        raise LmlabError(f"{path.name} in {root} does not match a {n_layers}-layer rotary "
                         f"attention-only TFModel: missing keys {lost}, "
                         f"unexpected keys {extra}")
    for key, shape in expected.items():
        if tuple(sd[key].shape) != shape:
            raise LmlabError(f"{path.name}: {key} has shape {tuple(sd[key].shape)}, "
                             f"expected {shape}")


def _missing_checkpoints(config: Mapping[str, Any], found: Mapping[int, Path],
                         grid: int | None) -> list[str]:
    """The grid checkpoints ``ckpt_{k}.pt`` absent from ``found``.

    The grid is ``0, grid, 2·grid, …`` up to ``num_epoch`` or the last step found, whichever is
    later; ``grid`` defaults to ``num_epoch // n_save`` from the config, else 200.
    """
    if grid is None:
        ne, ns = config.get("num_epoch"), config.get("n_save")
        grid = int(ne) // int(ns) if ne and ns and int(ne) >= int(ns) else 200
    end = max(int(config.get("num_epoch") or 0), max(found))
    return [f"ckpt_{k}.pt" for k in range(0, end + 1, grid) if k not in found]


def _validate(cfg: MeasureConfig, w: RunWeights) -> None:
    d, V = w.d_model, w.vocab_size
    if max(cfg.layers) >= w.num_layers:
        raise LmlabError(f"MeasureConfig.layers={cfg.layers} needs at least "
                         f"{max(cfg.layers) + 1} layers; the run has {w.num_layers}")
    if max(*cfg.ranks, cfg.sweep_rank) > min(d, V):
        raise LmlabError(f"ranks must be <= min(d_model, vocab_size) = {min(d, V)}, "
                         f"got {max(*cfg.ranks, cfg.sweep_rank)}")
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
    """The float64 circuits of every checkpoint and the SVDs that the statistics share.

    Attributes:
        d: ``d_model``.
        theta: the rotary base.
        E: ``(N, V, d)`` embeddings (centred per token with ``layernorm="fold"``).
        W_qk: ``(N, d, d)`` ``W_qk`` at ``cfg.rel_dist``; :meth:`qk` gives it at any distance.
        W_ov: ``(N, d, d)`` ``W_o W_v``.
        U_qk, S_qk, Vh_qk, U_ov, S_ov, Vh_ov, S_E, Vh_E: the batched SVDs of those stacks.
    """

    def __init__(self, cfg: MeasureConfig, w: RunWeights) -> None:
        f64 = np.float64
        d, L_ov, L_qk = w.d_model, cfg.layers[0], cfg.layers[1]
        self.d, self.r_sign = d, cfg.r_sign
        self.theta = float(cfg.rotary_theta or w.config.get("rotary_theta") or 10000.0)
        E = w.E.astype(f64)                                       # (N, V, d)
        Wq, Wk = w.weight(L_qk, "q").astype(f64), w.weight(L_qk, "k").astype(f64)
        Wv, Wo = w.weight(L_ov, "v").astype(f64), w.weight(L_ov, "o").astype(f64)
        if cfg.layernorm == "fold":
            g1 = w.params[f"h.{L_qk}.ln_1.weight"].astype(f64)[:, None, :]   # (N, 1, d)
            g0 = w.params[f"h.{L_ov}.ln_1.weight"].astype(f64)[:, None, :]
            Wq, Wk, Wv = Wq * g1, Wk * g1, Wv * g0                # W diag(γ): scale the columns
            E = E - E.mean(axis=-1, keepdims=True)
        self.E, self.WqT, self.Wk = E, np.swapaxes(Wq, -1, -2), Wk
        self.W_ov = Wo @ Wv                                       # (N, d, d)
        self.W_qk = self.qk(cfg.rel_dist)
        self.U_qk, self.S_qk, self.Vh_qk = _svd(self.W_qk)
        self.U_ov, self.S_ov, self.Vh_ov = _svd(self.W_ov)
        _, self.S_E, self.Vh_E = _svd(E)

    def qk(self, t: int) -> np.ndarray:
        """``(N, d, d)`` ``W_qk`` at relative distance ``t``."""
        R = rotary_R(self.d, t, self.theta, self.r_sign)
        return self.WqT @ R @ self.Wk / math.sqrt(self.d)


def measure_run(run: str | Path | RunWeights, cfg: MeasureConfig | None = None, *,
                baseline_cache_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per checkpoint step with every circuit statistic (see the module docstring).

    Args:
        run: a run directory or weights from :func:`load_run`.
        cfg: what to measure; default :class:`MeasureConfig`.
        baseline_cache_dir: root of the random-baseline cache (default: lmlab's cache dir).

    Returns:
        A DataFrame sorted by ``step``; ``attrs`` holds ``measure_config``, ``missing`` and
        ``run_dir``.
    """
    cfg = cfg or MeasureConfig()
    w = run if isinstance(run, RunWeights) else load_run(run)
    _validate(cfg, w)
    c = _Circuits(cfg, w)
    cols: dict[str, Any] = {"step": w.steps}
    cols.update({"rel_dist": cfg.rel_dist, "r_sign": cfg.r_sign,
                 "argmax_axis": cfg.argmax_axis, "layernorm": cfg.layernorm,
                 "method": cfg.method, "rotary_theta": c.theta})
    cols.update(_matching_columns(cfg, c, len(w), baseline_cache_dir))
    cols["zscore"] = diagonal_zscore(c.W_qk @ c.W_ov)
    cols["mismatch"] = token_mismatch(c.E, c.W_qk, c.W_ov, cfg.argmax_axis)
    cols.update(_rank_columns(cfg, c))
    cols.update(_rel_dist_columns(cfg, c))
    cols.update(_err_columns(w))
    df = pd.DataFrame(cols)
    df.attrs.update(measure_config=asdict(cfg), missing=list(w.missing),
                    run_dir=str(w.run_dir) if w.run_dir else None)
    return df


def _matching_columns(cfg: MeasureConfig, c: _Circuits, n: int,
                      baseline_cache_dir: str | Path | None) -> dict[str, Any]:
    """``match_r{r}``, ``emb_ov_match_r{r}``, ``outer_match_r{r}`` and ``baseline_r{r}``."""
    cols: dict[str, Any] = {}
    ranks = list(cfg.ranks)
    curves = {"match": c.Vh_qk @ c.U_ov, "emb_ov_match": c.Vh_E @ c.U_ov}
    if cfg.outer:
        curves["outer_match"] = c.Vh_ov @ c.U_qk
    for name, C in curves.items():
        vals = matching_curve(C, ranks, cfg.method)
        cols.update({f"{name}_r{r}": vals[:, i] for i, r in enumerate(ranks)})
    base = random_baseline(c.d, ranks, cfg.baseline_draws, cfg.baseline_seed, baseline_cache_dir,
                           method=cfg.method)
    cols.update({f"baseline_r{r}": np.full(n, base[i]) for i, r in enumerate(ranks)})
    return cols


def _rank_columns(cfg: MeasureConfig, c: _Circuits) -> dict[str, Any]:
    """ScreeNOT ranks ``rank_{qk,ov,E}_k{k}`` for every ``k`` in ``cfg.screenot_k``."""
    cols: dict[str, Any] = {}
    for k in cfg.screenot_k:
        for name, S, shape in (("qk", c.S_qk, (c.d, c.d)), ("ov", c.S_ov, (c.d, c.d)),
                               ("E", c.S_E, c.E.shape[1:])):
            _, rank = screenot_from_singular_values(S, (int(shape[0]), int(shape[1])), k,
                                                    cfg.screenot_strategy)
            cols[f"rank_{name}_k{k}"] = rank
    return cols


def _rel_dist_columns(cfg: MeasureConfig, c: _Circuits) -> dict[str, Any]:
    """``zscore_rd{t}``, ``match_r{s}_rd{t}`` and ``mismatch_rd{t}`` for ``t`` in ``rel_dists``."""
    cols: dict[str, Any] = {}
    s = cfg.sweep_rank
    for t in cfg.rel_dists:
        Wt = c.W_qk if t == cfg.rel_dist else c.qk(t)
        Vh_t = c.Vh_qk if t == cfg.rel_dist else np.linalg.svd(Wt)[2]
        cols[f"zscore_rd{t}"] = diagonal_zscore(Wt @ c.W_ov)
        cols[f"match_r{s}_rd{t}"] = matching_curve(Vh_t @ c.U_ov, [s], cfg.method)[:, 0]
        cols[f"mismatch_rd{t}"] = token_mismatch(c.E, Wt, c.W_ov, cfg.argmax_axis)
    return cols


def _err_columns(w: RunWeights) -> dict[str, np.ndarray]:
    """The ``ERR_COLUMNS`` of ``err_arr.json`` at ``epoch = step − 1`` (NaN where absent)."""
    epochs, err = w.steps - 1, w.err
    return {c: err[c].reindex(epochs).to_numpy(dtype=np.float64)
            if err is not None and c in err else np.full(len(w), np.nan) for c in ERR_COLUMNS}


def measure_runs(run_dirs: Mapping[str, str | Path | RunWeights],
                 cfg: MeasureConfig | None = None, *,
                 baseline_cache_dir: str | Path | None = None) -> pd.DataFrame:
    """:func:`measure_run` for several settings, stacked with a leading ``setting`` column.

    ``attrs["missing"]`` maps each setting to what its run lacks.

    Args:
        run_dirs: setting name → run directory (or loaded weights).
        cfg: what to measure.
        baseline_cache_dir: root of the random-baseline cache.
    """
    cfg = cfg or MeasureConfig()
    if not run_dirs:
        raise LmlabError("measure_runs needs at least one run directory")
    frames, missing = [], {}
    for name, run in run_dirs.items():
        df = measure_run(run, cfg, baseline_cache_dir=baseline_cache_dir)
        missing[name] = df.attrs["missing"]
        df.insert(0, "setting", name)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out.attrs = {"measure_config": asdict(cfg), "missing": missing}
    return out
