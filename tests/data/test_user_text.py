"""The user's own text files: formats, auto-detection, and one-line errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from lmlab.data.user_text import detect_format, load_user_texts, split_paragraphs
from lmlab.errors import LmlabError

POEM = "Roses are red,\nviolets are blue.\n\n\nSugar is sweet\n  \nand so are you.\n"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_paragraphs_and_lines_split_as_documented(tmp_path: Path) -> None:
    f = write(tmp_path, "poem.txt", POEM)
    para = load_user_texts(f, format="paragraphs")
    assert para.texts == ["Roses are red,\nviolets are blue.", "Sugar is sweet", "and so are you."]
    lines = load_user_texts(f, format="lines")
    assert lines.texts == ["Roses are red,", "violets are blue.", "Sugar is sweet",
                           "and so are you."]
    assert para.sha256 == hashlib.sha256(POEM.encode()).hexdigest()
    assert lines.describe() == "poem.txt (plain text, one document per line: 4 documents)"


def test_windows_line_ends_and_a_byte_order_mark(tmp_path: Path) -> None:
    f = write(tmp_path, "win.txt", b"\xef\xbb\xbfone\r\n\r\ntwo\r\nthree\r\n")
    assert load_user_texts(f).texts == ["one", "two\nthree"]


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("a.txt", "one line\nanother line\n", "lines"),
    ("a.txt", "a paragraph\n\nanother\n", "paragraphs"),
    ("a.txt", "\n\nonly one paragraph\nof two lines\n\n", "lines"),
    ("a", '{"t": "x"}\n{"t": "y"}\n', "jsonl"),
    ("a.md", '[{"t": "x"}]', "json"),
    ("a.txt", "[1] a citation, not JSON\n[2] another\n", "lines"),
    ("a.txt", "{not json} a line\n", "lines"),
    ("a.json", "anything", "json"),
    ("a.JSONL", "anything", "jsonl"),
    ("a.ndjson", "anything", "jsonl"),
])
def test_auto_detection_rules(name: str, content: str, expected: str) -> None:
    assert detect_format(Path(name), content) == expected


def test_json_lines_with_a_template(tmp_path: Path) -> None:
    rows = [{"question": "2+2?", "answer": 4}, {"question": "Capital of France?",
                                                 "answer": "Paris", "extra": [1]}]
    f = write(tmp_path, "qa.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    got = load_user_texts(f, template="Q: {question}\nA: {answer}")
    assert got.format == "jsonl"
    assert got.texts == ["Q: 2+2?\nA: 4", "Q: Capital of France?\nA: Paris"]
    assert got.describe() == "qa.jsonl (JSON Lines records: 2 documents)"


def test_ir_triplets_records_are_recognised(ir_path: Path) -> None:
    got = load_user_texts(ir_path)
    assert got.format == "json" and got.ir_triplets and len(got.texts) == 1807
    assert got.texts[0].startswith("Context: ")
    assert got.describe() == "ir_triplets.json (IR-Triplets records: 1807 documents)"


def test_other_json_records_need_their_own_template(tmp_path: Path) -> None:
    f = write(tmp_path, "notes.json", json.dumps([{"text": "a"}, {"text": "b"}]))
    with pytest.raises(LmlabError, match=r"^record 0 of notes.json has no IR-Triplets fields "
                                         r"\(its fields: 'text'\); .*data.template='\{text\}'$"):
        load_user_texts(f)
    got = load_user_texts(f, template="{text}")
    assert got.texts == ["a", "b"] and not got.ir_triplets


def test_an_explicit_format_overrides_the_extension(tmp_path: Path) -> None:
    f = write(tmp_path, "log.json", "not json at all\nsecond\n")
    with pytest.raises(LmlabError, match="not valid JSON"):
        load_user_texts(f)
    assert load_user_texts(f, format="lines").texts == ["not json at all", "second"]


# ----------------------------------------------------------------------------- errors


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LmlabError, match=r"^no such data file: .*nope.txt; check data.path$"):
        load_user_texts(tmp_path / "nope.txt")


def test_a_directory(tmp_path: Path) -> None:
    with pytest.raises(LmlabError, match="is a directory; give a text, JSON or JSON Lines"):
        load_user_texts(tmp_path)


@pytest.mark.parametrize("content", ["", "\n \n\t\n"])
def test_an_empty_file(tmp_path: Path, content: str) -> None:
    f = write(tmp_path, "empty.txt", content)
    with pytest.raises(LmlabError, match=r"^the data file .*empty.txt is empty; "):
        load_user_texts(f)


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    f = write(tmp_path, "latin1.txt", "café crème\n".encode("latin-1"))
    with pytest.raises(LmlabError, match=r"not UTF-8 text \(byte 3 cannot be decoded\); save it"):
        load_user_texts(f)


def test_a_json_lines_line_that_is_not_an_object(tmp_path: Path) -> None:
    f = write(tmp_path, "qa.jsonl", '{"q": "a"}\n\n["q", "b"]\n')
    with pytest.raises(LmlabError, match=r"^line 3 of qa.jsonl is a JSON list, not an object"):
        load_user_texts(f, template="{q}")


def test_a_json_lines_line_that_is_not_json(tmp_path: Path) -> None:
    f = write(tmp_path, "qa.jsonl", '{"q": "a"}\n{"q": "b",}\n')
    with pytest.raises(LmlabError, match=r"^line 2 of qa.jsonl is not valid JSON \(.* column "):
        load_user_texts(f, template="{q}")


def test_a_template_field_missing_from_a_line(tmp_path: Path) -> None:
    f = write(tmp_path, "qa.jsonl", '{"q": "a", "r": "x"}\n\n{"q": "b", "answer": "y"}\n')
    with pytest.raises(LmlabError, match=r"^line 3 of qa.jsonl has no field 'r' used by the "
                                         r"template; fields present: 'q', 'answer'"):
        load_user_texts(f, template="{q} {r}")


def test_json_lines_without_a_template_say_how_to_give_one(tmp_path: Path) -> None:
    f = write(tmp_path, "notes.jsonl", '{"body": "x"}\n')
    with pytest.raises(LmlabError, match=r"^line 1 of notes.jsonl has no IR-Triplets fields "
                                         r"\(its fields: 'body'\); .*data.template='\{body\}'"):
        load_user_texts(f)


def test_an_unknown_format(tmp_path: Path) -> None:
    f = write(tmp_path, "a.txt", "x\n")
    with pytest.raises(LmlabError, match="unknown data.format 'csv'"):
        load_user_texts(f, format="csv")


def test_split_paragraphs_of_nothing() -> None:
    assert split_paragraphs("") == [] and split_paragraphs("\n\n") == []
