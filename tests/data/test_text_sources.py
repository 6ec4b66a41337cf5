"""Offline real text: the standard library's docstrings."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time

import pytest

from lmlab.data import STDLIB_DOCSTRINGS_SOURCE, stdlib_docstrings, text_sources


@pytest.fixture(scope="module")
def docs() -> list[str]:
    text_sources._all_docstrings.cache_clear()
    start = time.perf_counter()
    out = stdlib_docstrings()
    assert time.perf_counter() - start < 5.0
    return out


def test_a_large_body_of_real_english_prose(docs: list[str]) -> None:
    assert len(docs) > 1000
    assert sum(map(len, docs)) > 300_000
    assert all(len(d) >= 200 for d in docs)
    assert len(set(docs)) == len(docs)
    assert sum(" the " in d for d in docs) > 0.8 * len(docs)
    words = " ".join(docs).split()
    assert sum(w in {"the", "a", "of", "is", "to"} for w in words) > 0.05 * len(words)
    assert all(d == d.strip() and not d.startswith(" ") for d in docs)


def test_deterministic_and_returns_a_copy(docs: list[str]) -> None:
    again = stdlib_docstrings()
    assert again == docs and again is not docs
    again.clear()
    assert stdlib_docstrings() == docs


def _run(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return json.loads(out)


def test_same_list_in_a_separate_run(docs: list[str]) -> None:
    code = ("import json, sys; from lmlab.data import stdlib_docstrings; "
            "json.dump(stdlib_docstrings(), sys.stdout)")
    assert _run(code) == docs


def test_the_in_process_fallback_gives_the_same_list(docs: list[str]) -> None:
    """Even after libraries that patch standard classes (transformers adds Logger methods)."""
    code = ("import json, sys, torch, transformers; from lmlab.data import text_sources as t; "
            "t._collect_in_fresh_interpreter = lambda: None; "
            "json.dump(t.stdlib_docstrings(), sys.stdout)")
    assert _run(code) == docs


def test_filters_and_source_name(docs: list[str]) -> None:
    assert stdlib_docstrings(max_docs=5) == docs[:5]
    assert stdlib_docstrings(max_docs=0) == []
    longer = stdlib_docstrings(min_chars=1000)
    assert longer == [d for d in docs if len(d) >= 1000]
    assert len(stdlib_docstrings(min_chars=0)) > len(docs)
    major, minor, _ = platform.python_version_tuple()
    assert f"Python {major}.{minor} standard library" in STDLIB_DOCSTRINGS_SOURCE
