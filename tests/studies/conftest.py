"""Shared fixtures of the study tests: a tiny causal LM saved as a model directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

IR = Path(__file__).resolve().parents[3] / "shared" / "data" / "ir_triplets.json"


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny GPT-2 and a word-level tokenizer trained on real records, saved as a model dir."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from lmlab.data import format_records, load_ir_triplets

    texts = format_records(load_ir_triplets(IR)[:300])
    core = Tokenizer(models.WordLevel(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<eos>", "<unk>"]))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>",
                                               unk_token="<unk>")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=128,
                                  vocab_size=tok.vocab_size, bos_token_id=0, eos_token_id=0,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # exact DDP
    path = tmp_path_factory.mktemp("tiny") / "gpt2"
    transformers.GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


