"""Where `finetune-spectral` gets its text, and how its report names that source.

>>> download_source("https://example.org/ir.json")
'IR-Triplets (downloaded from https://example.org/ir.json; not checked against a known SHA-256)'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmlab.data.ir_triplets import IR_TRIPLETS_COMMIT, IR_TRIPLETS_SHA256, IR_TRIPLETS_URL
from lmlab.errors import LmlabError

if TYPE_CHECKING:
    from lmlab.studies.finetune_spectral import DataConfig

__all__ = ["download_source", "texts"]


def texts(cfg: DataConfig) -> tuple[list[str], list[str], str]:
    """The train texts, the test texts, and how the report names their source.

    ``cfg.source`` ``auto`` reads ``cfg.path`` if given, else a cached IR-Triplets download,
    else the standard library's docstrings; ``ir-triplets`` reads ``cfg.path`` (any format of
    :mod:`lmlab.data.user_text`) or downloads ``cfg.url``. The source's name says whether the
    data was checked against a known SHA-256.
    """
    from lmlab.data import (
        STDLIB_DOCSTRINGS_SOURCE,
        data_cache_dir,
        format_records,
        load_ir_triplets,
        sample_split,
        stdlib_docstrings,
    )
    from lmlab.data.user_text import load_user_texts

    source = cfg.source
    if source == "auto":
        cached = data_cache_dir() / "ir_triplets.json"
        source = "ir-triplets" if cfg.path or cached.exists() else "stdlib-docstrings"
    if source == "stdlib-docstrings":
        texts, name = stdlib_docstrings(), STDLIB_DOCSTRINGS_SOURCE
    elif cfg.path is not None:
        user = load_user_texts(cfg.path, format=cfg.format, template=cfg.template)
        texts, name = user.texts, user.describe()
        if user.ir_triplets:
            name += ("; SHA-256 of the published file" if user.sha256 == IR_TRIPLETS_SHA256
                     else f"; SHA-256 {user.sha256[:12]}…, not the published file's")
    else:
        texts = format_records(load_ir_triplets(url=cfg.url), cfg.template)
        name = download_source(cfg.url)
    train, test = sample_split(texts, cfg.n_samples, seed=cfg.seed,
                               test_fraction=cfg.test_fraction)
    if not train or not test:
        raise LmlabError(f"the split left {len(train)} train and {len(test)} test examples; "
                         "raise data.n_samples")
    return train, test, name


def download_source(url: str) -> str:
    """How the report names a downloaded IR-Triplets, with whether its hash was checked.

    >>> download_source(IR_TRIPLETS_URL)[:52]
    'IR-Triplets (InductiveSLM commit f6bceae, SHA-256 08'
    >>> download_source("https://example.org/ir.json")
    'IR-Triplets (downloaded from https://example.org/ir.json; not checked against a known SHA-256)'
    """
    if url == IR_TRIPLETS_URL:
        return (f"IR-Triplets (InductiveSLM commit {IR_TRIPLETS_COMMIT[:7]}, SHA-256 "
                f"{IR_TRIPLETS_SHA256[:12]}… checked)")
    return f"IR-Triplets (downloaded from {url}; not checked against a known SHA-256)"
