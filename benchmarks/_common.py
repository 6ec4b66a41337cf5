"""What the benchmarks share: thread pinning (call it before NumPy, SciPy or torch are
imported — thread counts set later do not reach their pools) and report helpers.

The report helpers import NumPy and threadpoolctl lazily, so importing this module first is safe.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any

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


def version(dist: str) -> str:
    """The installed version of a distribution, or ``n/a``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "n/a"


def blas_info() -> list[dict[str, Any]]:
    """The BLAS and OpenMP pools in effect (threadpoolctl)."""
    from threadpoolctl import threadpool_info

    keys = ("user_api", "internal_api", "num_threads", "version", "filepath")
    return [{k: lib.get(k) for k in keys} for lib in threadpool_info()]


def cpu_model() -> str:
    """The CPU's model name."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def jsonable(x: Any) -> Any:
    """``x`` with NumPy scalars made plain, NaN as null, Inf as "inf", private keys dropped."""
    import numpy as np

    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items() if not str(k).startswith("_")}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return None if math.isnan(x) else ("inf" if math.isinf(x) else x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table with ``|`` escaped in cells."""
    def esc(cells: list[str]) -> str:
        return " | ".join(c.replace("|", "\\|") for c in cells)

    lines = ["| " + esc(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + esc(r) + " |" for r in rows]
    return "\n".join(lines)
