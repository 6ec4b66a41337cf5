"""Worker processes give the serial route's rows, in its order; the automatic rule keeps small
models serial; the progress bar advances by each matrix's cost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.spectral import analyze, parallel
from lmlab.spectral.analyze import analyze_with_spectra, options_from
from lmlab.spectral.blocks import SafetensorsTensor
from lmlab.spectral.options import AnalyzeOptions
from lmlab.spectral.parallel import AUTO_WORK, Progress, choose_workers, work_of
from lmlab.spectral.sources import LayerRef, iter_layers
from tests.conftest import tiny_model


@pytest.fixture(scope="module")
def sharded_bf16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bf16") / "llama"
    tiny_model("llama").to(torch.bfloat16).save_pretrained(path, max_shard_size="100KB")
    assert len(list(path.glob("*.safetensors"))) > 1
    return path


def test_workers_give_the_serial_rows_in_the_serial_order(sharded_bf16: Path) -> None:
    opts = options_from(mp_fit=True)
    serial, serial_esds = analyze_with_spectra(sharded_bf16, workers=1, threads=1,
                                               progress=False, options=opts)
    pooled, pooled_esds = analyze_with_spectra(sharded_bf16, workers=2, progress=False,
                                               options=opts)
    assert len(serial) == 16 and (serial["status"] == "success").sum() >= 14
    pd.testing.assert_frame_equal(pooled, serial, check_exact=True)
    assert list(pooled_esds) == list(serial_esds)
    for k, evals in serial_esds.items():
        np.testing.assert_array_equal(pooled_esds[k], evals)


@pytest.mark.slow  # starts two worker processes (about 10 s)
def test_a_worker_error_reaches_the_caller(tmp_path: Path) -> None:
    gone = LayerRef(0, "w", "w", "dense", (40, 20),
                    SafetensorsTensor(str(tmp_path / "gone.safetensors"), "w.weight"))
    with pytest.raises(Exception, match="gone.safetensors|No such file"):
        parallel.parallel_rows([gone], AnalyzeOptions(), ("layer_id",), 2)


def _ref(shape: tuple[int, int], located: bool = True, layer_id: int = 0) -> LayerRef:
    load = SafetensorsTensor("m.safetensors", f"w{layer_id}.weight") if located else dict
    return LayerRef(layer_id, "w", f"w{layer_id}", "dense", shape, load)  # type: ignore[arg-type]


def test_the_automatic_rule(monkeypatch) -> None:
    opts = AnalyzeOptions()
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)
    llama_7b_layer = [_ref((4096, 4096), layer_id=i) for i in range(4)] + [
        _ref((11008, 4096), layer_id=i) for i in range(4, 7)]
    assert sum(work_of(r, opts) for r in llama_7b_layer) > AUTO_WORK
    assert choose_workers(None, llama_7b_layer, opts) == 2
    small = [_ref((3072, 768), layer_id=i) for i in range(48)]  # GPT-2 small's MLPs
    assert sum(work_of(r, opts) for r in small) < AUTO_WORK
    assert choose_workers(None, small, opts) == 1
    assert choose_workers(None, llama_7b_layer, opts, threads=2) == 1
    assert choose_workers(None, llama_7b_layer, options_from(randomize=True)) == 1
    assert choose_workers(None, llama_7b_layer, opts, device=torch.device("meta")) == 1
    in_memory = [_ref((4096, 4096), located=False, layer_id=i) for i in range(7)]
    assert choose_workers(None, in_memory, opts) == 1
    assert choose_workers(4, in_memory, opts) == 1  # only files are sent to workers
    assert choose_workers(4, llama_7b_layer[:3], opts) == 3  # never more than the matrices
    monkeypatch.setattr(parallel, "usable_cores", lambda: 1)
    assert choose_workers(None, llama_7b_layer, opts) == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_workers_are_refused(bad) -> None:
    with pytest.raises(LmlabError, match="workers"):
        choose_workers(bad, [_ref((8, 8))], AnalyzeOptions())


def test_work_and_progress_weigh_matrices_by_cost() -> None:
    opts = AnalyzeOptions()
    emb, q = _ref((32000, 4096)), _ref((4096, 4096), layer_id=1)
    assert work_of(emb, opts) == 32000 * 4096**2 + 4 * 4096**3
    assert work_of(_ref((4, 4), layer_id=2), opts) == 0  # skipped: too small
    assert work_of(emb, opts) / work_of(q, opts) == pytest.approx(
        (32000 + 4 * 4096) / (5 * 4096))
    bar = Progress([emb, q], opts, show=False)
    bar.done(emb)
    assert bar.work_done / bar.total_work == pytest.approx(work_of(emb, opts)
                                                      / (work_of(emb, opts) + work_of(q, opts)))
    bar.done(q)
    assert bar.done_count == 2 and bar.work_done == pytest.approx(bar.total_work)
    bar.close()


def test_in_memory_models_ignore_workers() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Linear(128, 32))
    assert [r.load for r in iter_layers(model)][0] is not None
    pd.testing.assert_frame_equal(analyze(model, workers=2, progress=False),
                                  analyze(model, workers=1, progress=False))


@pytest.mark.slow  # starts a Python process and two workers (about 15 s)
def test_a_script_without_a_main_guard_is_not_run_again_in_workers(sharded_bf16: Path,
                                                                   tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text("from lmlab.spectral import analyze\n"
                      f"df = analyze({str(sharded_bf16)!r}, workers=2, progress=False)\n"
                      "print('ROWS', len(df))\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("ROWS") == 1 and "ROWS 16" in out.stdout
