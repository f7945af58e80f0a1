"""Motion API: extract_motion, render, round trip, public conventions, rotation/transform properties."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from models.liveportrait import FaceModel, load_face_model
from models.motion import (
    EXP,
    MOTION_DIM,
    angles_from_rotation,
    headpose_bins_to_degrees,
    join_motion,
    rotation_matrix,
    transform_keypoints,
)


def test_extract_motion_layout(tiny_model, frames):
    motion, kp = tiny_model.extract_motion(frames)
    assert motion.shape == (2, MOTION_DIM) and motion.dtype == torch.float32
    assert kp.shape == (2, 21, 3) and kp.dtype == torch.float32
    x = (torch.as_tensor(frames).permute(0, 3, 1, 2).float() / 255).contiguous()  # public prepare_source
    with torch.no_grad():
        raw = tiny_model.motion_extractor(x)
    expected = join_motion(
        raw["exp"],
        *(headpose_bins_to_degrees(raw[k]) for k in ("pitch", "yaw", "roll")),
        raw["t"],
        raw["scale"],
    )
    # last-bit only: the first CPU call in a process can round differently
    # (see test_tiny_shapes_and_determinism)
    torch.testing.assert_close(motion, expected)
    torch.testing.assert_close(kp, raw["kp"].reshape(2, 21, 3))
    assert motion[:, 63:66].abs().max() <= 97.5


def test_extract_motion_batching_and_torch_input(tiny_model, frames):
    a, ka = tiny_model.extract_motion(frames, batch_size=1)
    b, kb = tiny_model.extract_motion(torch.as_tensor(frames), batch_size=2)
    # float32 rounding differs between batch sizes (conv blocking); angles are in degrees (±97.5),
    # where it reaches ~2e-5. A batching bug would differ by orders of magnitude more.
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ka, kb, atol=1e-5, rtol=1e-5)


def test_round_trip_extract_render_extract(tiny_model, frames):
    motion, kp = tiny_model.extract_motion(frames)
    driving = motion.clone()
    driving[1, 64] += 20.0  # a yaw change
    out = tiny_model.render(frames[0], motion[0], kp[0], driving, batch_size=1)
    assert out.shape == (2, 512, 512, 3) and out.dtype == np.uint8
    assert not np.array_equal(out[0], out[1])  # different motion → different frames
    assert out.std() > 1.0
    again = tiny_model.render(frames[0], motion[0], kp[0], driving, batch_size=2)
    assert np.abs(out.astype(int) - again.astype(int)).max() <= 1  # batch size changes only rounding
    small = out.reshape(2, 256, 2, 256, 2, 3).mean(axis=(2, 4)).astype(np.uint8)  # 512 → 256
    m2, kp2 = tiny_model.extract_motion(small)
    assert m2.shape == (2, MOTION_DIM) and kp2.shape == (2, 21, 3)
    assert torch.isfinite(m2).all() and torch.isfinite(kp2).all()


def test_render_matches_manual_pipeline(tiny_model, frames):
    motion, kp = tiny_model.extract_motion(frames[:1])
    out = tiny_model.render(frames[0], motion[0], kp[0], motion[:1])
    x = (torch.as_tensor(frames[:1]).permute(0, 3, 1, 2).float() / 255).contiguous()
    with torch.no_grad():
        f_s = tiny_model.appearance_extractor(x)
        x_s = transform_keypoints(kp, motion)  # (1, 21, 3)
        w = tiny_model.warping_module(f_s, kp_driving=x_s, kp_source=x_s)
        img = tiny_model.spade_generator(w["out"])
    ref = (img.clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    diff = np.abs(out.astype(int) - ref.astype(int))  # matmul batch shapes differ: last-bit rounding only
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_render_and_extract_validate_inputs(tiny_model, frames):
    motion, kp = tiny_model.extract_motion(frames[:1])
    with pytest.raises(ValueError, match="uint8"):
        tiny_model.extract_motion(frames.astype(np.float32))
    with pytest.raises(ValueError, match="256"):
        tiny_model.extract_motion(frames[:, :128])
    with pytest.raises(ValueError, match="driving_motion"):
        tiny_model.render(frames[0], motion[0], kp[0], motion[0])
    with pytest.raises(ValueError, match="source_kp"):
        tiny_model.render(frames[0], motion[0], kp, motion)
    bad = motion.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        tiny_model.render(frames[0], motion[0], kp[0], bad)
    with pytest.raises(ValueError, match="batch_size"):
        tiny_model.render(frames[0], motion[0], kp[0], motion, batch_size=0)


def test_frozen_model_stays_in_eval_mode(tiny_cfg):
    model = FaceModel(tiny_cfg)
    parent = torch.nn.Sequential(model).train()  # e.g. a LightningModule switching to training
    assert not parent[0].training and not model.spade_generator.up_0.conv_0.training
    model.frozen = False
    assert model.train().spade_generator.training


def test_load_face_model_api(tiny_weights_dir, tiny_cfg):
    model = load_face_model(tiny_weights_dir, "cpu", cfg=tiny_cfg)
    assert isinstance(model, FaceModel)
    for attr in ("appearance_extractor", "motion_extractor", "warping_module", "spade_generator"):
        assert isinstance(getattr(model, attr), torch.nn.Module)
    assert model.device == torch.device("cpu")


@pytest.mark.slow  # writes and loads the four public-size files (about 500 MB)
def test_full_extract_motion_from_real_format_weights(full_model, frames):
    motion, kp = full_model.extract_motion(frames)
    assert motion.shape == (2, 70) and kp.shape == (2, 21, 3) and torch.isfinite(motion).all()


@pytest.mark.slow
def test_full_round_trip(full_model, frames):
    motion, kp = full_model.extract_motion(frames)
    out = full_model.render(frames[0], motion[0], kp[0], motion, batch_size=2)
    assert out.shape == (2, 512, 512, 3) and out.dtype == np.uint8 and not np.array_equal(out[0], out[1])
    m2, _ = full_model.extract_motion(out[:, ::2, ::2].copy())
    assert torch.isfinite(m2).all()


# --- rotation convention and keypoint transform (models.motion, used by render) ---------------------------


def _public_rotation(p: float, y: float, r: float) -> np.ndarray:
    """The manifest's get_rotation_matrix written out with numpy: (Rz Ry Rx)ᵀ."""
    x, y, z = (math.radians(a) for a in (p, y, r))
    rx = np.array([[1, 0, 0], [0, math.cos(x), -math.sin(x)], [0, math.sin(x), math.cos(x)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(z), -math.sin(z), 0], [math.sin(z), math.cos(z), 0], [0, 0, 1]])
    return (rz @ ry @ rx).T


