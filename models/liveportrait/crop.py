"""Face crops in the public LivePortrait convention (for data preparation): face box or landmarks → 256×256.

The public cropper (src/utils/crop.py, src/config/crop_config.py) takes the landmark extent in a
frame rotated so that the eye-centre → lip-centre direction points down, makes it square, multiplies
its side by `scale` and moves its centre by vx_ratio·side along the face's x axis and vy_ratio·side
along the eye → lip axis (negative vy_ratio moves the crop up, i.e. puts the face lower in the crop),
then warps with a similarity transform (bilinear) to dsize × dsize. docs/face-model.md has the table.
Our implementation follows that description; pixel coordinates are (x, y) with y downward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CropParams:
    """Crop scale and centre shift, as multiples of the square landmark extent."""

    scale: float
    vx_ratio: float = 0.0
    vy_ratio: float = 0.0


# crop_config.py source image (early ArgumentConfig versions: scale 2.3)
SOURCE_CROP = CropParams(scale=2.5, vx_ratio=0.0, vy_ratio=-0.125)
DRIVING_CROP = CropParams(scale=2.2, vx_ratio=0.0, vy_ratio=-0.1)  # crop_config.py driving-video auto-crop


def eye_lip_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Eye centre and lip centre from 5-point (insightface) or 68-point (iBUG) landmarks; None otherwise."""
    p = np.asarray(landmarks, dtype=np.float64)
    if p.shape == (5, 2):  # left eye, right eye, nose, left mouth corner, right mouth corner
        return (p[0] + p[1]) / 2, (p[3] + p[4]) / 2
    if p.shape == (68, 2):  # eye corners 36/39 and 42/45, mouth corners 48/54
        eye = (p[36] + p[39] + p[42] + p[45]) / 4
        return eye, (p[48] + p[54]) / 2
    return None


def crop_rect_from_landmarks(
    landmarks: np.ndarray, params: CropParams = SOURCE_CROP, rotate: bool = True
) -> tuple[np.ndarray, float, float]:
    """Landmarks (L, 2) → crop centre (2,), side (pixels) and angle (rad) of the face's x axis."""
    p = np.asarray(landmarks, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or len(p) < 2:
        raise ValueError(f"landmarks must have shape (L ≥ 2, 2), got {p.shape}")
    uy = np.array([0.0, 1.0])
    centres = eye_lip_centres(p) if rotate else None
    if centres is not None:
        d = centres[1] - centres[0]
        if np.linalg.norm(d) > 1e-3:
            uy = d / np.linalg.norm(d)  # eye → lip, "down" in the face frame
    ux = np.array([uy[1], -uy[0]])  # face "right"
    rot = np.stack([ux, uy])  # (2, 2) image → face frame
    c0 = p.mean(axis=0)
    q = (p - c0) @ rot.T  # (L, 2) landmarks in the face frame
    lo, hi = q.min(axis=0), q.max(axis=0)
    side = float((hi - lo).max()) * params.scale
    mid = (lo + hi) / 2
    centre = c0 + ux * mid[0] + uy * mid[1] + ux * params.vx_ratio * side + uy * params.vy_ratio * side
    return centre, side, math.atan2(ux[1], ux[0])


def crop_rect_from_box(box: np.ndarray, params: CropParams = SOURCE_CROP) -> tuple[np.ndarray, float, float]:
    """Face box (x0, y0, x1, y1) → crop centre, side, angle 0 (the box plays the landmark extent's role)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"face box must be (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got {tuple(box)}")
    side = max(x1 - x0, y1 - y0) * params.scale
    centre = np.array([(x0 + x1) / 2 + params.vx_ratio * side, (y0 + y1) / 2 + params.vy_ratio * side])
    return centre, side, 0.0


def crop_matrix(centre: np.ndarray, side: float, angle: float, dsize: int = 256) -> np.ndarray:
    """Similarity transform (2, 3) mapping original pixel coordinates to crop pixel coordinates."""
    s = dsize / side
    c, si = math.cos(angle), math.sin(angle)
    cx, cy = float(centre[0]), float(centre[1])
    return np.array(
        [
            [s * c, s * si, dsize / 2 - s * (c * cx + si * cy)],
            [-s * si, s * c, dsize / 2 - s * (-si * cx + c * cy)],
        ]
    )


def warp_images(frames: np.ndarray, matrix: np.ndarray, dsize: int = 256, chunk: int = 32,
                dtype: torch.dtype = torch.float32) -> np.ndarray:
    """uint8 (N, H, W, 3) → uint8 (N, dsize, dsize, 3): bilinear at matrix⁻¹ · crop pixel, zeros outside.

    One matrix for every frame (a clip's fixed crop); frames go through grid_sample in chunks.
    """
    h, w = frames.shape[1:3]
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inv = torch.as_tensor(np.linalg.inv(full)[:2])  # (2, 3) crop → original
    v, u = torch.meshgrid(torch.arange(dsize).double(), torch.arange(dsize).double(), indexing="ij")
    pts = torch.stack([u, v, torch.ones_like(u)], dim=-1) @ inv.T  # (dsize, dsize, 2) original (x, y)
    grid = torch.stack([2 * pts[..., 0] / (w - 1) - 1, 2 * pts[..., 1] / (h - 1) - 1], dim=-1)[None].to(dtype)
    out = np.empty((len(frames), dsize, dsize, 3), np.uint8)
    for s in range(0, len(frames), chunk):
        x = torch.from_numpy(np.ascontiguousarray(frames[s : s + chunk])).permute(0, 3, 1, 2).to(dtype)  # (b, 3, H, W)
        y = F.grid_sample(x, grid.expand(len(x), -1, -1, -1), mode="bilinear", padding_mode="zeros", align_corners=True)
        out[s : s + chunk] = y.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()  # (b, d, d, 3)
    return out


def warp_image(image: np.ndarray, matrix: np.ndarray, dsize: int = 256) -> np.ndarray:
    """uint8 (H, W, 3) → uint8 (dsize, dsize, 3), in float64 (see `warp_images`)."""
    return warp_images(image[None], matrix, dsize, dtype=torch.float64)[0]


def crop_face(
    image: np.ndarray,
    *,
    box: np.ndarray | None = None,
    landmarks: np.ndarray | None = None,
    params: CropParams = SOURCE_CROP,
    dsize: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB (H, W, 3) + face box or landmarks → crop (dsize, dsize, 3) uint8, matrix (2, 3) orig→crop."""
    if (box is None) == (landmarks is None):
        raise ValueError("crop_face needs exactly one of box= (x0, y0, x1, y1) or landmarks= (L, 2)")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 RGB (H, W, 3), got {image.dtype} {image.shape}")
    rect = crop_rect_from_box(box, params) if box is not None else crop_rect_from_landmarks(landmarks, params)
    matrix = crop_matrix(*rect, dsize=dsize)
    return warp_image(image, matrix, dsize), matrix
