"""Shared fixtures of the study tests: a tiny causal LM saved as a model directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

IR = Path(__file__).resolve().parents[3] / "shared" / "data" / "ir_triplets.json"


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny GPT-2 and a word-level tokenizer trained on real records, saved as a model dir."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from lmlab.data import format_records, load_ir_triplets

    texts = format_records(load_ir_triplets(IR)[:300])
    core = Tokenizer(models.WordLevel(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<eos>", "<unk>"]))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>",
                                               unk_token="<unk>")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=128,
                                  vocab_size=tok.vocab_size, bos_token_id=0, eos_token_id=0,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # exact DDP
    path = tmp_path_factory.mktemp("tiny") / "gpt2"
    transformers.GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path




_FRESH_PLOT = """
import sys
import torch

def refuse(self, *args, **kwargs):
    raise AssertionError("plot(load_result(...)) built a torch model")

torch.nn.Module.__init__ = refuse
from lmlab.studies import load_result, get_study
result = load_result(sys.argv[1])
module = get_study(sys.argv[2])
figures = module.plot(result)
print(" ".join(sorted(figures)))
"""


def assert_redraws(run_dir: Path | object, study: str) -> None:
    """The study-pattern check every study's test makes on a finished tiny run.

    Deleting ``figures/`` and ``report.*`` and running ``lmlab report RUN_DIR`` gives back the
    same figure files and the same report text; and ``plot(load_result(run_dir))`` works in a
    fresh process in which building any torch module raises.
    """
    import shutil
    import subprocess
    import sys

    from lmlab.cli import main

    path = Path(getattr(run_dir, "path", run_dir))
    figures = sorted(p.name for p in (path / "figures").iterdir())
    report_md = (path / "report.md").read_text(encoding="utf-8")
    assert figures, "the run drew no figures"
    shutil.rmtree(path / "figures")
    for name in ("report.md", "report.html", "report.json"):
        (path / name).unlink()
    assert main(["report", str(path)]) == 0
    assert sorted(p.name for p in (path / "figures").iterdir()) == figures
    assert (path / "report.md").read_text(encoding="utf-8") == report_md
    assert (path / "report.html").is_file()
    out = subprocess.run([sys.executable, "-c", _FRESH_PLOT, str(path), study],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == sorted(Path(f).stem for f in figures)
