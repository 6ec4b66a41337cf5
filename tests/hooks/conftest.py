"""Tiny eager-attention models of the three supported families, dropout 0, eval mode."""

from __future__ import annotations

import pytest
import torch

VOCAB = 300


def tiny(family: str, seed: int = 0) -> torch.nn.Module:
    """A 2-layer model of ``family`` (gpt2, llama with grouped-query heads, bert)."""
    import transformers as tf

    torch.manual_seed(seed)
    if family == "gpt2":
        cfg = tf.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=32,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                            bos_token_id=0, eos_token_id=0)
        model = tf.GPT2LMHeadModel(cfg)
    elif family == "llama":
        cfg = tf.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
                             max_position_embeddings=32)
        model = tf.LlamaForCausalLM(cfg)
    elif family == "bert":
        cfg = tf.BertConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, vocab_size=VOCAB, max_position_embeddings=32,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        model = tf.BertModel(cfg, add_pooling_layer=False)
    else:
        raise ValueError(family)
    model.set_attn_implementation("eager")
    return model.eval()


def out(model: torch.nn.Module, ids: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
    """Logits of a causal LM, last hidden state of BERT."""
    result = model(ids, **kwargs)
    return result.logits if hasattr(result, "logits") else result.last_hidden_state


@pytest.fixture(params=["gpt2", "llama", "bert"])
def fam(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (3, 7), generator=torch.Generator().manual_seed(1))
