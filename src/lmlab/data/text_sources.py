"""Real English text available offline: the docstrings of the Python standard library.

Every Python install carries some 0.6 MB of technical prose in the docstrings of its standard
library. :func:`stdlib_docstrings` collects them deterministically, so quick presets can train
and evaluate on real text with no network; reports name the source with
:data:`STDLIB_DOCSTRINGS_SOURCE`.

>>> STDLIB_DOCSTRINGS_SOURCE.startswith("docstrings of the Python 3.")
True
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from lmlab.data import _stdlib_docs

__all__ = ["STDLIB_DOCSTRINGS_SOURCE", "stdlib_docstrings"]

STDLIB_DOCSTRINGS_SOURCE = (
    f"docstrings of the Python {sys.version_info.major}.{sys.version_info.minor} "
    f"standard library (offline real text)"
)

_TIMEOUT = 60.0
_NO_WINDOWS = ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER")


def _collect_in_fresh_interpreter() -> list[str] | None:
    """Run the collector in a new isolated interpreter without site-packages, no display and
    no terminal; ``None`` if that is not possible here."""
    script = Path(_stdlib_docs.__file__)
    if not sys.executable or not script.is_file():
        return None
    env = {k: v for k, v in os.environ.items() if k not in _NO_WINDOWS}
    with tempfile.TemporaryDirectory(prefix="lmlab-docs-") as tmp:
        out = Path(tmp) / "docs.json"
        try:
            subprocess.run(
                [sys.executable, "-I", "-S", str(script), str(out)],
                cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, timeout=_TIMEOUT, check=True,
            )
            docs = json.loads(out.read_text(encoding="utf-8"))
        except (OSError, subprocess.SubprocessError, ValueError):
            return None
    if not isinstance(docs, list) or not all(isinstance(d, str) for d in docs):
        return None
    return docs


@functools.lru_cache(maxsize=1)
def _all_docstrings() -> tuple[str, ...]:
    docs = _collect_in_fresh_interpreter()
    if docs is None:
        docs = _stdlib_docs.collect()
    return tuple(docs)


def stdlib_docstrings(*, min_chars: int = 200, max_docs: int | None = None) -> list[str]:
    """Docstrings of the Python standard library, as a list of real English texts.

    Public modules are imported in sorted order of :data:`sys.stdlib_module_names` (private,
    test, GUI and demo modules, and those that print or open a browser on import, are
    skipped; a module whose import fails is skipped). From each come the module docstring,
    then the docstrings of its public classes (each followed by its public methods) and
    functions defined there, in name order. Texts are cleaned with :func:`inspect.cleandoc`
    and de-duplicated, keeping the first occurrence.

    The imports run once per process, in a fresh isolated interpreter (no site-packages, no
    display, output discarded), so the caller's process is untouched and the list is the same
    on every call and every run on the same Python; only where a subprocess cannot be started
    are they done in-process, quietly.

    Args:
        min_chars: keep docstrings of at least this many characters (short ones are mostly
            one-line summaries rather than prose).
        max_docs: keep at most this many (the first ones); ``None`` keeps all.

    Returns:
        A new list of texts on each call.

    >>> docs = stdlib_docstrings(max_docs=3)
    >>> len(docs), all(len(d) >= 200 for d in docs)
    (3, True)
    """
    docs = [d for d in _all_docstrings() if len(d) >= min_chars]
    return docs if max_docs is None else docs[: max(max_docs, 0)]
