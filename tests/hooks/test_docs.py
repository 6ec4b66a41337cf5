"""The examples in docs/hooks.md run and give what the page shows."""

from __future__ import annotations

import doctest
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "hooks.md"


def test_docs_examples_run() -> None:
    result = doctest.testfile(str(DOC), module_relative=False, verbose=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 20
    assert result.failed == 0
