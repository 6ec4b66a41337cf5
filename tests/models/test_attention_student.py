"""The attention students: the Gram-matrix loss is the direct loss, one trainer for many
students, momentum reaches plain GD's minimum, and the linear baseline."""

from __future__ import annotations

import pytest
import torch

from lmlab.data.attention_teacher import AttentionTask, positional_encodings, sample_group
from lmlab.errors import LmlabError
from lmlab.models.attention_student import (
    GDConfig,
    StudentSpec,
    initial_query,
    reference_loss,
    train_students,
)

TASK = AttentionTask(d=40)


@pytest.fixture(scope="module")
def data():
    return sample_group(TASK, n=80, n_test=300, seed=1, dtype=torch.float64)


def targets(data, omega: float, split: str = "train", n: int | None = None) -> torch.Tensor:
    s = getattr(data, split)
    z = s.x - positional_encodings(TASK)
    T = (1 - omega) * s.T_sem + omega * TASK.A_tensor()
    return (T @ z)[:n]


def test_loss_and_first_step_equal_the_direct_formula(data) -> None:
    specs = [StudentSpec(n=n, omega=w, init=i) for n in (30, 80) for w in (0.0, 0.3, 1.0)
             for i in ("semantic", "positional")]
    gd = GDConfig(steps=1, average_last=1, lr=0.05, lam=0.01)
    res = train_students(data, specs, gd, dtype=torch.float64)
    for m, s in enumerate(specs):
        Q0 = initial_query(data, s.init).requires_grad_(True)
        x, y = data.train.x[:s.n], targets(data, s.omega, n=s.n)
        loss = reference_loss(Q0, x, y, gd.lam, TASK.scale)
        assert res.table["eps_t"][m] == pytest.approx(loss.item() / TASK.d, rel=1e-10)
        loss.backward()
        Q1 = (Q0 - gd.lr * Q0.grad).detach()
        assert torch.allclose(res.Q[:, m:m + 1], Q1, atol=1e-12)   # the same GD step


def test_test_error_is_the_direct_mean_on_fresh_samples(data) -> None:
    specs = [StudentSpec(n=80, omega=0.3, init="semantic")]
    res = train_students(data, specs, GDConfig(steps=20), dtype=torch.float64)
    y = targets(data, 0.3, "test")
    out = torch.softmax((data.test.x @ res.Q * TASK.scale) @ (data.test.x @ res.Q * TASK.scale)
                        .transpose(-1, -2), -1) @ data.test.x
    direct = float(((y - out) ** 2).sum() / (2 * TASK.d) / y.shape[0])
    assert res.table["eps_g"][0] == pytest.approx(direct, rel=1e-9)


def test_students_trained_together_equal_students_trained_alone(data) -> None:
    specs = [StudentSpec(n=30, omega=0.2, init="positional"),
             StudentSpec(n=80, omega=0.4, init="semantic")]
    gd = GDConfig(steps=30, momentum=0.5)
    together = train_students(data, specs, gd, dtype=torch.float64).table
    for m, s in enumerate(specs):
        alone = train_students(data, [s], gd, dtype=torch.float64).table
        for col in ("eps_t", "eps_g", "m", "theta"):
            assert together[col][m] == pytest.approx(alone[col][0], rel=1e-9)


def test_momentum_reaches_the_minimum_of_plain_gradient_descent(data) -> None:
    specs = [StudentSpec(n=80, omega=0.3, init=i) for i in ("semantic", "positional")]
    gd = train_students(data, specs, GDConfig(steps=4000), dtype=torch.float64).table
    hb = train_students(data, specs, GDConfig(steps=400, momentum=0.9), dtype=torch.float64).table
    for col in ("eps_t", "eps_g"):  # errors are O(1e-3): agreement to a few 1e-6
        assert (gd[col] - hb[col]).abs().max() < 5e-6
    for col in ("m", "theta_emp"):
        assert (gd[col] - hb[col]).abs().max() < 2e-3
    assert hb["grad_norm"].max() < 1e-3


def test_order_parameters_of_the_initialisations(data) -> None:
    specs = [StudentSpec(n=80, omega=0.3, init=i) for i in ("semantic", "positional")]
    t = train_students(data, specs, GDConfig(steps=1, average_last=1, lr=1e-12),
                       dtype=torch.float64).table
    qstar = float(data.Q_star.pow(2).sum()) / TASK.d
    assert t["theta_emp"][0] == pytest.approx(qstar, rel=1e-6)   # Q0 = Q*
    assert t["m"][1] == pytest.approx(1 / TASK.d ** 0.5, rel=1e-6)  # Q0 = 1/√d: |1·Q|/d
    assert t["q"][0] == pytest.approx(TASK.sigma ** 2 * qstar, rel=1e-6)


def test_bad_students_are_errors(data) -> None:
    with pytest.raises(LmlabError, match="1 ≤ n ≤ 80"):
        train_students(data, [StudentSpec(n=0, omega=0.3, init="semantic")], GDConfig(steps=1))
    with pytest.raises(LmlabError, match="omega"):
        train_students(data, [StudentSpec(n=5, omega=1.5, init="semantic")], GDConfig(steps=1))
    with pytest.raises(LmlabError, match="lam"):
        GDConfig(lam=-1.0).validate()
    with pytest.raises(LmlabError, match="unknown init"):
        initial_query(data, "ones")
    with pytest.raises(LmlabError, match="NaN"):
        train_students(data, [StudentSpec(n=80, omega=0.3, init="semantic")],
                       GDConfig(steps=200, lr=1e6), dtype=torch.float64)


