"""Temporal realism: velocity/acceleration stats and generated / ground-truth ratios on constructed motion."""

from __future__ import annotations

import math

import pytest
import torch

from metrics.temporal import RATIOS, TemporalRealism, temporal_ratios, temporal_report, temporal_stats
from models.motion import ANGLES, EXP, MOTION_DIM


def _motion(t: int = 60, seed: int = 0) -> torch.Tensor:
    """Random-walk pose and expression (a moving head), scale 1."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(t, MOTION_DIM, generator=g).cumsum(0) * 0.1
    m[:, 69] = 1.0
    return m


def test_known_values_of_a_ramp() -> None:
    m = torch.zeros(10, MOTION_DIM)
    m[:, ANGLES.start + 1] = torch.arange(10.0) * 1.5  # yaw 1.5 deg/frame, constant speed
    m[:, EXP.start] = torch.arange(10.0) ** 2 * 0.01  # exp accelerates by 0.02/frame²
    s = temporal_stats(m)
    assert s["pose_velocity"] == pytest.approx(1.5)
    assert s["pose_acceleration"] == pytest.approx(0.0, abs=1e-12)
    assert s["exp_acceleration"] == pytest.approx(0.02)
    assert s["exp_velocity"] == pytest.approx(0.01 * sum(2 * k + 1 for k in range(9)) / 9)


def test_identical_motion_gives_exactly_one() -> None:
    m = _motion()
    assert temporal_ratios(m, m.clone()) == {k: 1.0 for k in RATIOS}


def test_amplified_motion_doubles_every_ratio() -> None:
    gt = _motion()
    gen = gt.clone()
    gen[:, :69] = gt[:, :69] * 2  # twice the excursion → twice Δx and Δ²x
    for k, v in temporal_ratios(gen, gt).items():
        assert v == pytest.approx(2.0, rel=1e-9), k


def test_playing_twice_as_fast_doubles_velocity_quadruples_acceleration() -> None:
    t = torch.arange(80.0)
    gt = torch.zeros(80, MOTION_DIM)
    gt[:, ANGLES.start] = torch.sin(t / 10) * 5  # smooth pitch
    gt[:, EXP] = torch.sin(t / 12)[:, None] * 0.05
    r = temporal_ratios(gt[::2], gt)  # every other frame: the same path in half the time
    assert r["pose_velocity_ratio"] == pytest.approx(2.0, rel=0.02)
    assert r["pose_acceleration_ratio"] == pytest.approx(4.0, rel=0.05)
    assert r["exp_velocity_ratio"] == pytest.approx(2.0, rel=0.02)


def test_constant_motion_zero_rule() -> None:
    still = torch.zeros(20, MOTION_DIM)
    still[:, 69] = 1.0
    assert temporal_ratios(still, still.clone()) == {k: 1.0 for k in RATIOS}  # both still: like the data
    moving = _motion(20)
    assert all(math.isinf(v) for v in temporal_ratios(moving, still).values())  # data still, generation not
    assert all(v == 0.0 for v in temporal_ratios(still, moving).values())
    one = temporal_ratios(still[:1], still[:1])  # a single frame has no derivative: still
    assert one == {k: 1.0 for k in RATIOS}


def test_report_is_ratio_of_means_and_metric_agrees() -> None:
    gts = [_motion(40, s) for s in range(3)]
    gens = [g * 1.5 for g in gts]
    gens[0] = gts[0] * 3.0
    rep = temporal_report(gens, gts)
    for k in ("pose_velocity", "exp_acceleration"):
        gen_mean = sum(temporal_stats(g)[k] for g in gens) / 3
        gt_mean = sum(temporal_stats(g)[k] for g in gts) / 3
        assert rep[f"{k}_ratio"] == pytest.approx(gen_mean / gt_mean)
        assert rep[f"gt_{k}"] == pytest.approx(gt_mean)
    metric = TemporalRealism()
    metric.update(torch.stack(gens[:2]), torch.stack(gts[:2]))
    metric.update(torch.stack(gens[2:]), torch.stack(gts[2:]))
    out = metric.compute()
    for k in RATIOS:
        assert float(out[k]) == pytest.approx(rep[k])


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="same non-zero number"):
        temporal_report([_motion()], [])
    with pytest.raises(ValueError, match="motion dimension"):
        temporal_ratios(_motion(), torch.zeros(60, 7))
    with pytest.raises(ValueError, match="different numbers of clips"):
        TemporalRealism().update(torch.zeros(2, 5, MOTION_DIM), torch.zeros(1, 5, MOTION_DIM))
