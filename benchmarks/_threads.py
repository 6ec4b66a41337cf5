"""Pin the thread pools of a benchmark before NumPy, SciPy or torch are imported.

Import this first and call :func:`pin_threads_from_argv`: thread counts set after those
libraries load have no effect on their pools. On a 2-core machine, pools that fight each other
make timings meaningless.
"""

from __future__ import annotations

import os
import sys

_POOLS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def pin_threads_from_argv(default: int) -> int:
    """Read ``--threads N`` (or ``--threads=N``) from ``sys.argv``, set every pool to it."""
    n = default
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            n = int(argv[i + 1])
        elif arg.startswith("--threads="):
            n = int(arg.split("=", 1)[1])
    for var in _POOLS:
        os.environ[var] = str(n)
    return n
