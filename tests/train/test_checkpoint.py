"""Checkpoint files: atomic, weights-only reads, one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.train.checkpoint import (
    checkpoint_step,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)


class Custom:  # an object only a full unpickler can rebuild
    pass


def test_save_load_and_step(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None and checkpoint_step(tmp_path) == 0
    path = save_checkpoint(tmp_path, {"step": 4, "w": torch.arange(3), "history": [{"a": 1.0}]})
    assert latest_checkpoint(tmp_path) == path and checkpoint_step(tmp_path) == 4
    state = load_checkpoint(path)
    assert state["w"].tolist() == [0, 1, 2] and state["history"] == [{"a": 1.0}]
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left
    save_checkpoint(tmp_path, {"step": 1}, name="train_state.pt")
    assert checkpoint_step(tmp_path, "train_state.pt") == 1


@pytest.mark.parametrize("content, match", [
    (b"not a zip", "cannot read checkpoint .*last.pt: .*corrupt.*; delete it"),
    ("truncated", "cannot read checkpoint .*last.pt: .*corrupt.*; delete it"),
    (None, "checkpoint .*last.pt holds Python objects other than tensors"),
    ("list", "last.pt is not an lmlab checkpoint; delete it"),
])
def test_unreadable_checkpoints_are_one_line_errors(tmp_path: Path, content: object,
                                                     match: str) -> None:
    path = tmp_path / "last.pt"
    if content is None:  # an old checkpoint with pickled objects
        torch.save({"step": 1, "obj": Custom()}, path)
    elif content == "list":
        torch.save([1, 2], path)
    elif content == "truncated":
        save_checkpoint(tmp_path, {"step": 1, "w": torch.zeros(1000)})
        path.write_bytes(path.read_bytes()[:2000])
    else:
        path.write_bytes(content)  # type: ignore[arg-type]
    for read in (load_checkpoint, lambda p: checkpoint_step(p.parent)):
        with pytest.raises(LmlabError, match=match) as info:
            read(path)
        message = str(info.value)
        assert "\n" not in message and "weights_only" not in message


def test_a_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(LmlabError, match="no checkpoint at .*absent.pt"):
        load_checkpoint(tmp_path / "absent.pt")
