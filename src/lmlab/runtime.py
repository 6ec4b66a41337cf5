"""Process-wide runtime settings: seeds, device, thread counts, the cache directory and an
environment record.

Seeding, device choice, threading and where cached files live are decided here and nowhere
else, so that a run is reproducible from its config and its report can say exactly where it ran.

>>> seed_everything(0)
>>> str(resolve_device("cpu"))
'cpu'
>>> with limit_threads(1):
...     import torch
...     torch.get_num_threads()
1
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmlab.errors import LmlabError

if TYPE_CHECKING:
    import torch

__all__ = [
    "CACHE_ENV",
    "CUBLAS_WORKSPACE",
    "MAX_SEED",
    "check_seed",
    "cache_dir",
    "environment_info",
    "limit_threads",
    "resolve_device",
    "seed_everything",
    "set_threads",
]

MAX_SEED = 2**32 - 1
"""The largest seed NumPy (and so :func:`seed_everything`) accepts; the smallest is 0."""
_CUDA_RE = re.compile(r"cuda(?::(\d+))?")

#: The ``CUBLAS_WORKSPACE_CONFIG`` under which cuBLAS's matrix products are reproducible
#: (cuBLAS reads it once, when CUDA first multiplies: :func:`resolve_device` sets it when unset).
CUBLAS_WORKSPACE = ":4096:8"

#: The environment variable that moves lmlab's cache (models, data, theory, baselines).
CACHE_ENV = "LMLAB_CACHE"


def cache_dir(sub: str = "") -> Path:
    """lmlab's cache directory, or its subdirectory ``sub`` (not created here).

    ``$LMLAB_CACHE`` when that variable is set, else the platform's user cache directory for
    lmlab (``platformdirs.user_cache_dir``: ``$XDG_CACHE_HOME/lmlab`` or ``~/.cache/lmlab`` on
    Linux, ``~/Library/Caches/lmlab`` on macOS, ``%LOCALAPPDATA%\\lmlab\\Cache`` on Windows).

    Args:
        sub: A relative path inside the cache, e.g. ``"data"`` or ``"models/smollm2-135m"``.

    Returns:
        The directory path.

    Raises:
        LmlabError: If ``sub`` is absolute or leaves the cache with ``..``.

    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"LMLAB_CACHE": "/tmp/lmlab-cache"}):
    ...     cache_dir("data").as_posix()
    '/tmp/lmlab-cache/data'
    """
    part = Path(sub)
    if part.is_absolute() or ".." in part.parts:
        raise LmlabError(f"cache subdirectory {sub!r} must be a relative path inside the cache")
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        root = Path(explicit).expanduser()
    else:
        import platformdirs

        root = Path(platformdirs.user_cache_dir("lmlab", appauthor=False))
    return root / part if sub else root


def check_seed(seed: Any) -> int:
    """``seed`` as an int when :func:`seed_everything` takes it (NumPy integers too).

    >>> check_seed(7)
    7
    """
    import operator

    try:
        value = None if isinstance(seed, bool) else operator.index(seed)
    except TypeError:
        value = None
    if value is None or not 0 <= value <= MAX_SEED:
        raise LmlabError(f"seed must be an integer between 0 and {MAX_SEED}, got {seed!r}; "
                         "set seed=N with N in that range")
    return value


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every GPU).

    Args:
        seed: An integer in ``[0, 2**32 - 1]``.

    Raises:
        LmlabError: If the seed is not an integer in range.

    >>> import random
    >>> seed_everything(7); a = random.random()
    >>> seed_everything(7); a == random.random()
    True
    """
    seed = check_seed(seed)
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Turn a device request into a ``torch.device``, checking that it exists.

    Args:
        device: ``None`` or ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``.

    Returns:
        The device to use. When it is a GPU, ``CUBLAS_WORKSPACE_CONFIG`` is set to
        :data:`CUBLAS_WORKSPACE` unless the environment sets it (deterministic mode needs it
        before CUDA's first matrix product).

    Raises:
        LmlabError: If CUDA is requested but unavailable, the GPU index does not exist, or the
            name is not one of the choices.

    >>> resolve_device("CPU").type
    'cpu'
    """
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    name = "auto" if device is None else str(device).strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    match = _CUDA_RE.fullmatch(name)
    if match is None:
        raise LmlabError(f"unknown device {device!r}; choose one of auto, cpu, cuda, cuda:N")
    if not torch.cuda.is_available():
        raise LmlabError("CUDA was requested but is not available; use --device cpu")
    count = torch.cuda.device_count()
    index = int(match.group(1) or 0)
    if index >= count:
        raise LmlabError(
            f"CUDA device {index} was requested but only {count} GPU(s) are visible; "
            f"use cuda:0 to cuda:{count - 1}"
        )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    return torch.device(name)


def _check_threads(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise LmlabError(f"the number of threads must be a positive integer, got {n!r}")


def _limit_blas(n: int) -> Any:
    """Limit NumPy's BLAS pools with threadpoolctl; return the limiter or None if unavailable."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    # threadpoolctl sees only libraries already loaded: load NumPy's and SciPy's BLAS first.
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401

    return threadpool_limits(limits=n, user_api="blas")


def set_threads(n: int | None) -> None:
    """Set torch's intra-op threads and NumPy's BLAS threads for the rest of the process.

    BLAS threads are limited through ``threadpoolctl`` when it is installed; otherwise only
    torch is changed (environment variables have no effect once NumPy is loaded).

    Args:
        n: The number of threads, or ``None`` to leave the current settings alone.

    Raises:
        LmlabError: If ``n`` is not a positive integer.

    >>> set_threads(None)
    """
    if n is None:
        return
    _check_threads(n)
    import torch

    torch.set_num_threads(n)
    _limit_blas(n)


@contextlib.contextmanager
def limit_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch and BLAS thread counts, restoring the previous ones on exit.

    Args:
        n: The number of threads inside the block, or ``None`` for no change.

    Raises:
        LmlabError: If ``n`` is not a positive integer.

    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with limit_threads(1):
    ...     pass
    >>> torch.get_num_threads() == before
    True
    """
    if n is None:
        yield
        return
    _check_threads(n)
    import torch

    previous = torch.get_num_threads()
    limiter = _limit_blas(n)
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
        if limiter is not None:
            limiter.restore_original_limits()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_info(device: str | torch.device | None = None) -> dict[str, str]:
    """A flat record of where and with what a run executes, for reports and ``meta.json``.

    Library versions are read from package metadata, so nothing heavy is imported for it.

    Args:
        device: The device the run uses (resolved as in :func:`resolve_device`).

    Returns:
        String values for python, platform, lmlab, torch, numpy, scipy, pandas, transformers
        (when installed), device, cpu_count, threads and, on a GPU, ``cuda`` (its name).

    >>> info = environment_info("cpu")
    >>> info["device"], "torch" in info
    ('cpu', True)
    """
    import torch

    from lmlab import __version__

    resolved = resolve_device(device)
    info: dict[str, str] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "lmlab": __version__,
        "torch": torch.__version__,
    }
    for dist in ("numpy", "scipy", "pandas", "transformers"):
        version = _version(dist)
        if version is not None:
            info[dist] = version
        elif dist != "transformers":
            info[dist] = "not installed"
    info["device"] = str(resolved)
    info["cpu_count"] = str(os.cpu_count() or 1)
    info["threads"] = str(torch.get_num_threads())
    if resolved.type == "cuda":
        info["cuda"] = torch.cuda.get_device_name(resolved)
    return info
