"""The device plumbing of the attention-phase and induction studies, checked on the CPU: the
device reaches the trainers, the cells and the sweep; the loops read nothing back from the
device between checks (a ``meta`` device, which has no data, would fail at any host read);
``config.json`` records the device; cuda is no longer refused before CUDA itself is needed."""

from __future__ import annotations

import json
import pickle
import sys
import types
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from lmlab.data.attention_teacher import AttentionTask, sample_group
from lmlab.errors import LmlabError
from lmlab.models import attention_student
from lmlab.models.attention_student import GDConfig, StudentSpec, train_students
from lmlab.studies import attention_phase, induction, induction_train
from lmlab.studies._attention_phase_cells import Cell, cell_key
from lmlab.studies.induction_train import TrainSetting, run_config, train_setting
from lmlab.sweep import SweepConfig
from lmlab.sweep import cell_key as default_key
from lmlab.sweep._backends import _open_pool

_SPECS = [StudentSpec(n=60, omega=0.3, init=i) for i in ("semantic", "positional")]


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    return sample_group(AttentionTask(d=40), n=60, n_test=200, seed=0)


def test_attention_trainer_runs_where_asked(data) -> None:  # type: ignore[no-untyped-def]
    res = train_students(data, _SPECS, GDConfig(steps=20), device=torch.device("cpu"))
    assert res.Q.device.type == "cpu"
    same = train_students(data, _SPECS, GDConfig(steps=20))  # the default is the CPU
    assert torch.equal(res.Q, same.Q)


def test_attention_loop_reads_back_only_at_checks(data, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """On ``meta`` any .item()/bool()/.cpu() in the loop would raise; only the finiteness
    check every 100 steps (and at the end) reads back, and it sees the flags on the device."""
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(attention_student, "_check_finite_steps",
                        lambda finite, done, lr: calls.append((finite.device.type, done)))
    with pytest.raises(NotImplementedError, match="meta"):  # the evaluation reads numbers
        train_students(data, _SPECS, GDConfig(steps=250, momentum=0.9), device="meta")
    assert calls == [("meta", 100), ("meta", 200), ("meta", 250)]


def test_attention_nan_names_its_first_step(data) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LmlabError, match=r"NaN/Inf at step \d+; lower gd.lr"):
        train_students(data, _SPECS[:1], GDConfig(steps=150, lr=1e6), dtype=torch.float64)


def test_cells_carry_the_device_and_cpu_keys_do_not_change() -> None:
    cfg = attention_phase.Config.quick()
    assert {c.device for c in attention_phase.cells_of(cfg)} == {"cpu"}
    cells = attention_phase.cells_of(cfg, "cuda:0")
    assert len(cells) == 8 * 4 and {c.device for c in cells} == {"cuda:0"}
    cpu = Cell(AttentionTask(d=20), GDConfig(steps=5), (10, 20), 0.3, 0, 50, ("semantic",),
               1e-4, "float64")
    old = {k: v for k, v in asdict(cpu).items()
           if k not in ("device", "cv_lambdas", "cv_holdout")}
    assert cell_key(cpu) == default_key(old)  # stores written before the device existed
    gpu = replace(cpu, device="cuda")
    assert cell_key(gpu) != cell_key(cpu)
    assert cell_key(gpu) == cell_key(replace(cpu, device="cuda:1"))  # the type counts


def test_simulate_cell_passes_its_device(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    seen: list[object] = []
    real = attention_student.train_students

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs.get("device"))
        return real(*args, **kwargs)

    monkeypatch.setattr(attention_student, "train_students", spy)
    from lmlab.studies._attention_phase_cells import simulate_cell

    cell = Cell(AttentionTask(d=20), GDConfig(steps=5), (10,), 0.3, 0, 50, ("semantic",), 1e-4,
                "float64", device="cpu")
    assert len(simulate_cell(cell)) == 1 and seen == ["cpu"]


