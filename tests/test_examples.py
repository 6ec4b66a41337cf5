"""The example notebooks (``examples/<study>.ipynb``): one per registered study, stored without
outputs, and each executed end to end in a Jupyter kernel through its own code.

The fast tests swap only the cell tagged ``parameters`` (in memory, never on disk) for tiny
settings, so each notebook runs its study in seconds; the ``slow`` tests run every notebook as
stored, the real quick preset. Kernels run with one BLAS/torch thread and in a temporary working
directory, so their ``runs/`` folders never land in the repository.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lmlab.studies import get_study, study_table
from tests.conftest import SHARED_DATA

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = {p.stem: p for p in sorted(EXAMPLES.glob("*.ipynb"))}
NEEDS = "the notebook tests need nbclient, nbformat and ipykernel (pip install nbclient ipykernel)"

BUILT_IN = [s.name for s in study_table() if s.module.startswith("lmlab.studies.")]


def expected_keys(study: str) -> set[str]:
    """The summary keys a study's notebook reads: its SUMMARY's headline keys."""
    keys = set(get_study(study).SUMMARY.headline())
    assert keys, f"{study}: mark the keys its notebook shows with SummaryKey(headline=True)"
    return keys


NOT_DRAWN = "was not drawn"  # what a notebook prints for a headline figure the run lacks


def _cells(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _is_parameters(cell: dict[str, Any]) -> bool:
    return "parameters" in cell.get("metadata", {}).get("tags", [])


def test_one_notebook_per_registered_study() -> None:
    assert set(NOTEBOOKS) == set(BUILT_IN), (
        f"examples/ must hold exactly one <study>.ipynb per built-in study; missing: "
        f"{sorted(set(BUILT_IN) - set(NOTEBOOKS))}, unknown: "
        f"{sorted(set(NOTEBOOKS) - set(BUILT_IN))}")


@pytest.mark.parametrize("study", sorted(NOTEBOOKS))
def test_notebook_is_stored_clean(study: str) -> None:
    nb = json.loads(NOTEBOOKS[study].read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    cells = nb["cells"]
    assert 5 <= len(cells) <= 8
    assert cells[0]["cell_type"] == "markdown" and cells[-1]["cell_type"] == "markdown"
    for cell in cells:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{study}: a code cell is stored with outputs"
            assert cell["execution_count"] is None, f"{study}: an execution count is stored"
    params = [c for c in cells if _is_parameters(c)]
    assert len(params) == 1 and params[0]["cell_type"] == "code"
    source = "".join(params[0]["source"])
    assert "overrides = [" in source and 'preset = "quick"' in source
    assert any(f'run_study("{study}"' in "".join(c["source"]) for c in cells)


# ----------------------------------------------------------------------------- execution


def _tiny_lm(path: Path) -> Path:
    """A tiny GPT-2 with a 300-word tokenizer trained on offline text, saved as a model dir."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from lmlab.data import stdlib_docstrings

    core = Tokenizer(models.WordLevel(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.train_from_iterator(stdlib_docstrings()[:300], trainers.WordLevelTrainer(
        vocab_size=300, special_tokens=["<eos>", "<unk>"]))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>",
                                               unk_token="<unk>")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=128,
                                  vocab_size=tok.vocab_size, bos_token_id=0, eos_token_id=0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Per study, overrides that make its quick preset run in seconds (the study tests')."""
    root = tmp_path_factory.mktemp("inputs")
    lm = _tiny_lm(root / "gpt2")
    names: list[str] = []
    if (SHARED_DATA / "names_2018.txt").is_file():  # else the offline SSA names of 2017
        path = root / "names.txt"
        path.write_text("\n".join((SHARED_DATA / "names_2018.txt").read_text().split()[::16]))
        names = [f"data.path={path}"]
    lines = [f"model={lm}", "data.source=stdlib-docstrings", "data.budget=300", "train.epochs=2",
             "train.lr=0.001", "device=cpu"]
    return {
        "spectral": [f"model={lm}"],
        "spectral-compare": [f"model_a={lm}", f"model_b={lm}"],
        "finetune-spectral": [f"model={lm}", "data.source=stdlib-docstrings",
                              "data.n_samples=40", "data.max_length=64",
                              "train.warmup_steps=1", "train.lr=0.001", "spectral.track_every=2",
                              "device=cpu"],
        "optimizers": lines,
        "ablation": lines,
        "charlm": [*names, "mlp.train.steps=200", "mlp.train.lr_decay_step=100",
                   "mlp.train.diag_every=50", "wavenet.enabled=false",
                   "transformer.enabled=false", "samples=3", "device=cpu"],
        "attention-phase": ["task.d=40", "grid.alpha_min=0.25", "grid.alpha_points=6",
                            "grid.omegas=0.1,0.3", "grid.seeds=3", "gd.steps=150", "n_test=400",
                            "theory.enabled=false"],
        "induction": ["pools=0,20", "steps=40", "save_every=20", "eval_every=10",
                      "eval_cheap=20", "eval_full=50", "sweep.backend=inprocess"],
    }


@pytest.fixture
def kernel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel inherits these: one thread per BLAS/torch pool (2 shared cores)."""
    pytest.importorskip("ipykernel", reason=NEEDS)
    pytest.importorskip("nbclient", reason=NEEDS)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(var, "1")


def execute(path: Path, cwd: Path, *, overrides: list[str] | None = None,
            timeout: int = 600) -> Any:
    """Run the notebook at ``path`` in a fresh python3 kernel working in ``cwd``; with
    ``overrides``, the ``parameters`` cell is first replaced by them (in memory only)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    if overrides is not None:
        (cell,) = [c for c in nb.cells if _is_parameters(c)]
        cell.source = f'overrides = {overrides!r}\npreset = "quick"\nout = "runs"\n'
    NotebookClient(nb, kernel_name="python3", timeout=timeout,
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def check_executed(study: str, nb: Any, cwd: Path) -> None:
    """One finished run of ``study`` under ``cwd/runs`` with the expected summary, and the
    notebook showed its headline figures."""
    runs = sorted((cwd / "runs" / study).glob("*/summary.json"))
    assert len(runs) == 1, f"expected one run of {study} under {cwd / 'runs'}, found {runs}"
    summary = json.loads(runs[0].read_text())
    assert expected_keys(study) <= set(summary), expected_keys(study) - set(summary)
    assert json.loads((runs[0].parent / "meta.json").read_text())["status"] == "finished"
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{study}: the notebook showed no figure"
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"run directory: runs/{study}/" in printed
    assert NOT_DRAWN not in printed, printed


@pytest.mark.parametrize("study", sorted(NOTEBOOKS))
def test_notebook_runs_with_tiny_settings(study: str, tiny: dict[str, list[str]],
                                          kernel_env: None, tmp_path: Path) -> None:
    path = NOTEBOOKS[study]
    stored = path.read_bytes()
    nb = execute(path, tmp_path, overrides=tiny[study], timeout=300)
    check_executed(study, nb, tmp_path)
    assert path.read_bytes() == stored  # the parameters were swapped in memory only


@pytest.mark.slow
@pytest.mark.parametrize("study", sorted(NOTEBOOKS))
def test_notebook_runs_as_stored(study: str, kernel_env: None, tmp_path: Path) -> None:
    nb = execute(NOTEBOOKS[study], tmp_path, timeout=3600)
    check_executed(study, nb, tmp_path)
