from __future__ import annotations

import dataclasses
import enum
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmlab.errors import LmlabError
from lmlab.runs.io import (
    append_lines,
    atomic_directory,
    atomic_save_torch,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    atomic_write_with,
    save_figure,
    save_table,
    to_jsonable,
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

    with pytest.raises(RuntimeError):  # raised while encoding, before any file is written
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

    with pytest.raises(LmlabError, match="renderer crashed"):
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


# --- the one normaliser and its NaN policy ----------------------------------------------------


class _Colour(enum.Enum):
    RED = "r"


@dataclasses.dataclass
class _Point:
    x: float
    tags: frozenset[str]


def test_to_jsonable_has_one_nan_policy_everywhere() -> None:
    import torch

    obj = {
        "nan": float("nan"),
        "np": [np.float64("inf"), np.float32(-np.inf), np.array([1.0, np.nan])],
        "torch": torch.tensor([0.5, float("nan")]),
        "point": _Point(float("-inf"), frozenset({"b", "a"})),
        "colour": _Colour.RED,
        1: None,
        None: True,
    }
    plain = to_jsonable(obj)
    assert plain == {
        "nan": None,
        "np": [None, None, [1.0, None]],
        "torch": [0.5, None],
        "point": {"x": None, "tags": ["a", "b"]},
        "colour": "r",
        "1": None,
        "null": True,
    }
    assert type(to_jsonable(np.float64(0.25))) is float
    json.dumps(plain, allow_nan=False)


def test_json_keys_are_written_as_json_writes_them() -> None:
    obj = {1: "a", 2.5: "b", False: "c", None: "d"}
    assert list(to_jsonable(obj)) == list(json.loads(json.dumps(obj)))


# --- atomic torch files, custom writers, directories ------------------------------------------


def test_atomic_save_torch_round_trips_and_keeps_old_file_on_failure(tmp_path: Path) -> None:
    import torch

    target = tmp_path / "ckpt" / "last.pt"
    assert atomic_save_torch(target, {"step": 1, "w": torch.ones(3)}) == target
    assert torch.load(target, weights_only=True)["step"] == 1

    class Unpicklable:
        def __reduce__(self) -> object:
            raise RuntimeError("cannot pickle")

    with pytest.raises(LmlabError, match="cannot pickle"):
        atomic_save_torch(target, {"step": 2, "bad": Unpicklable()})
    assert torch.load(target, weights_only=True)["step"] == 1
    assert _leftovers(target.parent) == []


def test_atomic_write_with_puts_the_hint_in_its_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LmlabError, match=r"; set LMLAB_CACHE to a writable directory$"):
        atomic_write_with(blocker / "x.bin", lambda f: f.write(b"x"),
                          hint="set LMLAB_CACHE to a writable directory")

    def disk_full(handle: object) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(LmlabError, match=r"cannot write .*No space left on device; try again"):
        atomic_write_with(tmp_path / "y.bin", disk_full, hint="try again")
    assert _leftovers(tmp_path) == [] and not (tmp_path / "y.bin").exists()


def test_atomic_directory_creates_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "model"
    with atomic_directory(target) as work:
        assert work.parent == target.parent and not target.exists()
        (work / "a.txt").write_text("1")
    assert (target / "a.txt").read_text() == "1"
    with atomic_directory(target) as work:
        (work / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]


def test_a_failed_directory_fill_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with atomic_directory(target) as work:
        (work / "a.txt").write_text("old")
    with pytest.raises(ValueError, match="conversion failed"), atomic_directory(target) as work:
        (work / "a.txt").write_text("half")
        raise ValueError("conversion failed")
    assert (target / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_directory_removes_stale_temporaries(tmp_path: Path) -> None:
    import os
    import time

    stale = tmp_path / ".model.123-deadbeef.tmp"
    fresh = tmp_path / ".model.456-cafecafe.tmp"
    for d in (stale, fresh):
        d.mkdir()
    old = time.time() - 7 * 3600
    os.utime(stale, (old, old))
    with atomic_directory(tmp_path / "model"):
        pass
    assert not stale.exists() and fresh.exists()


def test_atomic_directory_errors_are_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LmlabError, match=r"^cannot create directory .*; set X$"), \
            atomic_directory(blocker / "sub" / "model", hint="set X"):
        pass


