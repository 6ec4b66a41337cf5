"""The user's own text as training documents: JSON records, JSON Lines, or plain text.

:func:`load_user_texts` reads one file in one of :data:`FORMATS`:

- ``json``: a JSON list of records (objects of text fields), such as IR-Triplets; each record
  becomes one document through a template (fields in braces, :func:`format_records`);
- ``jsonl``: JSON Lines, one object per non-blank line, formatted by the template the same way;
- ``lines``: plain text, one document per non-blank line;
- ``paragraphs``: plain text, one document per paragraph (paragraphs are separated by one or
  more blank lines; the line breaks inside a paragraph are kept);
- ``auto`` (the default) picks one by these rules, in order: the extension ``.json`` →
  ``json``; ``.jsonl`` or ``.ndjson`` → ``jsonl``; content that parses as one JSON list →
  ``json``; a first non-blank line that parses as a JSON object → ``jsonl``; otherwise plain
  text: ``paragraphs`` if a blank line separates two non-blank lines, else ``lines``.

>>> import pathlib, tempfile
>>> f = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
>>> _ = f.write_text("First idea,\\nstill the first.\\n\\nSecond idea.\\n")
>>> got = load_user_texts(f)
>>> got.format, got.texts
('paragraphs', ['First idea,\\nstill the first.', 'Second idea.'])
>>> got.describe()
'notes.txt (plain text, one document per paragraph: 2 documents)'
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lmlab._files import file_kind, given_path
from lmlab.data.ir_triplets import DEFAULT_TEMPLATE, FIELDS, format_records, load_ir_triplets
from lmlab.errors import LmlabError

__all__ = ["FORMATS", "TextFormat", "UserTexts", "detect_format", "load_user_texts",
           "split_lines", "split_paragraphs"]

TextFormat = Literal["auto", "json", "jsonl", "lines", "paragraphs"]
#: The values of ``data.format``.
FORMATS: tuple[str, ...] = ("auto", "json", "jsonl", "lines", "paragraphs")

_WHAT = {"json": "a JSON list of records", "jsonl": "JSON Lines records",
         "lines": "plain text, one document per line",
         "paragraphs": "plain text, one document per paragraph"}
_FORMAT_HINT = "set data.format to json, jsonl, lines or paragraphs"


@dataclass(frozen=True)
class UserTexts:
    """Documents read from a user's file.

    Attributes:
        texts: one string per document, in file order.
        format: the format they were read as (never ``auto``).
        path: the file.
        sha256: the SHA-256 of the file's bytes.
        ir_triplets: the file is a JSON list whose records have exactly IR-Triplets' fields.
    """

    texts: list[str]
    format: str
    path: Path
    sha256: str
    ir_triplets: bool = False

    def describe(self) -> str:
        """The file's name, how it was read and how many documents it gave."""
        n = len(self.texts)
        what = "IR-Triplets records" if self.ir_triplets else _WHAT[self.format]
        return f"{self.path.name} ({what}: {n} document{'' if n == 1 else 's'})"


def split_lines(text: str) -> list[str]:
    """One document per non-blank line (trailing white space removed).

    >>> split_lines("a b\\n\\n  c  \\n")
    ['a b', '  c']
    """
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def split_paragraphs(text: str) -> list[str]:
    """One document per paragraph: runs of non-blank lines, split at blank lines.

    >>> split_paragraphs("a\\nb\\n \\n\\nc\\n")
    ['a\\nb', 'c']
    """
    out: list[str] = []
    block: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.strip():
            block.append(line.rstrip())
        elif block:
            out.append("\n".join(block))
            block = []
    return out


def _json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def detect_format(path: Path, text: str) -> str:
    """The format ``auto`` reads ``text`` (the content of ``path``) as; see the module's rules.

    >>> detect_format(Path("a.txt"), '{"q": 1}\\n{"q": 2}\\n')
    'jsonl'
    >>> detect_format(Path("a.txt"), "[1] a line\\n[2] another\\n")
    'lines'
    """
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            if isinstance(json.loads(text), list):
                return "json"
        except ValueError:
            pass
    lines = split_lines(text)
    if lines and lines[0].lstrip().startswith("{") and _json_object(lines[0]):
        return "jsonl"
    return "paragraphs" if len(split_paragraphs(text)) > 1 else "lines"


