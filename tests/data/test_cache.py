"""The download cache, against a real HTTP server on the loopback interface."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmlab.data import data_cache_dir, download_once
from lmlab.errors import LmlabError

PAYLOAD = b'[{"form": "f", "Question": "q", "Answer": "a"}]\n'


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """Serves ``tmp_path/www`` on 127.0.0.1; yields the base URL and a log of request paths."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "data.json").write_bytes(PAYLOAD)
    requests: list[str] = []

    class Handler(_Handler):
        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    httpd.timeout = 5
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "data"


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMLAB_CACHE", "/somewhere")
    assert data_cache_dir() == Path("/somewhere/data")
    monkeypatch.delenv("LMLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert data_cache_dir() == Path("/xdg/lmlab/data")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", "/home/someone")
    assert data_cache_dir() == Path("/home/someone/.cache/lmlab/data")


def test_downloads_once_then_serves_from_the_cache(
    server: tuple[str, list[str]], cache: Path
) -> None:
    base, requests = server
    url = f"{base}/data.json"
    path = download_once(url, "data.json", timeout=5)
    assert path == cache / "data.json"
    assert path.read_bytes() == PAYLOAD
    sidecar = cache / "data.json.sha256"
    assert sidecar.read_text().split()[0] == hashlib.sha256(PAYLOAD).hexdigest()
    assert requests == ["/data.json"]
    assert sorted(p.name for p in cache.iterdir()) == ["data.json", "data.json.sha256"]

    again = download_once("http://127.0.0.1:9/unreachable", "data.json", timeout=1)
    assert again == path and requests == ["/data.json"]


def test_a_corrupted_cache_is_detected(server: tuple[str, list[str]], cache: Path) -> None:
    base, _ = server
    path = download_once(f"{base}/data.json", "data.json", timeout=5)
    path.write_bytes(PAYLOAD.replace(b"q", b"Q"))
    with pytest.raises(LmlabError, match=f"cached file {path} is corrupt.*delete it"):
        download_once(f"{base}/data.json", "data.json", timeout=5)
    (cache / "data.json.sha256").unlink()
    with pytest.raises(LmlabError, match="no readable checksum"):
        download_once(f"{base}/data.json", "data.json", timeout=5)


def test_http_errors_leave_no_file_behind(server: tuple[str, list[str]], cache: Path) -> None:
    base, _ = server
    with pytest.raises(LmlabError, match=r"cannot download .*/missing.json \(HTTP 404"):
        download_once(f"{base}/missing.json", "missing.json", timeout=5)
    assert list(cache.iterdir()) == []


def test_an_unreachable_url_says_to_pass_a_local_copy(cache: Path) -> None:
    url = "http://127.0.0.1:9/nope"
    with pytest.raises(LmlabError, match=r"cannot download http://127\.0\.0\.1:9/nope .*"
                                         r"--set data\.path="):
        download_once(url, "nope.json", timeout=2)


@pytest.mark.parametrize("name", ["", "../x", "a/b", "."])
def test_cache_names_are_plain_file_names(cache: Path, name: str) -> None:
    with pytest.raises(LmlabError, match="plain file name"):
        download_once("http://127.0.0.1:9/x", name)


def test_a_silent_server_times_out(cache: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/slow.json"
        with pytest.raises(LmlabError, match=r"cannot download .*slow\.json.*data\.path"):
            download_once(url, "slow.json", timeout=0.5)
    assert list(cache.iterdir()) == []


def test_an_unwritable_cache_says_to_set_lmlab_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: tuple[str, list[str]]
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("LMLAB_CACHE", str(blocker))
    base, _ = server
    with pytest.raises(LmlabError, match=r"set LMLAB_CACHE to a writable directory$"):
        download_once(f"{base}/data.json", "data.json", timeout=5)


def test_a_failed_write_leaves_no_partial_file(
    server: tuple[str, list[str]], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = server

    def disk_full(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("lmlab.runs.io.os.replace", disk_full)
    with pytest.raises(LmlabError, match=r"No space left on device; set LMLAB_CACHE"):
        download_once(f"{base}/data.json", "data.json", timeout=5)
    assert list(cache.iterdir()) == []


# ----------------------------------------------------------------------------- known hashes


def _local(tmp_path: Path, payload: bytes = PAYLOAD) -> str:
    src = tmp_path / "src" / "data.json"
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(payload)
    return src.as_uri()


def test_a_download_with_the_wrong_hash_is_refused_and_not_kept(
    tmp_path: Path, cache: Path
) -> None:
    wrong = hashlib.sha256(b"something else").hexdigest()
    right = hashlib.sha256(PAYLOAD).hexdigest()
    with pytest.raises(LmlabError, match=rf"SHA-256 {right}, not the expected {wrong}; it was "
                                         r"not kept.*--set data\.path=PATH$"):
        download_once(_local(tmp_path), "data.json", sha256=wrong)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_the_right_hash_is_accepted_and_rechecked_from_the_cache(
    tmp_path: Path, cache: Path
) -> None:
    right = hashlib.sha256(PAYLOAD).hexdigest()
    url = _local(tmp_path)
    path = download_once(url, "data.json", sha256=right.upper())
    assert path == cache / "data.json" and path.read_bytes() == PAYLOAD
    (tmp_path / "src" / "data.json").unlink()  # served from the cache now
    assert download_once(url, "data.json", sha256=right) == path


def test_a_corrupt_cached_copy_is_refused_against_the_known_hash(
    tmp_path: Path, cache: Path
) -> None:
    right = hashlib.sha256(PAYLOAD).hexdigest()
    url = _local(tmp_path)
    path = download_once(url, "data.json", sha256=right)
    bad = PAYLOAD.replace(b"q", b"Q")
    path.write_bytes(bad)
    (cache / "data.json.sha256").write_text(hashlib.sha256(bad).hexdigest())  # sidecar agrees
    got = hashlib.sha256(bad).hexdigest()
    with pytest.raises(LmlabError, match=rf"cached file {path} has SHA-256 {got}, not the "
                                         rf"expected {right}; delete it"):
        download_once(url, "data.json", sha256=right)
    assert download_once(url, "data.json") == path  # without a known hash: first use trusted


@pytest.mark.parametrize("digest", ["abc", "g" * 64, ""])
def test_a_malformed_expected_hash_is_a_user_error(cache: Path, digest: str) -> None:
    with pytest.raises(LmlabError, match="64 hexadecimal digits"):
        download_once("file:///nonexistent", "x.json", sha256=digest)
