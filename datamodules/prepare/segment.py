"""Cutting an item into clips: scene cuts, silences, clip length rules, and `prepare_item`, the CPU
part of data preparation for one item (runs in a worker process).

    probe → decode audio, resample to 16 kHz mono → plan the 25 fps timeline → select video frames by
    nearest timestamp (decord; PyAV fallback) → split at scene cuts / silences → face box → 256² crop
    (with S3FD: face tracks → a clip per dominant track → a 256² crop per frame that follows the face)

The main process then finishes each clip on the device (`datamodules.prepare.motion.finish_clip`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from datamodules.contract import FPS, SAMPLES_PER_FRAME
from datamodules.prepare.adapters import RawItem
from datamodules.prepare import tracking
from datamodules.prepare.face import crop_frames, crop_frames_tracked, face_box
from datamodules.prepare.media import (
    FrameReader,
    decode_audio,
    plan_timeline,
    probe,
    resample_audio,
    select_frames,
    to_int16,
)
from datamodules.prepare.rejections import FACE_SMALL, GAPS, NO_AUDIO, TOO_SHORT, VFR, Rejected

# ------------------------------------------------------------------------------------------------
# Clip splitting: scene cuts, then silences inside over-long segments
# ------------------------------------------------------------------------------------------------


def thumbnails(frames: np.ndarray, size: int = 32) -> np.ndarray:
    """uint8 (n, h, w, 3) → float32 grey (n, size, size) in 0..255 (area average)."""
    import torch
    import torch.nn.functional as F

    h, w = frames.shape[1:3]
    sub = frames[:, :: max(1, h // (2 * size)), :: max(1, w // (2 * size))]  # (n, ≥2·size, ≥2·size, 3) strided
    x = torch.from_numpy(np.ascontiguousarray(sub)).float().mean(-1)[:, None]  # (n, 1, h', w')
    return F.adaptive_avg_pool2d(x, size)[:, 0].numpy()  # (n, size, size)


def scene_cuts(thumbs: np.ndarray, threshold: float) -> list[int]:
    """Frame indices k where a new shot starts (mean |grey_k − grey_{k−1}| > threshold)."""
    if len(thumbs) < 2:
        return []
    d = np.abs(np.diff(thumbs, axis=0)).mean(axis=(1, 2))  # (n-1,)
    return (np.nonzero(d > threshold)[0] + 1).tolist()


def silent_frames(wav: np.ndarray, silence_db: float) -> np.ndarray:
    """float (n·640,) → bool (n,): frame RMS below `silence_db` dBFS."""
    x = wav[: wav.size // SAMPLES_PER_FRAME * SAMPLES_PER_FRAME].reshape(-1, SAMPLES_PER_FRAME).astype(np.float64)
    rms = np.sqrt((x**2).mean(axis=1))
    return 20 * np.log10(rms + 1e-10) < silence_db


def _silence_runs(silent: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    runs, start = [], None
    for k, s in enumerate([*silent.tolist(), False]):
        if s and start is None:
            start = k
        elif not s and start is not None:
            if k - start >= min_len:
                runs.append((start, k))
            start = None
    return runs


def split_segments(
    thumbs: np.ndarray, wav: np.ndarray, min_frames: int, max_frames: int, scene_threshold: float,
    silence_db: float, min_silence_frames: int,
) -> list[tuple[int, int]]:
    """Frame ranges [a, b) of clips: cut at scene changes, split > max at the silence nearest the max length.

    A segment is split where a silence of ≥ min_silence_frames has its centre inside
    [a + min, a + max] (the latest such centre); without one, at a + max. Pieces < min are dropped.
    """
    n = len(thumbs)
    bounds = [0, *scene_cuts(thumbs, scene_threshold), n]
    runs = _silence_runs(silent_frames(wav, silence_db), min_silence_frames)
    out = []
    for a, b in zip(bounds, bounds[1:]):
        while b - a > max_frames:
            centres = [(s + e) // 2 for s, e in runs if a + min_frames <= (s + e) // 2 <= a + max_frames]
            cut = max(centres) if centres else a + max_frames
            out.append((a, cut))
            a = cut
        out.append((a, b))
    return [(a, b) for a, b in out if b - a >= min_frames]



# ------------------------------------------------------------------------------------------------
# CPU part for one item (runs in a worker process)
# ------------------------------------------------------------------------------------------------


@dataclass
class PreparedClip:
    """A clip after the CPU steps: exactly T frames of 256² crops and T·640 samples."""

    clip_id: str
    item_id: str
    start_s: float  # stream time of the clip's first frame
    crops: np.ndarray  # (T, 256, 256, 3) uint8
    wav: np.ndarray  # (T·640,) int16
    face_box: list[float]  # source pixels
    crop_box: list[float]  # crop square, source pixels
    box_source: str
    source_fps: float
    source_sample_rate: int
    mp4: bytes | None = None  # the crops as 25 fps H.264 (encoded here, in the worker, when write_mp4)


@dataclass
class ClipRejection:
    clip_id: str
    item_id: str
    reason: str
    detail: str


def prepare_item(item: RawItem, cfg: Any, detector: Any = None) -> Iterator[PreparedClip | ClipRejection]:
    """All CPU steps for one item; yields clips (or clip rejections); raises Rejected for the whole item."""
    from models.liveportrait.crop import CropParams

    if item.problem:
        reason, _, detail = item.problem.partition(": ")
        raise Rejected(reason, detail)
    pr = probe(item.video)
    flt = cfg.filters
    if pr.vfr_deviation > flt.vfr_tolerance and not flt.allow_vfr:
        raise Rejected(VFR, f"frame intervals deviate up to {pr.vfr_deviation:.0%} from the median "
                            f"({pr.fps:.2f} fps; filters.vfr_tolerance={flt.vfr_tolerance}); "
                            "set filters.allow_vfr=true to resample by timestamps")
    audio_src = item.video if pr.has_audio else item.audio
    if audio_src is None:
        raise Rejected(NO_AUDIO, f"{item.video} has no audio stream and no separate audio file")
    x, rate, a_start = decode_audio(audio_src)
    a16 = resample_audio(x, rate)
    tl = plan_timeline(pr, a_start, a16, item.start_s, item.end_s, flt.audio_tolerance_s)
    min_f, max_f = int(round(cfg.clips.min_s * FPS)), int(round(cfg.clips.max_s * FPS))
    if tl.num_frames < min_f:
        raise Rejected(TOO_SHORT, f"{tl.num_frames / FPS:.2f} s of common audio/video < clips.min_s={cfg.clips.min_s}")
    idx = select_frames(pr.frame_times, tl.t0, tl.num_frames)
    reader = FrameReader(item.video, pr, cfg.decode_max_side, cfg.decode_backend)
    params = CropParams(scale=cfg.crop_scale, vx_ratio=cfg.crop_vx, vy_ratio=cfg.crop_vy)
    chunk = int(round(cfg.clips.chunk_s * FPS))
    produced = 0
    for c0 in range(0, tl.num_frames, chunk):
        c1 = min(tl.num_frames, c0 + chunk)
        frames = reader.read(idx[c0:c1])  # (n, h, w, 3)
        a0 = tl.audio_offset + c0 * SAMPLES_PER_FRAME
        wav = a16[a0 : a0 + (c1 - c0) * SAMPLES_PER_FRAME]
        segs = split_segments(thumbnails(frames), wav, min_f, max_f, cfg.clips.scene_threshold,
                              cfg.clips.silence_db, max(1, int(round(cfg.clips.min_silence_s * FPS))))
        for a, b in segs:
            produced += 1
            seg_wav, start_s = wav[a * SAMPLES_PER_FRAME : b * SAMPLES_PER_FRAME], tl.t0 + (c0 + a) / FPS
            if tracking.uses_tracks(item, cfg.detector, detector):
                yield from _tracked_clips(item, c0 + a, frames[a:b], seg_wav, start_s, reader.scale, params, cfg,
                                          detector, pr.fps, rate)
                continue
            clip_id = f"{item.item_id}_f{c0 + a:06d}"
            try:
                yield _crop_clip(item, clip_id, frames[a:b], seg_wav, start_s, reader.scale, params, cfg, detector,
                                 pr.fps, rate)
            except Rejected as r:
                yield ClipRejection(clip_id, item.item_id, r.reason, r.detail)
    if produced == 0:
        raise Rejected(TOO_SHORT, f"no piece of ≥ clips.min_s={cfg.clips.min_s} s between scene cuts")


def _crop_clip(item, clip_id, frames, wav, start_s, scale, params, cfg, detector, fps, rate) -> PreparedClip:
    box, source = face_box(frames, item, cfg.detector, detector)
    if source.startswith("detector:"):
        gap = float(source.split("=")[1])
        if gap > cfg.filters.max_detection_gap:
            raise Rejected(GAPS, f"no face in {gap:.0%} of probed frames > filters.max_detection_gap")
    sx, sy = scale
    src_box = np.array([box[0] / sx, box[1] / sy, box[2] / sx, box[3] / sy])
    side = max(src_box[2] - src_box[0], src_box[3] - src_box[1])
    if side < cfg.filters.min_face_px:
        raise Rejected(FACE_SMALL, f"face box side {side:.0f} px < filters.min_face_px={cfg.filters.min_face_px}")
    crops, square = crop_frames(frames, box, params)
    src_square = [square[0] / sx, square[1] / sy, square[2] / sx, square[3] / sy]
    return _prepared(item, clip_id, crops, wav, start_s, src_box, src_square, source.split(":")[0], cfg, fps, rate)


def _tracked_clips(item, first, frames, wav, start_s, scale, params, cfg, detector, fps, rate):
    """A clip per chosen S3FD face track of a piece starting at frame `first` (clip ids by their first frame)."""
    min_frames = int(round(cfg.clips.min_s * FPS))
    try:
        tracks = tracking.face_tracks(frames, cfg.detector, detector)
        chosen = tracking.choose_tracks(tracks, min_frames, cfg.filters.min_face_px, scale,
                                        probed=len(range(0, len(frames), cfg.detector.every)))
    except Rejected as r:
        yield ClipRejection(f"{item.item_id}_f{first:06d}", item.item_id, r.reason, r.detail)
        return
    sx, sy = scale
    per_side = np.array([sx, sy, sx, sy])
    for t in chosen:
        a, b = int(t.frames[0]), int(t.frames[-1]) + 1
        clip_id = f"{item.item_id}_f{first + a:06d}"
        try:
            crops, squares = crop_frames_tracked(frames[a:b], tracking.crop_boxes(t, cfg.detector.smooth_kernel),
                                                 params)
        except Rejected as r:
            yield ClipRejection(clip_id, item.item_id, r.reason, r.detail)
            continue
        yield _prepared(item, clip_id, crops, wav[a * SAMPLES_PER_FRAME : b * SAMPLES_PER_FRAME], start_s + a / FPS,
                        np.median(t.boxes, axis=0) / per_side, np.median(squares, axis=0) / per_side, "s3fd_track",
                        cfg, fps, rate)


def _prepared(item, clip_id, crops, wav, start_s, face_box, crop_box, source, cfg, fps, rate) -> PreparedClip:
    """The PreparedClip (boxes in source pixels), with its mp4 encoded here when write_mp4."""
    mp4 = None
    if cfg.write_mp4:
        from datamodules.video import encode_mp4

        mp4 = encode_mp4(crops, fps=FPS, crf=cfg.crf)
    return PreparedClip(
        clip_id=clip_id, item_id=item.item_id, start_s=float(start_s), crops=crops, wav=to_int16(wav),
        face_box=[float(v) for v in face_box], crop_box=[float(v) for v in crop_box], box_source=source,
        source_fps=float(fps), source_sample_rate=int(rate), mp4=mp4,
    )