def test_rotation_orthonormal_and_convention():
    g = torch.Generator().manual_seed(0)
    ang = (torch.rand(64, 3, generator=g, dtype=torch.float64) - 0.5) * 170  # degrees, |yaw| < 90
    r = rotation_matrix(ang[:, 0], ang[:, 1], ang[:, 2])  # (64, 3, 3)
    eye = torch.eye(3, dtype=torch.float64).expand(64, 3, 3)
    torch.testing.assert_close(r @ r.transpose(-1, -2), eye)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(64, dtype=torch.float64))
    for i in range(4):
        np.testing.assert_allclose(r[i].numpy(), _public_rotation(*ang[i].tolist()), atol=1e-12)
    p, y, rr = angles_from_rotation(r)
    torch.testing.assert_close(torch.stack([p, y, rr], -1), ang)


def test_transform_keypoints_public_formula():
    g = torch.Generator().manual_seed(1)
    kp = torch.randn(3, 21, 3, generator=g, dtype=torch.float64)
    motion = torch.randn(3, 70, generator=g, dtype=torch.float64)
    motion[:, 63:66] *= 30
    out = transform_keypoints(kp, motion)
    for i in range(3):
        r = torch.as_tensor(_public_rotation(*motion[i, 63:66].tolist()))
        ref = motion[i, 69] * (kp[i] @ r + motion[i, EXP].reshape(21, 3))
        ref[:, :2] += motion[i, 66:68]  # tz ignored
        torch.testing.assert_close(out[i], ref)


def test_headpose_bins_round_trip():
    deg = torch.tensor([-90.0, -12.0, 0.0, 33.0, 90.0])
    idx = (deg + 97.5) / 3  # bin position
    logits = -0.5 * (torch.arange(66.0)[None] - idx[:, None]) ** 2 / 0.05  # sharp peak at the position
    torch.testing.assert_close(headpose_bins_to_degrees(logits), deg, atol=0.05, rtol=0)


def test_models_do_not_import_lightning():
    code = "import sys, models.liveportrait, models.liveportrait.testing; print('lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
