"""Data: IR-Triplets records and their homework split, offline real text, causal-LM batches.

>>> from lmlab.data import CausalLMCollator, format_records, sample_split
>>> texts = format_records([{"q": f"question {i}"} for i in range(10)], "Q: {q}")
>>> train, test = sample_split(texts, 5)
>>> len(train), len(test)
(4, 1)
>>> CausalLMCollator(pad_token_id=0)([[3, 4], [5]])["attention_mask"].tolist()
[[1, 1], [1, 0]]
"""

from lmlab.data.cache import data_cache_dir, download_once
from lmlab.data.ir_triplets import (
    DEFAULT_TEMPLATE,
    FIELDS,
    IR_TRIPLETS_SHA256,
    IR_TRIPLETS_URL,
    format_records,
    load_ir_triplets,
    sample_split,
)
from lmlab.data.lines import WIKITEXT2_SOURCE, text_file_lines, token_budget, wikitext2_lines
from lmlab.data.lm import CausalLMCollator, tokenize_texts
from lmlab.data.text_sources import STDLIB_DOCSTRINGS_SOURCE, stdlib_docstrings
from lmlab.data.user_text import load_user_texts

__all__ = [
    "DEFAULT_TEMPLATE",
    "FIELDS",
    "IR_TRIPLETS_SHA256",
    "IR_TRIPLETS_URL",
    "STDLIB_DOCSTRINGS_SOURCE",
    "WIKITEXT2_SOURCE",
    "CausalLMCollator",
    "data_cache_dir",
    "download_once",
    "format_records",
    "load_ir_triplets",
    "load_user_texts",
    "sample_split",
    "stdlib_docstrings",
    "text_file_lines",
    "token_budget",
    "tokenize_texts",
    "wikitext2_lines",
]
