"""Motion statistics on constructed motion (mouth/audio correlation, lag, jitter, pose distance)."""

from __future__ import annotations

import pytest
import torch

from metrics.motion import (
    MotionMetrics,
    audio_envelope,
    motion_diversity,
    motion_jitter,
    mouth_audio_correlation,
    mouth_series,
    pose_distance,
)
from models.motion import LOWER_LIP_KP, MOTION_DIM


def _world(t: int = 100, lag: int = 0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Motion whose lower lip opens in proportion to the audio RMS envelope `lag` frames later."""
    g = torch.Generator().manual_seed(seed)
    amp = torch.rand(t + 20, generator=g) * 0.5 + 0.05
    wav = (torch.randn(t + 20, 640, generator=g) * amp[:, None]).reshape(-1)[: t * 640]
    env = audio_envelope(wav, t).float()
    kp_c = torch.randn(21, 3, generator=g) * 0.1
    motion = torch.zeros(t, MOTION_DIM)
    motion[:, 69] = 1.0  # scale
    opening = torch.roll(env, lag) if lag else env
    motion[:, 3 * LOWER_LIP_KP + 1] = opening * 0.2  # exp δ of the lower lip, y
    return motion, kp_c, wav


def test_envelope_is_chunk_rms() -> None:
    wav = torch.cat([torch.full((640,), 0.5), torch.full((640,), -0.25)])
    torch.testing.assert_close(audio_envelope(wav, 2), torch.tensor([0.5, 0.25], dtype=torch.float64))
    int_wav = (wav * 32768).clamp(-32768, 32767).to(torch.int16)
    expected = torch.tensor([0.5, 0.25], dtype=torch.float64)
    torch.testing.assert_close(audio_envelope(int_wav, 2), expected, atol=1e-4, rtol=0)
    assert audio_envelope(wav, 3)[2] == 0  # missing samples count as silence


def test_correlated_world_gives_r_near_one_lag_zero() -> None:
    motion, kp_c, wav = _world()
    r, lag = mouth_audio_correlation(motion, kp_c, wav)
    assert r > 0.99 and lag == 0


@pytest.mark.parametrize("lag", [2, -3])
def test_lag_is_recovered(lag: int) -> None:
    motion, kp_c, wav = _world(lag=lag)
    assert mouth_audio_correlation(motion, kp_c, wav, max_lag=5)[1] == lag


def test_unrelated_audio_gives_small_r() -> None:
    motion, kp_c, _ = _world(seed=1)
    _, _, other = _world(seed=2)
    r, _ = mouth_audio_correlation(motion, kp_c, other)
    assert abs(r) < 0.35


def test_mouth_series_shape_and_static_mouth() -> None:
    motion, kp_c, _ = _world()
    assert mouth_series(motion, kp_c).shape == (100,)


def test_diversity_jitter_pose_distance_known_values() -> None:
    t = torch.arange(10, dtype=torch.float64)
    motion = torch.zeros(10, MOTION_DIM, dtype=torch.float64)
    motion[:, 63] = 2 * t  # pitch ramps 2°/frame → velocity 2, acceleration 0
    j = motion_jitter(motion)
    assert j["pose_velocity"] == pytest.approx(2.0) and j["pose_acceleration"] == pytest.approx(0.0)
    assert motion_diversity(motion)["pose_std_deg"] == pytest.approx(float(t.std(unbiased=False) * 2 / 3))
    drv = motion.clone()
    drv[:, 64] += 3.0
    assert pose_distance(motion, drv)["pose_angle_l1_deg"] == pytest.approx(1.0)


def test_motion_metric_update_compute() -> None:
    m = MotionMetrics()
    motion, kp_c, wav = _world()
    m.update(motion[None], kp_c[None], wav[None], driving=motion[None])
    m.update(motion[None])
    out = m.compute()
    assert out["mouth_audio_r"] > 0.99 and int(out["num_clips"]) == 1
    assert out["pose_angle_l1_deg"] == 0 and "pose_std_deg" in out
    assert m.state_dict() == {}
