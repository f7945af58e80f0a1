"""OpenCV's uint8 ``cv2.resize(..., interpolation=INTER_LINEAR)`` re-implemented in numpy, bit for bit.

The standard Sync-C/Sync-D pipeline (joonson/syncnet_python) resizes with OpenCV twice: S3FD's
input (``fx = fy = facedet_scale``, 0.25) and the 224×224 face crop. Without OpenCV in this project,
this module computes what OpenCV's generic CPU path (imgproc/src/resize.cpp, ``hal::resize``)
computes for 8-bit images:

* output size: ``round(W·fx)``, ``round(H·fy)`` (``saturate_cast<int>``: round half to even) when a
  scale is given; the output equals the input when the sizes match (a plain copy).
* bilinear with half-pixel centres: for output column dx, ``f = float((dx + 0.5)·scale − 0.5)``
  (scale = 1/fx, in double, then float), ``sx = floor(f)``, ``f −= sx``; a column left of the image
  (sx < 0) or at/after the last one (sx ≥ W−1) takes the edge pixel with weight 1. Weights are
  fixed point: ``a0 = rint((1 − f)·2048)``, ``a1 = rint(f·2048)`` (int16). Rows use the same
  weights (never reset at the border) with both row indices clamped to [0, H−1].
* horizontal pass: ``T = S[sx]·a0 + S[sx+1]·a1`` (int32); vertical pass:
  ``out = (((b0·(T0 >> 4)) >> 16) + ((b1·(T1 >> 4)) >> 16) + 2) >> 2`` (``VResizeLinear`` for uchar,
  also what its SIMD version computes).
* an exact 2× downscale (fx = fy = 0.5) is turned into INTER_AREA by OpenCV: every full 2×2 block
  gives ``(a + b + c + d + 2) >> 2``; a partial block at an odd right/bottom edge gives the mean of
  its pixels rounded half to even.

Residual differences: none known for the CPU path of OpenCV 3.4–4.x on x86/ARM builds without a
custom HAL. Builds that route resize through OpenCL (UMat inputs), Intel IPP "not exact" mode or a
vendor HAL (e.g. Carotene on some ARM builds) may differ by ±1 grey level.
"""

from __future__ import annotations

import numpy as np

COEF_BITS = 11
COEF_SCALE = 1 << COEF_BITS  # INTER_RESIZE_COEF_SCALE = 2048


def _out_size(size: int, scale: float) -> int:
    """saturate_cast<int>(size·scale): round half to even, as cvRound does."""
    return int(np.rint(size * scale))


