"""IR-Triplets: the real file's known facts, template errors, and the homework's split."""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path

import pytest

from lmlab.data import (
    DEFAULT_TEMPLATE,
    FIELDS,
    format_records,
    load_ir_triplets,
    sample_split,
)
from lmlab.errors import LmlabError

# from the spec (specs/finetune.md §A): the commit pinned and the SHA-256 of its file
SPEC_COMMIT = "f6bceaee2fe1682953c4c7d303c91ae201dbd08b"
SPEC_SHA256 = "08bbd96b1ca005ea4704c4b7514bac1fbdac85dfe94d77dd5f9e7c92363ad376"


def test_real_file_has_the_documented_shape(ir_path: Path) -> None:
    records = load_ir_triplets(ir_path)
    assert len(records) == 1807
    assert all(tuple(r) == FIELDS for r in records)
    forms = {r["form"] for r in records}
    assert len(forms) == 10
    counts = [sum(r["form"] == f for r in records) for f in forms]
    assert min(counts) >= 150 and max(counts) <= 204
    assert all(v.strip() for r in records for v in r.values())


def test_formatted_texts_follow_the_homework_template(ir_path: Path) -> None:
    records = load_ir_triplets(ir_path)
    texts = format_records(records)
    assert len(texts) == len(records)
    assert statistics.mean(map(len, texts)) == pytest.approx(313, abs=1)
    r = records[0]
    assert texts[0] == (
        f"Context: {r['Training Observations']}\n\nQuestion: {r['Question']}\n\n"
        f"Answer: {r['Answer']}"
    )
    assert DEFAULT_TEMPLATE.format_map(r) == texts[0]


def test_a_missing_field_names_the_record_and_the_field(ir_path: Path) -> None:
    records = [dict(r) for r in load_ir_triplets(ir_path)[:30]]
    del records[17]["Question"]
    with pytest.raises(LmlabError, match=r"record 17 has no field 'Question' used by the "
                                         r"template; fields present: 'form'"):
        format_records(records)


def test_a_misspelt_template_field_fails_on_record_0(ir_path: Path) -> None:
    records = load_ir_triplets(ir_path)
    template = DEFAULT_TEMPLATE.replace("{Question}", "{Qeustion}")
    with pytest.raises(LmlabError, match=r"record 0 has no field 'Qeustion'.*\{Question\}"):
        format_records(records, template)


@pytest.mark.parametrize("template", ["Q: {}", "Q: {0}", "Q: {Question", "Q: Question}"])
def test_malformed_templates_are_user_errors(template: str) -> None:
    with pytest.raises(LmlabError, match="template"):
        format_records([{"Question": "q"}], template)


def test_literal_braces_and_custom_templates() -> None:
    assert format_records([{"a b": "x"}], "{{{a b}}}") == ["{x}"]


def test_an_empty_dataset_is_a_clear_error() -> None:
    with pytest.raises(LmlabError, match="the dataset is empty after filtering"):
        format_records([])
    with pytest.raises(LmlabError, match="the dataset is empty after filtering"):
        sample_split([], 10)


def test_sample_split_reproduces_the_homework(ir_path: Path) -> None:
    data = load_ir_triplets(ir_path)
    state = random.getstate()
    train, test = sample_split(data, 500)
    assert random.getstate() == state, "the global random state must be left alone"
    assert (len(train), len(test)) == (400, 100)

    random.seed(42)
    sample = random.sample(data, 500)
    random.setstate(state)
    assert test == sample[:100]
    assert train == sample[100:]


def test_sample_split_is_deterministic_and_disjoint(ir_path: Path) -> None:
    texts = format_records(load_ir_triplets(ir_path))
    train, test = sample_split(texts, 500)
    assert sample_split(texts, 500) == (train, test)
    assert sample_split(texts, 500, seed=1) != (train, test)
    indices = list(range(len(texts)))
    train_i, test_i = sample_split(indices, 500)
    assert not set(train_i) & set(test_i)
    assert len(set(train_i) | set(test_i)) == 500


def test_sample_split_takes_everything_when_asked_for_more() -> None:
    for n in (None, 50):
        train, test = sample_split(range(10), n, test_fraction=0.3)
        assert (len(train), len(test)) == (7, 3)
        assert sorted(train + test) == list(range(10))


@pytest.mark.parametrize("kwargs", [{"n_samples": 0}, {"n_samples": 5, "test_fraction": 1.0},
                                    {"n_samples": 5, "test_fraction": -0.1}])
def test_sample_split_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(LmlabError):
        sample_split(range(10), **kwargs)


def test_load_a_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(LmlabError, match=f"{missing} does not exist.*data.path"):
        load_ir_triplets(missing)
    with pytest.raises(LmlabError, match="is a directory"):
        load_ir_triplets(tmp_path)


def test_load_invalid_json_names_the_file_and_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('[{"form": "a",\n  "Question": }]', encoding="utf-8")
    with pytest.raises(LmlabError, match=f"{bad} is not valid JSON: .* at line 2, column 15"):
        load_ir_triplets(str(bad))


