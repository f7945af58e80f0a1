"""The 70-d motion space of a LivePortrait-style implicit face (docs/design.md).

One place defines the per-frame layout, the rotation convention, the keypoint transform and the
adaptive normalisation; the face model (`models.liveportrait`), the datasets and the DiT all import
from here so that there is exactly one copy of each.

Shape legend: B batch · T frames · K = 21 implicit keypoints.

Layout of one frame (float32, 70 values):
    [0:63)   exp δ    expression deformation of the 21 keypoints (row-major k, xyz)
    [63:66)  angles   pitch, yaw, roll in degrees
    [66:69)  t        translation tx, ty, tz (tz is carried but never used by the transform)
    [69]     scale    s
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

NUM_KP = 21
EXP_DIM = NUM_KP * 3  # 63
POSE_DIM = 7  # pitch, yaw, roll, tx, ty, tz, scale
MOTION_DIM = EXP_DIM + POSE_DIM  # 70

EXP = slice(0, 63)
ANGLES = slice(63, 66)
TRANS = slice(66, 69)
SCALE = slice(69, 70)
POSE = slice(63, 70)

PITCH, YAW, ROLL = 63, 64, 65
# Angle range representable by LivePortrait's 66-bin heads: 3·i − 97.5 for i in [0, 65].
ANGLE_LIMIT_DEG = 97.5
NUM_BINS = 66
# Plausibility bounds of raw motion (checked by the shard contract and the statistics): LivePortrait's
# expression offsets and translations are of order 0.01–1 in its keypoint units, its scale of order 1;
# anything beyond these bounds is a broken extraction, not a face.
EXP_LIMIT = 10.0  # |δ|
TRANS_LIMIT = 10.0  # |t|
SCALE_RANGE = (1e-3, 10.0)  # s

# Indices (into the 21 keypoints) of the synthetic world's lips: the default of the mouth-opening
# statistic (`eval.lip_keypoints`). LivePortrait's real keypoints are unsupervised, so on real motion
# the lips are found from data (`playmate shards lips DIR`, docs/evaluation.md).
UPPER_LIP_KP = 19
LOWER_LIP_KP = 20


def split_motion(motion: Tensor) -> dict[str, Tensor]:
    """(…, 70) → dict of exp (…, 21, 3), pitch/yaw/roll (…,), t (…, 3), scale (…,)."""
    return {
        "exp": motion[..., EXP].reshape(*motion.shape[:-1], NUM_KP, 3),  # (…, 21, 3)
        "pitch": motion[..., PITCH],
        "yaw": motion[..., YAW],
        "roll": motion[..., ROLL],
        "t": motion[..., TRANS],
        "scale": motion[..., 69],
    }


def join_motion(exp: Tensor, pitch: Tensor, yaw: Tensor, roll: Tensor, t: Tensor, scale: Tensor) -> Tensor:
    """Inverse of `split_motion`: exp (…, 21, 3) or (…, 63), angles/scale (…,) or (…, 1), t (…, 3) → (…, 70)."""
    lead = t.shape[:-1]
    parts = [
        exp.reshape(*lead, EXP_DIM),
        pitch.reshape(*lead, 1),
        yaw.reshape(*lead, 1),
        roll.reshape(*lead, 1),
        t.reshape(*lead, 3),
        scale.reshape(*lead, 1),
    ]
    return torch.cat(parts, dim=-1)  # (…, 70)


def headpose_bins_to_degrees(logits: Tensor) -> Tensor:
    """66-bin logits (…, 66) → degrees (…,): softmax expectation, 3·E[i] − 97.5 (LivePortrait)."""
    idx = torch.arange(NUM_BINS, device=logits.device, dtype=logits.dtype)
    p = torch.softmax(logits, dim=-1)
    return 3.0 * (p * idx).sum(dim=-1) - ANGLE_LIMIT_DEG


def rotation_matrix(pitch: Tensor, yaw: Tensor, roll: Tensor) -> Tensor:
    """Angles in degrees (…,) → R (…, 3, 3) in LivePortrait's convention, R = (Rz Ry Rx)ᵀ.

    Keypoints are row vectors and are right-multiplied: x R. x = pitch, y = yaw, z = roll.
    """
    x, y, z = (a * (math.pi / 180.0) for a in (pitch, yaw, roll))
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rx = torch.stack(
        [one, zero, zero, zero, x.cos(), -x.sin(), zero, x.sin(), x.cos()], dim=-1
    ).reshape(*x.shape, 3, 3)
    ry = torch.stack(
        [y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], dim=-1
    ).reshape(*x.shape, 3, 3)
    rz = torch.stack(
        [z.cos(), -z.sin(), zero, z.sin(), z.cos(), zero, zero, zero, one], dim=-1
    ).reshape(*x.shape, 3, 3)
    return (rz @ ry @ rx).transpose(-1, -2)  # (…, 3, 3)


def angles_from_rotation(r: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Inverse of `rotation_matrix` for |yaw| < 90°: R (…, 3, 3) → pitch, yaw, roll in degrees."""
    m = r.transpose(-1, -2)  # Rz Ry Rx
    yaw = torch.asin((-m[..., 2, 0]).clamp(-1.0, 1.0))
    pitch = torch.atan2(m[..., 2, 1], m[..., 2, 2])
    roll = torch.atan2(m[..., 1, 0], m[..., 0, 0])
    deg = 180.0 / math.pi
    return pitch * deg, yaw * deg, roll * deg


