"""The main-process (device) part of a clip: SyncNet filter and offset correction, motion from the
face model, the yaw filter and the exact alignment check.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datamodules.contract import SAMPLES_PER_FRAME
from datamodules.prepare.rejections import SYNC_CONF, SYNC_OFFSET, TOO_SHORT, YAW, AlignmentError, Rejected


def sync_correct(net: Any, crops: np.ndarray, wav: np.ndarray, min_conf: float, max_offset: int,
                 min_frames: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """SyncNet (metrics.sync) on the 224² BGR crops; reject low confidence or large offsets, else shift.

    Positive offset = audio leads video by k frames: keep video frames [k, T) with audio frames [0, T−k).
    """
    import torch
    import torch.nn.functional as F

    from metrics.sync import sync_scores

    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float()  # (T, 3, 256, 256)
    x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
    bgr = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).flip(-1).contiguous()  # (T, 224, 224, 3)
    offset, conf, dist = sync_scores(net, bgr, wav, vshift=15)
    info = {"sync_offset": int(offset), "sync_confidence": float(conf), "sync_min_dist": float(dist)}
    if conf < min_conf:
        raise Rejected(SYNC_CONF, f"SyncNet confidence {conf:.2f} < filters.sync_min_confidence={min_conf}")
    if abs(offset) > max_offset:
        raise Rejected(SYNC_OFFSET, f"SyncNet offset {offset} frames > filters.sync_max_offset={max_offset}")
    t, k = len(crops), abs(int(offset))
    if k:
        if offset > 0:
            crops, wav = crops[k:], wav[: (t - k) * SAMPLES_PER_FRAME]
        else:
            crops, wav = crops[: t - k], wav[k * SAMPLES_PER_FRAME :]
        if len(crops) < min_frames:
            raise Rejected(TOO_SHORT, f"{len(crops)} frames after offset correction < {min_frames}")
    return crops, wav, info


def extract_motion(extractor: Any, crops: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Crops (T, 256, 256, 3) → motion float32 (T, 70) and canonical keypoints of frame 0 (21, 3)."""
    import torch

    motions, kp0 = [], None
    for s in range(0, len(crops), batch_size):
        m, kp = extractor.extract_motion(crops[s : s + batch_size])
        motions.append(torch.as_tensor(m).float().cpu().numpy())
        if kp0 is None:
            kp0 = torch.as_tensor(kp[0]).float().cpu().numpy()
    return np.concatenate(motions).astype(np.float32), kp0.astype(np.float32)


def check_yaw(motion: np.ndarray, max_abs_yaw: float) -> None:
    from models.motion import YAW as YAW_INDEX

    yaw = float(np.abs(motion[:, YAW_INDEX]).max())
    if yaw > max_abs_yaw:
        raise Rejected(YAW, f"|yaw| reaches {yaw:.1f}° > filters.max_abs_yaw_deg={max_abs_yaw}")


def assert_aligned(motion: np.ndarray, wav: np.ndarray, crops: np.ndarray) -> int:
    """T frames of motion = T crops = T·640 samples exactly; raise AlignmentError otherwise. Returns T."""
    t = motion.shape[0]
    if crops.shape[0] != t or wav.shape[0] != t * SAMPLES_PER_FRAME:
        raise AlignmentError(f"misaligned clip: motion {t} frames, crops {crops.shape[0]} frames, "
                             f"audio {wav.shape[0]} samples (expected {t * SAMPLES_PER_FRAME})")
    return t
