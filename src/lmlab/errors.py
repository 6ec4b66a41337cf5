"""The one exception type for user mistakes.

A :class:`LmlabError` carries a one-line message that says what is wrong and what to do.
The CLI prints it as ``lmlab: error: <message>`` and exits with code 2, never with a traceback.

>>> str(LmlabError("no such file: x.pt; check the path"))
'no such file: x.pt; check the path'
"""

from __future__ import annotations

__all__ = ["LmlabError"]


class LmlabError(Exception):
    """A user-facing failure (bad path, bad config, corrupt file, NaN loss)."""
