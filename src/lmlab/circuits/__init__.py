"""QK/OV circuit measurements of attention-only transformers, over all checkpoints at once.

Reading anyone's run folders (the authors' layout or lmlab's; :func:`find_settings`,
:func:`load_run`, :func:`read_err_arr`), subspace matching between the layer-1 QK and layer-0
OV circuits with its Haar-random baseline, the diagonal z-score, the token mismatch ratio,
embedding–OV matching, layer 0's position matching and ScreeNOT ranks (the `induction`
study's measurements, spec §6), computed with batched NumPy on ``(N, d, d)`` stacks of
checkpoint weights; :func:`measure_runs` returns one row per (setting, step, method,
rel_dist).

>>> import numpy as np
>>> from lmlab.circuits import diagonal_zscore, rotary_R, subspace_matching
>>> float(subspace_matching(np.eye(4), np.eye(4), 2))
1.0
>>> bool(diagonal_zscore(np.eye(64)) > 7)
True
>>> rotary_R(64, 1).shape
(64, 64)
"""

from lmlab.circuits.measure import (
    MeasureConfig,
    circuit_matrices,
    measure_run,
    measure_runs,
)
from lmlab.circuits.position import position_matching
from lmlab.circuits.runs import (
    ERR_COLUMNS,
    RunWeights,
    SettingsFound,
    checkpoint_shapes,
    expected_steps,
    find_settings,
    load_run,
    read_err_arr,
)
from lmlab.circuits.screenot import (
    max_k,
    pseudo_noise,
    screenot_from_singular_values,
    screenot_rank,
)
from lmlab.circuits.subspace import (
    diagonal_zscore,
    matching_curve,
    random_baseline,
    rotary_R,
    subspace_matching,
    token_mismatch,
)

__all__ = [
    "MeasureConfig", "RunWeights", "SettingsFound", "ERR_COLUMNS", "checkpoint_shapes",
    "expected_steps", "find_settings", "load_run", "read_err_arr",
    "measure_run", "measure_runs", "circuit_matrices", "position_matching",
    "subspace_matching", "matching_curve", "random_baseline", "rotary_R",
    "diagonal_zscore", "token_mismatch",
    "screenot_rank", "screenot_from_singular_values", "pseudo_noise", "max_k",
]
