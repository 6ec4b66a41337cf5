"""Models: loading Hugging Face models and offline packaged weights; lmlab's own models.

>>> from lmlab.models import offline_models
>>> "all-minilm-l6-v2" in offline_models()
True
"""

from lmlab.models.hf import (
    cache_dir,
    check_model,
    load_causal_lm,
    load_model,
    offline_models,
    resolve_weights,
)

__all__ = ["cache_dir", "check_model", "load_causal_lm", "load_model", "offline_models",
           "resolve_weights"]
