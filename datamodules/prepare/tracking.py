"""S3FD face tracks in data preparation: one dominant face track per clip, clips cut where it breaks.

For each piece of a video (after scene cuts and silence splits) the detector runs on every
`detector.every`-th frame, detections are linked into tracks by the Sync-C/Sync-D pipeline's rules
(`models.face_tracks`: IoU > `detector.iou_threshold` with the track's last box, at most
`detector.max_missed` frames later) and interpolated over every frame. A track becomes a clip when it
spans at least `clips.min_s` and its face (max of mean box width and height, source pixels) is at least
`filters.min_face_px`; overlapping candidates are resolved by length, then face size (the dominant
face), and further non-overlapping tracks of the piece become clips of their own. Each clip is cropped
per frame by the LivePortrait box convention around the track's median-filtered box (size and centre,
kernel `detector.smooth_kernel`, edges repeated), so the crop follows the face.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datamodules.prepare.rejections import FACE_SMALL, NO_TRACK, SHORT_TRACK, Rejected
from models.face_tracks import Track, TrackParams, detect_frames, interpolate_track, link_detections, smooth_boxes


def track_params(det_cfg: Any) -> TrackParams:
    """The `detector.*` settings as the shared TrackParams (length and size limits are applied here)."""
    return TrackParams(conf_th=det_cfg.conf_th, scales=(det_cfg.scale,), every=det_cfg.every,
                       iou_threshold=det_cfg.iou_threshold, num_failed_det=det_cfg.max_missed, min_track=0,
                       min_face_size=0.0, smooth_kernel=det_cfg.smooth_kernel)


def uses_tracks(item: Any, det_cfg: Any, detector: Any) -> bool:
    """True when the clip's face comes from face tracks (an S3FD-like detector and no dataset annotation)."""
    if detector is None or not hasattr(detector, "detect_faces"):
        return False
    return not (det_cfg.kind == "annotations" or (det_cfg.kind == "auto" and item.face_centre is not None))


def face_tracks(frames: np.ndarray, det_cfg: Any, detector: Any) -> list[Track]:
    """All tracks of a piece (no length or size limit), boxes in decoded-frame pixels."""
    params = track_params(det_cfg)
    dets = detect_frames(detector, frames, params, batch_size=det_cfg.batch_size)
    return [interpolate_track(linked) for linked in link_detections(dets, params.iou_threshold, params.num_failed_det)]


def choose_tracks(tracks: list[Track], min_frames: int, min_face_px: float, scale: tuple[float, float],
                  probed: int) -> list[Track]:
    """The clips' tracks: long and large enough, the dominant one where tracks overlap, by first frame.

    Raises Rejected: no track at all (`no_face_track`), none spanning `min_frames` (`face_track_too_short`),
    none large enough (`face_too_small`).
    """
    if not tracks:
        raise Rejected(NO_TRACK, f"no face detected in the {probed} probed frames")
    long = [t for t in tracks if len(t.frames) >= min_frames]
    if not long:
        best = max(len(t.frames) for t in tracks)
        raise Rejected(SHORT_TRACK, f"longest face track {best} frames < clips.min_s ({min_frames} frames)")
    sx, sy = scale

    def side(t: Track) -> float:  # source pixels
        b = t.boxes
        return float(max(np.mean(b[:, 2] - b[:, 0]) / sx, np.mean(b[:, 3] - b[:, 1]) / sy))

    big = [t for t in long if side(t) >= min_face_px]
    if not big:
        best = max(side(t) for t in long)
        raise Rejected(FACE_SMALL, f"largest tracked face {best:.0f} px < filters.min_face_px={min_face_px}")
    chosen: list[Track] = []
    for t in sorted(big, key=lambda t: (-len(t.frames), -side(t), int(t.frames[0]))):
        if all(t.frames[-1] < c.frames[0] or t.frames[0] > c.frames[-1] for c in chosen):
            chosen.append(t)
    return sorted(chosen, key=lambda t: int(t.frames[0]))


def crop_boxes(track: Track, kernel: int) -> np.ndarray:
    """(n, 4) square boxes (x−s, y−s, x+s, y+s) from the median-filtered size s and centre (x, y)."""
    s, x, y = smooth_boxes(track, kernel, mode="nearest")
    return np.stack([x - s, y - s, x + s, y + s], axis=1)
