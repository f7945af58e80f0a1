"""The main-process (device) part of a clip: SyncNet filter and offset correction, motion from the
face model, the yaw filter, the exact alignment check and the finished contract `ClipSample`; and
loading the face model and SyncNet onto the device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datamodules.contract import FPS, SAMPLES_PER_FRAME, ClipSample, clip_meta, make_key
from datamodules.prepare.adapters import RawItem
from datamodules.prepare.config import PrepareConfig
from datamodules.prepare.rejections import SYNC_CONF, SYNC_OFFSET, TOO_SHORT, YAW, AlignmentError, Rejected
from datamodules.prepare.segment import PreparedClip

# ------------------------------------------------------------------------------------------------
# Steps: SyncNet offset correction, motion, yaw filter, alignment
# ------------------------------------------------------------------------------------------------


def sync_correct(net: Any, crops: np.ndarray, wav: np.ndarray, min_conf: float, max_offset: int,
                 min_frames: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """SyncNet (models.syncnet) on the 224² BGR crops; reject low confidence or large offsets, else shift.

    Positive offset = audio leads video by k frames: keep video frames [k, T) with audio frames [0, T−k).
    """
    import torch
    import torch.nn.functional as F

    from models.syncnet import sync_scores

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


# ------------------------------------------------------------------------------------------------
# The clip on the device, and the models it needs
# ------------------------------------------------------------------------------------------------


def finish_clip(
    pc: PreparedClip, item: RawItem, cfg: PrepareConfig, extractor: Any, sync_net: Any = None
) -> ClipSample:
    """SyncNet filter (optional) → motion → exact alignment → yaw filter → a contract ClipSample."""
    from datamodules.video import encode_mp4

    crops, wav, info, mp4 = pc.crops, pc.wav, {}, pc.mp4
    start_s = pc.start_s
    if cfg.filters.sync:
        crops, wav, info = sync_correct(sync_net, crops, wav, cfg.filters.sync_min_confidence,
                                        cfg.filters.sync_max_offset, int(round(cfg.clips.min_s * FPS)))
        start_s += max(0, info["sync_offset"]) / FPS
        if len(crops) != len(pc.crops):
            mp4 = None  # offset-corrected: re-encode the trimmed crops
    motion, kp = extract_motion(extractor, crops, cfg.batch_size)
    assert_aligned(motion, wav, crops)
    check_yaw(motion, cfg.filters.max_abs_yaw_deg)
    try:
        source = Path(item.video).relative_to(Path(cfg.input)).as_posix()
    except ValueError:
        source = Path(item.video).name
    meta = clip_meta(
        clip_id=pc.clip_id, dataset=cfg.dataset_name, speaker_id=item.speaker_id, motion=motion, source=source,
        emotion=item.emotion, intensity=item.intensity, crop_box=pc.crop_box, face_box=pc.face_box,
        face_box_source=pc.box_source, item_id=item.item_id, start_s=round(start_s, 6),
        source_fps=round(pc.source_fps, 4), source_sample_rate=pc.source_sample_rate, **info,
    )
    if cfg.write_mp4 and mp4 is None:
        mp4 = encode_mp4(np.ascontiguousarray(crops), fps=FPS, crf=cfg.crf)
    return ClipSample(make_key(cfg.dataset_name, pc.clip_id), motion, kp, wav, meta, mp4=mp4)


def load_extractor(cfg: PrepareConfig, device: str) -> Any:
    if not cfg.face_model_dir:
        raise ValueError("face_model_dir: not set; point it at the LivePortrait weights (the folder holding "
                         "base_models/), e.g. face_model_dir=/data/weights/liveportrait")
    from models.liveportrait import FaceModelConfig, load_face_model

    try:
        return load_face_model(cfg.face_model_dir, device,
                               cfg=FaceModelConfig.tiny() if cfg.face_model_preset == "tiny" else None)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"face_model_dir={cfg.face_model_dir}: {e}") from None


def load_sync_net(cfg: PrepareConfig, device: str) -> Any:
    from models.syncnet import SyncNet

    return SyncNet.from_file(cfg.filters.sync_weights, config_key="filters.sync_weights").to(device).eval()


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
