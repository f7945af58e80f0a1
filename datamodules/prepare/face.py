"""The face of a clip: where it is (dataset annotation, S3FD face tracks, a TorchScript detector file,
or the centre fallback) and the 256² crop around it by the face model's crop convention (CPU, in the
workers): one crop per clip from one box, or a crop per frame that follows a face track.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.prepare.adapters import RawItem
from datamodules.prepare.config import PrepareConfig
from datamodules.prepare.rejections import FACE_SMALL, GAPS, NO_ANNOTATION, Rejected

CROP_SIZE = 256


class TorchScriptDetector:
    """A face detector from a local TorchScript file.

    Contract: module(x) with x float32 (N, 3, H, W) RGB in [0, 1] returns float (N, 5) rows
    (x0, y0, x1, y1, score) in pixels of x: the best face per frame (score < min_score = no face).
    """

    def __init__(self, path: str | Path, min_score: float = 0.5, device: str = "cpu") -> None:
        import torch

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"detector.weights={path}: file not found (a TorchScript face detector)")
        self.net = torch.jit.load(str(path), map_location=device).eval()
        self.min_score, self.device = min_score, device

    def detect(self, frames: np.ndarray) -> list[np.ndarray | None]:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float() / 255.0  # (N, 3, H, W)
            out = self.net(x).float().cpu().numpy()  # (N, 5)
        if out.shape != (len(frames), 5):
            raise ValueError(f"detector returned shape {out.shape}, expected ({len(frames)}, 5) rows x0,y0,x1,y1,score")
        return [row[:4].astype(np.float64) if row[4] >= self.min_score else None for row in out]


def make_detector(cfg: PrepareConfig, device: str = "cpu") -> Any:
    """The configured detector: S3FD (kind s3fd, or auto with detector.weights), a TorchScript file (kind
    file), or None (annotations / centre box)."""
    kind, weights = cfg.detector.kind, cfg.detector.weights
    if kind == "file" and weights:
        return TorchScriptDetector(weights, cfg.detector.min_score, device)
    if kind in ("s3fd", "auto") and weights:
        from models.s3fd import S3FD
        from models.weights import WeightsError

        try:
            return S3FD.from_file(weights, device, config_key="detector.weights")
        except WeightsError as e:
            raise WeightsError(f"{e} (detector.kind=auto/s3fd expects sfd_face.pth; "
                               "a TorchScript detector needs detector.kind=file)") from None
    return None


def centre_box(width: int, height: int, fraction: float) -> np.ndarray:
    side = fraction * min(width, height)
    cx, cy = width / 2, height / 2
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def face_box(
    frames: np.ndarray, item: RawItem, det_cfg: Any, detector: TorchScriptDetector | None
) -> tuple[np.ndarray, str]:
    """(x0, y0, x1, y1) in decoded-frame pixels for a clip, and where it came from.

    annotation: AVSpeech face centre, box side = annotation_fraction · H. detector: median of the boxes
    on every `every`-th frame (rejects when more than max gap are missing: checked by the caller via
    the returned gap fraction in the source string). centre: the documented fallback.
    """
    h, w = frames.shape[1:3]
    kind = det_cfg.kind
    if kind == "annotations" or (kind == "auto" and item.face_centre is not None):
        if item.face_centre is None:
            raise Rejected(NO_ANNOTATION, f"{item.item_id}: detector.kind=annotations but the item has no face centre")
        side = det_cfg.annotation_fraction * h
        cx, cy = item.face_centre[0] * w, item.face_centre[1] * h
        return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]), "annotation"
    if detector is not None and kind in ("auto", "file"):
        boxes = detector.detect(frames[:: det_cfg.every])
        found = [b for b in boxes if b is not None]
        gap = 1.0 - len(found) / max(1, len(boxes))
        if not found:
            raise Rejected(GAPS, f"no face detected in {len(boxes)} probed frames")
        return np.median(np.stack(found), axis=0), f"detector:gap={gap:.3f}"
    return centre_box(w, h, det_cfg.centre_fraction), "centre"


def crop_frames(frames: np.ndarray, box: np.ndarray, params: Any, dsize: int = CROP_SIZE,
                chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, h, w, 3) + one face box → (uint8 (n, dsize, dsize, 3), crop square (x0, y0, x1, y1)).

    One crop per clip (LivePortrait's box convention: models.liveportrait.crop), so head motion stays
    in the motion's pose/translation instead of being removed by a moving crop. Bilinear, zeros outside.
    """
    from models.liveportrait.crop import crop_matrix, crop_rect_from_box, warp_images

    centre, side, angle = crop_rect_from_box(box, params)
    half = side / 2
    square = np.array([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half])
    # sample only the region of interest (the crop square, clipped, 1 px margin): same pixels, less work
    x0, y0 = (max(0, int(math.floor(v)) - 1) for v in square[:2])
    x1, y1 = min(frames.shape[2], int(math.ceil(square[2])) + 2), min(frames.shape[1], int(math.ceil(square[3])) + 2)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise Rejected(FACE_SMALL, f"crop square {square.round(1).tolist()} lies outside the "
                                   f"{frames.shape[2]}x{frames.shape[1]} frame")
    m = crop_matrix(centre - np.array([x0, y0]), side, angle, dsize)
    out = warp_images(frames[:, y0:y1, x0:x1], m, dsize, chunk)
    return out, square


def crop_frames_tracked(frames: np.ndarray, boxes: np.ndarray, params: Any,
                        dsize: int = CROP_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, h, w, 3) + one face box per frame (n, 4) → (uint8 (n, dsize, dsize, 3), crop squares (n, 4)):
    the crop of `crop_frames` for each frame around its own box, so the crop follows the face."""
    out = np.empty((len(frames), dsize, dsize, 3), np.uint8)
    squares = np.empty((len(frames), 4))
    for t, box in enumerate(boxes):
        crop, squares[t] = crop_frames(frames[t : t + 1], box, params, dsize)
        out[t] = crop[0]
    return out, squares
