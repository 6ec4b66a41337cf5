"""Local stand-ins for what the ``paper`` presets download, laid out where the download puts it.

The ``paper`` presets of ``finetune-spectral``, ``optimizers`` and ``ablation`` fetch distilgpt2
or gpt2 from the Hugging Face hub, WikiText-2 through ``datasets`` and IR-Triplets from GitHub.
With no network, these builders write each one where a finished download leaves it, so that
the preset runs unchanged (same model reference, same data source) and only the download is
skipped:

* :func:`hub_model`: a model repository in the hub cache (``HF_HUB_CACHE``:
  ``models--<id>/refs/main`` and ``snapshots/<commit>/``), found by the same
  ``snapshot_download`` call that downloads it. Its ``config.json`` is the public config of the
  model (:data:`DISTILGPT2_CONFIG`, :data:`GPT2_CONFIG`); **its weights are random** (no package
  ships the real ones), so losses and α are those of an untrained network, while shapes,
  parameter counts, time and memory are the real model's.
* :func:`gpt2_style_tokenizer`: a byte-level BPE tokenizer built like GPT-2's (the same
  pre-tokenizer, decoder, 50,256 tokens + ``<|endoftext|>`` = 50256), trained here on the
  Python standard library's source files. Its vocabulary differs from GPT-2's; IR-Triplets
  records take ~87 of its tokens on average (~72 with GPT-2's).
* :func:`wikitext2_cache`: WikiText-2 raw (``wikitext-2-raw-v1``) in the layout of its hub
  repository (parquet files per split, configs in ``README.md``), prepared by ``datasets`` into
  its cache (``HF_DATASETS_CACHE``) as a download would be; ``load_dataset("wikitext",
  "wikitext-2-raw-v1")`` then reads it with ``HF_HUB_OFFLINE=1``. Its lines are real English
  prose (standard-library docstrings) shaped like WikiText's: `` = Heading = `` lines and long
  paragraph lines, blank lines between.
* :func:`ir_triplets_cache`: IR-Triplets cached by lmlab's own download code
  (``LMLAB_CACHE``), fed from a local copy instead of the network.

:func:`hub_env` gives the environment variables that point a process at these caches.
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

__all__ = ["DISTILGPT2_CONFIG", "GPT2_CONFIG", "PARAMETERS", "VOCAB_SIZE", "EOS",
           "gpt2_style_tokenizer", "hub_model", "wikitext2_cache", "ir_triplets_cache",
           "hub_env"]

VOCAB_SIZE = 50257
EOS = "<|endoftext|>"

_TEXT_GENERATION = {"text-generation": {"do_sample": True, "max_length": 50}}

#: ``config.json`` of gpt2 on the hub (openai-community/gpt2).
GPT2_CONFIG: dict[str, Any] = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1,
    "bos_token_id": 50256,
    "embd_pdrop": 0.1,
    "eos_token_id": 50256,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_ctx": 1024,
    "n_embd": 768,
    "n_head": 12,
    "n_layer": 12,
    "n_positions": 1024,
    "resid_pdrop": 0.1,
    "summary_activation": None,
    "summary_first_dropout": 0.1,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "task_specific_params": _TEXT_GENERATION,
    "vocab_size": 50257,
}

#: ``config.json`` of distilgpt2 on the hub (distilbert/distilgpt2): gpt2 with 6 layers.
DISTILGPT2_CONFIG: dict[str, Any] = {
    **GPT2_CONFIG,
    "_num_labels": 1,
    "id2label": {"0": "LABEL_0"},
    "label2id": {"LABEL_0": 0},
    "n_layer": 6,
}

#: Parameters of each model (tied input/output embeddings counted once), by hand from the
#: config: embeddings V·d + P·d, per block 12·d² + 13·d (attention 4·d² + 4·d, MLP 8·d² + 5·d,
#: two layer norms 4·d), final layer norm 2·d; V = 50257, P = 1024, d = 768.
PARAMETERS = {"gpt2": 124_439_808, "distilgpt2": 81_912_576}


def _stdlib_sources() -> list[str]:
    """The Python standard library's own source files (tests and site-packages left out)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idlelib"}
    files = sorted(p for p in root.rglob("*.py") if not skip.intersection(p.parts))
    return [p.read_text(encoding="utf-8", errors="replace") for p in files]


def gpt2_style_tokenizer(out: Path) -> Path:
    """Train a GPT-2-style byte-level BPE tokenizer and save its files in ``out``.

    Like GPT-2's: byte-level pre-tokenizer without a prefix space, 256 byte tokens plus 50,000
    merges (50,256 tokens), then ``<|endoftext|>`` as id 50256; saved as ``tokenizer.json``,
    ``vocab.json``, ``merges.txt`` and GPT-2's ``tokenizer_config.json``. Trained on the standard
    library's sources (~12 MB here, ~10 s on one core), the only text at hand large enough for
    50,000 merges.
    """
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )

    out.mkdir(parents=True, exist_ok=True)
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE - 1, min_frequency=0,
                                  show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(_stdlib_sources(), trainer)
    if core.get_vocab_size() != VOCAB_SIZE - 1:
        raise RuntimeError(f"the BPE training reached {core.get_vocab_size()} tokens, "
                           f"not {VOCAB_SIZE - 1}")
    core.add_special_tokens([AddedToken(EOS, special=True)])
    assert core.token_to_id(EOS) == VOCAB_SIZE - 1
    core.save(str(out / "tokenizer.json"))
    core.model.save(str(out))  # vocab.json, merges.txt
    (out / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024}))
    return out


