"""IR-Triplets: inductive-reasoning (observations, question, answer) records as training text.

The dataset is a JSON list of 1,807 records with the fields :data:`FIELDS`, in 10
inductive-reasoning forms. It is not shipped with lmlab: :func:`load_ir_triplets` reads a
local copy, or downloads :data:`IR_TRIPLETS_URL` once into the data cache. That URL is pinned to
one commit of the InductiveSLM repository, and the download (and every later use of the cached
copy) must have the SHA-256 :data:`IR_TRIPLETS_SHA256`; any other URL is trusted on first use.

:func:`format_records` turns records into texts with a template, and :func:`sample_split`
draws the fine-tuning sample and its train/test split exactly as the reference homework does.

>>> texts = format_records([{"Training Observations": "o", "Question": "q?", "Answer": "a."}])
>>> print(texts[0])
Context: o
<BLANKLINE>
Question: q?
<BLANKLINE>
Answer: a.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import random
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from lmlab.data.cache import download_once
from lmlab.data.lines import file_kind, given_path
from lmlab.errors import LmlabError

__all__ = [
    "DEFAULT_TEMPLATE",
    "FIELDS",
    "IR_TRIPLETS_COMMIT",
    "IR_TRIPLETS_SHA256",
    "IR_TRIPLETS_URL",
    "format_records",
    "load_ir_triplets",
    "sample_split",
]

T = TypeVar("T")

#: The commit of omroot/InductiveSLM whose copy of the file is used (the branch moves).
IR_TRIPLETS_COMMIT = "f6bceaee2fe1682953c4c7d303c91ae201dbd08b"
IR_TRIPLETS_URL = (
    f"https://raw.githubusercontent.com/omroot/InductiveSLM/{IR_TRIPLETS_COMMIT}/"
    "cache/raw_data/ir_triplets/ir_triplets.json"
)
#: The SHA-256 of the file at :data:`IR_TRIPLETS_URL` (781,701 characters, 1,807 records).
IR_TRIPLETS_SHA256 = "08bbd96b1ca005ea4704c4b7514bac1fbdac85dfe94d77dd5f9e7c92363ad376"
DEFAULT_TEMPLATE = "Context: {Training Observations}\n\nQuestion: {Question}\n\nAnswer: {Answer}"
FIELDS = ("form", "Training Observations", "Question", "Answer")

_CACHE_NAME = "ir_triplets.json"


def load_ir_triplets(
    path: str | Path | None = None, *, url: str = IR_TRIPLETS_URL
) -> list[dict[str, str]]:
    """The IR-Triplets records, from a local file or the cached download.

    Args:
        path: a local copy of the JSON file; ``None`` uses the copy cached from ``url``,
            downloading it on first use.
        url: where to download the file from when ``path`` is ``None``. The default (pinned)
            URL is cached as ``ir_triplets.json`` and checked against
            :data:`IR_TRIPLETS_SHA256`; any other URL gets its own cache entry and is trusted on
            first use (its hash is recorded then, not known in advance).

    Returns:
        One dict per record, mapping field names to strings.

    Raises:
        LmlabError: the file is missing, is not valid JSON, is not a list of objects with
            string values, or (with ``path=None``) cannot be downloaded or, from the pinned
            URL, does not have the known SHA-256.

    >>> import json, pathlib, tempfile
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "mini.json"
    >>> _ = f.write_text(json.dumps([{"form": "f", "Question": "q", "Answer": "a"}]))
    >>> load_ir_triplets(f)[0]["Answer"]
    'a'
    """
    if path is None:
        known = IR_TRIPLETS_SHA256 if url == IR_TRIPLETS_URL else None
        file = download_once(url, _cache_name(url), sha256=known)
        hint = f"delete {file} to download it again, or pass a local copy with --set data.path"
    else:
        file = given_path(path)
        hint = "pass the IR-Triplets JSON file (a list of records) with --set data.path"
        kind = file_kind(file)
        if kind is not None:
            what = {"missing": "does not exist",
                    "a directory": "is a directory, not a file"}.get(kind, f"is {kind}")
            raise LmlabError(f"the data file {file} {what}; {hint}")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LmlabError(f"cannot read the data file {file} ({e}); {hint}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LmlabError(
            f"the data file {file} is not valid JSON: {e.msg} at line {e.lineno}, "
            f"column {e.colno}; {hint}"
        ) from None
    return _check_records(data, file, hint)


def _cache_name(url: str) -> str:
    if url == IR_TRIPLETS_URL:
        return _CACHE_NAME
    return f"ir_triplets-{hashlib.sha256(url.encode()).hexdigest()[:12]}.json"


def _check_records(data: Any, file: Path, hint: str) -> list[dict[str, str]]:
    if not isinstance(data, list):
        raise LmlabError(
            f"the data file {file} holds a JSON {type(data).__name__}, "
            f"not a list of records; {hint}"
        )
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise LmlabError(
                f"record {i} of {file} is a JSON {type(record).__name__}, not an object; {hint}"
            )
        for key, value in record.items():
            if not isinstance(value, str):
                raise LmlabError(
                    f"record {i} of {file} has a non-text value in field {key!r} "
                    f"({type(value).__name__}); {hint}"
                )
    return data


def _template_fields(template: str) -> list[str]:
    """The distinct record fields a template uses, in order of appearance."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise LmlabError(
            f"invalid template {template!r} ({e}); write fields as {{Field}} "
            f"and literal braces as {{{{ and }}}}"
        ) from None
    fields: list[str] = []
    for _, name, spec, _ in parsed:
        if name is None:
            continue
        root = name.split(".", 1)[0].split("[", 1)[0]
        if not root or root.isdigit():
            raise LmlabError(
                f"the template {template!r} has a positional field {{{name}}}; "
                f"name a record field instead, e.g. {{Question}}"
            )
        if root not in fields:
            fields.append(root)
        if spec:
            fields.extend(f for f in _template_fields(spec) if f not in fields)
    return fields


