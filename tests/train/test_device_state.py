"""What a checkpoint keeps of the device, on a CPU machine: tensors written from the CPU, the
device type recorded and a resume on another type refused in one line, the GPUs' random states
read only once CUDA is in use and put back on the GPUs present, deterministic mode switched on
for a run and off after it, and the torchrun backend that fits the device."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.train import Callback, TrainConfig, distributed, train
from lmlab.train import core as core_mod
from lmlab.train.checkpoint import load_checkpoint, save_checkpoint, to_cpu
from lmlab.train.core import TrainParts, deterministic, restore_rng, rng_state


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(5, 5)

    def forward(self, input_ids: torch.Tensor, attention_mask: Any = None) -> Any:
        return type("Out", (), {"logits": self.emb(input_ids)})()


def collate(b: list[list[int]]) -> dict[str, torch.Tensor]:
    ids = torch.tensor(b)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


DATA = [[1, 2, 3, 4]] * 8
CFG = TrainConfig(batch_size=4, lr=0.5, warmup_steps=0, epochs=2)


def _parts(model: torch.nn.Module) -> TrainParts:
    return TrainParts(model, torch.optim.SGD(model.parameters(), lr=0.1))


# ------------------------------------------------------------------------- tensors on the CPU


def test_to_cpu_moves_every_tensor_of_a_nested_state(monkeypatch: pytest.MonkeyPatch) -> None:
    moved: list[tuple[int, ...]] = []
    real_cpu = torch.Tensor.cpu

    def fake_cpu(self: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
        if self.is_meta:  # a tensor off the CPU: "copy" it as 7s so the test sees the copy
            moved.append(tuple(self.shape))
            return torch.full(self.shape, 7.0)
        return real_cpu(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "cpu", fake_cpu)
    off = torch.ones(2, 3, device="meta")
    state = {"model": {"w": off}, "optimizer": {"state": {0: {"exp_avg": [off[0], (off,)]}}},
             "step": 4, "name": "x", "keep": torch.arange(3)}
    out = to_cpu(state)
    assert moved == [(2, 3), (3,), (2, 3)]
    assert torch.equal(out["model"]["w"], torch.full((2, 3), 7.0))
    assert isinstance(out["optimizer"]["state"][0]["exp_avg"][1], tuple)
    assert out["step"] == 4 and out["name"] == "x"
    assert out["keep"].data_ptr() == state["keep"].data_ptr()  # CPU tensors are not copied


def test_save_checkpoint_writes_cpu_tensors(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    real_cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: (
        torch.full(self.shape, 2.0) if self.is_meta else real_cpu(self, *a, **k)))
    path = save_checkpoint(tmp_path, {"step": 1, "model": {"w": torch.ones(4, device="meta")}})
    w = load_checkpoint(path)["model"]["w"]
    assert w.device.type == "cpu" and torch.equal(w, torch.full((4,), 2.0))


# ----------------------------------------------------------------- device type in checkpoints


def test_checkpoint_records_the_device_type() -> None:
    parts = _parts(torch.nn.Linear(2, 1))
    assert parts.state(3)["device_type"] == "cpu"
    assert TrainParts(None, torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
                      ).state(1)["device_type"] == "cpu"  # from the optimiser's parameters
    assert TrainParts(None, parts.optimizer, device_type="cuda").state(1)["device_type"] == "cuda"


def test_restore_refuses_another_device_type_in_one_line() -> None:
    parts = _parts(torch.nn.Linear(2, 1))
    saved = {**parts.state(3), "device_type": "cuda"}
    with pytest.raises(LmlabError) as e:
        parts.restore(saved, source="runs/x/last.pt")
    msg = str(e.value)
    assert "\n" not in msg
    assert "runs/x/last.pt" in msg and "on cuda" in msg and "on cpu" in msg
    assert "--device cuda" in msg
    assert parts.restore({**parts.state(3), "device_type": "cpu"}) == 3
    older = parts.state(5)
    del older["device_type"]  # written before checkpoints kept it: taken as it is
    assert parts.restore(older) == 5


def test_training_resume_from_a_cuda_checkpoint_is_refused_on_the_cpu(tmp_path: Path) -> None:
    torch.manual_seed(0)
    train(Tiny(), DATA, collate=collate, cfg=CFG, checkpoint_dir=tmp_path)
    path = tmp_path / "last.pt"
    state = load_checkpoint(path)
    assert state["device_type"] == "cpu" and state["step"] == 4
    assert all(t.device.type == "cpu" for t in state["model"].values())
    more = TrainConfig(batch_size=4, lr=0.5, warmup_steps=0, epochs=3)
    # the same device type: resumes from step 4 (two more steps)
    torch.manual_seed(0)
    same = train(Tiny(), DATA, collate=collate, cfg=more, checkpoint_dir=tmp_path, resume=True)
    assert [r["step"] for r in same.history] == [1, 2, 3, 4, 5, 6]
    # a checkpoint written on a GPU
    save_checkpoint(tmp_path, {**load_checkpoint(path), "device_type": "cuda"})
    with pytest.raises(LmlabError, match=r"on cuda and this run is on cpu.*--device cuda"):
        train(Tiny(), DATA, collate=collate, cfg=more, checkpoint_dir=tmp_path, resume=True)


def test_charlm_phase_file_of_another_device_type_is_refused(tmp_path: Path) -> None:
    from lmlab.runs import RunDir
    from lmlab.studies._charlm_train import module_state, trained
    from lmlab.train.checkpoint import read_torch

    run_dir = RunDir.create(tmp_path, "charlm", "t")
    model = torch.nn.Linear(2, 1)
    calls: list[int] = []

    def fit() -> Any:
        from lmlab.train.sampled import StepResult

        calls.append(1)
        return StepResult(losses=torch.zeros(1, 2))

    trained(run_dir, "mlp", *module_state(model), fit, device="cpu")
    path = run_dir.checkpoints_dir / "trained-mlp.pt"
    assert read_torch(path)["device_type"] == "cpu"
    trained(run_dir, "mlp", *module_state(model), fit, device=torch.device("cpu"))
    assert calls == [1]  # kept, not trained again
    with pytest.raises(LmlabError, match=r"trained on cpu and this run is on cuda.*--device cpu"):
        trained(run_dir, "mlp", *module_state(model), fit, device="cuda")


# ------------------------------------------------------------------------- CUDA random states


class FakeCuda:
    """torch.cuda as seen by rng_state/restore_rng, with a record of the calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, initialized: bool, count: int):
        self.calls: list[Any] = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: initialized)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", self.get_all)
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", self.forbidden)
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set_one)
        self.count = count

    def get_all(self) -> list[torch.Tensor]:
        self.calls.append("get_all")
        return [torch.full((4,), i, dtype=torch.uint8) for i in range(self.count)]

    def set_one(self, state: torch.Tensor, device: int) -> None:
        self.calls.append(("set", device, int(state[0])))

    def forbidden(self, *a: Any) -> None:
        raise AssertionError("set_rng_state_all fails on a machine with fewer GPUs")


