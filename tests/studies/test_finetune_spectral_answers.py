"""The homework's answers of finetune-spectral, on hand-made tables with known answers."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import transformers

from lmlab.runs import Report
from lmlab.studies import finetune_spectral as fs
from lmlab.studies._finetune_answers import (
    ANSWER_KEYS,
    answer_sentences,
    homework_answers,
    mean_train_loss,
    trainable_params,
)


def stages(alpha: tuple[float, float], ppl: tuple[float, float]) -> pd.DataFrame:
    return pd.DataFrame({"stage": ["pre-trained", "fine-tuned"], "mean_alpha": list(alpha),
                         "perplexity": list(ppl), "test_loss": [math.log(p) for p in ppl]})


DELTA = pd.DataFrame({"layer_id": [1, 2, 3, 4, 5],
                      "longname": ["h.0.q", "h.0.k", "h.1.q", "h.1.k", "h.2.q"],
                      "delta": [0.1, -0.4, 0.3, -0.05, 0.4]})
DELTA = DELTA.assign(alpha_pre=3.0, alpha_post=3.0 + DELTA["delta"],
                     kind=DELTA["longname"].str[-1])  # the columns interpret() reads


@pytest.mark.parametrize(("alpha", "ppl", "before", "after", "same"), [
    ((1.5, 3.0), (10.0, 12.0), False, True, True),     # both rose
    ((7.0, 6.0), (10.0, 8.0), False, True, True),      # both fell; 6 is inside (inclusive)
    ((2.0, 1.99), (10.0, 8.0), True, False, True),     # 2 is inside, 1.99 not
    ((3.0, 3.5), (10.0, 9.0), True, True, False),      # α rose, perplexity fell
    ((6.5, 6.2), (20.0, 21.0), False, False, False),   # α fell, perplexity rose
    ((3.0, 3.0), (10.0, 9.0), True, True, None),       # α did not move
    ((float("nan"), 3.0), (10.0, 9.0), None, True, None),  # no fit before
])
def test_band_and_direction(alpha: tuple[float, float], ppl: tuple[float, float],
                            before: bool | None, after: bool | None, same: bool | None) -> None:
    a = homework_answers(stages(alpha, ppl), DELTA)
    assert set(a) == set(ANSWER_KEYS)
    assert a["alpha_mean_in_2_6_before"] is before
    assert a["alpha_mean_in_2_6_after"] is after
    assert a["alpha_ppl_same_direction"] is same


def test_top_layers_by_absolute_delta_with_sign() -> None:
    a = homework_answers(stages((3, 3.1), (10, 9)), DELTA)
    # by hand: |Δ| = 0.1, 0.4, 0.3, 0.05, 0.4 -> the two 0.4 (shallower first), then 0.3
    assert a["top_delta_alpha_layers"] == ["h.0.k", "h.2.q", "h.1.q"]
    assert a["top_delta_alpha"] == [-0.4, 0.4, 0.3]
    assert homework_answers(stages((3, 3.1), (10, 9)), DELTA.head(2))["top_delta_alpha"] == [
        -0.4, 0.1]  # fewer than 3 layers: all of them
    empty = homework_answers(stages((3, 3.1), (10, 9)), DELTA.head(0))
    assert empty["top_delta_alpha_layers"] == [] and empty["top_delta_alpha"] == []


def test_mean_train_loss_is_the_mean_of_the_step_losses() -> None:
    history = [{"kind": "train", "step": i + 1, "loss": v} for i, v in
               enumerate([4.0, 3.5, 3.25, 2.25])]
    history.insert(2, {"kind": "eval", "step": 2, "loss": 100.0})  # not a training step
    assert mean_train_loss(history) == pytest.approx((4.0 + 3.5 + 3.25 + 2.25) / 4)
    assert mean_train_loss([]) is None


def test_trainable_params_by_the_gpt2_formula() -> None:
    V, P, d, L = 50, 16, 8, 2
    cfg = transformers.GPT2Config(n_layer=L, n_embd=d, n_head=2, n_positions=P, vocab_size=V)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg)
    per_block = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * 4 * d + 4 * d) + (
        4 * d * d + d)
    expected = V * d + P * d + L * per_block + 2 * d  # lm_head is tied to wte: counted once
    assert trainable_params(model) == expected
    model.transformer.wpe.weight.requires_grad_(False)
    assert trainable_params(model) == expected - P * d


def _result(alpha: tuple[float, float], ppl: tuple[float, float],
            summary: dict[str, object]) -> fs.Result:
    empty = pd.DataFrame()
    history = [{"kind": "train", "step": 1, "loss": 3.0}, {"kind": "train", "step": 2, "loss": 2.0}]
    base = {"n_train": 32, "n_test": 8, "data_source": "hand-made", "steps": 2,
            "mean_alpha_pre": alpha[0], "mean_alpha_post": alpha[1]}
    return fs.Result(fs.Config(), empty, empty, empty, empty, DELTA, stages(alpha, ppl), history,
                     [], {**base, **summary})


def _text(rep: Report) -> str:
    return "\n".join(str(b.get("markdown", b.get("text", ""))) for b in rep.to_blocks())


def test_report_states_the_answers() -> None:
    text = _text(fs.report(_result((6.4, 5.9), (27.1, 20.9), {"params": 1234}), {}))
    assert "The homework's questions" in text
    assert "1,234 trainable parameters" in text
    assert "over its 2 steps" in text and "is 2.5000" in text
    assert "Before fine-tuning: no, 6.400 > 6; after: yes, 5.900." in text
    assert ("h.0.k (-0.400, down: heavier tail), h.2.q (+0.400, up: lighter tail), "
            "h.1.q (+0.300, up: lighter tail)") in text
    assert "Mean α fell by 0.500 and perplexity fell by 6.200" in text
    assert "they moved the same way" in text

    text = _text(fs.report(_result((1.5, 1.8), (10.0, 9.0), {}), {}))
    assert "Before fine-tuning: no, 1.500 < 2; after: no, 1.800 < 2." in text
    assert "Mean α rose by 0.300 and perplexity fell by 1.000" in text
    assert "they moved in opposite directions" in text
    assert "trainable parameters" not in text  # an old run without `params`


def test_sentences_without_steps_or_fits() -> None:
    lines = answer_sentences(stages((float("nan"), 3.0), (10, 9)), DELTA.head(0), [])
    assert lines[0] == ("Is the mean α inside 2–6 (Q1b)? Before fine-tuning: no fit; "
                        "after: yes, 3.000.")
    assert "No layer had a power-law fit" in lines[1] and "cannot be told" in lines[2]


def test_summary_schema_lists_the_answers() -> None:
    keys = {k.key for k in fs.SUMMARY}
    assert {"params", "train_loss_mean", *ANSWER_KEYS} <= keys
    good = {k.key: None for k in fs.SUMMARY} | homework_answers(stages((3, 4), (9, 8)), DELTA)
    assert fs.SUMMARY.problems(good) == []
    assert fs.SUMMARY.problems({**good, "alpha_ppl_same_direction": "yes"}) == [
        "summary key 'alpha_ppl_same_direction' is str, expected bool"]
