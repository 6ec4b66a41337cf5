"""A local cache for data files fetched once from the web, each checked by its SHA-256.

The cache lives in :func:`data_cache_dir`. Every downloaded file ``<name>`` has a sidecar
``<name>.sha256`` written at download time; later calls re-check the file against it, so a
truncated or edited copy is reported instead of silently used.

>>> data_cache_dir().name
'data'
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from lmlab.errors import LmlabError

__all__ = ["data_cache_dir", "download_once"]

_CHUNK = 1 << 16


def data_cache_dir() -> Path:
    """The directory for cached data files (not created here).

    ``$LMLAB_CACHE/data`` when ``LMLAB_CACHE`` is set, else ``$XDG_CACHE_HOME/lmlab/data``,
    else ``~/.cache/lmlab/data``.

    Returns:
        The cache directory path.

    >>> import os
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"LMLAB_CACHE": "/tmp/lmlab-cache"}):
    ...     data_cache_dir().as_posix()
    '/tmp/lmlab-cache/data'
    """
    root = os.environ.get("LMLAB_CACHE")
    if root:
        return Path(root).expanduser() / "data"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "lmlab" / "data"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
        reason = str(exc) or type(exc).__name__
    return LmlabError(
        f"cannot download {url} ({reason}); pass a local copy with --set data.path=PATH"
    )


_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError, ValueError)


def _fetch(url: str, dest: Path, timeout: float) -> str:
    """Stream ``url`` into ``dest``; returns the SHA-256 of the bytes written."""
    digest = hashlib.sha256()
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except _NETWORK_ERRORS as e:
        raise _unreachable(url, e) from None
    with response, dest.open("wb") as f:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except _NETWORK_ERRORS as e:
                raise _unreachable(url, e) from None
            if not chunk:
                break
            digest.update(chunk)
            f.write(chunk)
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
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=f".{name}.", suffix=".part")
    except OSError as e:
        raise LmlabError(
            f"cannot write to the cache directory {cache} ({e.strerror}); "
            f"set LMLAB_CACHE to a writable directory"
        ) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        digest = _fetch(url, tmp, timeout)
        _write_atomic(sidecar, f"{digest}  {name}\n")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return path