# --- disk faults: any error of a write is one line naming the file; nothing is left behind ----


def test_a_full_disk_during_torch_save_is_one_line_naming_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save turns the disk's ENOSPC into RuntimeError "unexpected pos": the message still
    says what the disk said, and the old checkpoint and the directory stay clean."""
    import errno
    import os

    import torch

    target = tmp_path / "last.pt"
    atomic_save_torch(target, {"step": 1, "w": torch.ones(3)})
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, handle: object) -> None:
            self.handle, self.calls = handle, 0

        def write(self, data: bytes) -> int:
            self.calls += 1
            if self.calls > 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.handle.write(data)  # type: ignore[attr-defined]

        def __getattr__(self, name: str) -> object:
            return getattr(self.handle, name)

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()  # type: ignore[attr-defined]

    monkeypatch.setattr("lmlab.runs.io.os.fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    with pytest.raises(LmlabError) as err:
        atomic_save_torch(target, {"step": 2, "w": torch.zeros(1000)})
    monkeypatch.undo()
    message = str(err.value)
    assert message.startswith(f"cannot write {target}: No space left on device; ")
    assert "\n" not in message and "unexpected pos" not in message
    assert isinstance(err.value.__cause__, RuntimeError)  # what torch raised, kept for debugging
    assert torch.load(target, weights_only=True)["step"] == 1
    assert _leftovers(tmp_path) == []


def test_checkpoint_free_space_check_is_sized_from_the_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import torch

    import lmlab.runs.guard as guard

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(guard.shutil, "disk_usage",
                        lambda p: usage._replace(free=8 * 1024**2))  # 8 MB free
    small = {"step": 1, "w": torch.zeros(1024**2 // 4)}  # 1 MB of tensors: fits
    assert atomic_save_torch(tmp_path / "small.pt", small).is_file()
    big = {"step": 1, "w": torch.zeros(3 * 1024**2), "view": None}  # 12 MB: refused up front
    big["view"] = big["w"][:10]  # a view of the same storage is not counted twice
    with pytest.raises(LmlabError, match=r"^cannot write .*big\.pt: it needs about 13\.6 MB "
                       r"and only 8\.0 MB are free on that disk; free some space"):
        atomic_save_torch(tmp_path / "big.pt", big)
    assert not (tmp_path / "big.pt").exists() and _leftovers(tmp_path) == []


def test_append_lines_ends_a_torn_line_and_a_failed_append_leaves_no_half_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    log = tmp_path / "metrics.jsonl"
    append_lines(log, b'{"step": 1}\n')
    with log.open("ab") as f:
        f.write(b'{"step": 2, "lo')  # a crash mid-append
    append_lines(log, b'{"step": 2}\n')
    assert log.read_bytes() == b'{"step": 1}\n{"step": 2, "lo\n{"step": 2}\n'
    before = log.read_bytes()
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        if len(data) > 4:
            return real_write(fd, bytes(data[:4]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("lmlab.runs.io.os.write", half_then_full)
    with pytest.raises(LmlabError, match=r"^cannot append to .*metrics\.jsonl: No space left"):
        append_lines(log, b'{"step": 3}\n')
    monkeypatch.undo()
    assert log.read_bytes() == before  # cut back: no half row


def test_remove_temporaries_removes_only_lmlab_temporary_names(tmp_path: Path) -> None:
    from lmlab.runs.guard import remove_temporaries

    (tmp_path / "checkpoints").mkdir()
    ours = [tmp_path / "checkpoints" / ".last.pt.4242-ab_cd12z.tmp",  # a killed checkpoint write
            tmp_path / ".meta.json.k2j4h5g6.tmp",  # the names of earlier versions
            tmp_path / ".model.77-deadbeef.tmp"]  # a directory fill
    for path in ours[:2]:
        path.write_bytes(b"half")
    ours[2].mkdir()
    (ours[2] / "weights.bin").write_bytes(b"x")
    kept = [tmp_path / "notes.tmp", tmp_path / ".hidden", tmp_path / "last.pt",
            tmp_path / ".last.pt.tmp"]
    for path in kept:
        path.write_bytes(b"user")
    assert sorted(remove_temporaries(tmp_path)) == sorted(ours)
    assert not any(p.exists() for p in ours) and all(p.exists() for p in kept)
