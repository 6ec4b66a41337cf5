"""A local cache for data files fetched once from the web, each checked by its SHA-256.

The cache lives in :func:`data_cache_dir`. Every downloaded file ``<name>`` has a sidecar
``<name>.sha256`` written at download time; later calls re-check the file against it, so a
truncated or edited copy is reported instead of silently used.

>>> data_cache_dir().name
'data'
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from lmlab.errors import LmlabError, first_line
from lmlab.runs.io import atomic_write_with
from lmlab.runtime import CACHE_ENV, cache_dir

__all__ = ["data_cache_dir", "download_once"]

_CHUNK = 1 << 16
_CACHE_HINT = f"set {CACHE_ENV} to a writable directory"


def data_cache_dir() -> Path:
    """The directory for cached data files (not created here): ``cache_dir("data")``.

    ``$LMLAB_CACHE/data`` when ``LMLAB_CACHE`` is set, else ``data`` in the platform's user
    cache directory for lmlab (see :func:`lmlab.runtime.cache_dir`).

    Returns:
        The cache directory path.

    >>> import os
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"LMLAB_CACHE": "/tmp/lmlab-cache"}):
    ...     data_cache_dir().as_posix()
    '/tmp/lmlab-cache/data'
    """
    return cache_dir("data")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verified(path: Path, sidecar: Path) -> Path:
    try:
        recorded = sidecar.read_text(encoding="utf-8").split()[0]
    except (OSError, IndexError):
        raise LmlabError(
            f"the cached file {path} has no readable checksum {sidecar.name}; "
            f"delete {path} to download it again"
        ) from None
    if _sha256(path) != recorded:
        raise LmlabError(
            f"the cached file {path} is corrupt (its SHA-256 differs from {sidecar.name}); "
            f"delete it to download it again"
        )
    return path


def _unreachable(url: str, exc: BaseException) -> LmlabError:
    if isinstance(exc, urllib.error.HTTPError):
        reason = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        reason = str(exc.reason)
    else:
        reason = first_line(exc)
    return LmlabError(
        f"cannot download {url} ({reason}); pass a local copy with --set data.path=PATH"
    )


_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError, ValueError)


def _fetch(url: str, dest: IO[bytes], timeout: float) -> str:
    """Stream ``url`` into the open file ``dest``; returns the SHA-256 of the bytes written."""
    digest = hashlib.sha256()
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except _NETWORK_ERRORS as e:
        raise _unreachable(url, e) from None
    with response:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except _NETWORK_ERRORS as e:
                raise _unreachable(url, e) from None
            if not chunk:
                break
            digest.update(chunk)
            dest.write(chunk)
    return digest.hexdigest()


def download_once(url: str, name: str, *, timeout: float = 20.0) -> Path:
    """The cached copy of ``url`` as ``data_cache_dir() / name``, downloading it if absent.

    A cached file is checked against its recorded SHA-256 (``<name>.sha256``) on every
    call. A download goes to a temporary file in the cache directory and is renamed into
    place only once complete, so an interrupted download never leaves a partial file.

    Args:
        url: where to fetch the file from.
        name: the file name in the cache (a plain name, no directories).
        timeout: seconds to wait for the server before giving up.

    Returns:
        The path of the cached file.

    Raises:
        LmlabError: the URL cannot be reached, or the cached copy is corrupt.

    >>> import os, pathlib, tempfile
    >>> from unittest import mock
    >>> src = pathlib.Path(tempfile.mkdtemp()) / "hello.txt"
    >>> _ = src.write_text("hello")
    >>> with mock.patch.dict(os.environ, {"LMLAB_CACHE": tempfile.mkdtemp()}):
    ...     path = download_once(src.as_uri(), "hello.txt")
    ...     path.read_text(), path.with_name("hello.txt.sha256").is_file()
    ('hello', True)
    """
    if not name or Path(name).name != name or name in (".", ".."):
        raise LmlabError(f"invalid cache file name {name!r}; use a plain file name")
    cache = data_cache_dir()
    path, sidecar = cache / name, cache / f"{name}.sha256"
    if path.is_file():
        return _verified(path, sidecar)

    def write(handle: IO[bytes]) -> None:  # the checksum lands before the file it describes
        digest = _fetch(url, handle, timeout)
        line = f"{digest}  {name}\n".encode()
        atomic_write_with(sidecar, lambda f: f.write(line), hint=_CACHE_HINT)

    return atomic_write_with(path, write, hint=_CACHE_HINT)
