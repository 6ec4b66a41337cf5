"""The training loop: perplexity by hand, padding never scored, exact resume, NaN guard,
and data parallelism with 2 gloo processes equal to one process with the same global batch."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import transformers

from lmlab.data import CausalLMCollator
from lmlab.errors import LmlabError
from lmlab.train import Callback, TrainConfig, evaluate_lm, train
from lmlab.train.distributed import DistContext

PAD = 0


def tiny_gpt2(seed: int = 0) -> transformers.GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=64,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(cfg)


def examples(n: int = 24, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, 30, (n,), generator=g)
    return [torch.randint(1, 50, (int(k),), generator=g).tolist() for k in lengths]


collate = CausalLMCollator(pad_token_id=PAD)


@torch.no_grad()
def hand_perplexity(model, data: list[list[int]]) -> float:
    """One example at a time, no padding: Σ −log p(x_{t+1} | x_≤t) over all tokens, / count."""
    model.eval()
    total, count = 0.0, 0
    for seq in data:
        ids = torch.tensor([seq])
        logp = torch.log_softmax(model(ids).logits[0, :-1].double(), dim=-1)
        total -= logp[torch.arange(len(seq) - 1), ids[0, 1:]].sum().item()
        count += len(seq) - 1
    return math.exp(total / count)


def test_perplexity_matches_hand_computation_and_ignores_padding() -> None:
    model, data = tiny_gpt2(), examples()
    expected = hand_perplexity(model, data)
    for batch_size in (1, 5, 24):  # more padding with larger batches of unequal lengths
        ev = evaluate_lm(model, data, collate, batch_size=batch_size)
        assert ev.perplexity == pytest.approx(expected, rel=1e-5)
        assert ev.tokens == sum(len(s) - 1 for s in data)


def run_training(tmp: Path | None = None, **kw):
    model = tiny_gpt2()
    cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-3, warmup_steps=2, checkpoint_every=1)
    result = train(model, examples(), collate=collate, cfg=cfg, eval_examples=examples(8, 2),
                   checkpoint_dir=tmp, **kw)
    return model, result


def test_loss_decreases_and_evaluates_each_epoch() -> None:
    _, result = run_training()
    losses = [r["loss"] for r in result.history]
    assert result.steps == 12 and len(losses) == 12
    assert losses[-1] < losses[0]
    assert [e["step"] for e in result.evals] == [6, 12]
    assert result.evals[-1]["perplexity"] == pytest.approx(math.exp(result.evals[-1]["loss"]))


class Interrupt(Callback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, state) -> None:
        if state.step == self.at:
            raise KeyboardInterrupt


def test_resume_continues_exactly(tmp_path: Path) -> None:
    reference_model, reference = run_training()
    with pytest.raises(KeyboardInterrupt):
        run_training(tmp_path, callbacks=[Interrupt(at=7)])
    model, resumed = run_training(tmp_path, resume=True)
    assert [r["loss"] for r in resumed.history] == pytest.approx(
        [r["loss"] for r in reference.history], rel=1e-6)
    for a, b in zip(model.parameters(), reference_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


class Poison(Callback):
    def on_step_end(self, state) -> None:
        if state.step == 3:
            with torch.no_grad():
                state.model.transformer.wte.weight.fill_(float("nan"))


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(LmlabError, match="NaN.*last good checkpoint is kept at"):
        run_training(tmp_path, callbacks=[Poison()])
    state = torch.load(tmp_path / "last.pt", weights_only=True)  # no pickled objects
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_empty_training_data_is_an_error() -> None:
    with pytest.raises(LmlabError, match="empty"):
        train(tiny_gpt2(), [], collate=collate, cfg=TrainConfig())


# --------------------------------------------------------------------- data parallelism


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: dict) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        model = tiny_gpt2()
        cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-3, warmup_steps=2)
        result = train(model, examples(), collate=collate, cfg=cfg, eval_examples=examples(8, 2),
                       ctx=DistContext(rank=rank, world_size=world))
        out[rank] = ([r["loss"] for r in result.history], [e["loss"] for e in result.evals])
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_match_one_process() -> None:
    _, single = run_training()
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    for rank in (0, 1):
        losses, evals = out[rank]
        assert losses == pytest.approx([r["loss"] for r in single.history], rel=1e-5)
        assert evals == pytest.approx([e["loss"] for e in single.evals], rel=1e-5)


class PoisonGradients(Callback):
    """From step 3 on, one weight's gradient is NaN while the loss stays finite."""

    def on_step_end(self, state) -> None:
        if state.step == 3:
            state.model.transformer.wte.weight.register_hook(lambda g: g * float("nan"))


