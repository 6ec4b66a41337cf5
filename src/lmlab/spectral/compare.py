"""Two models' :func:`~lmlab.spectral.analyze` tables side by side: layers paired by longname,
Δ of α and the other metrics, grouped by depth (block index) and by matrix type.

Layers are paired as :mod:`lmlab.spectral.pairing` pairs them: the same longname, or (when the
two sources name them differently, a module's ``model.layers.0.q_proj`` against a bare
checkpoint's ``layers.0.q_proj``) the one it ends with at a dot, when that is unique. Layers
with no partner are returned in a second table, never dropped silently.

>>> import pandas as pd
>>> a = pd.DataFrame({"layer_id": [1, 2, 3], "status": ["success"] * 3,
...                   "longname": ["h.0.attn.q_proj", "h.1.mlp.down_proj", "lm_head"],
...                   "alpha": [3.0, 4.0, 5.0]})
>>> b = a.iloc[:2].assign(alpha=[3.5, 4.0])
>>> paired, unpaired = pair_tables(a, b)
>>> paired[["longname", "block", "matrix", "delta_alpha"]].values.tolist()
[['h.0.attn.q_proj', 0, 'q', 0.5], ['h.1.mlp.down_proj', 1, 'mlp_down', 0.0]]
>>> unpaired[["side", "longname"]].values.tolist()
[['A', 'lm_head']]
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

__all__ = ["METRICS", "block_index", "group_deltas", "matrix_type", "pair_tables"]

#: Columns compared besides α (each gets ``<m>_a``, ``<m>_b`` and ``delta_<m>``).
METRICS: tuple[str, ...] = ("alpha", "alpha_weighted", "log_norm", "log_spectral_norm",
                            "log_alpha_norm", "stable_rank", "D", "num_pl_spikes")

_NAMES: dict[str, str] = {
    # attention
    "q_proj": "q", "query": "q", "wq": "q", "q_lin": "q", "q": "q",
    "k_proj": "k", "key": "k", "wk": "k", "k_lin": "k", "k": "k",
    "v_proj": "v", "value": "v", "wv": "v", "v_lin": "v", "v": "v",
    "o_proj": "o", "out_proj": "o", "wo": "o", "out_lin": "o", "o": "o",
    "c_attn": "qkv", "qkv_proj": "qkv", "wqkv": "qkv", "query_key_value": "qkv",
    # MLP
    "up_proj": "mlp_up", "fc1": "mlp_up", "c_fc": "mlp_up", "w3": "mlp_up", "lin1": "mlp_up",
    "gate_proj": "mlp_gate", "w1": "mlp_gate",
    "down_proj": "mlp_down", "fc2": "mlp_down", "w2": "mlp_down", "lin2": "mlp_down",
    # embeddings and head
    "embed_tokens": "embedding", "wte": "embedding", "word_embeddings": "embedding",
    "wpe": "pos_embedding", "position_embeddings": "pos_embedding",
    "token_type_embeddings": "type_embedding", "lm_head": "head",
}


def matrix_type(longname: str) -> str:
    """The role of a weight matrix from its module path: ``q``, ``k``, ``v``, ``o``, ``qkv``,
    ``mlp_up``, ``mlp_gate``, ``mlp_down``, ``embedding``, ``head``, ... (else its leaf).

    >>> [matrix_type(n) for n in ("model.layers.3.self_attn.q_proj", "transformer.h.0.mlp.c_proj",
    ...  "encoder.layer.0.attention.output.dense", "encoder.layer.0.output.dense", "pooler.dense")]
    ['q', 'mlp_down', 'o', 'mlp_down', 'dense']
    """
    parts = str(longname).lower().split(".")
    leaf, parent = parts[-1], (parts[-2] if len(parts) > 1 else "")
    if leaf == "c_proj":  # GPT-2: attn.c_proj is the output projection, mlp.c_proj the down
        return "o" if "attn" in parent else "mlp_down"
    if leaf == "dense" and parent == "output":  # BERT
        return "o" if len(parts) > 2 and parts[-3] == "attention" else "mlp_down"
    if leaf == "dense" and parent == "intermediate":
        return "mlp_up"
    return _NAMES.get(leaf, leaf)


_BLOCK = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")


def block_index(longname: str) -> int | None:
    """The transformer block of a layer: the first number in its path (None: outside blocks).

    >>> block_index("model.layers.11.mlp.up_proj"), block_index("lm_head")
    (11, None)
    """
    m = _BLOCK.search(str(longname))
    return int(m.group(1)) if m else None


def _partner(name: str, names: list[str]) -> str | None:
    if name in names:
        return name
    hits = [n for n in names if n.endswith("." + name) or name.endswith("." + n)]
    return hits[0] if len(hits) == 1 else None


def pair_tables(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pair two analyze tables by longname.

    Returns:
        ``(paired, unpaired)``: ``paired`` has one row per pair in A's order with
        ``longname`` (A's), ``longname_b``, ``layer_id_a``/``_b``, ``status_a``/``_b``,
        ``block``, ``matrix``, and for every metric of :data:`METRICS` present ``<m>_a``,
        ``<m>_b`` and ``delta_<m>`` = B − A (NaN unless both fits succeeded); ``unpaired``
        lists the layers with no partner (``side`` A or B, ``layer_id``, ``longname``,
        ``status``).
    """
    b_names = b["longname"].astype(str).tolist()
    used: set[str] = set()
    rows, unpaired = [], []
    b_rows = {str(r["longname"]): r for _, r in b.iterrows()}
    metrics = [m for m in METRICS if m in a.columns and m in b.columns]
    for _, ra in a.iterrows():
        name = str(ra["longname"])
        other = _partner(name, b_names)
        if other is None or other in used:
            unpaired.append({"side": "A", "layer_id": int(ra["layer_id"]), "longname": name,
                             "status": ra["status"]})
            continue
        used.add(other)
        rb = b_rows[other]
        ok = ra["status"] == "success" and rb["status"] == "success"
        row = {"longname": name, "longname_b": other, "layer_id_a": int(ra["layer_id"]),
               "layer_id_b": int(rb["layer_id"]), "block": block_index(name),
               "matrix": matrix_type(name), "status_a": ra["status"], "status_b": rb["status"]}
        for m in metrics:
            va, vb = _num(ra[m]), _num(rb[m])
            row[f"{m}_a"], row[f"{m}_b"] = va, vb
            row[f"delta_{m}"] = vb - va if ok else np.nan
        rows.append(row)
    for _, rb in b.iterrows():
        if str(rb["longname"]) not in used:
            unpaired.append({"side": "B", "layer_id": int(rb["layer_id"]),
                             "longname": str(rb["longname"]), "status": rb["status"]})
    paired = pd.DataFrame(rows, columns=_paired_columns(metrics))
    paired["block"] = paired["block"].astype("Int64")
    return paired, pd.DataFrame(unpaired, columns=["side", "layer_id", "longname", "status"])