def format_records(
    records: Sequence[Mapping[str, Any]],
    template: str = DEFAULT_TEMPLATE,
    *,
    labels: Sequence[str] | None = None,
) -> list[str]:
    """One text per record, with the record's fields substituted into ``template``.

    Fields are written ``{Field Name}`` as in :meth:`str.format_map`; names may contain
    spaces. Literal braces are doubled (``{{`` and ``}}``).

    Args:
        records: the records (mappings from field names to values).
        template: the text layout; the default is the homework's
            ``"Context: ...\\n\\nQuestion: ...\\n\\nAnswer: ..."``.
        labels: how error messages name each record (e.g. ``"line 7 of notes.jsonl"``);
            by default ``"record i"`` (0-based).

    Returns:
        The formatted texts, in the order of ``records``.

    Raises:
        LmlabError: ``records`` is empty, the template is malformed, or a record lacks a
            field the template uses (the message names the record index and the field).

    >>> format_records([{"q": "2+2?", "a": "4"}], "Q: {q} A: {a}")
    ['Q: 2+2? A: 4']
    """
    if not records:
        raise LmlabError(
            "the dataset is empty after filtering; check the data file and the settings "
            "that select records"
        )
    fields = _template_fields(template)
    texts = []
    for i, record in enumerate(records):
        label = f"record {i}" if labels is None else labels[i]
        for field in fields:
            if field not in record:
                raise LmlabError(_missing_field_message(label, field, record))
        try:
            texts.append(template.format_map(record))
        except (KeyError, IndexError, AttributeError, ValueError, TypeError) as e:
            raise LmlabError(
                f"cannot format {label} with the template {template!r} ({e}); "
                f"use plain {{Field}} placeholders"
            ) from None
    return texts


def _missing_field_message(label: str, field: str, record: Mapping[str, Any]) -> str:
    present = ", ".join(repr(k) for k in record) or "none"
    close = difflib.get_close_matches(field, [str(k) for k in record], n=1)
    advice = f"did you mean {{{close[0]}}}? " if close else ""
    return (
        f"{label} has no field {field!r} used by the template; fields present: "
        f"{present}; {advice}fix the template or the data"
    )


def sample_split(
    items: Sequence[T],
    n_samples: int | None,
    *,
    seed: int = 42,
    test_fraction: float = 0.2,
) -> tuple[list[T], list[T]]:
    """Draw a random sample and split it into train and test, as the reference homework does.

    The draw equals ``random.seed(seed); sample = random.sample(list(items), n)`` (made with a
    private :class:`random.Random`, so the global random state is left untouched). The first
    ``int(test_fraction * n)`` items of the sample are the test split, the rest the train split.

    Args:
        items: the population (records or texts).
        n_samples: the sample size ``n``; ``None``, or a size larger than ``items``, takes
            all items (in shuffled order).
        seed: the seed of the draw.
        test_fraction: the fraction of the sample that goes to the test split, in [0, 1).

    Returns:
        ``(train, test)``.

    Raises:
        LmlabError: ``items`` is empty, ``n_samples < 1``, ``test_fraction`` is outside [0, 1),
            or (with ``test_fraction > 0``) the sample is too small to give a test item: the
            message says how many are needed.

    >>> train, test = sample_split(range(10), 5, seed=0)
    >>> len(train), len(test)
    (4, 1)
    >>> sorted(train + test) == sorted(set(train + test))
    True
    """
    if not 0.0 <= test_fraction < 1.0:
        raise LmlabError(f"test_fraction must be in [0, 1), got {test_fraction}")
    population = list(items)
    if not population:
        raise LmlabError(
            "the dataset is empty after filtering; check the data file and the settings "
            "that select records"
        )
    if n_samples is not None and n_samples < 1:
        raise LmlabError(f"n_samples must be at least 1 (or None for all), got {n_samples}")
    n = len(population) if n_samples is None else min(n_samples, len(population))
    n_test = int(test_fraction * n)
    if test_fraction > 0 and n_test == 0:
        raise LmlabError(_too_few_message(len(population), n_samples, test_fraction))
    sample = random.Random(seed).sample(population, n)
    return sample[n_test:], sample[:n_test]


def _too_few_message(n_items: int, n_samples: int | None, test_fraction: float) -> str:
    """Why a sample cannot be split into train and test, and how many items it needs."""
    need = max(2, math.ceil(1 / test_fraction))
    while int(test_fraction * need) < 1:  # float rounding of 1/test_fraction, either way
        need += 1
    while need > 2 and int(test_fraction * (need - 1)) >= 1:
        need -= 1
    split = (f"too few records to split into train and test (data.test_fraction="
             f"{test_fraction} leaves the test split empty); at least {need} are needed")
    if n_samples is not None and n_samples < n_items:
        return f"data.n_samples={n_samples} draws {split}: raise data.n_samples to {need}"
    other = " (or raise data.test_fraction)" if n_items >= 2 else ""
    return (f"the data file holds {n_items} record{'s' if n_items != 1 else ''}, {split}: "
            f"add records{other}")
