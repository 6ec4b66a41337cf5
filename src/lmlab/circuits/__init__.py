"""QK/OV circuit measurements of attention-only transformers, over all checkpoints at once.

Subspace matching between the layer-1 QK and layer-0 OV circuits with its Haar-random baseline,
the diagonal z-score, the token mismatch ratio, embedding–OV matching and ScreeNOT ranks
(the `induction` study's measurements, spec §6), computed with batched NumPy on ``(N, d, d)``
stacks of checkpoint weights.

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
    ERR_COLUMNS,
    MeasureConfig,
    RunWeights,
    checkpoint_shapes,
    load_run,
    measure_run,
    measure_runs,
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
    "MeasureConfig", "RunWeights", "ERR_COLUMNS", "checkpoint_shapes",
    "load_run", "measure_run", "measure_runs",
    "subspace_matching", "matching_curve", "random_baseline", "rotary_R",
    "diagonal_zscore", "token_mismatch",
    "screenot_rank", "screenot_from_singular_values", "pseudo_noise", "max_k",
]