def _paired_columns(metrics: list[str]) -> list[str]:
    cols = ["longname", "longname_b", "layer_id_a", "layer_id_b", "block", "matrix",
            "status_a", "status_b"]
    for m in metrics:
        cols += [f"{m}_a", f"{m}_b", f"delta_{m}"]
    return cols


def _num(value: object) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
    return out


def group_deltas(paired: pd.DataFrame, by: str, metric: str = "alpha") -> pd.DataFrame:
    """Δ of ``metric`` grouped by ``block`` or ``matrix``: mean, std (ddof 0), min, max and
    the count of layers fitted on both sides; layers outside blocks form the group ``-``.

    >>> p = pd.DataFrame({"block": [0, 0, 1], "matrix": ["q", "k", "q"],
    ...                   "delta_alpha": [1.0, 3.0, 0.0]})
    >>> group_deltas(p, "block")[["group", "mean", "std", "n"]].values.tolist()
    [['0', 2.0, 1.0, 2], ['1', 0.0, 0.0, 1]]
    """
    col = f"delta_{metric}"
    cols = ["group", "mean", "std", "min", "max", "n"]
    d = paired[[by, col]].dropna(subset=[col])
    if d.empty:
        return pd.DataFrame(columns=cols)
    keys = d[by].astype(object).where(d[by].notna(), "-")
    g = d[col].astype(float).groupby(keys, sort=False)
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=0), "min": g.min(),
                        "max": g.max(), "n": g.size()}).reset_index(names="group")
    if by == "block":  # depth order, outside-block layers last
        out["_k"] = [int(k) if k != "-" else 10**9 for k in out["group"]]
        out = out.sort_values("_k").drop(columns="_k")
    out["group"] = out["group"].astype(str)
    return out[cols].reset_index(drop=True)
