from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmlab.errors import LmlabError
from lmlab.runs.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    save_figure,
    save_table,
)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_text_and_bytes_round_trip_and_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.txt"
    assert atomic_write_text(target, "first ✓") == target
    atomic_write_text(target, "second")
    assert target.read_text(encoding="utf-8") == "second"
    assert atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert _leftovers(target.parent) == [] and _leftovers(tmp_path) == []


def test_new_files_are_readable_by_others(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "x.txt", "x")
    assert path.stat().st_mode & 0o044 == 0o044  # not the 0600 of a raw temp file


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "data.json"
    atomic_write_json(target, {"v": 1})

    class Unserialisable:
        def __str__(self) -> str:
            raise RuntimeError("cannot render")

    with pytest.raises(RuntimeError):
        atomic_write_json(target, {"v": Unserialisable()})
    assert json.loads(target.read_text()) == {"v": 1}
    assert _leftovers(tmp_path) == []


def test_failing_figure_save_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "fig.png"
    target.write_bytes(b"old")

    class BrokenFigure:
        def savefig(self, handle: object, **kwargs: object) -> None:
            handle.write(b"partial")  # type: ignore[attr-defined]
            raise ValueError("renderer crashed")

    with pytest.raises(ValueError):
        save_figure(BrokenFigure(), target)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_json_is_strict_with_nan_as_null(tmp_path: Path) -> None:
    obj = {
        "z": float("nan"),
        "a": [1.0, float("inf"), -float("inf")],
        "t": (1, 2),
        "p": Path("x/y"),
        "np": np.float32(0.5),
        "arr": np.array([1, 2]),
        "nested": {"n": np.nan},
    }
    text = atomic_write_json(tmp_path / "s.json", obj).read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert data == {
        "z": None,
        "a": [1.0, None, None],
        "t": [1, 2],
        "p": "x/y",
        "np": 0.5,
        "arr": [1, 2],
        "nested": {"n": None},
    }
    assert list(data) == ["z", "a", "t", "p", "np", "arr", "nested"]  # order kept
    assert text.startswith('{\n  "z"')  # indent 2


def test_unwritable_directory_raises_lmlab_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(LmlabError) as err:
        atomic_write_text(blocker / "out.txt", "x")
    assert str(blocker) in str(err.value)


def test_writing_onto_a_directory_raises_lmlab_error(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(LmlabError, match="cannot write"):
        atomic_write_text(tmp_path / "d", "x")
    assert _leftovers(tmp_path) == []


def test_save_figure_writes_png_and_closes(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "figs" / "line.png", dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    assert _leftovers(path.parent) == []


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame({"layer": ["a", "b", "c"], "alpha": [2.5, np.nan, np.inf], "n": [1, 2, 3]})


def test_save_table_csv_and_parquet(tmp_path: Path, table: pd.DataFrame) -> None:
    csv = save_table(table, tmp_path / "t.csv")
    back = pd.read_csv(csv)
    assert list(back.columns) == ["layer", "alpha", "n"]
    assert back["n"].tolist() == [1, 2, 3]
    parquet = save_table(table, tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(parquet), table)


def test_save_table_json_and_jsonl_are_strict(tmp_path: Path, table: pd.DataFrame) -> None:
    records = json.loads(save_table(table, tmp_path / "t.json").read_text())
    assert records[0] == {"layer": "a", "alpha": 2.5, "n": 1}
    assert records[1]["alpha"] is None and records[2]["alpha"] is None
    lines = save_table(table, tmp_path / "t.jsonl").read_text().splitlines()
    assert [json.loads(line)["layer"] for line in lines] == ["a", "b", "c"]
    assert "NaN" not in "".join(lines) and "Infinity" not in "".join(lines)


def test_save_table_keeps_a_named_index(tmp_path: Path) -> None:
    df = pd.DataFrame({"v": [1.0, 2.0]}, index=pd.Index(["x", "y"], name="layer"))
    back = pd.read_csv(save_table(df, tmp_path / "t.csv"))
    assert back["layer"].tolist() == ["x", "y"]


def test_save_table_rejects_unknown_suffix(tmp_path: Path, table: pd.DataFrame) -> None:
    with pytest.raises(LmlabError, match=r"unsupported table format '\.xlsx'"):
        save_table(table, tmp_path / "t.xlsx")
    assert not (tmp_path / "t.xlsx").exists()


def test_json_timestamps_and_missing_values(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {"when": pd.to_datetime(["2024-01-02", None]), "k": pd.array([1, None], dtype="Int64")}
    )
    records = json.loads(save_table(df, tmp_path / "t.json").read_text())
    assert records[0]["when"].startswith("2024-01-02") and records[1]["when"] is None
    assert records[0]["k"] == 1 and records[1]["k"] is None
    assert not any(isinstance(v, float) and math.isnan(v) for r in records for v in r.values())


def test_failed_rename_keeps_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "summary.json"
    atomic_write_json(target, {"v": 1})

    def disk_full(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("lmlab.runs.io.os.replace", disk_full)
    with pytest.raises(LmlabError, match="No space left on device"):
        atomic_write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert _leftovers(tmp_path) == []
