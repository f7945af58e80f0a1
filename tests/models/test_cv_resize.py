"""models.cv_resize: OpenCV's uint8 INTER_LINEAR, checked against closed forms of its fixed-point arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from models.cv_resize import resize_linear


def _img(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_quarter_scale_is_the_rounded_mean_of_the_inner_2x2_block() -> None:
    # fx = 0.25: source coordinate 4·dx + 1.5, weights 1024/1024 on both axes, so OpenCV's
    # ((b0·(T0 >> 4)) >> 16) + ((b1·(T1 >> 4)) >> 16) + 2) >> 2 is (a + b + c + d + 2) >> 2 exactly.
    img = _img(40, 64)
    out = resize_linear(img, fx=0.25, fy=0.25)
    s = img.astype(np.int64)
    want = (s[1::4, 1::4] + s[1::4, 2::4] + s[2::4, 1::4] + s[2::4, 2::4] + 2) >> 2
    assert out.shape == (10, 16, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, want)


def test_half_scale_is_opencv_area_fast_with_odd_edges() -> None:
    img = _img(9, 14, seed=1)  # 14·0.5 = 7 columns; 9·0.5 = 4.5 → 4 rows (round half to even): all blocks full
    s = img.astype(np.int64)
    want = (s[0:8:2, 0::2] + s[0:8:2, 1::2] + s[1:8:2, 0::2] + s[1:8:2, 1::2] + 2) >> 2
    np.testing.assert_array_equal(resize_linear(img, fx=0.5, fy=0.5), want)
    odd = _img(6, 7, seed=2)  # 7·0.5 = 3.5 → 4 columns: the last one averages 2 pixels, rounded half to even
    out = resize_linear(odd, fx=0.5, fy=0.5)
    o = odd.astype(np.int64)
    assert out.shape == (3, 4, 3)
    np.testing.assert_array_equal(out[:, 3], np.rint((o[0::2, 6] + o[1::2, 6]) / 2))


@pytest.mark.parametrize("w,fx,expect", [(250, 0.25, 62), (254, 0.25, 64), (640, 0.25, 160), (101, 0.5, 50)])
def test_output_size_rounds_half_to_even(w: int, fx: float, expect: int) -> None:
    assert resize_linear(_img(36, w), fx=fx, fy=fx).shape[1] == expect


def test_identity_constant_and_close_to_float_bilinear() -> None:
    img = _img(37, 53, seed=3)
    same = resize_linear(img, fx=1.0, fy=1.0)
    assert np.array_equal(same, img) and same is not img
    flat = np.full((33, 45, 3), 77, np.uint8)
    for dsize in ((224, 224), (10, 7), (90, 66)):
        assert np.all(resize_linear(flat, dsize) == 77)
    for dsize in ((224, 224), (20, 13), (100, 80)):  # up- and down-scaling: float bilinear (half-pixel centres)
        out = resize_linear(img, dsize).astype(np.float64)
        w, h = dsize
        x = np.clip((np.arange(w) + 0.5) * 53 / w - 0.5, 0, 52)
        y = np.clip((np.arange(h) + 0.5) * 37 / h - 0.5, 0, 36)
        x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
        x1, y1 = np.minimum(x0 + 1, 52), np.minimum(y0 + 1, 36)
        fx, fy = (x - x0)[None, :, None], (y - y0)[:, None, None]
        f = img.astype(np.float64)
        ref = ((1 - fy) * ((1 - fx) * f[y0][:, x0] + fx * f[y0][:, x1])
               + fy * ((1 - fx) * f[y1][:, x0] + fx * f[y1][:, x1]))
        assert out.shape == (h, w, 3) and np.abs(out - ref).max() <= 1.0
    with pytest.raises(ValueError, match="uint8"):
        resize_linear(img.astype(np.float32), (10, 10))