# A hand computation at d = 4, L = 2: z_1 = e_1, z_2 = e_2, Q = Q* = (2, 0, 0, 0).
# Paper: p = ±(½, ½, ½, ½), so x_1 = (1.5, .5, .5, .5), x_2 = (−.5, .5, −.5, −.5); the student's
# h = x·Q/√4 = (1.5, −0.5), scores h hᵀ, rows a_1 = sigmoid(1.5·2) = 0.952574,
# a_2 = sigmoid(−0.5·2) = 0.268941. Assignment: p = ±(1, 1, 1, 1), x_1 = (2, 1, 1, 1),
# x_2 = (−1, 0, −1, −1); the student keeps the 1/√4: h = (2, −1), a_1 = sigmoid(6) = 0.997527,
# a_2 = sigmoid(−3) = 0.047426. (Without the 1/√d, h = (4, −2) and a_1 = sigmoid(24) ≈ 1.)
HAND_OUTPUT = {
    "paper": [[1.405148, 0.5, 0.452574, 0.452574], [0.037883, 0.5, -0.231059, -0.231059]],
    "assignment": [[1.992582, 0.997527, 0.995055, 0.995055],
                   [-0.857722, 0.047426, -0.905148, -0.905148]],
}
# The teacher sees z with h* = z·Q*·scale: paper h* = (1, 0), t_1 = sigmoid(1) = 0.731059;
# assignment (no 1/√d) h* = (2, 0), t_1 = sigmoid(4) = 0.982014; row 2 is (½, ½) in both.
# ω = 0, λ = 0.01: ε_t = [Σ‖y − f‖²/8 + 0.01/2·‖Q‖²]/4 with Σ‖y − f‖² = 1.237760 (paper) and
# 7.647837 (assignment).
HAND_EPS_T = {"paper": (1.237760 / 8 + 0.02) / 4, "assignment": (7.647837 / 8 + 0.02) / 4}


def _hand_data(convention: str):
    from lmlab.data.attention_teacher import GroupData, Split

    task = AttentionTask(d=4, convention=convention)  # type: ignore[arg-type]
    z = torch.eye(4, dtype=torch.float64)[:2].unsqueeze(0)             # (1, 2, 4)
    x = z + positional_encodings(task)
    Q_star = torch.tensor([[2.0], [0.0], [0.0], [0.0]], dtype=torch.float64)
    h_star = (z @ Q_star) * task.scale
    T_sem = torch.softmax(h_star @ h_star.transpose(-1, -2), -1)
    split = Split(x, T_sem, x @ x.transpose(-1, -2), z @ x.transpose(-1, -2),
                  z @ z.transpose(-1, -2))
    return task, x, GroupData(task, Q_star, split, split)


@pytest.mark.parametrize("convention", ["paper", "assignment"])
def test_student_output_and_loss_by_hand(convention: str) -> None:
    from lmlab.models.attention_student import student_output

    task, x, data = _hand_data(convention)
    assert task.student_scale == 0.5                                    # 1/√4 in both
    Q = torch.tensor([[2.0], [0.0], [0.0], [0.0]], dtype=torch.float64)
    out = student_output(Q, x, task.student_scale)[0]
    assert torch.allclose(out, torch.tensor(HAND_OUTPUT[convention], dtype=torch.float64),
                          atol=2e-6)
    # the trainer scales the student the same way: its first loss is the hand value
    res = train_students(data, [StudentSpec(n=1, omega=0.0, init="semantic")],
                         GDConfig(steps=1, average_last=1, lam=0.01), dtype=torch.float64)
    assert res.table["eps_t"][0] == pytest.approx(HAND_EPS_T[convention], abs=1e-6)


def test_per_student_lambda_and_held_out_validation_error(data) -> None:
    specs = [StudentSpec(n=50, omega=0.3, init="semantic", lam=lam, n_val=30)
             for lam in (0.0, 0.1)]
    res = train_students(data, specs, GDConfig(steps=3, lam=0.01), dtype=torch.float64)
    assert res.table["lam"].tolist() == [0.0, 0.1]
    for m in range(len(specs)):                      # the direct mean on samples 50..79
        Q = res.Q[:, m:m + 1]
        x, y = data.train.x[50:80], targets(data, 0.3)[50:80]
        out = torch.softmax((x @ Q * TASK.student_scale) @ (x @ Q * TASK.student_scale)
                            .transpose(-1, -2), -1) @ x
        direct = float(((y - out) ** 2).sum() / (2 * TASK.d) / 30)
        assert res.table["eps_val"][m] == pytest.approx(direct, rel=1e-9)
    # a larger λ is a larger first-step loss by exactly λ/2‖Q*‖²/d
    one = train_students(data, specs, GDConfig(steps=1, average_last=1), dtype=torch.float64)
    extra = 0.1 / 2 * float((data.Q_star ** 2).sum()) / TASK.d
    assert one.table["eps_t"][1] - one.table["eps_t"][0] == pytest.approx(extra, rel=1e-9)
    with pytest.raises(LmlabError, match="n_val"):
        train_students(data, [StudentSpec(n=70, omega=0.3, init="semantic", n_val=20)],
                       GDConfig(steps=1))
