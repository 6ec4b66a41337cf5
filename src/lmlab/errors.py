"""The one exception type for user mistakes, and the one way to quote another exception.

A :class:`LmlabError` carries a one-line message that says what is wrong and what to do.
The CLI prints it as ``lmlab: error: <message>`` and exits with code 2, never with a traceback.
When a library error (torch, transformers, OSError) is the cause, its message is quoted with
:func:`first_line`, so the user still gets one line.

>>> str(LmlabError("no such file: x.pt; check the path"))
'no such file: x.pt; check the path'
>>> first_line(ValueError("bad magic number\\n  at byte 0"))
'bad magic number'
"""

from __future__ import annotations

__all__ = ["LmlabError", "first_line"]


class LmlabError(Exception):
    """A user-facing failure (bad path, bad config, corrupt file, NaN loss)."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name if it has none.

    Args:
        exc: Any exception.

    Returns:
        One stripped line, e.g. to quote inside an :class:`LmlabError` message.

    >>> first_line(RuntimeError("\\n  PytorchStreamReader failed\\n  details"))
    'PytorchStreamReader failed'
    >>> first_line(KeyError())
    'KeyError'
    """
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