def _linear_table(src: int, dst: int, scale: float, clamp_weights: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first index, second index, weights (dst, 2) int64) for one axis of the bilinear resize."""
    d = np.arange(dst, dtype=np.float64)
    f = ((d + 0.5) * scale - 0.5).astype(np.float32)  # (float)((dx+0.5)*scale_x - 0.5)
    s = np.floor(f).astype(np.int64)  # cvFloor
    f = (f - s.astype(np.float32)).astype(np.float32)
    if clamp_weights:  # columns: outside the image the edge pixel gets weight 1
        low, high = s < 0, s >= src - 1
        f = np.where(low | high, np.float32(0.0), f).astype(np.float32)
        s = np.where(low, 0, np.where(high, src - 1, s))
    w0 = np.rint((np.float32(1.0) - f) * np.float32(COEF_SCALE)).astype(np.int64)  # saturate_cast<short>
    w1 = np.rint(f * np.float32(COEF_SCALE)).astype(np.int64)
    i0 = np.clip(s, 0, src - 1)
    i1 = np.clip(s + 1, 0, src - 1)
    return i0, i1, np.stack([w0, w1], axis=1)


def _resize_bilinear(img: np.ndarray, out_w: int, out_h: int, scale_x: float, scale_y: float) -> np.ndarray:
    h, w = img.shape[:2]
    x0, x1, ax = _linear_table(w, out_w, scale_x, clamp_weights=True)
    y0, y1, by = _linear_table(h, out_h, scale_y, clamp_weights=False)
    src = img.astype(np.int64)
    ex = (slice(None),) + (None,) * (img.ndim - 2)  # weights broadcast over channels
    rows = np.union1d(y0, y1)  # only the rows the output needs
    tmp = np.zeros((h, out_w) + img.shape[2:], np.int64)
    tmp[rows] = src[rows][:, x0] * ax[:, 0][ex] + src[rows][:, x1] * ax[:, 1][ex]  # horizontal pass (int32 in OpenCV)
    t0, t1 = tmp[y0] >> 4, tmp[y1] >> 4
    ey = (slice(None), None) + (None,) * (img.ndim - 2)
    out = (((by[:, 0][ey] * t0) >> 16) + ((by[:, 1][ey] * t1) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def _resize_area2(img: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """OpenCV's INTER_AREA fast path for an exact 2× downscale (what INTER_LINEAR becomes at 0.5)."""
    h, w = img.shape[:2]
    src = img.astype(np.int64)
    out = np.zeros((out_h, out_w) + img.shape[2:], np.int64)
    fh, fw = min(h // 2, out_h), min(w // 2, out_w)  # full 2×2 blocks
    blk = src[: 2 * fh, : 2 * fw]
    out[:fh, :fw] = (blk[0::2, 0::2] + blk[0::2, 1::2] + blk[1::2, 0::2] + blk[1::2, 1::2] + 2) >> 2
    for dy in range(out_h):  # partial blocks at an odd right or bottom edge: mean, rounded half to even
        for dx in range(out_w):
            if dy < fh and dx < fw:
                continue
            cell = src[2 * dy : min(2 * dy + 2, h), 2 * dx : min(2 * dx + 2, w)]
            n = cell.shape[0] * cell.shape[1]
            out[dy, dx] = np.rint((cell.sum(axis=(0, 1)) / n).astype(np.float32))
    return np.clip(out, 0, 255).astype(np.uint8)


def resize_linear(image: np.ndarray, dsize: tuple[int, int] | None = None, fx: float = 0.0,
                  fy: float = 0.0) -> np.ndarray:
    """``cv2.resize(image, dsize or (0, 0), fx=fx, fy=fy, interpolation=cv2.INTER_LINEAR)`` for uint8.

    image: uint8 (H, W) or (H, W, C); dsize: (width, height) as OpenCV takes it, or None to use fx/fy.
    """
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"resize_linear needs a uint8 (H, W[, C]) image, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if dsize is not None and dsize[0] > 0 and dsize[1] > 0:
        out_w, out_h = int(dsize[0]), int(dsize[1])
        inv_x, inv_y = out_w / w, out_h / h
    else:
        if fx <= 0 or fy <= 0:
            raise ValueError(f"resize_linear needs dsize=(width, height) or fx, fy > 0; got dsize={dsize}, "
                             f"fx={fx}, fy={fy}")
        inv_x, inv_y = float(fx), float(fy)
        out_w, out_h = _out_size(w, inv_x), _out_size(h, inv_y)
    if out_w <= 0 or out_h <= 0:
        raise ValueError(f"resize_linear: {w}x{h} scaled by ({inv_x}, {inv_y}) is empty")
    if (out_w, out_h) == (w, h):
        return image.copy()
    scale_x, scale_y = 1.0 / inv_x, 1.0 / inv_y
    ix, iy = int(np.rint(scale_x)), int(np.rint(scale_y))
    area_fast = abs(scale_x - ix) < np.finfo(np.float64).eps and abs(scale_y - iy) < np.finfo(np.float64).eps
    if area_fast and ix == 2 and iy == 2:
        return _resize_area2(image, out_w, out_h)
    return _resize_bilinear(image, out_w, out_h, scale_x, scale_y)
