"""A local cache for data files fetched once from the web, each checked by its SHA-256.

The cache lives in :func:`data_cache_dir`. Every downloaded file ``<name>`` has a sidecar
``<name>.sha256`` written at download time; later calls re-check the file against it, so a
truncated or edited copy is reported instead of silently used. A caller that knows the file's
published hash passes it as ``sha256=``: then a download or a cached copy with any other hash is
refused (trust on first use is only for files without a known hash).

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


def _mismatch(what: str, got: str, expected: str, advice: str) -> LmlabError:
    return LmlabError(
        f"{what} has SHA-256 {got}, not the expected {expected}; {advice}"
    )


def _expected_hash(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    digest = sha256.strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise LmlabError(f"invalid SHA-256 {sha256!r}: give 64 hexadecimal digits")
    return digest


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


def download_once(url: str, name: str, *, timeout: float = 20.0,
                  sha256: str | None = None) -> Path:
    """The cached copy of ``url`` as ``data_cache_dir() / name``, downloading it if absent.

    A cached file is checked on every call: against ``sha256`` when given, else against the
    SHA-256 recorded at download time (``<name>.sha256``, trust on first use). A download goes
    to a temporary file in the cache directory and is renamed into place only once complete
    and, with ``sha256``, only if its hash matches, so neither an interrupted nor an altered
    download is ever kept.

    Args:
        url: where to fetch the file from.
        name: the file name in the cache (a plain name, no directories).
        timeout: seconds to wait for the server before giving up.
        sha256: the file's known SHA-256 (64 hex digits); ``None`` trusts the first download.

    Returns:
        The path of the cached file.

    Raises:
        LmlabError: the URL cannot be reached, the download's hash is not ``sha256``, or the
            cached copy is corrupt (its hash differs from ``sha256`` or from its sidecar).

    >>> import os, pathlib, tempfile
    >>> from unittest import mock
    >>> src = pathlib.Path(tempfile.mkdtemp()) / "hello.txt"
    >>> _ = src.write_text("hello")
    >>> with mock.patch.dict(os.environ, {"LMLAB_CACHE": tempfile.mkdtemp()}):
    ...     path = download_once(src.as_uri(), "hello.txt")
    ...     path.read_text(), path.with_name("hello.txt.sha256").is_file()
    ...     try:
    ...         download_once(src.as_uri(), "other.txt", sha256="0" * 64)
    ...     except LmlabError as e:
    ...         print("not the expected 000" in str(e), (path.parent / "other.txt").exists())
    ('hello', True)
    True False
    """
    if not name or Path(name).name != name or name in (".", ".."):
        raise LmlabError(f"invalid cache file name {name!r}; use a plain file name")
    expected = _expected_hash(sha256)
    cache = data_cache_dir()
    path, sidecar = cache / name, cache / f"{name}.sha256"
    if path.is_file():
        if expected is None:
            return _verified(path, sidecar)
        got = _sha256(path)
        if got != expected:
            raise _mismatch(f"the cached file {path}", got, expected,
                            f"delete it to download it again from {url}")
        return path

    def write(handle: IO[bytes]) -> None:  # the checksum lands before the file it describes
        digest = _fetch(url, handle, timeout)
        if expected is not None and digest != expected:
            raise _mismatch(f"the file downloaded from {url}", digest, expected,
                            "it was not kept: the source changed or the download was altered; "
                            "pass a checked local copy with --set data.path=PATH")
        line = f"{digest}  {name}\n".encode()
        atomic_write_with(sidecar, lambda f: f.write(line), hint=_CACHE_HINT)

    return atomic_write_with(path, write, hint=_CACHE_HINT)
