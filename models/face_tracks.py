"""Face tracks and the SyncNet face crop of the standard Sync-C/Sync-D pipeline (joonson/syncnet_python,
run_pipeline.py: inference_video, track_shot, crop_video), in numpy/scipy; used by data preparation
(`datamodules.prepare.tracking`) and by Sync-C/Sync-D (`metrics.sync`).

    detect (S3FD, conf 0.9, scale 0.25, every frame) → link detections into tracks (IoU > 0.5 with
    the track's last box, at most 25 frames later) → keep tracks with more than `min_track`
    detections → interpolate boxes over every frame (scipy interp1d) → drop tracks whose
    max(mean width, mean height) ≤ `min_face_size` → per frame s = max(h, w)/2 and centre (x, y),
    each median-filtered (scipy medfilt, kernel 13) → crop rows y−s … y+s(1+2·0.4), columns
    x−s(1+0.4) … x+s(1+0.4) of the frame padded with 110 → bilinear 224×224 (cv2-exact).

Every number is a `TrackParams` field with the reference default. Detection every k-th frame
(`every` > 1) is our addition: boxes are interpolated between detections and a track then needs more
than `min_track` detections·k. Shape legend: T frames · n frames of a track.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.cv_resize import resize_linear


@dataclass(frozen=True)
class TrackParams:
    """The reference's tracking and cropping numbers (run_pipeline.py options and constants)."""

    conf_th: float = 0.9  # S3FD score threshold (inference_video)
    scales: tuple[float, ...] = (0.25,)  # --facedet_scale
    every: int = 1  # detect on every k-th frame (reference: every frame), interpolate in between
    iou_threshold: float = 0.5  # a detection joins a track when IoU with its last box > this
    num_failed_det: int = 25  # ... and it is at most this many frames after that box
    min_track: int = 100  # a track needs more than this many detections (LatentSync uses 50)
    min_face_size: float = 100.0  # max(mean box width, mean box height) must exceed this (pixels)
    smooth_kernel: int = 13  # median filter of box size and centre (crop_video)
    crop_scale: float = 0.4  # --crop_scale: the crop extends s·(1 + 2·crop_scale) below the centre
    pad_value: int = 110  # frame padding value of the crop
    crop_size: int = 224  # SyncNet's input side


@dataclass
class Track:
    """A face track: consecutive frame indices and one (interpolated) box per frame."""

    frames: np.ndarray  # (n,) int64, consecutive
    boxes: np.ndarray  # (n, 4) float64 x1, y1, x2, y2
    detections: int  # detections linked into the track

    @property
    def face_size(self) -> float:
        """max(mean width, mean height), the reference's min_face_size test."""
        return float(max(np.mean(self.boxes[:, 2] - self.boxes[:, 0]), np.mean(self.boxes[:, 3] - self.boxes[:, 1])))


# ------------------------------------------------------------------------------------------------
# Detection, linking, interpolation (track_shot)
# ------------------------------------------------------------------------------------------------


