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


def _assert_every_column_equal(mine, ref) -> None:
    import numpy as np
    import pandas as pd

    mine = mine[mine["status"] != "skipped"].reset_index(drop=True)
    assert mine["layer_id"].tolist() == ref["layer_id"].tolist()
    for col in ref.columns:
        a, b = mine[col], ref[col]
        if pd.api.types.is_numeric_dtype(b) and not pd.api.types.is_bool_dtype(b):
            rtol = 1e-5 if col == "sv_min" else 1e-9
            np.testing.assert_allclose(a.astype(float), b.astype(float), rtol=rtol, atol=1e-12,
                                       err_msg=col)
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), col


@pytest.mark.parametrize("options", [
    dict(mp_fit=True, detX=True, fix_fingers="clip_xmax"),
    dict(xmax=-3, tolerance=1e-3, layers=[-3, -4], start_ids=1),
])
def test_real_minilm_options_match_weightwatcher(minilm_path, ww_analyze, options) -> None:
    model = transformers.AutoModel.from_pretrained(str(minilm_path)).eval()
    _assert_every_column_equal(analyze(minilm_path, **options), ww_analyze(model, **options))
