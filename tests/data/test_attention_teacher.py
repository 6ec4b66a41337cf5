"""The teacher of the solvable attention model: attention rows, ω limits, encodings, inputs."""

from __future__ import annotations

import math

import pytest
import torch

from lmlab.data.attention_teacher import (
    AttentionTask,
    positional_encodings,
    sample_group,
    teacher_attention,
)
from lmlab.errors import LmlabError


def test_teacher_rows_sum_to_one_and_omega_limits() -> None:
    task = AttentionTask(d=64)
    data = sample_group(task, n=500, n_test=10, seed=3, dtype=torch.float64)
    A = task.A_tensor()
    h = (data.train.x - positional_encodings(task)) @ data.Q_star * task.scale
    for omega in (0.0, 0.3, 1.0):
        T = teacher_attention(h, omega, A)
        assert torch.allclose(T.sum(-1), torch.ones(500, 2, dtype=torch.float64), atol=1e-12)
        assert (T >= 0).all()
    assert torch.equal(teacher_attention(h, 1.0, A), A.expand(500, 2, 2))   # ω = 1: exactly A
    assert torch.allclose(teacher_attention(h, 0.0, A), data.T_sem, atol=1e-12)
    # the paper's scaling keeps the teacher unsaturated: few rows with a max weight > 0.99
    assert float((data.T_sem.max(-1).values > 0.99).double().mean()) < 0.2


def test_assignment_convention_saturates_the_teacher() -> None:
    # unscaled preactivations: scores ~ σ²d, so at d = 1000 nearly every row is one-hot
    data = sample_group(AttentionTask(d=1000, convention="assignment"), n=500, n_test=10, seed=3)
    assert float((data.T_sem.max(-1).values > 0.99).double().mean()) > 0.9
    p = positional_encodings(AttentionTask(d=64, convention="assignment"))
    assert torch.equal(p[0], torch.ones(64, dtype=torch.float64)) and torch.equal(p[1], -p[0])


def test_positional_encodings_and_inputs() -> None:
    task = AttentionTask(d=100, sigma=0.5)
    p = positional_encodings(task)
    assert torch.allclose(p.norm(dim=1), torch.ones(2, dtype=torch.float64))  # ‖p_ℓ‖ = 1
    assert torch.equal(p[1], -p[0])
    data = sample_group(task, n=4000, n_test=10, seed=0, dtype=torch.float64)
    z = data.train.x - p
    assert float(z.std()) == pytest.approx(0.5, rel=0.02)
    # Gram matrices are the token products: Czx[μ, ℓ, k] = z_ℓ·x_k
    assert torch.allclose(data.train.Czx[7], z[7] @ data.train.x[7].T)


def test_same_seed_same_teacher_and_data() -> None:
    task = AttentionTask(d=20)
    a, b = sample_group(task, 30, 5, seed=9), sample_group(task, 30, 5, seed=9)
    c = sample_group(task, 30, 5, seed=10)
    assert torch.equal(a.Q_star, b.Q_star) and torch.equal(a.train.x, b.train.x)
    assert not torch.equal(a.Q_star, c.Q_star)


@pytest.mark.parametrize("kwargs, match", [
    ({"d": 1}, "task.d"), ({"sigma": 0.0}, "task.sigma"), ({"rank": 0}, "task.rank"),
    ({"A": (0.6, 0.5, 0.4, 0.6)}, "row-stochastic"), ({"A": (1.2, -0.2, 0.4, 0.6)},
                                                       "row-stochastic"),
    ({"A": (0.5, 0.5)}, "2 × 2"),
])
def test_bad_tasks_name_the_field(kwargs: dict, match: str) -> None:
    with pytest.raises(LmlabError, match=match):
        AttentionTask(**kwargs).validate()
    assert math.isfinite(AttentionTask().scale)


def test_no_samples_is_an_error() -> None:
    with pytest.raises(LmlabError, match="at least one training"):
        sample_group(AttentionTask(d=10), n=0, n_test=5, seed=0)


def test_teacher_dataset_shapes_seed_and_teacher_output() -> None:
    from lmlab.data.attention_teacher import teacher_dataset

    task = AttentionTask(d=30, rank=1)
    X, T, W_Q = teacher_dataset(task, n=40, omega=0.3, seed=5)
    assert X.shape == (40, 2, 30) and T.shape == (40, 2, 30) and W_Q.shape == (30, 1)
    X2, T2, W2 = teacher_dataset(task, n=40, omega=0.3, seed=5)
    assert torch.equal(X, X2) and torch.equal(T, T2) and torch.equal(W_Q, W2)
    assert not torch.equal(X, teacher_dataset(task, n=40, omega=0.3, seed=6)[0])
    # the same teacher and first samples as a study cell with that seed
    group = sample_group(task, n=40, n_test=3, seed=5, dtype=torch.float64)
    assert torch.equal(W_Q, group.Q_star)
    assert torch.allclose(X, group.train.x - positional_encodings(task), atol=1e-15)
    # T is the teacher's output on X, written out for one sample: rows (t, 1 − t) mix the tokens
    mu = 7
    h = X[mu] @ W_Q[:, 0] / math.sqrt(30)                               # (h*_1, h*_2)
    t1 = 1 / (1 + math.exp(-float(h[0] * (h[0] - h[1]))))               # softmax row 1
    t2 = 1 / (1 + math.exp(-float(h[1] * (h[0] - h[1]))))               # softmax row 2
    row1 = (0.7 * t1 + 0.3 * 0.6) * X[mu, 0] + (0.7 * (1 - t1) + 0.3 * 0.4) * X[mu, 1]
    row2 = (0.7 * t2 + 0.3 * 0.4) * X[mu, 0] + (0.7 * (1 - t2) + 0.3 * 0.6) * X[mu, 1]
    assert torch.allclose(T[mu], torch.stack([row1, row2]), atol=1e-12)
    with pytest.raises(LmlabError, match="omega"):
        teacher_dataset(task, n=4, omega=1.5, seed=0)