def detect_frames(detector: Any, frames: np.ndarray | Sequence[np.ndarray], params: TrackParams = TrackParams(),
                  batch_size: int = 1) -> list[np.ndarray]:
    """Per frame (N_t, 5) [x1, y1, x2, y2, score] from `detector.detect_faces` (an S3FD or anything with its
    interface); frames between every k-th one get an empty (0, 5) array. batch_size > 1 uses
    `detect_faces_batch` when the detector has it (throughput; same results up to float rounding)."""
    probed = list(range(0, len(frames), max(1, params.every)))
    out = [np.empty((0, 5)) for _ in range(len(frames))]
    batched = batch_size > 1 and hasattr(detector, "detect_faces_batch")
    for s in range(0, len(probed), batch_size if batched else 1):
        idx = probed[s : s + (batch_size if batched else 1)]
        if batched:
            dets = detector.detect_faces_batch([frames[i] for i in idx], params.conf_th, params.scales, batch_size)
        else:
            dets = [detector.detect_faces(frames[idx[0]], conf_th=params.conf_th, scales=params.scales)]
        for i, d in zip(idx, dets):
            out[i] = np.asarray(d, dtype=np.float64).reshape(-1, 5)
    return out


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x1, y1, x2, y2) boxes, no +1 (the reference's bb_intersection_over_union)."""
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def link_detections(dets: Sequence[np.ndarray], iou_threshold: float = 0.5,
                    num_failed_det: int = 25) -> list[list[tuple[int, tuple[float, ...]]]]:
    """Every track the reference's greedy passes build (short ones included): lists of (frame, box).

    Each pass starts a track at the first remaining detection and walks the frames in order; a
    detection joins when it is at most `num_failed_det` frames after the track's last one and their
    IoU > `iou_threshold`. As in the reference, a detection taken from a frame's list makes the pass
    skip the next detection of that frame (it removes from the list it iterates over).
    """
    faces = [[(f, tuple(float(v) for v in row[:4]), float(row[4])) for row in d] for f, d in enumerate(dets)]
    tracks = []
    while True:
        track: list[tuple[int, tuple[float, ...], float]] = []
        for framefaces in faces:
            for face in framefaces:
                if not track:
                    track.append(face)
                    framefaces.remove(face)
                elif face[0] - track[-1][0] <= num_failed_det:
                    if box_iou(face[1], track[-1][1]) > iou_threshold:
                        track.append(face)
                        framefaces.remove(face)
                        continue
                else:
                    break
        if not track:
            return tracks
        tracks.append([(f, box) for f, box, _ in track])


def interpolate_track(linked: list[tuple[int, tuple[float, ...]]], every: int = 1) -> Track:
    """Boxes linearly interpolated (scipy interp1d) over every frame from the first to the last detection."""
    from scipy.interpolate import interp1d

    framenum = np.array([f for f, _ in linked])
    bboxes = np.array([np.array(b) for _, b in linked])
    frame_i = np.arange(framenum[0], framenum[-1] + 1)
    if len(linked) == 1:
        return Track(frame_i, bboxes.astype(np.float64), 1)
    boxes = np.stack([interp1d(framenum, bboxes[:, k])(frame_i) for k in range(4)], axis=1)
    return Track(frame_i, boxes, len(linked))


def track_shot(dets: Sequence[np.ndarray], params: TrackParams = TrackParams()) -> list[Track]:
    """The reference's tracks of one shot: linked, more than min_track detections (× every), interpolated,
    face size > min_face_size. dets: per-frame (N_t, 5) arrays of the shot (frame 0 = its first frame)."""
    out = []
    for linked in link_detections(dets, params.iou_threshold, params.num_failed_det):
        if len(linked) * max(1, params.every) > params.min_track:
            track = interpolate_track(linked)
            if track.face_size > params.min_face_size:
                out.append(track)
    return out


# ------------------------------------------------------------------------------------------------
# Smoothing and the SyncNet crop (crop_video)
# ------------------------------------------------------------------------------------------------


def smooth_boxes(track: Track, kernel: int = 13, mode: str = "reference") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(s, x, y) per frame: half the larger box side and the box centre, median-filtered with `kernel`.

    mode "reference": scipy.signal.medfilt (zero padding at the ends, as crop_video does: the first and
    last kernel//2 frames lean towards smaller values); "nearest": edge values repeated instead.
    """
    b = track.boxes
    s = np.maximum(b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]) / 2
    y, x = (b[:, 1] + b[:, 3]) / 2, (b[:, 0] + b[:, 2]) / 2
    if kernel <= 1:
        return s, x, y
    if mode == "reference":
        from scipy.signal import medfilt

        with warnings.catch_warnings():  # tracks shorter than the kernel: zero padding, as intended
            warnings.simplefilter("ignore", UserWarning)
            return medfilt(s, kernel_size=kernel), medfilt(x, kernel_size=kernel), medfilt(y, kernel_size=kernel)
    if mode == "nearest":
        from scipy.ndimage import median_filter

        return tuple(median_filter(v, size=kernel, mode="nearest") for v in (s, x, y))  # type: ignore[return-value]
    raise ValueError(f"smooth_boxes: mode must be 'reference' or 'nearest', got {mode!r}")


def _padded_window(frame: np.ndarray, pad: int, rows: slice, cols: slice, value: int) -> np.ndarray:
    """frame padded by `pad` on every side with `value`, then [rows, cols] (numpy slice rules), without
    building the padded frame."""
    h, w = frame.shape[:2]
    r0, r1, _ = rows.indices(h + 2 * pad)
    c0, c1, _ = cols.indices(w + 2 * pad)
    out = np.full((max(0, r1 - r0), max(0, c1 - c0)) + frame.shape[2:], value, dtype=frame.dtype)
    sr0, sr1 = max(r0 - pad, 0), min(r1 - pad, h)
    sc0, sc1 = max(c0 - pad, 0), min(c1 - pad, w)
    if sr1 > sr0 and sc1 > sc0:
        out[sr0 + pad - r0 : sr1 + pad - r0, sc0 + pad - c0 : sc1 + pad - c0] = frame[sr0:sr1, sc0:sc1]
    return out


def syncnet_crop(frame: np.ndarray, s: float, x: float, y: float, params: TrackParams = TrackParams()) -> np.ndarray:
    """One frame's crop around centre (x, y) with half-size s: rows y−s … y+s(1+2cs), columns
    x−s(1+cs) … x+s(1+cs) (int() of each bound) of the frame padded by int(s(1+2cs)) with pad_value,
    then the cv2-exact bilinear resize to crop_size². Channel order is kept (the reference: BGR)."""
    cs = params.crop_scale
    bsi = int(s * (1 + 2 * cs))
    my, mx = y + bsi, x + bsi
    face = _padded_window(frame, bsi, slice(int(my - s), int(my + s * (1 + 2 * cs))),
                          slice(int(mx - s * (1 + cs)), int(mx + s * (1 + cs))), params.pad_value)
    if face.shape[0] == 0 or face.shape[1] == 0:
        raise ValueError(f"face crop around ({x:.1f}, {y:.1f}) with half-size {s:.1f} lies outside the "
                         f"{frame.shape[1]}x{frame.shape[0]} frame")
    return resize_linear(face, (params.crop_size, params.crop_size))


def syncnet_crops(frames: np.ndarray | Sequence[np.ndarray], track: Track,
                  params: TrackParams = TrackParams()) -> np.ndarray:
    """uint8 (n, crop_size, crop_size, C): the track's frames cropped as crop_video does (reference smoothing)."""
    s, x, y = smooth_boxes(track, params.smooth_kernel, "reference")
    return np.stack([syncnet_crop(frames[f], s[i], x[i], y[i], params) for i, f in enumerate(track.frames)])