def _read(path: Path) -> tuple[str, str]:
    kind = file_kind(path)
    if kind == "missing":
        raise LmlabError(f"no such data file: {path}; check data.path")
    if kind is not None:
        raise LmlabError(f"the data file {path} is {kind}; give a text, JSON or JSON Lines file "
                         "in data.path")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise LmlabError(f"cannot read the data file {path} ({e.strerror or e}); check "
                         "data.path") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise LmlabError(f"the data file {path} is not UTF-8 text (byte {e.start} cannot be "
                         "decoded); save it as UTF-8") from None
    if not text.strip():
        raise LmlabError(f"the data file {path} is empty; give a file with at least a few "
                         "documents (one per line, or paragraphs separated by blank lines)")
    return text, hashlib.sha256(raw).hexdigest()


def _jsonl_records(path: Path, text: str) -> tuple[list[Mapping[str, Any]], list[str]]:
    records: list[Mapping[str, Any]] = []
    labels: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number} of {path.name}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise LmlabError(f"{where} is not valid JSON ({e.msg} at column {e.colno}); "
                             "JSON Lines holds one JSON object per line") from None
        if not isinstance(value, dict):
            raise LmlabError(f"{where} is a JSON {_json_type(value)}, not an object; JSON Lines "
                             "for data.path holds one object per line, e.g. {\"text\": \"...\"}")
        records.append(value)
        labels.append(where)
    return records, labels


def _json_type(value: Any) -> str:
    names = {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _formatted(records: list[Mapping[str, Any]], labels: list[str], template: str,
               path: Path) -> list[str]:
    if template == DEFAULT_TEMPLATE and records and not all(f in records[0] for f in FIELDS[1:]):
        fields = ", ".join(repr(k) for k in records[0]) or "none"
        raise LmlabError(
            f"{labels[0]} has no IR-Triplets fields (its fields: {fields}); say how a record "
            f"becomes text, e.g. --set data.template='{{{next(iter(records[0]), 'text')}}}'")
    if not records:
        raise LmlabError(f"the data file {path} holds no records; give at least a few")
    return format_records(records, template, labels=labels)


def load_user_texts(path: str | Path, *, format: str = "auto",
                    template: str = DEFAULT_TEMPLATE) -> UserTexts:
    """The documents of a user's file (see the module docstring for formats and rules).

    Args:
        path: the file (UTF-8; a byte-order mark is ignored).
        format: one of :data:`FORMATS`.
        template: how a JSON or JSON Lines record becomes text (fields in braces); the
            default is IR-Triplets' ``Context: ... Question: ... Answer: ...``.

    Returns:
        The documents, with the format used and the file's SHA-256.

    Raises:
        LmlabError: (one line each) the path is empty or missing or not a regular file; the file
            is empty, not UTF-8, or not valid in its format; a JSON Lines line is not an object;
            a record lacks a field of the template (the message names the field, the line or
            record, and the fields it has); the file gives no document.

    >>> import json, pathlib, tempfile
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "qa.jsonl"
    >>> _ = f.write_text(json.dumps({"q": "2+2?", "a": 4}) + "\\n")
    >>> load_user_texts(f, template="Q: {q} A: {a}").texts
    ['Q: 2+2? A: 4']
    """
    if format not in FORMATS:
        raise LmlabError(f"unknown data.format {format!r}; {_FORMAT_HINT} (or auto)")
    file = given_path(path)
    text, digest = _read(file)
    fmt = detect_format(file, text) if format == "auto" else format
    ir = False
    if fmt == "json":
        records: list[Mapping[str, Any]] = list(load_ir_triplets(file))
        ir = bool(records) and all(tuple(r) == FIELDS for r in records)
        texts = _formatted(records, [f"record {i} of {file.name}" for i in range(len(records))],
                           template, file)
    elif fmt == "jsonl":
        texts = _formatted(*_jsonl_records(file, text), template, file)
    elif fmt == "lines":
        texts = split_lines(text)
    else:
        texts = split_paragraphs(text)
    return UserTexts(texts, fmt, file, digest, ir)
