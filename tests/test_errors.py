from __future__ import annotations

import pytest

from lmlab.errors import LmlabError, first_line


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ValueError("bad value"), "bad value"),
        (RuntimeError("\n\n  PytorchStreamReader failed reading zip archive\n  at byte 7\n"),
         "PytorchStreamReader failed reading zip archive"),
        (OSError(2, "No such file or directory"), "[Errno 2] No such file or directory"),
        (KeyError("weight"), "'weight'"),
        (ValueError(), "ValueError"),
        (RuntimeError("   \n  "), "RuntimeError"),
        (LmlabError("one line; do this"), "one line; do this"),
    ],
)
def test_first_line(exc: BaseException, expected: str) -> None:
    assert first_line(exc) == expected
