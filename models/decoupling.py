"""Stage zero (docs/stage-zero.md): the face model's motion-decoupling losses and a disentanglement probe.

For two frames I_i, I_j of one clip, M gives each its motion m = (δ, R, t, s) and canonical keypoints
x_c, F its appearance volume f. Every image is rendered exactly as Playmate renders at inference:
G(W(f_src, x_s, x_d)) with x_s = T(x_c,src; m_src) and x_d = T(x_c,src; m_drv), T the keypoint transform
x = s·(x_c R + δ) + [t_x, t_y, 0] (`models.motion.transform_keypoints`), from the source's own x_c.

    Î^pose_{i,j}  source I_i, driving (δ_i; R_j, t_j, s_j): frame i's appearance and expression, j's pose
    Î^exp_{j,i}   source I_j, driving (δ_i; R_j, t_j, s_j): frame j, with frame i's expression
    Î^rec_j       source I_i, driving m_j: frame j reconstructed from frame i's appearance

Both cross-transfer images depict the same content (the clip's person with δ_i under j's pose); one is
warped from frame i (pose changed), the other from frame j (expression changed), so L_p =
d_VGG(Î^pose_{i,j}, Î^exp_{j,i}) is small only when M's pose and expression each describe their own frame
consistently. G renders 512² from 256² crops; every image is compared at the crop resolution (2×2 average
pooling). The networks are fully convolutional: smaller crops (a multiple of 32) work the same, for CPU tests.

Shape legend: B pairs · K = 21 keypoints · S crop side (256) · images (B, 3, S, S) float in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.liveportrait.face_model import FaceModel, motion_from_outputs
from models.motion import ANGLES, EXP, POSE, transform_keypoints
from models.vgg import VGG19, perceptual_distance


@dataclass
class Frame:
    """What M (and F) say about a batch of frames."""

    motion: Tensor  # (B, 70) float32: δ (63), pitch/yaw/roll (°), t (3), s
    kp_c: Tensor  # (B, K, 3) float32: canonical keypoints x_c
    kp: Tensor  # (B, K, 3) float32: x_s = T(x_c; motion), the frame's own keypoints
    feature: Tensor | None = None  # (B, 32, 16, S/4, S/4): F(image), when asked for


@dataclass
class LossWeights:
    """Weights of the stage-zero terms (a term with weight 0 is not computed in training)."""

    cross: float = 1.0  # L_p, the cross-transfer perceptual loss
    rec_l1: float = 10.0  # L1 of Î^rec_j vs I_j
    rec_perc: float = 1.0  # pyramid VGG perceptual loss of Î^rec_j vs I_j
    equivariance: float = 10.0  # keypoints follow a random affine warp of the image
    deformation: float = 1.0  # small-δ prior: mean |δ|
    pose_anchor: float = 0.1  # |angles − the public M's angles| in degrees


@dataclass
class PerceptualSpec:
    """The pyramid perceptual distance: scales and per-tap weights (models.vgg.perceptual_distance)."""

    scales: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125)
    layer_weights: tuple[float, ...] = (10.0, 10.0, 10.0, 10.0, 10.0)


def keypoints(kp_c: Tensor, motion: Tensor) -> Tensor:
    """x = T(x_c; motion) (B, K, 3) in float32, outside autocast (keypoints address a 64³ volume)."""
    with torch.autocast(device_type=kp_c.device.type, enabled=False):
        return transform_keypoints(kp_c.float(), motion.float())


def describe(face: FaceModel, image: Tensor, appearance: bool = True, extractor: nn.Module | None = None) -> Frame:
    """Images (B, 3, S, S) → motion, x_c, x_s (and F's volume) with gradients where parameters train.

    extractor: another motion extractor than face's M (the frozen public M of the pose anchor)."""
    motion, kp_c = motion_from_outputs((extractor or face.motion_extractor)(image))  # (B, 70), (B, K, 3)
    return Frame(motion, kp_c, keypoints(kp_c, motion), face.appearance_extractor(image) if appearance else None)


def render(face: FaceModel, feature: Tensor, kp_source: Tensor, kp_driving: Tensor) -> Tensor:
    """G(W(f, x_s, x_d)) at the crop resolution: (B, 3, S, S) float32 (G's 2S output, 2×2 average pooled)."""
    dtype = next(face.warping_module.parameters()).dtype  # bf16 under DeepSpeed, else float32 (autocast)
    warped = face.warping_module(feature, kp_driving=kp_driving.to(dtype), kp_source=kp_source.to(dtype))
    return F.avg_pool2d(face.spade_generator(warped["out"]).float(), 2)  # (B, 3, S, S)


def transfer(exp_from: Tensor, pose_from: Tensor) -> Tensor:
    """Motion (B, 70) with the expression δ of `exp_from` and the rotation, translation, scale of `pose_from`."""
    return torch.cat([exp_from[:, EXP], pose_from[:, POSE]], dim=-1)


@dataclass
class PairRenders:
    """The renders of one batch of pairs (i, j)."""

    frame_i: Frame
    frame_j: Frame
    pose_ij: Tensor  # Î^pose_{i,j}: source i, driving (δ_i; pose_j)
    exp_ji: Tensor  # Î^exp_{j,i}: source j, driving (δ_i; pose_j)
    rec_j: Tensor | None  # Î^rec_j: source i, driving m_j


def render_pair(face: FaceModel, img_i: Tensor, img_j: Tensor, reconstruct: bool = True) -> PairRenders:
    fi, fj = describe(face, img_i), describe(face, img_j)
    cross = transfer(fi.motion, fj.motion)  # (B, 70): δ_i with R_j, t_j, s_j
    pose_ij = render(face, fi.feature, fi.kp, keypoints(fi.kp_c, cross))
    exp_ji = render(face, fj.feature, fj.kp, keypoints(fj.kp_c, cross))
    rec_j = render(face, fi.feature, fi.kp, keypoints(fi.kp_c, fj.motion)) if reconstruct else None
    return PairRenders(fi, fj, pose_ij, exp_ji, rec_j)


def equivariance_loss(extractor: nn.Module, image: Tensor, kp: Tensor, sigma: float) -> Tensor:
    """mean |x_xy − (A x'_xy + b)|: keypoints x' of the image warped by a random affine map (A, b) =
    I + N(0, σ²) (FOMM's equivariance constraint without the thin-plate part) must map back onto x."""
    b = image.shape[0]
    theta = (torch.eye(2, 3) + sigma * torch.randn(b, 2, 3)).to(image.device)  # output → input coordinates
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    warped = F.grid_sample(image, grid.to(image.dtype), padding_mode="reflection", align_corners=False)
    motion, kp_c = motion_from_outputs(extractor(warped))
    kp_w = keypoints(kp_c, motion)[..., :2]  # (B, K, 2) keypoints in the warped image
    mapped = kp_w @ theta[:, :, :2].transpose(1, 2) + theta[:, None, :, 2]  # back into the original image
    return (kp[..., :2] - mapped).abs().mean()


def stage_zero_losses(
    face: FaceModel,
    vgg: VGG19,
    img_i: Tensor,
    img_j: Tensor,
    weights: LossWeights,
    spec: PerceptualSpec,
    teacher: nn.Module | None = None,
    equivariance_sigma: float = 0.05,
) -> tuple[dict[str, Tensor], PairRenders]:
    """The training objective of one batch of pairs: ({"loss", and each computed term}, the renders).

    loss = w_cross·L_p + w_rec_l1·L1(Î^rec_j, I_j) + w_rec_perc·P(Î^rec_j, I_j) + w_equivariance·L_E
           + w_deformation·mean|δ| + w_pose_anchor·mean|angles − angles of the frozen public M (teacher)|.
    """
    w = weights
    r = render_pair(face, img_i, img_j, reconstruct=bool(w.rec_l1 or w.rec_perc))
    terms = {"cross": perceptual_distance(vgg, r.pose_ij, r.exp_ji, spec.scales, spec.layer_weights, "l2").mean()}
    if r.rec_j is not None:
        target = img_j.float()
        terms["rec_l1"] = (r.rec_j - target).abs().mean()
        terms["rec_perc"] = perceptual_distance(vgg, r.rec_j, target, spec.scales, spec.layer_weights, "l1").mean()
    if w.equivariance:
        terms["equivariance"] = equivariance_loss(face.motion_extractor, img_j, r.frame_j.kp, equivariance_sigma)
    motions = torch.cat([r.frame_i.motion, r.frame_j.motion])  # (2B, 70)
    if w.deformation:
        terms["deformation"] = motions[:, EXP].abs().mean()
    if w.pose_anchor and teacher is not None:
        with torch.no_grad():
            ref, _ = motion_from_outputs(teacher(torch.cat([img_i, img_j]).float()))
        terms["pose_anchor"] = (motions[:, ANGLES] - ref[:, ANGLES]).abs().mean()
    terms["loss"] = sum(getattr(w, name) * value for name, value in terms.items())
    return terms, r


# ------------------------------------------------------------------------------------------------
# Validation: held-out L_p, reconstruction and the disentanglement probe
# ------------------------------------------------------------------------------------------------

PROBE_KEYS = ("exp_drift", "exp_response", "pose_drift", "pose_response", "exp_requested", "pose_requested")


@torch.no_grad()
def evaluate_pairs(face: FaceModel, vgg: VGG19, img_i: Tensor, img_j: Tensor,
                   spec: PerceptualSpec) -> tuple[dict[str, Tensor], PairRenders]:
    """Per-pair (B,) values of L_p, the reconstruction terms and the probe; and the renders.

    Probe (on renderable pairs, re-extracting with M): the unchanged renders S_i = G(W(f_i, x_s,i, x_s,i))
    and S_j are the baselines (they carry the renderer's own error). A pose-only change (Î^pose_{i,j} vs
    S_i) should leave δ alone: exp_drift = mean|δ(Î^pose) − δ(S_i)|, while exp_response = mean|δ(Î^exp) −
    δ(S_j)| is what a real expression change (δ_j → δ_i) moves it. An expression-only change should leave
    the head alone: pose_drift = mean|angles(Î^exp) − angles(S_j)| (°), pose_response = mean|angles(Î^pose)
    − angles(S_i)|. exp_requested, pose_requested: the changes asked for, mean|δ_i − δ_j|, mean|angles_i −
    angles_j|. Leaks (Σ drift / Σ response, in `summarize_probe`) are 0 for a disentangled M.
    """
    r = render_pair(face, img_i, img_j)
    fi, fj = r.frame_i, r.frame_j
    self_i = render(face, fi.feature, fi.kp, fi.kp)
    self_j = render(face, fj.feature, fj.kp, fj.kp)
    b = img_i.shape[0]
    images = torch.cat([self_i, self_j, r.pose_ij, r.exp_ji]).to(img_i.dtype)
    re = describe(face, images, appearance=False).motion.split(b)  # 4 × (B, 70)
    m_si, m_sj, m_pose, m_exp = re

    def diff(a: Tensor, c: Tensor, part: slice) -> Tensor:
        return (a[:, part] - c[:, part]).abs().mean(1)  # (B,)

    out = {
        "lp": perceptual_distance(vgg, r.pose_ij, r.exp_ji, spec.scales, spec.layer_weights, "l2"),
        "rec_l1": (r.rec_j - img_j.float()).abs().flatten(1).mean(1),
        "rec_perc": perceptual_distance(vgg, r.rec_j, img_j.float(), spec.scales, spec.layer_weights, "l1"),
        "exp_drift": diff(m_pose, m_si, EXP),
        "exp_response": diff(m_exp, m_sj, EXP),
        "pose_drift": diff(m_exp, m_sj, ANGLES),
        "pose_response": diff(m_pose, m_si, ANGLES),
        "exp_requested": diff(fi.motion, fj.motion, EXP),
        "pose_requested": diff(fi.motion, fj.motion, ANGLES),
    }
    return out, r


def summarize_probe(sums: dict[str, float], count: int) -> dict[str, float]:
    """Totals over pairs → means, plus exp_leak = Σ exp_drift / Σ exp_response (δ moved by a pose-only
    change, relative to a real expression change) and pose_leak = Σ pose_drift / Σ pose_response."""
    out = {k: v / max(count, 1) for k, v in sums.items()}
    out["exp_leak"] = sums["exp_drift"] / max(sums["exp_response"], 1e-12)
    out["pose_leak"] = sums["pose_drift"] / max(sums["pose_response"], 1e-12)
    return out
