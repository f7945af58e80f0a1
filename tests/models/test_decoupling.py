"""Stage zero's losses and probe (models/decoupling.py) on the tiny random face model: which images L_p
compares (checked against the inference API), where gradients go, and exact properties of the probe."""

from __future__ import annotations

import pytest
import torch

from models.decoupling import (
    LossWeights,
    PerceptualSpec,
    equivariance_loss,
    evaluate_pairs,
    render_pair,
    stage_zero_losses,
    summarize_probe,
    transfer,
)
from models.liveportrait import frames_to_input, motion_from_outputs
from models.liveportrait.testing import random_face_model
from models.motion import EXP, POSE, transform_keypoints
from models.vgg import VGG19

SPEC = PerceptualSpec(scales=(1.0, 0.5), layer_weights=(10.0,) * 5)


@pytest.fixture(scope="module")
def face():
    return random_face_model(0, "tiny")


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return VGG19(width=0.125).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def frames():
    """Frames i and j (2, 3, 128, 128): the networks are fully convolutional; 128² crops make the test 4× cheaper."""
    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (2, 256, 256, 3), dtype=torch.uint8, generator=g)
    return u8, torch.nn.functional.interpolate(frames_to_input(u8), size=(128, 128), mode="area")


def test_cross_transfer_images_are_rendered_as_at_inference(face, frames) -> None:
    _, x = frames
    with torch.no_grad():
        r = render_pair(face, x[:1], x[1:])
        motion, kp_c = motion_from_outputs(face.motion_extractor(x))  # as FaceModel.extract_motion: (2, 70), …
        cross = transfer(motion[:1], motion[1:])
        assert torch.equal(cross[:, EXP], motion[:1, EXP]) and torch.equal(cross[:, POSE], motion[1:, POSE])
        f = face.appearance_extractor(x)

        def inference_render(src: int, drv_motion: torch.Tensor) -> torch.Tensor:  # x_s, x_d from the source x_c
            x_s = transform_keypoints(kp_c[src : src + 1], motion[src : src + 1])
            x_d = transform_keypoints(kp_c[src : src + 1], drv_motion)
            return torch.nn.functional.avg_pool2d(face.warp_decode(f[src : src + 1], x_s, x_d), 2)

        torch.testing.assert_close(r.pose_ij, inference_render(0, cross), rtol=0, atol=1e-5)  # source i
        torch.testing.assert_close(r.exp_ji, inference_render(1, cross), rtol=0, atol=1e-5)  # source j
        torch.testing.assert_close(r.rec_j, inference_render(0, motion[1:]), rtol=0, atol=1e-5)
        assert (r.pose_ij - r.exp_ji).abs().max() > 1e-3  # two different sources: L_p is not trivially 0


def test_identical_frames_give_zero_lp_and_zero_probe(face, vgg, frames) -> None:
    _, x = frames
    values, _ = evaluate_pairs(face, vgg, x[:1], x[:1], SPEC)
    for k in ("exp_drift", "exp_response", "pose_drift", "pose_response", "exp_requested", "pose_requested"):
        assert values[k].item() == 0.0, k  # same frame: every render is the unchanged one
    assert values["lp"].item() < 1e-3  # (the RMS form's 1e-6 floor per tap and scale)


def test_losses_train_only_the_trainable_modules(face, vgg, frames) -> None:
    _, x = frames
    face.requires_grad_(False)
    face.motion_extractor.requires_grad_(True)
    try:
        torch.manual_seed(0)
        terms, _ = stage_zero_losses(face, vgg, x[:1], x[1:], LossWeights(), SPEC, teacher=face.motion_extractor)
        assert set(terms) == {"loss", "cross", "rec_l1", "rec_perc", "equivariance", "deformation", "pose_anchor"}
        assert all(torch.isfinite(v) for v in terms.values())
        w = LossWeights()
        total = sum(getattr(w, k) * v for k, v in terms.items() if k != "loss")
        torch.testing.assert_close(terms["loss"], total)
        terms["loss"].backward()
        grads = {n: p.grad for n, p in face.named_parameters() if p.grad is not None}
        assert grads and all(n.startswith("motion_extractor.") for n in grads)
        assert sum(g.abs().sum() for g in grads.values()) > 0
    finally:
        face.zero_grad(set_to_none=True)
        face.requires_grad_(False)


def test_equivariance_is_zero_for_the_identity_warp(face, frames) -> None:
    _, x = frames
    with torch.no_grad():
        from models.decoupling import describe

        kp = describe(face, x, appearance=False).kp
        assert equivariance_loss(face.motion_extractor, x, kp, sigma=0.0).item() < 1e-5
        assert equivariance_loss(face.motion_extractor, x, kp, sigma=0.2).item() > 1e-4


def test_probe_summary() -> None:
    sums = {"lp": 2.0, "exp_drift": 1.0, "exp_response": 4.0, "pose_drift": 3.0, "pose_response": 6.0}
    out = summarize_probe(sums, 2)
    assert out["lp"] == 1.0 and out["exp_leak"] == 0.25 and out["pose_leak"] == 0.5
