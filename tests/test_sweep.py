"""Sweeps: backends agree, resume skips stored cells, failures are named and resumable.

The worker functions live at module level here: spawned processes import them as
``tests.test_sweep`` (spawn hands the workers this process's ``sys.path``), and Ray workers get
the driver's ``sys.path`` from :func:`lmlab.sweep.run_sweep`.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmlab.errors import LmlabError
from lmlab.sweep import STORE_FILE, SweepConfig, cell_key, run_sweep


@dataclass(frozen=True)
class Cell:
    x: int
    n: int = 6
    marker_dir: str = ""  # where probe() leaves one file per call, to count computations
    fail: bool = False
    sleep: float = 0.0  # seconds before probe() starts its work


def probe(cell: Cell) -> list[dict[str, object]]:
    """Two rows of deterministic numbers from the cell, plus the torch threads it ran with."""
    import torch

    time.sleep(cell.sleep)
    if cell.marker_dir:
        (Path(cell.marker_dir) / f"{cell.x}-{uuid.uuid4().hex}").touch()
    if cell.fail:
        raise ValueError(f"cell x={cell.x} is broken\non purpose")
    a = np.random.default_rng(cell.x).standard_normal((cell.n, cell.n))
    return [
        {"part": part, "x": cell.x, "norm": float(np.linalg.norm(a[part::2])),
         "top": np.float32(a.max()), "threads": torch.get_num_threads()}
        for part in (0, 1)
    ]


def calls(marker_dir: Path) -> list[int]:
    """The x of every probe() call so far, sorted."""
    return sorted(int(p.name.split("-")[0]) for p in marker_dir.iterdir())


def stored_keys(store: Path) -> list[str]:
    lines = (store / STORE_FILE).read_text().splitlines()
    return [json.loads(line)["key"] for line in lines]


CELLS = [Cell(x) for x in range(5)]


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return run_sweep(probe, CELLS, SweepConfig(threads_per_worker=2), progress=False)


def test_inprocess_table_has_a_row_per_result_in_cell_order(reference: pd.DataFrame) -> None:
    import torch

    assert list(reference.columns) == ["cell", "part", "x", "norm", "top", "threads"]
    assert reference["x"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert reference["cell"].tolist()[::2] == [cell_key(c) for c in CELLS]
    assert (reference["threads"] == 2).all()  # threads_per_worker holds in-process too...
    assert torch.get_num_threads() == 1  # ...and the caller's setting is restored after


def test_process_backend_gives_the_same_table_with_worker_threads(
    reference: pd.DataFrame,
) -> None:
    cfg = SweepConfig(backend="process", workers=2, threads_per_worker=2)
    table = run_sweep(probe, CELLS, cfg, progress=False)
    pd.testing.assert_frame_equal(table, reference)


def test_ray_backend_gives_the_same_table_with_worker_threads(
    reference: pd.DataFrame,
) -> None:
    ray = pytest.importorskip("ray", reason="the ray backend needs: pip install 'ray[default]'")
    cfg = SweepConfig(backend="ray", workers=2, threads_per_worker=2)
    table = run_sweep(probe, CELLS, cfg, progress=False)
    pd.testing.assert_frame_equal(table, reference)
    assert not ray.is_initialized()  # the sweep started Ray, so it stopped it


def test_missing_ray_is_a_one_line_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" now raises ImportError
    with pytest.raises(LmlabError, match=r"^the ray backend needs ray: pip install 'ray\[default"):
        run_sweep(probe, CELLS[:1], SweepConfig(backend="ray"), progress=False)


def test_resume_computes_only_new_cells_and_keeps_cell_order(tmp_path: Path) -> None:
    marks, store = tmp_path / "marks", tmp_path / "store"
    marks.mkdir()
    first = [Cell(x, marker_dir=str(marks)) for x in (0, 2, 4)]
    run_sweep(probe, first, store=store, progress=False)
    assert calls(marks) == [0, 2, 4]

    everything = [Cell(x, marker_dir=str(marks)) for x in range(6)]
    table = run_sweep(probe, everything, store=store, progress=False)
    assert calls(marks) == [0, 1, 2, 3, 4, 5]  # 0, 2 and 4 came from the store
    assert table["x"].tolist()[::2] == list(range(6))
    fresh = run_sweep(probe, everything, progress=False)
    pd.testing.assert_frame_equal(table, fresh)  # stored rows read back exactly

    run_sweep(probe, everything[1:3], store=store, progress=False)
    assert len(calls(marks)) == 12  # the fresh run above made six; nothing recomputed now


def test_torn_last_line_is_ignored_and_that_cell_recomputed(tmp_path: Path) -> None:
    marks, store = tmp_path / "marks", tmp_path / "store"
    marks.mkdir()
    cells = [Cell(x, marker_dir=str(marks)) for x in range(3)]
    run_sweep(probe, cells, store=store, progress=False)
    path = store / STORE_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 25])  # a crash in the middle of the last record

    table = run_sweep(probe, cells, store=store, progress=False)
    assert calls(marks) == [0, 1, 2, 2]
    assert table["x"].tolist()[::2] == [0, 1, 2]
    assert stored_keys(store) == [cell_key(c) for c in cells]  # the torn tail was cut off


def test_corrupt_middle_line_is_skipped_with_a_warning(tmp_path: Path) -> None:
    store = tmp_path / "store"
    cells = [Cell(x) for x in range(2)]
    run_sweep(probe, cells, store=store, progress=False)
    path = store / STORE_FILE
    first, second = path.read_text().splitlines()
    path.write_text(f"{first[:10]}\n{second}\n")
    with pytest.warns(UserWarning, match="corrupt line 1") as caught:
        table = run_sweep(probe, cells, store=store, progress=False)
    assert table["x"].tolist() == [0, 0, 1, 1]
    assert [Path(w.filename).name for w in caught] == [Path(__file__).name]  # at the caller


def test_failed_cell_is_named_and_earlier_cells_are_stored(tmp_path: Path) -> None:
    marks, store = tmp_path / "marks", tmp_path / "store"
    marks.mkdir()
    cells = [Cell(x, marker_dir=str(marks), fail=x == 3) for x in range(5)]
    with pytest.raises(LmlabError) as info:
        run_sweep(probe, cells, store=store, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert f"cell {cell_key(cells[3])} = Cell(x=3" in message
    assert "ValueError: cell x=3 is broken on purpose" in message
    assert "rerun to resume" in message
    assert "raise ValueError" in str(info.value.__cause__)  # the worker's traceback
    assert stored_keys(store) == [cell_key(c) for c in cells[:3]]
    assert calls(marks) == [0, 1, 2, 3]  # the sweep stopped at the failure

    fixed = [Cell(x, marker_dir=str(marks)) for x in range(3)] + [Cell(3), Cell(4)]
    table = run_sweep(probe, fixed, store=store, progress=False)
    assert calls(marks) == [0, 1, 2, 3]  # 0-2 resumed from the store
    assert table["x"].tolist()[::2] == list(range(5))


def test_failed_cell_in_a_process_pool_lets_submitted_cells_finish(tmp_path: Path) -> None:
    # One worker, two cells in flight: cell 4 is submitted when cell 2 finishes, while cell 3
    # is still running (it sleeps, then fails); cell 4 still finishes and is stored, and
    # cell 5 never starts.
    store = tmp_path / "store"
    cells = [Cell(x, fail=x == 3, sleep=0.5 if x == 3 else 0.0) for x in range(6)]
    cfg = SweepConfig(backend="process", workers=1)
    with pytest.raises(LmlabError, match=f"cell {cell_key(cells[3])} .*ValueError"):
        run_sweep(probe, cells, cfg, store=store, progress=False)
    # cells finishing together are stored in the order the pool reports them: compare sets
    assert sorted(stored_keys(store)) == sorted(cell_key(cells[x]) for x in (0, 1, 2, 4))


def test_record_mode_gives_failed_cells_an_error_row_and_does_not_store_them(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    cells = [Cell(x, fail=x == 1) for x in range(3)]
    table = run_sweep(probe, cells, store=store, progress=False, on_error="record")
    assert table["cell"].tolist() == [cell_key(cells[0])] * 2 + [cell_key(cells[1])] + [
        cell_key(cells[2])
    ] * 2
    assert table["error"].isna().tolist() == [True, True, False, True, True]
    assert table["error"][2].startswith("ValueError: cell x=1 is broken")
    assert cell_key(cells[1]) not in stored_keys(store)


def test_keys_are_canonical_and_must_be_distinct() -> None:
    plain = {"fail": False, "marker_dir": "", "n": 6, "sleep": 0.0, "x": 1}
    assert cell_key(Cell(1)) == cell_key(plain)
    assert cell_key({"a": 1, "b": 2}) == cell_key({"b": 2, "a": 1}) != cell_key({"a": 2})
    with pytest.raises(LmlabError, match="cells 0 and 1 have the same key"):
        run_sweep(probe, [Cell(1), Cell(1)], progress=False)
    with pytest.raises(LmlabError, match="key\\(\\) must return a non-empty string"):
        run_sweep(probe, [Cell(1)], key=lambda c: c.x, progress=False)  # type: ignore[arg-type]


def test_custom_key_and_empty_sweep() -> None:
    table = run_sweep(probe, [Cell(7)], key=lambda c: f"x{c.x}", progress=False)
    assert table["cell"].tolist() == ["x7", "x7"]
    assert run_sweep(probe, [], progress=False).columns.tolist() == ["cell"]


def not_rows(cell: int) -> int:
    return cell


def test_fn_must_return_rows() -> None:
    with pytest.raises(LmlabError, match="TypeError: fn must return a dict or a list of dicts"):
        run_sweep(not_rows, [1], progress=False)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"backend": "gpu"}, "backend"),
        ({"workers": 0}, "workers"),
        ({"workers": 1.5}, "workers"),
        ({"threads_per_worker": 0}, "threads_per_worker"),
        ({"address": ""}, "address"),
    ],
)
def test_bad_config_names_the_field(changes: dict[str, object], field: str) -> None:
    cfg = SweepConfig(**changes)  # type: ignore[arg-type]
    with pytest.raises(LmlabError, match=field):
        cfg.validate()
    with pytest.raises(LmlabError, match=field):
        run_sweep(probe, CELLS, cfg, progress=False)



def test_check_available_names_the_missing_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))
    SweepConfig(backend="process").check_available()  # nothing to import
    with pytest.raises(LmlabError, match=r"pip install 'ray\[default\]'"):
        SweepConfig(backend="ray").check_available()


def keys_written_before(cell: object) -> str:
    """The key as lmlab wrote it before the one normaliser: stores stay valid."""
    import dataclasses
    import hashlib

    plain = dataclasses.asdict(cell) if dataclasses.is_dataclass(cell) else cell
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def test_cell_keys_are_unchanged_for_stored_sweeps() -> None:
    for cell in [Cell(1), Cell(3, n=2, sleep=0.5), {"lr": 0.1, "widths": [1, 2], "name": "é"}]:
        assert cell_key(cell) == keys_written_before(cell)
    assert cell_key({"lr": 0.1, "seed": 0, "widths": (1, 2), "p": Path("/a")}) == "03ef684346be"
    assert cell_key({"tags": {"b", "a"}}) == cell_key({"tags": ["a", "b"]})  # sets: sorted


def non_finite(cell: int) -> dict[str, object]:
    return {"x": cell, "y": float("nan") if cell else 1.5, "z": np.float64("inf"),
            "v": np.array([1.0, np.nan])}


def test_non_finite_values_follow_the_one_nan_policy(tmp_path: Path) -> None:
    table = run_sweep(non_finite, [0, 1], store=tmp_path, progress=False)
    assert table["y"].dtype == float and table["y"].isna().tolist() == [False, True]
    assert table["z"].isna().all() and table["v"].tolist() == [[1.0, None], [1.0, None]]
    for line in (tmp_path / STORE_FILE).read_text().splitlines():  # strict JSON, NaN as null
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    again = run_sweep(non_finite, [0, 1], store=tmp_path, progress=False)
    pd.testing.assert_frame_equal(again, table)