@pytest.mark.parametrize(("payload", "message"), [
    ({"form": "a"}, "holds a JSON dict, not a list of records"),
    (["text"], "record 0 of .* is a JSON str, not an object"),
    ([{"form": "a"}, {"form": 3}], "record 1 of .* non-text value in field 'form'"),
])
def test_load_rejects_json_that_is_not_a_list_of_records(
    tmp_path: Path, payload: object, message: str
) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    with pytest.raises(LmlabError, match=message):
        load_ir_triplets(path)


def test_load_without_a_path_uses_the_cached_download(
    ir_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path))
    from lmlab.data import ir_triplets

    calls = []

    def fake_download(url: str, name: str, sha256: str | None = None) -> Path:
        calls.append((url, name, sha256))
        return ir_path

    monkeypatch.setattr(ir_triplets, "download_once", fake_download)
    assert len(load_ir_triplets()) == 1807
    assert calls == [(ir_triplets.IR_TRIPLETS_URL, "ir_triplets.json", SPEC_SHA256)]
    load_ir_triplets(url="https://example.org/mirror.json")
    assert calls[1][0] == "https://example.org/mirror.json"
    assert calls[1][1].startswith("ir_triplets-") and calls[1][1].endswith(".json")
    assert calls[1][2] is None  # another URL: trusted on first use, no known hash


def test_a_corrupt_cached_download_says_to_delete_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmlab.data import ir_triplets

    cached = tmp_path / "ir_triplets.json"
    cached.write_text("[{", encoding="utf-8")
    monkeypatch.setattr(ir_triplets, "download_once", lambda url, name, sha256: cached)
    with pytest.raises(LmlabError, match=f"{cached} is not valid JSON.*delete {cached}"):
        load_ir_triplets()


def test_an_empty_path_is_refused_as_empty_not_as_dot() -> None:
    with pytest.raises(LmlabError, match="^data.path is empty") as info:
        load_ir_triplets("")
    assert "." not in str(info.value).split(";")[0].replace("data.path", "")


def test_a_fifo_data_file_is_refused_before_reading(fifo) -> None:
    with pytest.raises(LmlabError, match="ir.json is a named pipe"):
        load_ir_triplets(fifo("ir.json"))


@pytest.mark.parametrize("n_items, n_samples, fraction, match", [
    (1, None, 0.2, "the data file holds 1 record, too few records to split into train and "
                   r"test .*at least 5 are needed: add records$"),
    (4, 500, 0.2, r"holds 4 records, .*at least 5 are needed: add records \(or raise "),
    (100, 3, 0.2, r"data.n_samples=3 draws too few .*at least 5 are needed: raise "
                  "data.n_samples to 5"),
    (9, None, 0.1, "at least 10 are needed"),
    (2, None, 1 / 3, "at least 3 are needed"),
])
def test_a_sample_too_small_to_split_says_how_many_are_needed(n_items: int,
                                                              n_samples: int | None,
                                                              fraction: float,
                                                              match: str) -> None:
    with pytest.raises(LmlabError, match=match):
        sample_split(range(n_items), n_samples, test_fraction=fraction)


def test_the_smallest_splittable_sample_splits() -> None:
    for fraction, need in ((0.2, 5), (0.1, 10), (0.3, 4), (0.5, 2), (1 / 3, 3)):
        train, test = sample_split(range(need), None, test_fraction=fraction)
        assert len(test) == 1 and len(train) == need - 1
    assert sample_split(range(1), None, test_fraction=0.0) == ([0], [])


def test_the_download_is_pinned_to_one_commit_and_hash(ir_path: Path) -> None:
    import hashlib

    from lmlab.data import IR_TRIPLETS_SHA256, IR_TRIPLETS_URL

    assert IR_TRIPLETS_URL == (f"https://raw.githubusercontent.com/omroot/InductiveSLM/"
                               f"{SPEC_COMMIT}/cache/raw_data/ir_triplets/ir_triplets.json")
    assert IR_TRIPLETS_SHA256 == SPEC_SHA256
    data = ir_path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == SPEC_SHA256
    assert len(data.decode("utf-8")) == 781_701


def _serve_as_pinned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data: bytes) -> str:
    """Serve ``data`` from a file:// URL that stands in for the pinned URL; empty cache."""
    from lmlab.data import ir_triplets

    src = tmp_path / "www" / "ir_triplets.json"
    src.parent.mkdir()
    src.write_bytes(data)
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ir_triplets, "IR_TRIPLETS_URL", src.as_uri())
    return src.as_uri()


def test_the_pinned_download_accepts_the_published_file(
    ir_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _serve_as_pinned(monkeypatch, tmp_path, ir_path.read_bytes())
    assert len(load_ir_triplets(url=url)) == 1807
    assert (tmp_path / "cache" / "data" / "ir_triplets.json").is_file()


def test_the_pinned_download_refuses_an_altered_file(
    ir_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    altered = ir_path.read_bytes().replace(b"Question", b"Quest1on", 1)
    url = _serve_as_pinned(monkeypatch, tmp_path, altered)
    with pytest.raises(LmlabError, match=f"not the expected {SPEC_SHA256}; it was not kept"):
        load_ir_triplets(url=url)
    assert not (tmp_path / "cache" / "data" / "ir_triplets.json").exists()
    # the same bytes from a URL of the user's own are trusted on first use
    mirror = tmp_path / "www" / "mirror.json"
    mirror.write_bytes(altered)
    assert len(load_ir_triplets(url=mirror.as_uri())) == 1807
