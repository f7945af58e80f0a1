"""Measurements of generated motion: learning probes on the synthetic world (docs/synthetic-world.md) and
window-boundary continuity (docs/generation.md).

- Lip sync: Pearson r between generated mouth opening and the audio envelope on held-out audio.
- Emotion control: a nearest-centroid classifier fitted on ground-truth synthetic motion (clip-mean
  expression) recognises the requested emotion in generated motion.
- Pose independence: head-pose statistics of generated motion per requested emotion.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from datamodules.clips import EvalClip
from metrics.motion import mouth_audio_correlation
from models.emotion import EMOTIONS
from models.motion import ANGLES, EXP
from pl_modules.evaluation.evaluator import generate_clip
from pl_modules.inference.generator import MotionGenerator


class EmotionProbe:
    """Nearest-centroid emotion classifier over clip-mean expression (63-d), fitted on GT motion."""

    def __init__(self) -> None:
        self.centroids: Tensor | None = None  # (8, 63)

    @staticmethod
    def feature(motion: Tensor | np.ndarray) -> Tensor:
        """(T, 70) raw motion → (63,) mean expression over the clip."""
        return torch.as_tensor(np.asarray(motion))[:, EXP].double().mean(0)

    def fit(self, motions: Sequence[Tensor | np.ndarray], labels: Sequence[str]) -> EmotionProbe:
        feats = torch.stack([self.feature(m) for m in motions])  # (N, 63)
        idx = torch.tensor([EMOTIONS.index(label) for label in labels])
        missing = [e for i, e in enumerate(EMOTIONS) if not (idx == i).any()]
        if missing:
            raise ValueError(f"emotion probe: no ground-truth clips labelled {missing}; synthesize with --emotions")
        self.centroids = torch.stack([feats[idx == i].mean(0) for i in range(len(EMOTIONS))])  # (8, 63)
        return self

    def predict(self, motion: Tensor | np.ndarray) -> str:
        if self.centroids is None:
            raise RuntimeError("EmotionProbe.predict before fit")
        d = (self.centroids - self.feature(motion)).norm(dim=-1)  # (8,)
        return EMOTIONS[int(d.argmin())]


def mean_mouth_correlation(motions: Sequence[Tensor], kps: Sequence[Tensor], wavs: Sequence[np.ndarray]) -> float:
    """Mean over clips of the lag-0 Pearson r between mouth opening and the audio envelope."""
    rs = [mouth_audio_correlation(torch.as_tensor(m), torch.as_tensor(k), w)[0] for m, k, w in zip(motions, kps, wavs)]
    return float(np.nanmean(rs))


def pose_statistics(motions: Sequence[Tensor]) -> dict[str, float]:
    """Mean and temporal std of pitch/yaw/roll (degrees), averaged over clips and angles."""
    angles = [torch.as_tensor(m)[:, ANGLES].double() for m in motions]
    return {
        "pose_mean_deg": float(torch.stack([a.mean(0) for a in angles]).mean()),
        "pose_std_deg": float(torch.stack([a.std(0) for a in angles]).mean()),
    }


def generate_for_clips(gen: MotionGenerator, clips: Sequence[EvalClip], steps: int | None = None, seed: int = 0,
                       emotion: str | None = None) -> list[Tensor]:
    """Raw generated motion (T, 70) for each held-out clip's audio and reference frame.

    emotion: request this label for every clip (stage two); None keeps each clip's own label
    (stage-one models ignore labels).
    """
    out = []
    for clip in clips:
        if emotion is not None:
            clip = dataclasses.replace(clip, meta={**clip.meta, "emotion": emotion})
        out.append(generate_clip(gen, clip, seed, steps))
    return out


def heldout_mouth_correlation(gen: MotionGenerator, clips: Sequence[EvalClip], steps: int | None = None,
                              seed: int = 0) -> float:
    """Mean lag-0 mouth/audio-envelope r of motion generated for held-out clips."""
    motions = generate_for_clips(gen, clips, steps, seed)
    return mean_mouth_correlation(motions, [torch.from_numpy(c.kp) for c in clips], [c.wav for c in clips])


def emotion_control(gen: MotionGenerator, train_clips: Sequence[EvalClip], test_clips: Sequence[EvalClip],
                    steps: int | None = None, seed: int = 0) -> dict[str, float]:
    """Stage two on the synthetic world: request every emotion for every held-out clip.

    Returns accuracy of the GT-fitted probe on generated motion, the mouth/audio r of the
    emotional generations, and head-pose statistics per label (spread across labels in degrees).
    """
    probe = EmotionProbe().fit([c.motion for c in train_clips], [c.meta["emotion"] for c in train_clips])
    hits, rs, pose_means, pose_stds = [], [], [], []
    kps = [torch.from_numpy(c.kp) for c in test_clips]
    for e in EMOTIONS:
        motions = generate_for_clips(gen, test_clips, steps, seed, emotion=e)
        hits += [probe.predict(m) == e for m in motions]
        rs.append(mean_mouth_correlation(motions, kps, [c.wav for c in test_clips]))
        p = pose_statistics(motions)
        pose_means.append(p["pose_mean_deg"])
        pose_stds.append(p["pose_std_deg"])
    return {
        "emotion_accuracy": float(np.mean(hits)),
        "mouth_audio_r": float(np.mean(rs)),
        "pose_mean_spread_deg": float(np.ptp(pose_means)),
        "pose_std_spread_deg": float(np.ptp(pose_stds)),
    }


def boundary_continuity(motion: np.ndarray | Tensor, t_window: int) -> dict[str, float]:
    """Frame-to-frame change |m[k] − m[k−1]|₂ at window boundaries (k = T, 2T, …) vs inside windows.

    Returns max/mean at boundaries, max/mean/p99 inside windows; meaningful on normalised motion
    (per-dimension z-scores) so that expression and pose weigh alike.
    """
    m = torch.as_tensor(motion, dtype=torch.float32)
    step = (m[1:] - m[:-1]).norm(dim=-1)  # (N-1,): step[k-1] is the change into frame k
    k = torch.arange(1, len(m))
    at = k % t_window == 0
    if not at.any() or at.all():
        raise ValueError(f"need more than one window of {t_window} frames, got {len(m)} frames")
    inside = step[~at]
    return {
        "boundary_max": step[at].max().item(),
        "boundary_mean": step[at].mean().item(),
        "within_max": inside.max().item(),
        "within_mean": inside.mean().item(),
        "within_p99": inside.quantile(0.99).item(),
        "boundaries": int(at.sum()),
    }
