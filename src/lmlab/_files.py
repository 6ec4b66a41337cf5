"""Files from the user: what stands at a path, and refusals in lmlab's words.

Every reader of a user's file goes through here before it opens the file: an empty path is
refused as empty (not read as ``.``), a FIFO, a device or a socket is refused from its metadata
(reading one would block), and a torch file that ``torch.load(weights_only=True)`` rejects is
refused without passing on torch's advice to load it unsafely.

>>> given_path("~/names.txt").name
'names.txt'
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

from lmlab.errors import LmlabError, first_line

__all__ = ["file_kind", "given_path", "regular_file", "torch_file_error"]

_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def file_kind(path: Path) -> str | None:
    """What stands at ``path`` when it is not a readable regular file, else None; checked from
    metadata alone, so a FIFO or a device is never opened (reading one would block).

    >>> file_kind(Path(__file__)) is None, file_kind(Path(__file__).parent)
    (True, 'a directory')
    """
    try:
        mode = path.stat().st_mode  # symlinks followed, as a reader would
    except FileNotFoundError:
        return "missing"
    except OSError as e:  # permission, a name too long, a loop of links
        return f"unreadable ({e.strerror or type(e).__name__})"
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")


def given_path(path: str | Path, setting: str = "data.path") -> Path:
    """``path`` expanded, after refusing an empty one (``--set data.path=``), which would
    otherwise read as the current directory ``.``.

    >>> given_path("~/names.txt").name
    'names.txt'
    """
    if not str(path).strip():
        raise LmlabError(f"{setting} is empty; give a file path, or leave {setting} unset "
                         "(none) for the default data")
    return Path(path).expanduser()


def regular_file(path: Path, *, allow_empty: bool = False,
                 hint: str = "give a weights file saved on disk") -> Path:
    """``path`` when it is a regular file (symlinks followed), checked before any read.

    A FIFO, a device or a socket would block or stream forever when read: it is refused here,
    from its metadata alone.

    Raises:
        LmlabError: the path is missing, not a regular file, or empty (unless allowed).
    """
    kind = file_kind(path)
    if kind == "missing":
        raise LmlabError(f"no such file: {path}; check the path")
    if kind is not None and kind.startswith("unreadable"):
        raise LmlabError(f"cannot read {path}: {kind[len('unreadable ('):-1]}; check the path")
    if kind is not None:
        raise LmlabError(f"{path} is {kind}, not a regular file; {hint}")
    if path.stat().st_size == 0 and not allow_empty:
        raise LmlabError(f"{path} is empty (0 bytes); the file was not written completely — "
                         "save it again")
    return path


def torch_file_error(path: Path, exc: BaseException, *, what: str = "",
                     advice: str = "re-save it with torch.save(model.state_dict(), PATH)"
                     ) -> LmlabError:
    """The one-line refusal of a torch file that ``torch.load(weights_only=True)`` rejected.

    torch's own message advises ``weights_only=False``, which would run the file's code: that
    advice is never passed on. A pickle that names a function (the way a file runs code) is
    said to hold Python objects other than tensors, naming the function.

    Args:
        path: the file.
        exc: what ``torch.load`` raised.
        what: what the file is (``checkpoint``), for the message.
        advice: what to do about it.

    >>> str(torch_file_error(Path("m.pt"), EOFError()))  # doctest: +ELLIPSIS
    'cannot read m.pt: EOFError; the file is corrupt, truncated or not a torch state dict'
    >>> str(torch_file_error(Path("a.pt"), EOFError(), what="checkpoint",
    ...                      advice="delete it"))  # doctest: +ELLIPSIS
    'cannot read checkpoint a.pt: EOFError; the file is corrupt, ...; delete it'
    """
    text = str(exc)
    name = f"{what} {path}" if what else str(path)
    if any(k in text for k in ("weights_only", "Weights only load failed", "Unsupported global")):
        called = re.search(r"GLOBAL ([\w.]+)", text)
        if called:
            return LmlabError(
                f"{name} holds Python objects other than tensors (unpickling it would call "
                f"{called.group(1)}); lmlab reads only tensors and plain values and runs no "
                f"code from files; {advice}")
        return LmlabError(f"cannot read {name}: it is corrupt, or holds Python objects other "
                          f"than tensors (lmlab reads only tensors and plain values); {advice}")
    tail = f"; {advice}" if what else ""
    return LmlabError(f"cannot read {name}: {first_line(exc)}; the file is corrupt, truncated "
                      f"or not a torch state dict{tail}")