def _commit(payload: Mapping[str, Any]) -> str:
    """A stable 40-hex 'commit' for a stand-in repository."""
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def hub_model(hub_cache: Path, repo_id: str, config: Mapping[str, Any], tokenizer: Path, *,
              seed: int = 0) -> Path:
    """Write ``repo_id`` into the hub cache: the exact ``config``, random weights, the tokenizer.

    Args:
        hub_cache: the hub cache directory (``HF_HUB_CACHE``).
        repo_id: the hub id the preset names (``distilgpt2``, ``gpt2``).
        config: the model's public ``config.json``.
        tokenizer: a directory made by :func:`gpt2_style_tokenizer`.
        seed: seeds the random weights.

    Returns:
        The snapshot directory, which ``snapshot_download(repo_id, local_files_only=True)``
        returns.
    """
    import shutil

    import torch
    import transformers

    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    commit = _commit(config)
    snap = repo / "snapshots" / commit
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config))
    model.save_pretrained(str(snap))  # model.safetensors, generation_config.json
    del model
    (snap / "config.json").write_text(json.dumps(dict(config), indent=2))
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copyfile(tokenizer / name, snap / name)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)  # no newline, as the hub client writes it
    return snap


_README = """---
configs:
- config_name: wikitext-2-raw-v1
  data_files:
  - split: train
    path: wikitext-2-raw-v1/train-*
  - split: validation
    path: wikitext-2-raw-v1/validation-*
  - split: test
    path: wikitext-2-raw-v1/test-*
---
"""


def _wikitext_rows(paragraphs: list[str], n_lines: int, line_chars: int = 700) -> list[str]:
    """Rows shaped like WikiText-2 raw: ``''``, `` = Heading = \\n``, ``''``, then paragraph
    lines of at least ``line_chars`` characters separated by ``''``, a heading every 5 lines."""
    rows: list[str] = []
    it = iter(paragraphs)
    for i in range(n_lines):
        if i % 5 == 0:
            rows += ["", f" = {' '.join(next(it).split()[:4])} = \n", ""]
        line = ""
        while len(line) < line_chars:
            line += " " + " ".join(next(it).split())
        rows += [line + " \n", ""]
    return rows


def wikitext2_cache(datasets_cache: Path, work: Path, *, n_lines: int = 40) -> Path:
    """Prepare a stand-in WikiText-2 raw in the ``datasets`` cache.

    Writes the hub repository's layout (``wikitext/README.md`` and
    ``wikitext/wikitext-2-raw-v1/{train,validation,test}-00000-of-00001.parquet``, one ``text``
    column) under ``work``, and has ``datasets`` prepare it into ``datasets_cache`` as
    ``wikitext/wikitext-2-raw-v1/0.0.0/<hash>/``, where a download of ``wikitext`` lands.

    Returns:
        The repository directory written under ``work``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lmlab.data import stdlib_docstrings

    paragraphs = [p for doc in stdlib_docstrings() for p in doc.split("\n\n") if p.strip()]
    repo = work / "wikitext"
    (repo / "wikitext-2-raw-v1").mkdir(parents=True, exist_ok=True)
    (repo / "README.md").write_text(_README)
    share = len(paragraphs) // 3
    for k, split in enumerate(("train", "validation", "test")):
        rows = _wikitext_rows(paragraphs[k * share:(k + 1) * share], n_lines)
        pq.write_table(pa.table({"text": rows}),
                       repo / "wikitext-2-raw-v1" / f"{split}-00000-of-00001.parquet")
    import datasets

    datasets.load_dataset(str(repo), "wikitext-2-raw-v1", cache_dir=str(datasets_cache))
    return repo


@contextmanager
def _served(url: str, local: Path) -> Iterator[None]:
    """``urllib.request.urlopen(url)`` answers with the bytes of ``local``; other URLs fail."""
    def urlopen(asked: Any, *args: Any, **kwargs: Any) -> Any:
        if asked != url:
            raise urllib.error.URLError(f"no network in the stand-in (asked for {asked})")
        return local.open("rb")

    with mock.patch.object(urllib.request, "urlopen", urlopen):
        yield


def ir_triplets_cache(lmlab_cache: Path, local_copy: Path, url: str) -> Path:
    """Cache IR-Triplets under ``lmlab_cache`` through lmlab's download code, ``url`` served
    from ``local_copy``; returns the cached file."""
    from lmlab.data import data_cache_dir, load_ir_triplets

    with mock.patch.dict(os.environ, {"LMLAB_CACHE": str(lmlab_cache)}), _served(url, local_copy):
        load_ir_triplets(None, url=url)
        cached = [p for p in data_cache_dir().iterdir() if p.suffix == ".json"]
    assert len(cached) == 1, cached
    return cached[0]


def hub_env(root: Path) -> dict[str, str]:
    """Environment variables that point a process at the caches under ``root``: the hub cache
    (``root/hub``), the ``datasets`` cache (``root/datasets``), lmlab's cache (``root/lmlab``),
    offline mode for the hub clients."""
    return {"HF_HUB_CACHE": str(root / "hub"), "HF_DATASETS_CACHE": str(root / "datasets"),
            "LMLAB_CACHE": str(root / "lmlab"), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
