"""Full-size parity with weightwatcher (slow: `make test-slow`): real MiniLM and GPT-2 small."""

from __future__ import annotations

import pytest
import torch
import transformers

from lmlab.spectral import analyze
from tests.spectral.test_analyze import assert_same_as_ww

pytestmark = pytest.mark.slow


def test_gpt2_small_matches_weightwatcher(ww_analyze) -> None:
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
    assert_same_as_ww(analyze(model), ww_analyze(model))


def test_real_minilm_matches_weightwatcher(minilm_path, ww_analyze) -> None:
    model = transformers.AutoModel.from_pretrained(str(minilm_path)).eval()
    assert_same_as_ww(analyze(minilm_path), ww_analyze(model))
