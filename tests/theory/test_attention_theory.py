"""Known answers for the asymptotic theory of the tied rank-1 attention model.

Reference values are the authors' (Cui, Behrens, Krzakala, Zdeborová 2024) as quoted in
``/work/shared/specs/attention-phase.md``: the tabulated fixed points at ω = 0.3, α = 2
(``theory/*.csv``), the published lines α_c(ω) and α_l(ω), and the exact linear baseline.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lmlab.errors import LmlabError
from lmlab.theory import (
    FixedPoint,
    TheoryParams,
    _prox,
    _quadrature,
    alpha_c,
    alpha_l,
    attention,
    linear_baseline,
    solve_branch,
    solve_curve,
)

A_C = {0.0: 0.548, 0.1: 0.707, 0.15: 0.818, 0.2: 0.928, 0.25: 1.06, 0.3: 1.241, 0.35: 1.454,
       0.4: 1.751, 0.425: 1.939}
A_L = {0.0: 0.7225, 0.05: 0.7653, 0.075: 0.8076, 0.1: 0.8506, 0.15: 0.9415, 0.2: 1.0714,
       0.25: 1.2254, 0.275: 1.3271, 0.3: 1.4506, 0.325: 1.5844, 0.35: 1.7495, 0.38: 1.9932}


def rel(x: float, ref: float) -> float:
    return abs(x - ref) / abs(ref)


# --- the two branches at ω = 0.3, α = 2 -------------------------------------------------------

def test_semantic_branch_at_alpha_2() -> None:
    fp = solve_branch(2.0, "semantic")
    assert fp.converged and fp.branch == "semantic" and fp.alpha == 2.0
    assert rel(fp.eps_t, 0.003599) < 0.01
    assert rel(fp.eps_g, 0.001397) < 0.015
    assert rel(fp.theta, 0.15856) < 0.01
    assert fp.theta / 0.25 == pytest.approx(0.634, abs=0.01)
    assert fp.m == 0.0 and fp.mhat == 0.0            # the semantic branch is the m = 0 subspace


def test_positional_branch_at_alpha_2() -> None:
    fp = solve_branch(2.0, "positional")
    assert fp.converged
    assert rel(fp.eps_t, 0.004515) < 0.01
    assert rel(fp.eps_g, 0.003490) < 0.015
    assert rel(fp.m, 0.25857) < 0.01
    assert fp.theta == 0.0 and fp.thetahat == 0.0    # θ = 0 is invariant


def test_fixed_point_satisfies_the_prior_equations_and_the_loss_identity() -> None:
    fp = solve_branch(2.0, "semantic")
    s2, lam = 0.25, 0.01
    den = lam + fp.Vhat * s2
    assert fp.V == pytest.approx(s2 / den, rel=5e-3)
    assert fp.theta == pytest.approx(s2 * s2 * fp.thetahat / den, rel=5e-3)
    # at a fixed point −Φ = α E[ℓ(ĥ)] + λ q/(2σ²), with E[ℓ(ĥ)] = E[M] − V E‖f‖²/2
    ch = _quadrature.channel(fp.q, fp.m, fp.theta, fp.V, sigma2=s2, omega=0.3,
                             A=((0.6, 0.4), (0.4, 0.6)), order=10, symmetry="all")
    direct = fp.alpha * (ch.envelope - fp.V * ch.f_sq / 2) + lam * fp.q / (2 * s2)
    assert fp.eps_t == pytest.approx(direct, rel=2e-3)


def test_solutions_are_cached() -> None:
    assert solve_branch(2.0, "positional") is solve_branch(2.0, "positional")


# --- crossings and the linear baseline ---------------------------------------------------------

def test_alpha_c_at_omega_03() -> None:
    assert alpha_c(TheoryParams(omega=0.3)) == pytest.approx(A_C[0.3], abs=0.02)


def test_linear_baseline_at_omega_03() -> None:
    eps, B = linear_baseline(TheoryParams(omega=0.3))
    assert eps == pytest.approx(0.001971, abs=1e-5)
    assert B[0] == pytest.approx([0.570, 0.430], abs=5e-4)
    assert B.sum(axis=1) == pytest.approx([1.0, 1.0])
    assert linear_baseline(TheoryParams(omega=0.3, order_lin=40))[0] == pytest.approx(eps, 1e-9)


def test_alpha_l_at_omega_03() -> None:
    """Published 1.4506; this solver gives 1.484 (order 10; 1.487 at order 12), 0.033 later.

    The published line is where the authors' tabulated ε_g crosses their ε_lin = 0.0019905 (a
    degree-11 cubature; exact 0.0019714). Their fixed points near α = 1.46 have ε_g about 3 %
    below a Monte Carlo solution of the same equations (2e5–4e5 samples), which agrees with this
    solver to ≈1 %. The tolerance is 0.04, so this test guards the solver's present value; the
    gap itself is open (gradient descent sides with the published α_c at small ω; see
    docs/attention-phase.md).
    """
    assert alpha_l(TheoryParams(omega=0.3)) == pytest.approx(A_L[0.3], abs=0.04)


def test_no_crossing_gives_nan() -> None:
    # both grid points are also points of the default alpha_c scan: cached when run after it
    assert math.isnan(alpha_c(TheoryParams(omega=0.3), bracket=(1.575, 2.0), n_scan=2))


# --- curves and the disk cache -----------------------------------------------------------------

def test_solve_curve_marks_global_min_and_uses_disk_cache(tmp_path, monkeypatch) -> None:
    params = TheoryParams(omega=0.3)                 # grid points of the default alpha_c scan
    df = solve_curve([1.15, 2.0], params, cache_dir=tmp_path)
    assert list(df.columns)[:-1] == [f for f in FixedPoint.__dataclass_fields__]
    assert df.columns[-1] == "global_min" and len(df) == 4
    assert df.groupby("alpha")["global_min"].sum().tolist() == [1, 1]
    best = df[df.global_min].set_index("alpha")["branch"]
    assert best[1.15] == "positional" and best[2.0] == "semantic"
    files = list(tmp_path.glob("attention_theory_*.json"))
    assert len(files) == 1 and len(json.loads(files[0].read_text())["points"]) == 4

    def boom(*args, **kwargs):
        raise AssertionError("recomputed although cached on disk")

    monkeypatch.setattr(attention, "solve_branch", boom)
    again = solve_curve([1.15, 2.0], params, cache_dir=tmp_path)
    assert again.equals(df)



def test_disk_cache_is_strict_json_and_reads_non_finite_numbers_back_as_nan(
        tmp_path, monkeypatch) -> None:
    params = TheoryParams(omega=0.3, order=4, max_iter=2)
    nan_point = FixedPoint(alpha=2.0, branch="semantic", q=1.0, m=0.0, theta=0.5, V=1.0,
                           qhat=math.inf, mhat=0.0, thetahat=0.1, Vhat=0.2, eps_t=math.nan,
                           eps_g=math.nan, converged=False, iterations=2)
    monkeypatch.setattr(attention, "solve_branch", lambda a, b, p: nan_point)
    first = solve_curve([2.0], params, branches=["semantic"], cache_dir=tmp_path)
    (path,) = tmp_path.glob("attention_theory_*.json")
    raw = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict {c}"))
    assert raw["points"]["2.0|semantic"]["eps_t"] is None

    def boom(*args, **kwargs):
        raise AssertionError("recomputed although cached on disk")

    monkeypatch.setattr(attention, "solve_branch", boom)
    again = solve_curve([2.0], params, branches=["semantic"], cache_dir=tmp_path)
    assert math.isnan(again.eps_t[0]) and math.isnan(again.qhat[0])  # inf reads back as NaN
    assert again.drop(columns="qhat").equals(first.drop(columns="qhat"))


# --- validation and non-convergence ------------------------------------------------------------

@pytest.mark.parametrize("kwargs, field", [
    (dict(omega=1.5), "omega"), (dict(omega=-0.1), "omega"), (dict(lam=-0.01), "lam"),
    (dict(sigma=0.0), "sigma"), (dict(sigma=-1.0), "sigma"),
    (dict(A=((0.5, 0.4), (0.4, 0.6))), "A"), (dict(A=((1.2, -0.2), (0.4, 0.6))), "A"),
    (dict(A=((1.0, 0.0),)), "A"), (dict(order=1), "order"), (dict(max_iter=0), "max_iter"),
])
def test_bad_params_name_the_field(kwargs, field) -> None:
    with pytest.raises(LmlabError, match=rf"TheoryParams\.{field}\b") as info:
        TheoryParams(**kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("call, word", [
    (lambda: solve_branch(0.0, "semantic"), "alpha"),
    (lambda: solve_branch(-1.0, "semantic"), "alpha"),
    (lambda: solve_branch(1.0, "agnostic"), "branch"),
    (lambda: solve_curve([1.0, -2.0]), "alpha"),
    (lambda: solve_curve([1.0], branches=["sem"]), "branch"),
    (lambda: alpha_c(bracket=(2.0, 1.0)), "bracket"),
])
def test_bad_arguments_name_the_field(call, word) -> None:
    with pytest.raises(LmlabError, match=word):
        call()


def test_non_converged_solve_is_reported() -> None:
    fp = solve_branch(2.0, "semantic", TheoryParams(max_iter=1))
    assert fp.converged is False and fp.iterations == 1
    assert all(math.isfinite(v) for v in (fp.q, fp.theta, fp.V, fp.eps_t, fp.eps_g))


# --- numerics: the prox and the quadrature -----------------------------------------------------

def _random_nodes(rng, n, q, m, theta, omega=0.3):
    s2 = 0.25
    x = rng.normal(size=(4, n))
    c, s = theta / np.sqrt(q), np.sqrt(s2 - theta ** 2 / q)
    t1, t2 = _quadrature.teacher_rows(c * x[0] + s * x[2], c * x[1] + s * x[3], omega,
                                      ((0.6, 0.4), (0.4, 0.6)))
    return m + np.sqrt(q) * x[0], -m + np.sqrt(q) * x[1], t1, t2


@pytest.mark.parametrize("q, m, theta, V", [(0.115, 0.0, 0.158, 12.7), (0.05, 0.26, 0.0, 11.4),
                                            (0.9, 0.0, 0.35, 14.6), (0.03, 0.15, 0.0, 29.0)])
def test_prox_is_a_global_minimum(q, m, theta, V) -> None:
    rng = np.random.default_rng(0)
    w1, w2, t1, t2 = _random_nodes(rng, 400, q, m, theta)
    h1, h2, f = _prox.prox(w1, w2, t1, t2, V, 0.25)
    assert np.all(f <= _prox.objective(w1, w2, w1, w2, t1, t2, V, 0.25) + 1e-15)
    assert np.allclose(f, _prox.objective(h1, h2, w1, w2, t1, t2, V, 0.25))
    grid = np.linspace(-6.0, 6.0, 241)
    g1, g2 = (a.ravel() for a in np.meshgrid(grid, grid, indexing="ij"))
    for i in range(8):
        fg = _prox.objective(g1, g2, w1[i], w2[i], t1[i], t2[i], V, 0.25)
        j = int(np.argmin(fg))
        one = [np.array([v]) for v in (w1[i], w2[i], t1[i], t2[i])]
        _, _, fr = _prox._newton(np.array([g1[j]]), np.array([g2[j]]), *one, V, 0.25, 60, 1e-12)
        assert f[i] <= min(fg[j], fr[0]) + 1e-12


def test_product_rule_and_its_folds_integrate_even_moments() -> None:
    for fold in (0, 2, 4):
        (x1, x2, e1, e2), w = _quadrature.product_rule(6, 4, fold)
        assert w.sum() == pytest.approx(1.0)
        assert w @ (x1 ** 4) == pytest.approx(3.0)
        assert w @ (x1 ** 2 * e2 ** 2) == pytest.approx(1.0)
        assert w @ (x1 * e1 * x2 * e2) == pytest.approx(0.0, abs=1e-12)
    assert _quadrature.product_rule(6, 4, 4)[1].size == 6 ** 4 // 2


# --- the published lines (slow: about a minute each on one core) --------------------------------
#
# Where this solver and the published values differ by more than 0.03 the test is a strict
# xfail: the published lines are reproduced at ω ≥ 0.15 (α_c) but not at small ω, and α_l is
# systematically 0.02–0.045 later here. A Monte Carlo solution of the same equations agrees
# with this solver (α_c(ω=0) ≈ 0.61). The published notebook's own scheme, re-run
# (lmlab.theory.notebook_scheme, which reproduces the tabulated fixed points at ω = 0.3), does
# not give the published small-ω values either: it puts α_c(0) at 0.649 and α_c(0.1) at 0.783,
# further from the published 0.548 and 0.707 than this solver. Gradient descent at
# d = 500–2000 crosses at 0.56–0.58 at ω = 0 (docs/attention-phase.md).

def _off(reason: str):
    return pytest.mark.xfail(strict=True, reason=reason)


_AC_OFF = _off("this solver gives α_c larger by 0.05–0.08 at ω <= 0.1")
_AL_OFF = _off("this solver gives α_l larger by 0.03–0.045")


@pytest.mark.slow
@pytest.mark.parametrize("omega", [pytest.param(w, marks=_AC_OFF) if w <= 0.1 else w
                                   for w in sorted(A_C)])
def test_published_alpha_c(omega) -> None:
    assert alpha_c(TheoryParams(omega=omega)) == pytest.approx(A_C[omega], abs=0.03)


@pytest.mark.slow
@pytest.mark.parametrize("omega", [w if w == 0.0 else pytest.param(w, marks=_AL_OFF)
                                   for w in sorted(A_L)])
def test_published_alpha_l(omega) -> None:
    value = alpha_l(TheoryParams(omega=omega), bracket=(0.3, 2.2), n_scan=6)
    assert value == pytest.approx(A_L[omega], abs=0.03)


# --- the channel against a direct average ------------------------------------------------------
#
# As V → 0 the Moreau envelope is the population loss of a student whose preactivations are the
# fields themselves. For a purely positional student (θ = 0, q = σ² m²) that loss is a 2-d
# average that can be taken directly, independently of the quadrature and the prox.

def test_the_channel_limit_is_the_population_loss_of_a_positional_student() -> None:
    """Envelope as V → 0 against a direct average over 4e5 draws of (h*, token noise):
    E Σ_ab (T_ab − S_ab)² σ²/2 with S = softmax(h hᵀ), h_ℓ = m(σ g_ℓ ± 1), at ω = 0 and 0.3."""
    rng = np.random.default_rng(0)
    sig, n = 0.5, 400_000
    A = ((0.6, 0.4), (0.4, 0.6))
    hs, g = rng.standard_normal((n, 2)) * sig, rng.standard_normal((n, 2))

    def softmax_rows(h: np.ndarray) -> np.ndarray:
        s = h[:, :, None] * h[:, None, :]
        e = np.exp(s - s.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    for omega in (0.0, 0.3):
        T = (1 - omega) * softmax_rows(hs) + omega * np.array(A)
        for m in (0.0, 0.26):
            S = softmax_rows(m * (sig * g + np.array([1.0, -1.0])))
            direct = 0.5 * sig ** 2 * ((T - S) ** 2).sum((1, 2)).mean()
            ch = _quadrature.channel(max(sig ** 2 * m * m, 1e-10), m, 0.0, 1e-8,
                                     sigma2=sig ** 2, omega=omega, A=A, order=12,
                                     symmetry="eta")
            assert ch.envelope == pytest.approx(direct, rel=5e-3), (omega, m)
