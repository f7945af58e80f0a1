"""Motion statistics on raw 70-d motion (layout of models/motion.py): no feature network needed.

* mouth/audio correlation: Pearson r between the per-frame mouth opening of the motion (keypoints
  after `transform_keypoints` with the clip's canonical kp) and the audio RMS envelope at 25 fps,
  plus the lag (frames) that maximises the correlation within ±max_lag.
* diversity: temporal standard deviation of pose angles (degrees) and expression.
* jitter: mean magnitude of the first and second temporal differences (velocity, acceleration).
* pose distance: mean absolute angle error (degrees) and translation error to a driving pose.

Shape legend: B clips · T frames (25 fps) · S audio samples (16 kHz, S = 640·T).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from models.audio import audio_envelope
from models.motion import ANGLES, EXP, TRANS, mouth_opening, transform_keypoints

def pearson(x: Tensor, y: Tensor) -> float:
    """Pearson correlation of two (N,) series; 0 if either is constant."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    den = x.norm() * y.norm()
    return float((x @ y) / den) if den > 0 else 0.0


def lagged_correlation(x: Tensor, y: Tensor, lag: int) -> float:
    """Pearson of x[t] and y[t − lag] over the overlap (lag > 0: x follows y)."""
    if lag >= 0:
        return pearson(x[lag:], y[: y.numel() - lag])
    return pearson(x[:lag], y[-lag:])


def mouth_series(motion: Tensor, kp_c: Tensor) -> Tensor:
    """Raw motion (T, 70) + canonical kp (21, 3) → per-frame mouth opening (T,)."""
    return mouth_opening(transform_keypoints(kp_c.to(motion), motion))


def mouth_audio_correlation(motion: Tensor, kp_c: Tensor, wav: Tensor | np.ndarray,
                            max_lag: int = 5) -> tuple[float, int]:
    """(Pearson r at lag 0, lag in frames maximising r within ±max_lag; lag > 0 = mouth follows audio)."""
    mouth = mouth_series(motion, kp_c)  # (T,)
    env = audio_envelope(wav, mouth.numel())  # (T,)
    lags = range(-max_lag, max_lag + 1)
    best = max(lags, key=lambda k: (lagged_correlation(mouth, env, k), -abs(k)))
    return pearson(mouth, env), best


def motion_diversity(motion: Tensor) -> dict[str, float]:
    """(T, 70) → temporal std of pose angles (deg, mean over pitch/yaw/roll) and of expression."""
    return {
        "pose_std_deg": float(motion[:, ANGLES].double().std(0, unbiased=False).mean()),
        "exp_std": float(motion[:, EXP].double().std(0, unbiased=False).mean()),
    }


def motion_jitter(motion: Tensor) -> dict[str, float]:
    """(T, 70) → mean ‖Δx‖ (velocity) and ‖Δ²x‖ (acceleration) per frame, for expression and angles."""
    out = {}
    for name, sl in (("exp", EXP), ("pose", ANGLES)):
        x = motion[:, sl].double()
        out[f"{name}_velocity"] = float(x.diff(dim=0).norm(dim=-1).mean()) if x.shape[0] > 1 else 0.0
        out[f"{name}_acceleration"] = float(x.diff(n=2, dim=0).norm(dim=-1).mean()) if x.shape[0] > 2 else 0.0
    return out


def pose_distance(motion: Tensor, driving: Tensor) -> dict[str, float]:
    """(T, 70) generated vs (T, 70) driving → mean |Δangle| (deg) and mean ‖Δt_xy‖."""
    if motion.shape != driving.shape:
        raise ValueError(f"motion {tuple(motion.shape)} and driving pose {tuple(driving.shape)} differ in shape")
    da = (motion[:, ANGLES] - driving[:, ANGLES]).double().abs().mean()
    dt = (motion[:, TRANS][:, :2] - driving[:, TRANS][:, :2]).double().norm(dim=-1).mean()
    return {"pose_angle_l1_deg": float(da), "pose_trans_l2": float(dt)}


_KEYS = (
    "mouth_audio_r", "mouth_audio_lag", "pose_std_deg", "exp_std", "exp_velocity", "exp_acceleration",
    "pose_velocity", "pose_acceleration", "pose_angle_l1_deg", "pose_trans_l2",
)


class MotionMetrics(Metric):
    """Per-clip motion statistics averaged over clips (list states, synced by concatenation)."""

    full_state_update = False
    is_differentiable = False

    def __init__(self, max_lag: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_lag = max_lag
        for k in _KEYS:
            self.add_state(k, [], dist_reduce_fx="cat")

    def _add(self, key: str, value: float) -> None:
        getattr(self, key).append(torch.tensor([value], dtype=torch.float64, device=self.device))

    def update(
        self, motion: Tensor, kp_c: Tensor | None = None, wav: Tensor | None = None, driving: Tensor | None = None
    ) -> None:
        """motion (B, T, 70) raw; kp_c (B, 21, 3) and wav (B, S) for mouth/audio; driving (B, T, 70) for pose."""
        for b in range(motion.shape[0]):
            m = motion[b]
            for k, v in {**motion_diversity(m), **motion_jitter(m)}.items():
                self._add(k, v)
            if kp_c is not None and wav is not None:
                r, lag = mouth_audio_correlation(m, kp_c[b], wav[b], self.max_lag)
                self._add("mouth_audio_r", r)
                self._add("mouth_audio_lag", float(lag))
            if driving is not None:
                for k, v in pose_distance(m, driving[b]).items():
                    self._add(k, v)

    def compute(self) -> dict[str, Tensor]:
        """Mean over clips of every statistic that was measured (plus 'num_clips')."""
        out: dict[str, Tensor] = {}
        for k in _KEYS:
            v = getattr(self, k)
            v = torch.cat(v) if isinstance(v, list) and v else v
            if isinstance(v, Tensor) and v.numel():
                out[k] = v.reshape(-1).mean()
                out.setdefault("num_clips", torch.tensor(v.numel()))
        return out

    def protocol(self) -> dict[str, Any]:
        return {
            "metric": "motion statistics (raw 70-d motion)",
            "envelope": "RMS per 640-sample chunk (25 fps) of 16 kHz audio scaled to [-1, 1]",
            "mouth": "models.motion.mouth_opening(transform_keypoints(kp_c, motion)) (kp 20 y - kp 19 y)",
            "max_lag_frames": self.max_lag,
            "diversity": "temporal std of pose angles (deg) / expression, mean over dims",
            "jitter": "mean L2 norm of first/second temporal differences per frame",
        }