def transform_keypoints(kp_c: Tensor, motion: Tensor) -> Tensor:
    """x_d = s·(x_c R + δ) + [tx, ty, 0] (LivePortrait Eqn. 2; tz is ignored).

    kp_c: (…, 21, 3) canonical keypoints; motion: (…, 70) raw (de-normalised) motion → (…, 21, 3).
    Leading dims of kp_c broadcast against motion's (e.g. kp_c (B, 1, 21, 3), motion (B, T, 70)).
    """
    m = split_motion(motion)
    r = rotation_matrix(m["pitch"], m["yaw"], m["roll"])  # (…, 3, 3)
    x = kp_c @ r + m["exp"]  # (…, 21, 3)
    x = x * m["scale"][..., None, None]
    shift = torch.zeros_like(m["t"])
    shift[..., :2] = m["t"][..., :2]
    return x + shift[..., None, :]  # (…, 21, 3)


def mouth_opening(kp: Tensor, lips: tuple[int, int] = (UPPER_LIP_KP, LOWER_LIP_KP)) -> Tensor:
    """Vertical lip gap (…, 21, 3) → (…,): lower-lip y minus upper-lip y (image y grows downward);
    lips = (upper, lower) keypoint indices."""
    upper, lower = lips
    return kp[..., lower, 1] - kp[..., upper, 1]


# ------------------------------------------------------------------------------------------------
# Adaptive normalisation (the paper's): expression by global statistics, pose per clip/identity.
# ------------------------------------------------------------------------------------------------


@dataclass
class MotionStats:
    """Normalisation statistics of a dataset (`stats.json`); they travel with every checkpoint.

    exp_mean, exp_std: (63,) global per-dimension expression statistics.
    pose_std: (7,) dataset mean of per-clip pose standard deviations (used as the pose scale for
    every clip, in training and at inference, so that training and sampling share one scale).
    """

    exp_mean: Tensor
    exp_std: Tensor
    pose_std: Tensor

    def to_dict(self) -> dict[str, list[float]]:
        return {k: getattr(self, k).tolist() for k in ("exp_mean", "exp_std", "pose_std")}

    @classmethod
    def from_dict(cls, d: dict) -> MotionStats:
        shapes = {"exp_mean": EXP_DIM, "exp_std": EXP_DIM, "pose_std": POSE_DIM}
        out = {}
        for key, n in shapes.items():
            if key not in d:
                raise KeyError(f"normalisation statistics lack '{key}' (expected {n} values)")
            v = torch.as_tensor(d[key], dtype=torch.float32)
            if v.shape != (n,):
                raise ValueError(f"normalisation statistic '{key}' has shape {tuple(v.shape)}, expected ({n},)")
            out[key] = v
        stats = cls(**out)
        problems = stats.problems()
        if problems:
            raise ValueError("implausible normalisation statistics: " + "; ".join(problems))
        return stats

    def problems(self) -> list[str]:
        """What makes these statistics unusable: non-finite values, non-positive or absurd scales."""
        p = []
        for key in ("exp_mean", "exp_std", "pose_std"):
            v = getattr(self, key)
            if not torch.isfinite(v).all():
                p.append(f"{key} has {int((~torch.isfinite(v)).sum())} non-finite value(s)")
        if p:
            return p
        if (self.exp_std <= 0).any() or (self.pose_std <= 0).any():
            p.append("a standard deviation is ≤ 0")
        if self.exp_mean.abs().max() > EXP_LIMIT or self.exp_std.max() > EXP_LIMIT:
            p.append(f"expression mean/std beyond ±{EXP_LIMIT} (max |mean| {self.exp_mean.abs().max():.3g}, "
                     f"max std {self.exp_std.max():.3g})")
        if self.pose_std[:3].max() > ANGLE_LIMIT_DEG:
            p.append(f"pose-angle std {self.pose_std[:3].max():.3g}° beyond {ANGLE_LIMIT_DEG}°")
        return p

    @classmethod
    def identity(cls) -> MotionStats:
        return cls(torch.zeros(EXP_DIM), torch.ones(EXP_DIM), torch.ones(POSE_DIM))


def normalize_motion(motion: Tensor, stats: MotionStats, pose_mean: Tensor, eps: float = 1e-6) -> Tensor:
    """Raw motion (…, 70) → normalised: exp by the global z-score, pose by (p − pose_mean)/pose_std.

    pose_mean: (…, 7) broadcastable to motion[..., 63:70]; in training the clip's own pose mean, at
    inference the reference frame's pose.
    """
    exp_mean, exp_std, pose_std = (s.to(motion) for s in (stats.exp_mean, stats.exp_std, stats.pose_std))
    exp = (motion[..., EXP] - exp_mean) / (exp_std + eps)
    pose = (motion[..., POSE] - pose_mean) / (pose_std + eps)
    return torch.cat([exp, pose], dim=-1)  # (…, 70)


def denormalize_motion(x: Tensor, stats: MotionStats, pose_mean: Tensor, eps: float = 1e-6) -> Tensor:
    """Inverse of `normalize_motion`."""
    exp_mean, exp_std, pose_std = (s.to(x) for s in (stats.exp_mean, stats.exp_std, stats.pose_std))
    exp = x[..., EXP] * (exp_std + eps) + exp_mean
    pose = x[..., POSE] * (pose_std + eps) + pose_mean
    return torch.cat([exp, pose], dim=-1)  # (…, 70)
