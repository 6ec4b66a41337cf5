"""Training runs of the induction study: files and schemas, resume, the initial state."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lmlab.data.copying import copy_mask, error_rate
from lmlab.errors import LmlabError
from lmlab.models.rotary_tf import TFModel, load_checkpoint
from lmlab.studies import induction_train
from lmlab.studies.induction_train import ERR_KEYS, TrainSetting, train_setting

TINY = TrainSetting("tiny", pool_size=None, steps=40, save_every=20, eval_every=10,
                    eval_cheap=50, eval_full=100)

AUTHOR_KEYS = """seed vocab_size d_model ff_dim num_heads num_layers linear_attn residual mlp
dropout norm output_norm pos rotary_theta max_seq_len sample_size_test regime distr rep_l rep_h
ood_len_pattern pool_size device schedule fresh_sample label_smoothing lr wd batch_size num_epoch
n_save up_to_first_save ignore_segment ignore_burning out_dir""".split()


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("induction") / "straight"
    return out, train_setting(TINY, out)


def test_files_and_schema(straight: tuple[Path, dict]) -> None:
    out, summary = straight
    names = {p.name for p in out.iterdir()}
    assert names == {"config.json", "err_arr.json", "test.pth", "test_ood.pth",
                     "train_state.pt", "ckpt_0.pt", "ckpt_20.pt", "ckpt_40.pt", "ckpt.pt"}
    config = json.loads((out / "config.json").read_text())
    assert set(AUTHOR_KEYS) <= set(config)
    assert config["num_epoch"] == 40 and config["n_save"] == 2 and config["pool_size"] is None
    assert config["rotary_theta"] == 10000.0 and config["distr"] == "zipf"

    err_arr = json.loads((out / "err_arr.json").read_text())
    assert [e["epoch"] for e in err_arr] == [-1, 9, 19, 29, 39]
    full = {e["epoch"] for e in err_arr if e.get("full")}
    assert full == {-1, 19, 39}  # epoch k - 1 <-> ckpt_k.pt
    for e in err_arr:
        extra = {"full", "err_test_nofloor", "err_ood_nofloor"} if e.get("full") else set()
        assert set(e) == set(ERR_KEYS) | extra
        assert 0.0 <= e["err_test"] <= 1.0 and e["loss_test"] > 0
        assert e["err_test_nofloor" if e.get("full") else "err_test"] <= 1.0
    assert err_arr[0]["loss_train"] is None and err_arr[1]["loss_train"] > 0

    for name, L in (("test.pth", None), ("test_ood.pth", 25)):
        tokens, lens, starts = torch.load(out / name)
        assert tokens.shape == (100, 64) and lens.shape == (100,) and starts.shape == (100, 2)
        assert tokens.dtype == torch.int64
        assert L is None or (lens == L).all()

    train_state = torch.load(out / "train_state.pt", weights_only=True)  # no pickled objects
    assert train_state["step"] == 40 and set(train_state["rng"]["generators"]) == {"train"}
    state = torch.load(out / "ckpt_40.pt")
    assert list(state) == list(TFModel().state_dict())
    assert torch.equal(state["fc.weight"], torch.load(out / "ckpt.pt")["fc.weight"])
    assert summary["steps_done"] == 40 and summary["finished"]
    assert summary["err_test"] == err_arr[-1]["err_test"]


def test_checkpoint_k_matches_entry_k_minus_1(straight: tuple[Path, dict]) -> None:
    out, _ = straight
    err_arr = json.loads((out / "err_arr.json").read_text())
    entry = next(e for e in err_arr if e["epoch"] == 19)
    model = load_checkpoint(out / "ckpt_20.pt")
    tokens, lens, starts = torch.load(out / "test_ood.pth")
    with torch.no_grad():
        logits = model(tokens)[:, :-1]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), tokens[:, 1:].reshape(-1))
    assert loss.item() == pytest.approx(entry["loss_ood"], rel=1e-5)
    mask = copy_mask(starts.numpy(), lens.numpy(), 64)
    err = error_rate(logits.argmax(-1).numpy(), tokens.numpy(), mask)
    assert err == pytest.approx(entry["err_ood"])


def test_initial_state(straight: tuple[Path, dict]) -> None:
    """Spec §7.3: at initialisation ID error ≈ 0.9–1.0 and loss ≈ ln 64."""
    out, _ = straight
    init = json.loads((out / "err_arr.json").read_text())[0]
    assert init["epoch"] == -1
    assert 0.9 <= init["err_test"] <= 1.0
    assert 0.9 <= init["err_ood"] <= 1.0
    assert init["loss_test"] == pytest.approx(math.log(64), abs=0.3)


def test_resume_equals_straight_run(straight: tuple[Path, dict], tmp_path: Path) -> None:
    out_straight, _ = straight
    out = tmp_path / "split"
    first = train_setting(TINY, out, stop_after=20)
    assert first["steps_done"] == 20 and not first["finished"]
    assert not (out / "ckpt_40.pt").exists() and not (out / "ckpt.pt").exists()
    second = train_setting(TINY, out)
    assert second["start_step"] == 20 and second["steps_done"] == 40
    a, b = torch.load(out_straight / "ckpt_40.pt"), torch.load(out / "ckpt_40.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (json.loads((out / "err_arr.json").read_text())
            == json.loads((out_straight / "err_arr.json").read_text()))
    # A finished run is not trained again.
    again = train_setting(TINY, out)
    assert again["start_step"] == again["steps_done"] == 40


def test_resume_after_stop_between_checkpoints(tmp_path: Path) -> None:
    setting = TrainSetting("t", pool_size=7, steps=10, save_every=5, eval_every=2,
                           eval_cheap=10, eval_full=20)
    straight = train_setting(setting, tmp_path / "a")
    train_setting(setting, tmp_path / "b", stop_after=8)  # steps 6..8 are lost
    assert max(e["epoch"] for e in json.loads((tmp_path / "b/err_arr.json").read_text())) == 7
    resumed = train_setting(setting, tmp_path / "b")
    assert resumed["start_step"] == 5
    assert resumed["err_ood"] == straight["err_ood"]
    a, b = torch.load(tmp_path / "a/ckpt.pt"), torch.load(tmp_path / "b/ckpt.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_another_setting_is_refused(straight: tuple[Path, dict]) -> None:
    out, _ = straight
    with pytest.raises(LmlabError, match="another setting.*pool_size"):
        train_setting(TrainSetting("tiny", pool_size=100, steps=40, save_every=20,
                                   eval_every=10, eval_cheap=50, eval_full=100), out)


def test_pool_setting_uses_pool_for_id_test(tmp_path: Path) -> None:
    setting = TrainSetting("p", pool_size=3, steps=2, save_every=2, eval_cheap=10,
                           eval_full=60)
    train_setting(setting, tmp_path)
    tokens, lens, starts = torch.load(tmp_path / "test.pth")
    segments = {tuple(x[a : a + L].tolist()) for x, (a, _), L in zip(tokens, starts, lens,
                                                                      strict=True)}
    assert len(segments) == 3


def test_constant_lr_quirk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []
    step = torch.optim.AdamW.step

    def record(self: torch.optim.AdamW, *args: object, **kwargs: object) -> object:
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", record)
    base = dict(pool_size=None, steps=7, save_every=7, eval_cheap=5, eval_full=5)
    train_setting(TrainSetting("q", **base), tmp_path / "q")  # type: ignore[arg-type]
    assert seen == pytest.approx([1e-3 / 3] * 5 + [1e-3] * 2)
    seen.clear()
    train_setting(TrainSetting("n", constant_lr_quirk=False, **base),  # type: ignore[arg-type]
                  tmp_path / "n")
    assert seen == pytest.approx([1e-3] * 7)


def test_nan_loss_names_the_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(TFModel):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            out = super().forward(tokens)
            return out * float("nan") if self.training else out

    monkeypatch.setattr(induction_train, "TFModel", Broken)
    with pytest.raises(LmlabError, match="of setting nan became nan at step 1 .*; lower lr"):
        train_setting(TrainSetting("nan", pool_size=None, steps=2, save_every=2, eval_cheap=5,
                                   eval_full=5), tmp_path)


@pytest.mark.parametrize(
    ("change", "field"),
    [({"save_every": 7}, "save_every"), ({"eval_cheap": 500}, "eval_cheap"),
     ({"lr": -1.0}, "lr"), ({"pool_size": 0}, "task.pool_size"), ({"steps": 0}, "steps"),
     ({"num_layers": 0}, "num_layers")],
)
def test_bad_setting_names_the_field(change: dict, field: str, tmp_path: Path) -> None:
    kwargs = dict(name="bad", pool_size=None, steps=40, save_every=20, eval_cheap=50,
                  eval_full=100) | change
    with pytest.raises(LmlabError, match=field):
        train_setting(TrainSetting(**kwargs), tmp_path)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())


def test_threads_restored(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    train_setting(TrainSetting("t", pool_size=None, steps=1, save_every=1, eval_cheap=5,
                               eval_full=5), tmp_path)
    assert torch.get_num_threads() == before
    assert np.isfinite(json.loads((tmp_path / "err_arr.json").read_text())[-1]["loss_ood"])


def test_resume_without_its_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    setting = TrainSetting("m", pool_size=None, steps=4, save_every=2, eval_cheap=5,
                           eval_full=5)
    train_setting(setting, tmp_path, stop_after=2)
    (tmp_path / "ckpt_2.pt").unlink()
    with pytest.raises(LmlabError, match="cannot resume .* at step 2"):
        train_setting(setting, tmp_path)


def test_a_train_state_of_the_older_layout_is_a_clear_error(tmp_path: Path) -> None:
    setting = TrainSetting("o", pool_size=None, steps=4, save_every=2, eval_cheap=5,
                           eval_full=5)
    train_setting(setting, tmp_path, stop_after=2)
    state = torch.load(tmp_path / "train_state.pt")
    old = {k: v for k, v in state.items() if k != "rng"}
    torch.save({**old, "numpy_rng": {}, "torch_rng": torch.get_rng_state()},
               tmp_path / "train_state.pt")
    with pytest.raises(LmlabError, match=r"train_state.pt lacks rng: .*delete it to start over"):
        train_setting(setting, tmp_path)


AUTHORS = TrainSetting("a", pool_size=None, steps=20, save_every=10, eval_every=1,
                       eval_cheap=10, eval_full=20, err_layout="authors")


def test_the_authors_dense_layout(tmp_path: Path) -> None:
    """err_layout='authors': err_arr.json is the authors' list of one record per step with
    exactly their keys (err_arr[k - 1] <-> ckpt_k.pt); the full evaluations go to err_full.json;
    a split run resumes to the same files."""
    from lmlab.studies._induction_measure import read_errors

    straight = tmp_path / "straight"
    train_setting(AUTHORS, straight)
    dense = json.loads((straight / "err_arr.json").read_text())
    assert [e["epoch"] for e in dense] == list(range(20))
    assert all(list(e) == list(ERR_KEYS) for e in dense)
    assert all(isinstance(e[k], float) for e in dense for k in ERR_KEYS[1:])
    full = json.loads((straight / "err_full.json").read_text())
    assert [e["epoch"] for e in full] == [-1, 9, 19]
    assert all(e["full"] and "err_ood_nofloor" in e for e in full)
    for e in full[1:]:                     # the checkpoint records are the full evaluations
        assert dense[e["epoch"]] == {k: e[k] for k in ERR_KEYS}
    assert json.loads((straight / "config.json").read_text())["err_layout"] == "authors"
    errors, problem = read_errors(straight)
    assert problem is None and len(errors) == 21
    assert errors.loc[errors["full"], "epoch"].tolist() == [-1, 9, 19]

    split = tmp_path / "split"
    train_setting(AUTHORS, split, stop_after=10)
    assert [e["epoch"] for e in json.loads((split / "err_arr.json").read_text())] == list(
        range(10))
    train_setting(AUTHORS, split)
    for name in ("err_arr.json", "err_full.json"):
        assert json.loads((split / name).read_text()) == json.loads((straight / name).read_text())


def test_the_authors_layout_needs_a_record_per_step(tmp_path: Path) -> None:
    import dataclasses

    with pytest.raises(LmlabError, match="eval_every=1"):
        train_setting(dataclasses.replace(AUTHORS, eval_every=2), tmp_path)
    assert "err_layout" not in json.dumps(induction_train.run_config(TINY, tmp_path))


def test_training_runs_in_deterministic_mode_and_restores_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every step runs under torch's deterministic algorithms (a resume on a GPU continues
    bitwise); the mode is off again after."""
    modes: list[bool] = []
    step = induction_train._Run.train_step

    def recording(self, at):  # type: ignore[no-untyped-def]
        modes.append(torch.are_deterministic_algorithms_enabled())
        return step(self, at)

    monkeypatch.setattr(induction_train._Run, "train_step", recording)
    assert not torch.are_deterministic_algorithms_enabled()
    train_setting(TrainSetting("tiny", pool_size=None, steps=3, save_every=3, eval_every=3,
                               eval_cheap=10, eval_full=20), tmp_path / "run")
    assert modes == [True, True, True]
    assert not torch.are_deterministic_algorithms_enabled()
