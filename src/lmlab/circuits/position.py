"""Position matching: how much of layer 0's W_q and W_k reads token versus position information.

The analysis notebook's ``position_matching`` is not public (neither the authors' repositories
``ood-generalization-via-composition`` and ``section-3-analysis`` nor any indexed code holds
it), so this is lmlab's own definition, written for the rotary model where position enters
only through the rotation of queries and keys.

For a layer-0 projection ``W`` (``W_q`` or ``W_k``, nn.Linear layout ``(d_head, d)``: it *reads*
the residual stream — at layer 0 the token embedding — and *writes* head coordinates that
rotary then rotates), with SVD ``W = U S Vᵀ``:

* **token side (input).** ``V_E`` = right singular vectors of the embedding ``E`` (``V × d``),
  the directions in which tokens differ most.

  - ``tok_frac_r = ‖W V_E[:, :r]‖_F² / ‖W‖_F²``: the share of W's energy that reads the
    embedding's top-``r`` directions;
  - ``tok_match_r``: the generalised cosine between ``V[:, :r]`` (what W reads most) and
    ``V_E[:, :r]`` (:func:`~lmlab.circuits.subspace.subspace_matching`).

* **position side (output).** Rotary turns the head coordinate pair ``(2i, 2i+1)`` by
  ``t θ_i`` for a relative distance ``t``, ``θ_i = θ^(−2i/d_head)``: the first coordinates turn
  fast (``θ_0 = 1`` rad per position) and make the score depend on where the key is; the last
  ones hardly turn over the context (``θ_31 ≈ 1.3·10⁻⁴`` for ``d_head = 64``) and leave the
  score to the tokens. ``P_r`` = the ``r`` fastest coordinates ``0 … r−1``.

  - ``pos_frac_r = ‖P_r W‖_F² / ‖W‖_F²``: the share of W's energy written where rotary
    encodes position;
  - ``pos_match_r``: the generalised cosine between ``U[:, :r]`` (where W writes most) and the
    ``r`` fastest coordinates, i.e. the singular values of ``U[:r, :r]``.

* ``sv_i``: the singular values ``S`` of W, largest first (the notebook's spectra).

For a random W the fractions are ``r/d`` (``r/d_head``) and the matchings follow the Haar
baseline (:func:`~lmlab.circuits.subspace.random_baseline`). A previous-token head needs its
query and key in the fast coordinates (large ``pos_*``); a head that matches tokens reads the
embedding's directions (large ``tok_*``).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> E = rng.normal(size=(16, 8))
>>> Vt_E = np.linalg.svd(E)[2]
>>> W = rng.normal(size=(8, 2)) @ Vt_E[:2]          # reads only E's top-2 directions
>>> out = position_matching(W, W, E, ranks=[2])
>>> round(float(out["tok_frac_q_r2"]), 6), round(float(out["tok_match_q_r2"]), 6)
(1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lmlab.circuits.subspace import Method, matching_curve
from lmlab.errors import LmlabError

__all__ = ["position_matching"]


def _fractions(W: np.ndarray, basis: np.ndarray, r: int, side: str) -> np.ndarray:
    """Share of ‖W‖_F² in the first ``r`` columns of ``basis`` (input or output side)."""
    B = basis[..., :, :r]
    part = W @ B if side == "in" else np.swapaxes(B, -1, -2) @ W
    total = np.einsum("...ij,...ij->...", W, W)
    return np.einsum("...ij,...ij->...", part, part) / np.where(total > 0, total, np.nan)


def position_matching(W_q: np.ndarray, W_k: np.ndarray, E: np.ndarray,
                      ranks: Sequence[int] = (5, 10, 15, 20), method: Method = "largest",
                      n_singular: int = 5) -> dict[str, np.ndarray]:
    """Token versus position reading of layer 0's W_q and W_k (module docstring), batched.

    Args:
        W_q: ``(..., d_head, d)`` layer-0 query weight (nn.Linear ``(out, in)``).
        W_k: ``(..., d_head, d)`` layer-0 key weight.
        E: ``(..., V, d)`` token embedding (the residual stream layer 0 reads).
        ranks: the ranks ``r``.
        method: ``"largest"`` or ``"mean"`` principal cosine for the matchings.
        n_singular: how many singular values ``sv_{q,k}0_{i}`` (``i = 1 …``) to return.

    Returns:
        ``{name: (...) array}`` with ``pos_frac_{q,k}_r{r}``, ``tok_frac_{q,k}_r{r}``,
        ``pos_match_{q,k}_r{r}``, ``tok_match_{q,k}_r{r}``, ``sv_{q,k}0_{i}``.

    Raises:
        LmlabError: shapes that do not fit, or a rank outside ``[1, min(d_head, d, V)]``.

    >>> import numpy as np
    >>> W = np.zeros((4, 4)); W[0, 1] = W[1, 2] = 1.0   # writes only the fastest pair
    >>> out = position_matching(W, W, np.eye(4), ranks=[2], n_singular=2)
    >>> float(out["pos_frac_q_r2"]), float(out["pos_match_k_r2"]), float(out["sv_q0_2"])
    (1.0, 1.0, 1.0)
    """
    W_q, W_k = np.asarray(W_q, dtype=np.float64), np.asarray(W_k, dtype=np.float64)
    E = np.asarray(E, dtype=np.float64)
    if W_q.shape != W_k.shape or W_q.ndim < 2 or W_q.shape[-1] != E.shape[-1]:
        raise LmlabError(f"position_matching needs W_q, W_k of shape (d_head, d) and E of "
                         f"shape (V, d); got {W_q.shape}, {W_k.shape}, {E.shape}")
    d_head, d = W_q.shape[-2:]
    rs = [int(r) for r in ranks]
    hi = min(d_head, d, E.shape[-2])
    if rs and (min(rs) < 1 or max(rs) > hi):
        raise LmlabError(f"position ranks must lie in [1, {hi}], got {rs}")
    if not 0 <= n_singular <= min(d_head, d):
        raise LmlabError(f"n_singular must lie in [0, {min(d_head, d)}], got {n_singular}")
    V_E = np.swapaxes(np.linalg.svd(E, full_matrices=False)[2], -1, -2)   # (..., d, p)
    fast = np.eye(d_head)                                                 # coordinates 0, 1, …
    out: dict[str, np.ndarray] = {}
    for name, W in (("q", W_q), ("k", W_k)):
        U, S, Vh = np.linalg.svd(W, full_matrices=False)   # U (..., d_head, p), Vh (..., p, d)
        if rs:
            tok = matching_curve(Vh @ V_E, rs, method)     # V[:, :r]ᵀ V_E[:, :r] blocks
            pos = matching_curve(U, rs, method)             # rows 0..r-1 = fastest coordinates
        for i, r in enumerate(rs):
            out[f"pos_frac_{name}_r{r}"] = _fractions(W, fast, r, "out")
            out[f"tok_frac_{name}_r{r}"] = _fractions(W, V_E, r, "in")
            out[f"pos_match_{name}_r{r}"] = pos[..., i]
            out[f"tok_match_{name}_r{r}"] = tok[..., i]
        for i in range(n_singular):
            out[f"sv_{name}0_{i + 1}"] = S[..., i]
    return out