@pytest.mark.parametrize("study", ["attention-phase", "induction"])
def test_cuda_is_not_refused_before_cuda_is_needed(study: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from lmlab.studies.runner import check_study

    if not torch.cuda.is_available():  # here: the runtime's one-line error, nothing else
        with pytest.raises(LmlabError, match="CUDA was requested but is not available"):
            check_study(study, overrides=["device=cuda"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    cfg, dev = check_study(study, overrides=["device=cuda"])
    assert cfg.device == "cuda" and dev.type == "cuda"
    cfg, dev = check_study(study, overrides=["device=auto"])
    assert dev.type == "cuda"


def test_induction_cells_carry_the_device(tmp_path: Path) -> None:
    cfg = induction.Config.quick()
    cells = induction.cells_of(cfg, tmp_path, "cuda")
    assert [c.device for c in cells] == ["cuda", "cuda"]
    cpu = induction.cells_of(cfg, tmp_path)[0]
    assert cpu.device == "cpu"
    old = {"setting": asdict(cpu.setting), "out_dir": cpu.out_dir}
    assert induction.train_cell_key(cpu) == default_key(old)
    assert induction.train_cell_key(cells[0]) != induction.train_cell_key(cpu)


def _tiny(**kw: object) -> TrainSetting:
    base: dict[str, object] = dict(pool_size=None, steps=6, save_every=6, eval_every=3,
                                   eval_cheap=5, eval_full=10)
    return TrainSetting("tiny", **(base | kw))  # type: ignore[arg-type]


def test_induction_trainer_uses_the_device_and_records_it(tmp_path: Path,
                                                          monkeypatch) -> None:  # type: ignore[no-untyped-def]
    seen: list[tuple[str, str]] = []
    checks: list[tuple[int, int]] = []

    class Spy(induction_train.TFModel):  # type: ignore[misc, name-defined]
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            seen.append((tokens.device.type, next(self.parameters()).device.type))
            return super().forward(tokens)

    real_check = induction_train.check_finite

    def count(losses, step, **kw):  # type: ignore[no-untyped-def]
        checks.append((int(losses.numel()), step))
        return real_check(losses, step, **kw)

    monkeypatch.setattr(induction_train, "TFModel", Spy)
    monkeypatch.setattr(induction_train, "check_finite", count)
    train_setting(_tiny(), tmp_path, device=torch.device("cpu"))
    assert seen and set(seen) == {("cpu", "cpu")}
    assert checks == [(3, 1), (3, 4)]  # the losses are checked at evaluations, not every step
    assert json.loads((tmp_path / "config.json").read_text())["device"] == "cpu"
    weights = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert {t.device.type for t in weights.values()} == {"cpu"}


def test_induction_auto_records_the_device_used(tmp_path: Path) -> None:
    train_setting(_tiny(steps=3, save_every=3), tmp_path, device="auto")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert json.loads((tmp_path / "config.json").read_text())["device"] == want
    assert run_config(_tiny(), tmp_path, "cuda:1")["device"] == "cuda"


def test_induction_resume_on_another_device_type_is_refused(tmp_path: Path) -> None:
    from lmlab.train.checkpoint import load_checkpoint, save_checkpoint

    train_setting(_tiny(steps=4, save_every=2, eval_every=2), tmp_path, stop_after=2)
    state = load_checkpoint(tmp_path / "train_state.pt")
    state["config"]["device"] = "cuda"  # as a run begun on a GPU would have written it
    save_checkpoint(tmp_path, state, name="train_state.pt")
    with pytest.raises(LmlabError, match="was trained on cuda and this run is on cpu"):
        train_setting(_tiny(steps=4, save_every=2, eval_every=2), tmp_path)


def test_induction_unavailable_cuda_is_one_line(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(LmlabError, match="CUDA was requested but is not available"):
        train_setting(_tiny(), tmp_path, device="cuda")
    assert not any(tmp_path.iterdir())


def test_process_pool_on_cuda_has_one_worker() -> None:
    cfg = SweepConfig(backend="process", workers=4)
    with _open_pool(abs, cfg, 8, "cuda") as pool:
        assert pool.executor._max_workers == 1  # type: ignore[attr-defined]
    with _open_pool(abs, cfg, 8, "cpu") as pool:
        assert pool.executor._max_workers == 4  # type: ignore[attr-defined]


@pytest.mark.parametrize(("device", "share"), [("cuda", 0.25), ("cpu", 0.0), (None, 0.0)])
def test_ray_tasks_ask_for_a_gpu_share_on_cuda(device: str | None, share: float,
                                               monkeypatch) -> None:  # type: ignore[no-untyped-def]
    asked: dict[str, float] = {}
    fake = types.ModuleType("ray")
    fake.cloudpickle = pickle  # type: ignore[attr-defined]
    fake.is_initialized = lambda: True  # type: ignore[attr-defined]
    fake.put = lambda x: x  # type: ignore[attr-defined]
    fake.cluster_resources = lambda: {"CPU": 4}  # type: ignore[attr-defined]

    def remote(**kw: float):  # type: ignore[no-untyped-def]
        asked.update(kw)
        return lambda f: f

    fake.remote = remote  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray", fake)
    with _open_pool(abs, SweepConfig(backend="ray", workers=4), 8, device):
        pass
    assert asked == {"num_cpus": 1, "num_gpus": share}
