"""Training windows: a decoded clip → normalised windows of Tp context + T frames with aligned audio,
and the batch they make (`WindowBatch`, the fields the LightningModule reads).

Normalisation is the paper's adaptive one: expression by the dataset's global statistics, pose by
the clip's own mean and the dataset's pose std (docs/design.md).
"""

from __future__ import annotations

import random
from typing import Any, NotRequired, TypedDict

import numpy as np
import torch
from torch import Tensor

from datamodules.contract import SAMPLES_PER_FRAME
from models.emotion import EMOTIONS, NULL_EMOTION
from models.motion import EXP, MOTION_DIM, POSE, MotionStats


NORM_EPS = 1e-6  # the eps of models.motion.normalize_motion


class WindowMaker:
    """Decoded clip → normalised training windows of Tp context + T frames with aligned audio."""

    def __init__(self, stats: MotionStats, t_window: int, tp: int, audio_source: str) -> None:
        self.stats, self.t_window, self.tp, self.audio_source = stats, t_window, tp, audio_source
        self.exp_mean = stats.exp_mean.numpy()
        self.exp_scale = (stats.exp_std + NORM_EPS).numpy()  # the divisors of normalize_motion
        self.pose_scale = (stats.pose_std + NORM_EPS).numpy()

    def window(self, s: dict[str, Any], start: int, motion: np.ndarray | None = None,
               audio: np.ndarray | None = None) -> dict[str, Any]:
        """The window whose first generated frame is `start`; context [start-Tp, start) zero-padded.
        `motion` and `audio`, when given, are the arrays (a batch's rows) the window is written into."""
        t, tp, n = self.t_window, self.tp, s["motion"].shape[0]
        lo = start - tp
        pad = max(0, -lo)
        idx = slice(max(lo, 0), start + t)
        pose_mean = np.asarray(s["meta"]["pose_mean"], dtype=np.float32)
        if motion is None:
            motion = np.empty((tp + t, MOTION_DIM), np.float32)
        motion[:pad] = 0  # (Tp+T, 70): rows before the clip start are zero
        self.normalize(s["motion"][idx], pose_mean, out=motion[pad:])
        # The reference frame's pose is normalised by itself (→ 0), exactly as at inference, where
        # the reference pose is the pose mean: the identity feature carries its expression only.
        first = s["motion"][0]
        ref = self.normalize(first, first[POSE])  # (70,)
        emotion = s["meta"]["emotion"]
        out = {
            "motion": motion,
            "has_context": start >= tp,
            "kp": s["kp"],
            "ref_motion": ref,  # (70,) normalised reference (first) frame
            "pose_mean": pose_mean,
            "emotion": EMOTIONS.index(emotion) if emotion is not None else NULL_EMOTION,
            "key": s["__key__"],
            "start": start,
            "num_frames": n,
        }
        if self.audio_source == "precomputed":
            feats = s["audio_feats"]  # (T, L, C) float16
            if audio is None:
                audio = np.empty((tp + t, *feats.shape[1:]), np.float32)  # (Tp+T, L, C)
            audio[:pad] = 0
            audio[pad:] = feats[idx]
        else:
            wav = s["wav"][max(lo, 0) * SAMPLES_PER_FRAME : (start + t) * SAMPLES_PER_FRAME]  # int16
            if audio is None:
                audio = np.empty((tp + t) * SAMPLES_PER_FRAME, np.float32)  # ((Tp+T)·640,)
            audio[: pad * SAMPLES_PER_FRAME] = 0
            # × 2^-15 is exact for int16 samples: the same values as / 32768, at a multiply's cost
            np.multiply(wav, np.float32(1 / 32768), out=audio[pad * SAMPLES_PER_FRAME :])
        out["audio"] = audio
        return out

    def normalize(self, motion: np.ndarray, pose_mean: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """`models.motion.normalize_motion` in NumPy (the same float32 operations, so the same bits) for
        raw motion (…, 70), without a tensor round trip per window."""
        if out is None:
            out = np.empty(motion.shape, np.float32)
        np.divide(motion[..., EXP] - self.exp_mean, self.exp_scale, out=out[..., EXP])
        np.divide(motion[..., POSE] - pose_mean, self.pose_scale, out=out[..., POSE])
        return out

    def random_starts(self, n_frames: int, k: int, rng: random.Random) -> list[int]:
        return [rng.randint(0, n_frames - self.t_window) for _ in range(k)]


class WindowBatch(TypedDict):
    """One batch of windows, as `collate_windows` makes it and the LightningModule reads it.

    B windows; Tp context frames, then T generated frames, S = Tp + T; L, C: audio-encoder layers,
    channels. Normalised motion: exp by the global z-score, pose by (pose - clip pose mean) / dataset
    pose std. Context frames before the clip start are zero rows (and zero audio).
    """

    motion: Tensor  # (B, S, 70) float32: normalised motion of frames [start-Tp, start+T)
    has_context: Tensor  # (B,) bool: start ≥ Tp, i.e. the Tp context frames are real, not padding
    kp: Tensor  # (B, 21, 3) float32: the clip's canonical keypoints
    ref_motion: Tensor  # (B, 70) float32: the clip's first frame normalised, its pose by itself (→ 0)
    pose_mean: Tensor  # (B, 7) float32: the clip's pose mean (to de-normalise)
    emotion: Tensor  # (B,) int64: index into EMOTIONS; NULL_EMOTION (8) = no label
    start: Tensor  # (B,) int64: clip frame of the first generated frame
    key: list[str]  # (B,) sample keys
    # wav audio: (B, S·640) float32 in [-1, 1]; precomputed: (B, S, L, C) float32 encoder features
    audio: Tensor
    # training only: the making worker's ledger (datamodules.health.SampleLedger.snapshot) when the
    # batch's newest window was cut; a plain dict, taken out in the main process before device transfer
    data_stats: NotRequired[dict[str, Any]]
    # validation only (windows start at frame 0), raw for generation-based metrics:
    wav: NotRequired[Tensor]  # (B, T·640) int16: the clip's audio of frames [0, T)
    gt_motion: NotRequired[Tensor]  # (B, T, 70) float32: the clip's raw (not normalised) motion of [0, T)
    ref_raw: NotRequired[Tensor]  # (B, 70) float32: the clip's raw first frame (the reference frame)


def collate_windows(items: list[dict[str, Any]], stacked: dict[str, np.ndarray] | None = None) -> WindowBatch:
    """Windows of `WindowMaker.window` (with their validation or training extras) → a `WindowBatch`;
    `stacked`: fields already written as one batch array (`collate_cuts`)."""
    stacked = stacked or {}
    stack = {k: torch.from_numpy(stacked[k] if k in stacked else np.stack([it[k] for it in items]))
             for k in ("motion", "kp", "ref_motion", "pose_mean", "audio")}
    batch = WindowBatch(
        **stack,
        has_context=torch.tensor([it["has_context"] for it in items]),
        emotion=torch.tensor([it["emotion"] for it in items], dtype=torch.long),
        start=torch.tensor([it["start"] for it in items], dtype=torch.long),
        key=[it["key"] for it in items],
    )
    for k in ("wav", "gt_motion", "ref_raw"):
        if k in items[0]:
            batch[k] = torch.from_numpy(np.stack([it[k] for it in items]))
    if "data_stats" in items[0]:  # the newest snapshot (counts only grow; windows may come shuffled)
        batch["data_stats"] = max((it["data_stats"] for it in items), key=lambda s: s["seen"])
    return batch


def collate_cuts(cuts: list[dict[str, Any]], maker: WindowMaker) -> WindowBatch:
    """Cuts {clip, start, data_stats} (training) → a `WindowBatch`, each window normalised straight into
    its row of the batch's motion and audio arrays (no per-window arrays to allocate and stack)."""
    n, rows, clip = len(cuts), maker.tp + maker.t_window, cuts[0]["clip"]
    motion = np.empty((n, rows, MOTION_DIM), np.float32)  # (B, Tp+T, 70)
    if maker.audio_source == "precomputed":
        audio = np.empty((n, rows, *clip["audio_feats"].shape[1:]), np.float32)  # (B, Tp+T, L, C)
    else:
        audio = np.empty((n, rows * SAMPLES_PER_FRAME), np.float32)  # (B, (Tp+T)·640)
    items = []
    for i, cut in enumerate(cuts):
        items.append(maker.window(cut["clip"], cut["start"], motion=motion[i], audio=audio[i]))
        items[-1]["data_stats"] = cut["data_stats"]
    return collate_windows(items, stacked={"motion": motion, "audio": audio})
