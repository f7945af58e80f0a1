"""Motion statistics on raw 70-d motion (layout of models/motion.py): no feature network needed.

* mouth/audio correlation: Pearson r between the per-frame mouth opening of the motion (vertical gap
  of the configured (upper, lower) lip keypoints after `transform_keypoints` with the clip's
  canonical kp) and the audio RMS envelope at 25 fps, plus the lag (frames) that maximises the
  correlation within ±max_lag.
* lip keypoints from data: `lip_keypoint_scores` ranks every keypoint pair by how well its vertical
  gap (expression only, head pose removed) follows the audio envelope: which keypoints are the lips.
* diversity: temporal standard deviation of pose angles (degrees) and expression.
* jitter: mean magnitude of the first and second temporal differences (velocity, acceleration).
* pose distance: mean absolute angle error (degrees) and translation error to a driving pose.

Shape legend: B clips · T frames (25 fps) · S audio samples (16 kHz, S = 640·T) · K = 21 keypoints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from einops import rearrange
from torch import Tensor
from torchmetrics import Metric

from models.audio import audio_envelope
from models.motion import ANGLES, EXP, LOWER_LIP_KP, NUM_KP, TRANS, UPPER_LIP_KP, mouth_opening, transform_keypoints

LIPS = (UPPER_LIP_KP, LOWER_LIP_KP)  # default (upper, lower): the synthetic world's lip keypoints


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


def mouth_series(motion: Tensor, kp_c: Tensor, lips: tuple[int, int] = LIPS) -> Tensor:
    """Raw motion (T, 70) + canonical kp (21, 3) → per-frame mouth opening (T,) of lips = (upper, lower)."""
    return mouth_opening(transform_keypoints(kp_c.to(motion), motion), lips)


def mouth_audio_correlation(motion: Tensor, kp_c: Tensor, wav: Tensor | np.ndarray,
                            max_lag: int = 5, lips: tuple[int, int] = LIPS) -> tuple[float, int]:
    """(Pearson r at lag 0, lag in frames maximising r within ±max_lag; lag > 0 = mouth follows audio)."""
    mouth = mouth_series(motion, kp_c, lips)  # (T,)
    env = audio_envelope(wav, mouth.numel())  # (T,)
    lags = range(-max_lag, max_lag + 1)
    best = max(lags, key=lambda k: (lagged_correlation(mouth, env, k), -abs(k)))
    return pearson(mouth, env), best


# ------------------------------------------------------------------------------------------------
# Which keypoints are the lips: a data-driven check
# ------------------------------------------------------------------------------------------------


@dataclass
class LipScores:
    """How well each keypoint's vertical motion follows the audio envelope, mean over clips.

    pair_r[i, j]: Pearson r of (y_j − y_i) with the envelope, i.e. the mouth-opening signal with
    upper = i and lower = j (antisymmetric). kp_r[k]: Pearson r of keypoint k's own vertical
    expression offset with the envelope (> 0 moves down with loud audio, < 0 up).
    """

    pair_r: np.ndarray  # (K, K)
    kp_r: np.ndarray  # (K,)
    num_clips: int
    num_frames: int

    def top_pairs(self, n: int = 5) -> list[tuple[int, int, float]]:
        """The n best (upper, lower, r), best first."""
        flat = np.argsort(-self.pair_r, axis=None, kind="stable")[:n]
        return [(int(i), int(j), float(self.pair_r[i, j])) for i, j in zip(*np.unravel_index(flat, self.pair_r.shape))]

    def suggest(self) -> tuple[int, int]:
        """(upper, lower) of the pair whose gap follows the audio best: the `lip_keypoints` to use."""
        upper, lower, _ = self.top_pairs(1)[0]
        return upper, lower


def lip_keypoint_scores(clips: Iterable[tuple[Tensor | np.ndarray, Tensor | np.ndarray, Tensor | np.ndarray]],
                        min_frames: int = 25) -> LipScores:
    """Rank keypoints by how their vertical spread moves with speech.

    clips: (raw motion (T, 70), canonical kp (21, 3), wav (640·T,)) per clip. Per clip the vertical
    coordinate of every keypoint in the canonical frame, y_k[t] = x_c[k, y] + δ[t, k, y] (expression
    only: head pose, which also moves with speech, is left out), is correlated with the RMS envelope
    at lag 0; the per-clip Pearson r are averaged over clips of ≥ min_frames frames with some sound.
    """
    pair_sum, kp_sum, used, frames = np.zeros((NUM_KP, NUM_KP)), np.zeros(NUM_KP), 0, 0
    for motion, kp_c, wav in clips:
        motion, kp_c = torch.as_tensor(np.asarray(motion)).double(), torch.as_tensor(np.asarray(kp_c)).double()
        t = motion.shape[0]
        env = audio_envelope(wav, t)  # (T,)
        if t < min_frames or float(env.std()) == 0.0:
            continue
        dy = rearrange(motion[:, EXP], "t (k c) -> t k c", c=3)[..., 1]  # (T, K) vertical expression offsets
        y = (kp_c[:, 1] + dy).numpy()  # (T, K)
        yc, ec = y - y.mean(0), (env - env.mean()).numpy()
        cov = yc.T @ yc / t  # (K, K)
        c = yc.T @ ec / t  # (K,) covariance of each keypoint with the envelope
        sd_env = float(np.sqrt(ec @ ec / t))
        var = np.diag(cov)
        gap_var = var[:, None] + var[None, :] - 2 * cov  # var(y_j − y_i)
        with np.errstate(divide="ignore", invalid="ignore"):
            pair = (c[None, :] - c[:, None]) / np.sqrt(np.clip(gap_var, 0, None)) / sd_env
            kp = c / np.sqrt(var) / sd_env
        pair_sum += np.nan_to_num(pair, nan=0.0, posinf=0.0, neginf=0.0)
        kp_sum += np.nan_to_num(kp, nan=0.0, posinf=0.0, neginf=0.0)
        used, frames = used + 1, frames + t
    if not used:
        raise ValueError(f"no clip of ≥ {min_frames} frames with audio: cannot rank lip keypoints")
    return LipScores(pair_sum / used, kp_sum / used, used, frames)


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

    def __init__(self, max_lag: int = 5, lips: tuple[int, int] = LIPS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_lag, self.lips = max_lag, (int(lips[0]), int(lips[1]))
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
                r, lag = mouth_audio_correlation(m, kp_c[b], wav[b], self.max_lag, self.lips)
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
            "mouth": f"models.motion.mouth_opening(transform_keypoints(kp_c, motion)) (kp {self.lips[1]} y - "
                     f"kp {self.lips[0]} y)",
            "lip_keypoints": {"upper": self.lips[0], "lower": self.lips[1]},
            "max_lag_frames": self.max_lag,
            "diversity": "temporal std of pose angles (deg) / expression, mean over dims",
            "jitter": "mean L2 norm of first/second temporal differences per frame",
        }
