"""Model references: offline packaged models, local paths, clear errors for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmlab.errors import LmlabError
from lmlab.models import load_model, offline_models, resolve_weights


def test_offline_minilm_resolves_and_loads(minilm_path: Path) -> None:
    assert resolve_weights("all-minilm-l6-v2") == minilm_path
    assert resolve_weights("MiniLM") == minilm_path
    model = load_model("all-minilm-l6-v2")
    assert type(model).__name__ == "BertModel"
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert sum(p.numel() for p in model.parameters()) == 22_713_216


def test_local_path_is_returned_as_is(tmp_path: Path) -> None:
    assert resolve_weights(tmp_path) == tmp_path


def test_missing_path_and_unknown_model() -> None:
    with pytest.raises(LmlabError, match="no such file"):
        resolve_weights("./missing-dir")
    listing = "models available offline: " + ", ".join(offline_models())
    with pytest.raises(LmlabError, match=listing):
        resolve_weights("surely-not-a-model-name-xyz")


def test_load_model_from_a_directory_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(LmlabError, match="cannot load a model"):
        load_model(tmp_path)
