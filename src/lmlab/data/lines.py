"""Small language-modelling corpora made of lines: a token budget over texts taken in order,
WikiText-2 through the ``datasets`` library (online), and plain text files.

This is the data protocol of the optimiser comparison: lines in order, blank lines skipped,
each line truncated to ``max_tokens`` tokens, stop once ``budget`` tokens are collected.

>>> def tokenizer(text, truncation, max_length):  # a stand-in: one id per word
...     return {"input_ids": [len(w) for w in text.split()][:max_length]}
>>> token_budget(["a bb ccc", "", "dddd ee", "f"], tokenizer, max_tokens=2, budget=3)
[[1, 2], [4, 2]]
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lmlab._files import file_kind, given_path
from lmlab.errors import LmlabError, first_line

__all__ = ["token_budget", "wikitext2_lines", "text_file_lines", "file_kind", "given_path",
           "WIKITEXT2_SOURCE"]

WIKITEXT2_SOURCE = "WikiText-2 (wikitext-2-raw-v1, via the datasets library)"


def token_budget(lines: Iterable[str], tokenizer: Any, *, max_tokens: int = 128,
                 budget: int = 1024) -> list[list[int]]:
    """Token ids of ``lines`` in order until at least ``budget`` tokens are collected."""
    out: list[list[int]] = []
    total = 0
    for line in lines:
        if not line.strip():
            continue
        ids = [int(i) for i in tokenizer(line, truncation=True, max_length=max_tokens)["input_ids"]]
        if len(ids) < 2:
            continue
        out.append(ids)
        total += len(ids)
        if total >= budget:
            break
    if not out:
        raise LmlabError("no text left after skipping blank lines; check the data source")
    return out


def wikitext2_lines(split: str) -> list[str]:
    """The lines of a WikiText-2 raw split (``train``, ``validation``, ``test``); needs the
    ``datasets`` package and the Hugging Face hub (or its cache)."""
    try:
        import datasets
    except ImportError:
        raise LmlabError("WikiText-2 needs the datasets library (pip install datasets) and the "
                         "hub; offline, use --set data.source=stdlib-docstrings or "
                         "--set data.source=file --set data.path=FILE") from None
    try:
        ds = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split=split)
    except Exception as e:  # noqa: BLE001 - network and hub errors of many kinds
        raise LmlabError(f"cannot load WikiText-2 ({first_line(e)}); a copy downloaded once is "
                         "reused offline (HF_HUB_OFFLINE=1); else use "
                         "--set data.source=stdlib-docstrings or "
                         "--set data.source=file --set data.path=FILE") from None
    return [str(t) for t in ds["text"]]


def text_file_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file.

    Raises:
        LmlabError: the path is empty, the file is missing, not a regular file, or not UTF-8
            text.
    """
    p = given_path(path)
    kind = file_kind(p)
    if kind == "missing":
        raise LmlabError(f"no such text file: {p}; check data.path")
    if kind is not None:
        raise LmlabError(f"the text file {p} is {kind}; pass a plain text file in data.path")
    try:
        return p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise LmlabError(f"no such text file: {p}; check data.path") from None
    except (UnicodeDecodeError, IsADirectoryError) as e:
        raise LmlabError(f"cannot read {p} as UTF-8 text ({type(e).__name__}); "
                         "pass a plain text file") from None
