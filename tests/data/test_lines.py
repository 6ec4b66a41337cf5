"""Plain text files as data: empty paths, FIFOs and directories are refused before any read."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmlab.data.lines import file_kind, given_path, text_file_lines
from lmlab.errors import LmlabError


def test_text_file_lines_reads_a_file(tmp_path: Path) -> None:
    p = tmp_path / "t.txt"
    p.write_text("a b\n\nc\n", encoding="utf-8")
    assert text_file_lines(p) == ["a b", "", "c"]


@pytest.mark.parametrize("path", ["", " "])
def test_an_empty_path_is_refused_as_empty(path: str) -> None:
    with pytest.raises(LmlabError, match="^data.path is empty"):
        text_file_lines(path)
    with pytest.raises(LmlabError, match="^data.path is empty"):
        given_path(path)


def test_what_is_not_a_regular_file_is_named(tmp_path: Path, fifo) -> None:
    pipe = fifo("pipe.txt")  # reading it would block forever
    assert file_kind(pipe) == "a named pipe (FIFO)"
    with pytest.raises(LmlabError, match="pipe.txt is a named pipe"):
        text_file_lines(pipe)
    with pytest.raises(LmlabError, match="is a directory"):
        text_file_lines(tmp_path)
    with pytest.raises(LmlabError, match="no such text file"):
        text_file_lines(tmp_path / "missing.txt")
