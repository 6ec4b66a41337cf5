"""The names dataset: the lecture's file and split sizes, the offline SSA layout, bad input."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from lmlab.data.names import (
    Vocab,
    context_windows,
    read_words,
    split_words,
    ssa_names,
    word_sequences,
)
from lmlab.errors import LmlabError
from tests.conftest import SHARED_DATA

NAMES_2018 = SHARED_DATA / "names_2018.txt"


@pytest.fixture(scope="module")
def lecture_words() -> list[str]:
    if not NAMES_2018.is_file():
        pytest.skip(f"the lecture's names file is not at {NAMES_2018}")
    return read_words(NAMES_2018)


def bigram_loss(words: list[str]) -> float:
    """Mean NLL of a +1-smoothed bigram model over the whole file (the lecture's number)."""
    vocab = Vocab.from_words(words)
    X, Y = context_windows(words, vocab, 1)
    counts = torch.ones(vocab.size, vocab.size)
    counts.index_put_((X[:, 0], Y), torch.ones(len(Y)), accumulate=True)
    P = counts / counts.sum(1, keepdim=True)
    return float(-P[X[:, 0], Y].log().mean())


def test_lecture_file_split_sizes_at_seed_42(lecture_words: list[str]) -> None:
    # the makemore lecture's tensor sizes for block_size 3 on its names.txt
    assert len(lecture_words) == 32033 and len(set(lecture_words)) == 29494
    vocab = Vocab.from_words(lecture_words)
    assert vocab.itos == "." + "abcdefghijklmnopqrstuvwxyz"
    sizes = [context_windows(s, vocab, 3)[0].shape[0] for s in split_words(lecture_words)]
    assert sizes == [182625, 22655, 22866]


def test_ssa_2017_layout_matches_the_spec(lecture_words: list[str]) -> None:
    words = ssa_names(2017)
    assert len(words) == 32469 and len(set(words)) == 29910
    assert words[:3] == ["emma", "olivia", "ava"]  # female names by count come first
    assert set("".join(words)) == set("abcdefghijklmnopqrstuvwxyz")
    overlap = len(set(words) & set(lecture_words)) / len(set(lecture_words))
    assert overlap == pytest.approx(0.81, abs=0.01)
    # the spec's +1-smoothed bigram loss, 2.4546 on both files
    assert bigram_loss(words) == pytest.approx(2.4546, abs=5e-5)
    assert bigram_loss(lecture_words) == pytest.approx(2.4546, abs=5e-5)


def test_ssa_year_out_of_range() -> None:
    with pytest.raises(LmlabError, match="1880–2017"):
        ssa_names(2018)


def test_context_windows_pad_the_start_and_end_each_word() -> None:
    vocab = Vocab.from_words(["emma", "bo"])
    X, Y = context_windows(["emma", "bo"], vocab, block_size=2)
    assert X.shape == (8, 2) and Y.shape == (8,)  # 4 + 1 and 2 + 1 positions
    assert vocab.decode(Y.tolist()) == "emmabo"
    assert Y[4] == 0 and Y[7] == 0                # each word ends with '.'
    assert X[0].tolist() == [0, 0] and X[5].tolist() == [0, 0]   # each word starts padded
    assert X[6].tolist() == [0, vocab.stoi["b"]]
    assert X[4].tolist() == [vocab.stoi["m"], vocab.stoi["a"]]
    with pytest.raises(LmlabError, match="block_size"):
        context_windows(["emma"], vocab, 0)


def test_word_sequences_agree_with_windows_on_targets() -> None:
    words = ["anna", "bob", "x"]
    vocab = Vocab.from_words(words)
    X, Y = word_sequences(words, vocab)
    _, Yw = context_windows(words, vocab, 5)
    assert X.shape == (3, 5) and (X[:, 0] == 0).all()
    assert Y[Y >= 0].tolist() == Yw.tolist()  # the same targets in the same order
    with pytest.raises(LmlabError, match="max_len"):
        word_sequences(words, vocab, max_len=3)


def test_split_is_seeded_and_leaves_global_random_alone() -> None:
    words = [f"w{i}" for i in range(100)]
    random.seed(7)
    expected = random.random()
    random.seed(7)
    a = split_words(words, seed=42)
    assert random.random() == expected
    assert a == split_words(words, seed=42) != split_words(words, seed=1)
    assert [len(x) for x in a] == [80, 10, 10] and sorted(sum(a, [])) == sorted(words)


def test_read_words_skips_empty_lines(tmp_path: Path) -> None:
    p = tmp_path / "w.txt"
    p.write_text("ann\n\n  bob \n\n", encoding="utf-8")
    assert read_words(p) == ["ann", "bob"]


@pytest.mark.parametrize("content, match", [
    (b"", "no words"), (b"\n \n", "no words"), (b"\xff\xfeab", "not UTF-8")])
def test_read_words_bad_files(tmp_path: Path, content: bytes, match: str) -> None:
    p = tmp_path / "w.txt"
    p.write_bytes(content)
    with pytest.raises(LmlabError, match=match):
        read_words(p)
    with pytest.raises(LmlabError, match="not found"):
        read_words(tmp_path / "missing.txt")


def test_fixed_vocabulary_rejects_other_characters() -> None:
    vocab = Vocab.from_chars("abcdefghijklmnopqrstuvwxyz")
    assert vocab.size == 27
    with pytest.raises(LmlabError, match=r"word 2 \('zoë'\).*'ë'"):
        vocab.check(["ann", "zoë"])
    with pytest.raises(LmlabError, match="boundary"):
        Vocab.from_words(["a.b"])
    with pytest.raises(LmlabError, match="empty"):
        Vocab.from_chars("")


def test_a_word_over_the_length_bound_is_refused_with_its_line_number(tmp_path: Path) -> None:
    from lmlab.data.names import MAX_WORD_LENGTH

    p = tmp_path / "w.txt"
    p.write_text("ann\n\nbob\n" + "x" * (MAX_WORD_LENGTH + 1) + "\n", encoding="utf-8")
    with pytest.raises(LmlabError, match=rf"line 4 of .*w.txt is {MAX_WORD_LENGTH + 1} "
                                         rf"characters long, more than the {MAX_WORD_LENGTH}"):
        read_words(p)
    p.write_text("ann\n" + "x" * MAX_WORD_LENGTH + "\n", encoding="utf-8")
    assert len(read_words(p)[1]) == MAX_WORD_LENGTH  # the bound itself is allowed


@pytest.mark.parametrize("path", ["", "  "])
def test_an_empty_path_is_refused_as_empty(path: str) -> None:
    with pytest.raises(LmlabError, match=r"^data.path is empty; give a file path") as info:
        read_words(path)
    assert "'.'" not in str(info.value)


def test_a_fifo_word_file_is_refused_before_reading(fifo) -> None:
    with pytest.raises(LmlabError, match="named pipe"):
        read_words(fifo("w.txt"))  # reading it would block forever