def test_cuda_states_are_not_read_before_cuda_is_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = FakeCuda(monkeypatch, initialized=False, count=2)
    state = rng_state()
    assert "cuda" not in state and cuda.calls == []  # no CUDA context opened by a CPU run
    restore_rng(state)
    assert cuda.calls == []


def test_cuda_states_saved_per_gpu_once_cuda_is_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = FakeCuda(monkeypatch, initialized=True, count=2)
    state = rng_state()
    assert cuda.calls == ["get_all"] and [int(s[0]) for s in state["cuda"]] == [0, 1]
    restore_rng(state)
    assert cuda.calls[1:] == [("set", 0, 0), ("set", 1, 1)]


def test_fewer_gpus_restore_the_ones_present_and_say_so(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    state = rng_state()
    state["cuda"] = [torch.full((4,), i, dtype=torch.uint8) for i in range(4)]
    cuda = FakeCuda(monkeypatch, initialized=True, count=1)
    restore_rng(state)
    assert cuda.calls == [("set", 0, 0)]
    assert "4 GPUs" in capsys.readouterr().err


# -------------------------------------------------------------------------- deterministic mode


class Seen(Callback):
    def __init__(self) -> None:
        self.modes: list[tuple[bool, str | None]] = []

    def on_step_end(self, state: Any) -> None:
        self.modes.append((torch.are_deterministic_algorithms_enabled(),
                           os.environ.get("CUBLAS_WORKSPACE_CONFIG")))


def test_a_run_trains_in_deterministic_mode_and_restores_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert not torch.are_deterministic_algorithms_enabled()
    seen = Seen()
    train(Tiny(), DATA, collate=collate, cfg=CFG, callbacks=[seen])
    assert seen.modes == [(True, ":4096:8")] * 4
    assert not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    off = Seen()
    train(Tiny(), DATA, collate=collate,
          cfg=TrainConfig(batch_size=4, lr=0.5, warmup_steps=0, deterministic=False),
          callbacks=[off])
    assert off.modes == [(False, None)] * 2


def test_deterministic_keeps_the_users_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with deterministic():
            assert not torch.is_deterministic_algorithms_warn_only_enabled()
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    with pytest.raises(RuntimeError), deterministic():
        raise RuntimeError("boom")
    assert not torch.are_deterministic_algorithms_enabled()


def test_the_ops_lmlab_trains_with_run_in_deterministic_mode_on_the_cpu() -> None:
    """index_add_ (the MLP's embedding gradient), SDPA's backward and the masked
    cross-entropy: none raises under deterministic mode on the CPU."""
    with deterministic():
        g = torch.zeros(2, 5, 3).index_add_(1, torch.tensor([0, 1, 1, 4]), torch.ones(2, 4, 3))
        assert g[:, 1].sum() == 12
        q = torch.randn(1, 2, 4, 8, requires_grad=True)
        torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True).sum().backward()
        logits = torch.randn(4, 5, requires_grad=True)
        torch.nn.functional.cross_entropy(logits, torch.tensor([0, -1, 2, 3]),
                                          ignore_index=-1).backward()
    assert q.grad is not None and logits.grad is not None