def test_nan_gradients_with_a_finite_loss_are_not_blamed_on_the_learning_rate() -> None:
    with pytest.raises(LmlabError, match="gradient norm became nan at step 4 while the training "
                                         "loss was finite") as err:
        run_training(callbacks=[PoisonGradients()])
    assert "learning rate will not help" in str(err.value)
    assert "lower" not in str(err.value).split(":")[0]


def test_reading_losses_back_every_few_steps_changes_no_number() -> None:
    """A GPU run reads its losses back every few steps: the same rows, bit for bit."""
    _, every_step = run_training()
    cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-3, warmup_steps=2)
    results = [train(tiny_gpt2(), examples(), collate=collate, cfg=cfg,
                     eval_examples=examples(8, 2), read_every=k) for k in (1, 5)]
    for result in results:
        assert result.history == every_step.history and result.evals == every_step.evals


class NaNAt(torch.nn.Module):
    """The tiny GPT-2 whose ``at``-th training forward gives NaN logits."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.inner, self.at, self.calls = tiny_gpt2(), at, 0

    def forward(self, input_ids, attention_mask=None):
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask)
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                out.logits = out.logits * float("nan")
        return out


def test_a_nan_read_late_is_named_by_its_step_and_the_checkpoint_kept_is_good(
        tmp_path: Path) -> None:
    """Read every 5 steps: the NaN of step 8 is found at step 11 and named as step 8; the
    epoch-end checkpoint of step 6 (read back before it was written) is kept, finite."""
    cfg = TrainConfig(epochs=3, batch_size=4, lr=1e-3, warmup_steps=2)
    with pytest.raises(LmlabError, match="became nan at step 8 .*last good checkpoint"):
        train(NaNAt(8), examples(), collate=collate, cfg=cfg, checkpoint_dir=tmp_path,
              read_every=5)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["step"] == 6 and [r["step"] for r in state["history"]] == list(range(1, 7))
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


class Lookup(torch.nn.Module):
    """Logits looked up from the token: a model that runs on the meta device."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(50, 50)

    def forward(self, input_ids, attention_mask=None):
        return type("Out", (), {"logits": self.emb(input_ids)})()


def test_steps_between_read_backs_never_read_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the meta device any read of a value raises: 6 steps with no read-back complete, so
    the step itself (token count, loss, norm, clipping, update) waits for nothing."""
    from lmlab.train import loop

    reads: list[int] = []
    monkeypatch.setattr(loop._FineTune, "read_back", lambda self: reads.append(len(self.unread)))
    model = Lookup().to("meta")
    cfg = TrainConfig(epochs=1, batch_size=2, lr=1e-3, warmup_steps=2, max_steps=6)
    result = train(model, examples(), collate=collate, cfg=cfg, device="meta", read_every=10)
    assert result.steps == 6 and reads == [6]  # read once, at the end, for all six


@pytest.mark.parametrize("precision", ["bf16", "tf32"])
def test_precision(precision: str) -> None:
    """bf16 autocast changes the numbers a little (the forward is in bfloat16); tf32 changes
    nothing on the CPU."""
    _, fp32 = run_training()
    cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-3, warmup_steps=2, precision=precision)
    result = train(tiny_gpt2(), examples(), collate=collate, cfg=cfg,
                   eval_examples=examples(8, 2))
    losses, reference = ([r["loss"] for r in h] for h in (result.history, fp32.history))
    if precision == "tf32":
        assert losses == reference
    else:
        assert losses != reference
        assert losses == pytest.approx(reference, rel=2e-2)
