"""Fixtures for the data tests: the real IR-Triplets copy and a small real tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

IR_TRIPLETS = Path(__file__).resolve().parents[3] / "shared" / "data" / "ir_triplets.json"


@pytest.fixture(scope="session")
def ir_path() -> Path:
    if not IR_TRIPLETS.is_file():
        pytest.skip(f"the test copy of IR-Triplets is not at {IR_TRIPLETS}")
    return IR_TRIPLETS


@pytest.fixture(scope="session")
def tokenizer(ir_path: Path) -> Any:
    """A WordLevel tokenizer trained on 200 real records, with eos == pad == id 0."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from lmlab.data import format_records, load_ir_triplets

    texts = format_records(load_ir_triplets(ir_path)[:200])
    core = Tokenizer(models.WordLevel(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.train_from_iterator(
        texts, trainers.WordLevelTrainer(special_tokens=["<eos>", "<unk>"], min_frequency=1)
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<eos>", pad_token="<eos>", unk_token="<unk>"
    )


@pytest.fixture
def fifo(tmp_path: Path) -> Any:
    """A FIFO at ``tmp_path/name`` (made on call), with a 30 s alarm that fails a test whose
    code blocks opening or reading it instead of refusing it."""
    import os
    import signal

    def timed_out(signum: int, frame: Any) -> None:
        raise TimeoutError("blocked on a FIFO instead of refusing it")

    def make(name: str) -> Path:
        path = tmp_path / name
        os.mkfifo(path)
        return path

    previous = signal.signal(signal.SIGALRM, timed_out)
    signal.alarm(30)
    try:
        yield make
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
