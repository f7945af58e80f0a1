"""Property tests of the Fréchet core and its distributed sync."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metrics.frechet import FrechetDistance, feature_stats, frechet_distance, trace_sqrt_product


def _rand_cov(d: int, g: torch.Generator, n: int | None = None) -> torch.Tensor:
    x = torch.randn(n or 3 * d, d, generator=g, dtype=torch.float64)
    return x.T @ x / x.shape[0]


def test_identical_sets_give_zero(gen: torch.Generator) -> None:
    feats = torch.randn(300, 64, generator=gen, dtype=torch.float64)
    mu, cov = feature_stats(feats)
    assert abs(frechet_distance(mu, cov, mu, cov)) < 1e-9


def test_symmetry(gen: torch.Generator) -> None:
    d = 128
    m1, m2 = torch.randn(d, generator=gen), torch.randn(d, generator=gen)
    s1, s2 = _rand_cov(d, gen), _rand_cov(d, gen)
    a, b = frechet_distance(m1, s1, m2, s2), frechet_distance(m2, s2, m1, s1)
    assert a == pytest.approx(b, rel=1e-10)


def test_diagonal_closed_form(gen: torch.Generator) -> None:
    d = 32
    a = torch.rand(d, generator=gen, dtype=torch.float64) + 0.1
    b = torch.rand(d, generator=gen, dtype=torch.float64) + 0.1
    m1, m2 = torch.randn(d, generator=gen, dtype=torch.float64), torch.randn(d, generator=gen, dtype=torch.float64)
    want = float((m1 - m2).square().sum() + (a.sqrt() - b.sqrt()).square().sum())
    assert frechet_distance(m1, torch.diag(a), m2, torch.diag(b)) == pytest.approx(want, rel=1e-10)


def test_scaled_covariance_closed_form(gen: torch.Generator) -> None:
    d, c = 64, 1.7
    s = _rand_cov(d, gen)
    mu = torch.zeros(d)
    want = (1 - c) ** 2 * float(s.trace())
    assert frechet_distance(mu, s, mu, c**2 * s) == pytest.approx(want, rel=1e-9)


def test_mean_shift_and_monotonic(gen: torch.Generator) -> None:
    d = 48
    s = _rand_cov(d, gen)
    delta = torch.randn(d, generator=gen, dtype=torch.float64)
    mu = torch.zeros(d, dtype=torch.float64)
    assert frechet_distance(mu, s, delta, s) == pytest.approx(float(delta.square().sum()), rel=1e-9)
    vals = [frechet_distance(mu, s, t * delta, s) for t in (0.5, 1.0, 2.0, 4.0)]
    assert all(x < y for x, y in zip(vals, vals[1:]))


def test_rank_deficient_matches_nuclear_norm(gen: torch.Generator) -> None:
    """n < d: trace term equals ‖X1c X2cᵀ‖_* / √((n1−1)(n2−1))."""
    d, n1, n2 = 200, 60, 50
    x1 = torch.randn(n1, d, generator=gen, dtype=torch.float64)
    x2 = torch.randn(n2, d, generator=gen, dtype=torch.float64) * 1.3
    (_, s1), (_, s2) = feature_stats(x1), feature_stats(x2)
    c1, c2 = x1 - x1.mean(0), x2 - x2.mean(0)
    nuc = torch.linalg.matrix_norm(c1 @ c2.T, ord="nuc") / math.sqrt((n1 - 1) * (n2 - 1))
    assert float(trace_sqrt_product(s1, s2)) == pytest.approx(float(nuc), rel=1e-7)


def test_matches_scipy_sqrtm(gen: torch.Generator) -> None:
    scipy_linalg = pytest.importorskip("scipy.linalg")
    d = 96
    m1, m2 = torch.randn(d, generator=gen, dtype=torch.float64), torch.randn(d, generator=gen, dtype=torch.float64)
    s1, s2 = _rand_cov(d, gen), _rand_cov(d, gen)
    cs = scipy_linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    ref = float((m1 - m2).square().sum()) + float(s1.trace() + s2.trace()) - 2 * float(np.trace(cs))
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(ref, rel=1e-9)


def test_same_distribution_noise_floor(gen: torch.Generator) -> None:
    d, n = 64, 1000
    m = FrechetDistance(d)
    m.update(torch.randn(n, d, generator=gen), real=True)
    m.update(torch.randn(n, d, generator=gen), real=False)
    expected = d**2 / (2 * n) + 2 * d / n  # the finite-sample bias: 2.18 at d=64, n=1000
    assert 0.7 * expected < float(m.compute()) < 1.3 * expected


def test_streaming_equals_one_shot(gen: torch.Generator) -> None:
    d = 32
    real, fake = torch.randn(250, d, generator=gen), torch.randn(170, d, generator=gen) + 0.3
    m = FrechetDistance(d)
    for chunk in real.split(37):
        m.update(chunk, real=True)
    for chunk in fake.split(50):
        m.update(chunk, real=False)
    mu_r, s_r = feature_stats(real)
    mu_f, s_f = feature_stats(fake)
    assert m.real_features_sum.dtype == torch.float64
    torch.testing.assert_close(m.side_stats(True)[1], s_r, rtol=1e-10, atol=1e-12)
    assert float(m.compute()) == pytest.approx(frechet_distance(mu_r, s_r, mu_f, s_f), rel=1e-10)
    assert m.protocol()["n_real"] == 250 and m.protocol()["n_fake"] == 170


def test_too_few_samples_raises(gen: torch.Generator) -> None:
    m = FrechetDistance(8)
    m.update(torch.randn(1, 8, generator=gen), real=True)
    m.update(torch.randn(5, 8, generator=gen), real=False)
    with pytest.raises(RuntimeError, match="more than one sample"):
        m.compute()


def test_reset_real_features_false_keeps_real(gen: torch.Generator) -> None:
    m = FrechetDistance(8, reset_real_features=False)
    m.update(torch.randn(10, 8, generator=gen), real=True)
    m.update(torch.randn(10, 8, generator=gen), real=False)
    m.reset()
    assert int(m.real_features_num_samples) == 10 and int(m.fake_features_num_samples) == 0


def test_biased_covariance_option(gen: torch.Generator) -> None:
    x = torch.randn(40, 4, generator=gen, dtype=torch.float64)
    (_, cu), (_, cb) = feature_stats(x, "unbiased"), feature_stats(x, "biased")
    torch.testing.assert_close(cb, cu * 39 / 40)
    with pytest.raises(ValueError, match="covariance"):
        FrechetDistance(4, covariance="median")


def test_states_not_persistent_and_no_weights_in_state_dict() -> None:
    assert FrechetDistance(4).state_dict() == {}


# ---------------------------------------------------------------- distributed (gloo, 2 processes)

_D = 16


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(77, _D, generator=g), torch.randn(51, _D, generator=g) * 1.5


def _gloo_frechet(rank: int, world: int) -> dict:
    real, fake = _data()
    cut_r, cut_f = 30, 40  # uneven split between the ranks
    m = FrechetDistance(_D)
    m.update(real[:cut_r] if rank == 0 else real[cut_r:], real=True)
    m.update(fake[:cut_f] if rank == 0 else fake[cut_f:], real=False)
    return {"fd": m.compute(), "protocol": m.protocol()}


def test_gloo_sync_equals_single_process(run_gloo) -> None:
    real, fake = _data()
    single = FrechetDistance(_D)
    single.update(real, real=True)
    single.update(fake, real=False)
    want = float(single.compute())
    results = run_gloo(_gloo_frechet)
    for r in results:
        assert float(r["fd"]) == pytest.approx(want, rel=1e-10)
        assert r["protocol"]["n_real"] == 77 and r["protocol"]["n_fake"] == 51