def test_core_module_keeps_one_workspace_setting() -> None:
    from lmlab.runtime import CUBLAS_WORKSPACE

    assert CUBLAS_WORKSPACE == ":4096:8" and core_mod.CUBLAS_WORKSPACE is CUBLAS_WORKSPACE


# ---------------------------------------------------------------------------- torchrun backend


def test_backend_fits_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert distributed.backend_for("cpu") == "gloo"
    assert distributed.backend_for("cuda") == "nccl"
    assert distributed.backend_for(torch.device("cuda", 1)) == "nccl"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert distributed.backend_for("cpu") == "gloo"  # a CPU run on a GPU machine
    assert distributed.backend_for("auto") == "nccl"
    assert distributed.backend_for(None) == "nccl"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.backend_for("auto") == "gloo"


def test_setup_joins_gloo_for_a_cpu_run_on_a_gpu_machine(
        monkeypatch: pytest.MonkeyPatch) -> None:
    joined: list[str] = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: joined.append(f"gpu{i}"))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend, rank, world_size: joined.append(backend))
    ctx = distributed.setup("cpu")
    assert joined == ["gloo"] and ctx.backend == "gloo" and ctx.device.type == "cpu"
    ctx = distributed.setup("cuda")
    assert joined[1:] == ["gpu1", "nccl"] and ctx.device == torch.device("cuda", 1)


def test_all_reduce_sum_reduces_on_the_backends_device(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[torch.Tensor] = []

    def fake_reduce(t: torch.Tensor, op: Any) -> None:
        seen.append(t)
        t.mul_(2)  # two ranks with equal values

    monkeypatch.setattr(distributed.dist, "all_reduce", fake_reduce)
    ctx = distributed.DistContext(rank=0, world_size=2, backend="gloo")
    assert distributed.all_reduce_sum([1.5, 2.0], ctx) == [3.0, 4.0]
    assert seen[0].dtype == torch.float64 and seen[0].device.type == "cpu"
