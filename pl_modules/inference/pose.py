"""Pose modes of generation: keep the generated head pose, hold the reference pose, follow a driving
motion, or a fixed smooth spin. Expression is always the generated one.

`generated` keeps the DiT's pose; `fixed` holds the reference pose; `driving` takes the pose of a
driving motion file relative to its first frame and applies it to the reference pose; `spin`
follows `spin_offsets`, a fixed smooth yaw/pitch path around the reference pose.

Shape legend: N frames (25 fps) · T driving frames.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from models.clock import FPS
from models.motion import ANGLES, PITCH, POSE, SCALE, TRANS, YAW
from pl_modules.inference.inputs import GenerationError

POSE_MODES = ("generated", "fixed", "driving", "spin")
# `spin`: yaw sweeps ±SPIN_YAW_DEG once per SPIN_PERIOD_S while pitch nods ±SPIN_PITCH_DEG twice
# (a figure of eight), starting and ending at the reference pose; smooth (sinusoidal) everywhere.
SPIN_PERIOD_S = 6.0
SPIN_YAW_DEG = 20.0
SPIN_PITCH_DEG = 8.0


def spin_offsets(num_frames: int, fps: int = FPS) -> Tensor:
    """The `spin` path: (N, 2) offsets in degrees of (pitch, yaw) from the reference pose.

    yaw = 20°·sin(2πt/6 s), pitch = 8°·sin(4πt/6 s): a figure of eight, zero at t = 0.
    """
    t = torch.arange(num_frames, dtype=torch.float32) / fps  # (N,) seconds
    phase = 2 * math.pi * t / SPIN_PERIOD_S
    return torch.stack([SPIN_PITCH_DEG * torch.sin(2 * phase), SPIN_YAW_DEG * torch.sin(phase)], dim=-1)


def check_pose_mode(mode: str, driving: Tensor | None) -> None:
    if mode not in POSE_MODES:
        raise GenerationError(f"pose mode {mode!r} is not one of {POSE_MODES}")
    if mode == "driving" and driving is None:
        raise GenerationError("pose mode 'driving' needs a driving motion file (--driving FILE.npy)")
    if mode != "driving" and driving is not None:
        raise GenerationError(f"a driving motion was given but pose mode is {mode!r}; use --pose-mode driving")


def apply_pose_mode(motion: Tensor, ref_motion: Tensor, mode: str, driving: Tensor | None = None) -> Tensor:
    """Raw motion (N, 70) → (N, 70) with the pose (63:70) replaced as `mode` says; expression untouched.

    driving (T, 70): angles and translation are the reference's plus the driving change since its
    first frame, scale the reference's times the driving ratio; frames past T hold the last pose.
    """
    check_pose_mode(mode, driving)
    out = motion.clone()
    n = len(motion)
    if mode == "generated":
        return out
    out[:, POSE] = ref_motion[POSE]  # fixed: the reference pose on every frame
    if mode == "spin":
        off = spin_offsets(n)  # (N, 2)
        out[:, PITCH] += off[:, 0]
        out[:, YAW] += off[:, 1]
    elif mode == "driving":
        idx = torch.arange(n).clamp(max=len(driving) - 1)
        drv = driving[idx]  # (N, 70)
        for part in (ANGLES, TRANS):  # angles (deg) and translation: relative change
            out[:, part] += drv[:, part] - driving[0, part]
        out[:, SCALE] *= drv[:, SCALE] / driving[0, SCALE]  # scale: relative ratio
    return out
