"""Crop conventions of the public release: box/landmarks → 256×256 similarity crop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.liveportrait.crop import (
    DRIVING_CROP,
    SOURCE_CROP,
    CropParams,
    crop_face,
    crop_matrix,
    crop_rect_from_box,
    crop_rect_from_landmarks,
)


def _apply(matrix: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ matrix[:, :2].T + matrix[:, 2]


def test_public_constants():
    assert (SOURCE_CROP.scale, SOURCE_CROP.vx_ratio, SOURCE_CROP.vy_ratio) == (2.5, 0.0, -0.125)
    assert (DRIVING_CROP.scale, DRIVING_CROP.vx_ratio, DRIVING_CROP.vy_ratio) == (2.2, 0.0, -0.1)


def test_box_crop_geometry():
    centre, side, angle = crop_rect_from_box(np.array([100, 200, 200, 280]), SOURCE_CROP)
    assert side == pytest.approx(250.0) and angle == 0.0
    assert centre == pytest.approx([150.0, 240.0 - 0.125 * 250])  # negative vy moves the crop up
    m = crop_matrix(centre, side, angle, dsize=256)
    np.testing.assert_allclose(_apply(m, centre[None]), [[128.0, 128.0]])


def test_landmark_crop_is_rotation_equivariant():
    face = np.array([[-30.0, -20], [30, -20], [0, 5], [-20, 35], [20, 35]])  # 5-point, upright
    params = CropParams(scale=2.0, vy_ratio=-0.1)
    c0, s0, a0 = crop_rect_from_landmarks(face + 300, params)
    assert a0 == pytest.approx(0.0)
    th = math.radians(20)
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    c1, s1, a1 = crop_rect_from_landmarks(face @ rot.T + 300, params)
    assert s1 == pytest.approx(s0) and a1 == pytest.approx(th)
    m0, m1 = crop_matrix(c0, s0, a0), crop_matrix(c1, s1, a1)
    np.testing.assert_allclose(_apply(m1, face @ rot.T + 300), _apply(m0, face + 300), atol=1e-9)


def test_crop_face_moves_content():
    img = np.zeros((400, 300, 3), np.uint8)
    img[150:170, 140:160] = 255  # a white square at (150, 160) … centre
    crop, m = crop_face(img, box=np.array([100, 100, 200, 220]), params=CropParams(scale=1.0))
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    cx, cy = _apply(m, np.array([[149.5, 159.5]]))[0]
    ys, xs = np.nonzero(crop[..., 0] > 128)
    assert abs(xs.mean() - cx) < 1.0 and abs(ys.mean() - cy) < 1.0


def test_crop_face_errors():
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="exactly one"):
        crop_face(img)
    with pytest.raises(ValueError, match="x1 > x0"):
        crop_face(img, box=np.array([10, 10, 5, 20]))
    with pytest.raises(ValueError, match="uint8"):
        crop_face(img.astype(np.float32), box=np.array([0, 0, 10, 10]))
