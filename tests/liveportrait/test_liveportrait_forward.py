"""Forward contracts of F, M, W, G: documented shapes, numerical conventions, bit-identical determinism."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.liveportrait.blocks import kp2gaussian, make_coordinate_grid
from models.liveportrait.motion_extractor import GRN, LayerNorm2d


def _contract_shapes(manifest: dict, name: str) -> dict[str, tuple[int, ...]] | tuple[int, ...]:
    out = manifest["modules"][name]["io"]["output"]
    return {k: tuple(v) for k, v in out.items()} if isinstance(out, dict) else None


def _run_all(model, x: torch.Tensor) -> dict:
    """Every module once on a batch (B, 3, 256, 256); keypoints from M."""
    with torch.no_grad():
        f_s = model.appearance_extractor(x)
        m = model.motion_extractor(x)
        kp = m["kp"].reshape(-1, 21, 3)
        w = model.warping_module(f_s, kp_driving=kp * 0.9 + 0.05, kp_source=kp)
        img = model.spade_generator(w["out"])
    named = {"f_s": f_s, **{f"M.{k}": v for k, v in m.items()}, **{f"W.{k}": v for k, v in w.items()}}
    return {**named, "G": img}


def _check_contracts(manifest: dict, outs: dict, channels_exact: bool) -> None:
    m_shapes = _contract_shapes(manifest, "motion_extractor")
    assert list(k.removeprefix("M.") for k in outs if k.startswith("M.")) == list(m_shapes)  # dict order
    for k, shape in m_shapes.items():
        assert tuple(outs[f"M.{k}"].shape) == shape, k
    w_shapes = _contract_shapes(manifest, "warping_module")
    assert list(k.removeprefix("W.") for k in outs if k.startswith("W.")) == list(w_shapes)
    for k, shape in w_shapes.items():
        got = tuple(outs[f"W.{k}"].shape)
        assert got == shape if channels_exact or k != "out" else (got[0], got[2:]) == (shape[0], shape[2:]), k
    f_shape = (1, 32, 16, 64, 64)
    assert tuple(outs["f_s"].shape) == f_shape if channels_exact else outs["f_s"].shape[2:] == f_shape[2:]
    assert tuple(outs["G"].shape) == (1, 3, 512, 512)
    assert 0 <= outs["G"].min() and outs["G"].max() <= 1
    assert all(torch.isfinite(v).all() for v in outs.values())


def test_tiny_shapes_and_determinism(manifest, tiny_model):
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    # Warm-up: we observed the very first CPU forward in a process occasionally differing from later ones in
    # the last bit (a sqrt right after the first oneDNN conv); every later call is bit-identical.
    _run_all(tiny_model, x)
    a, b = _run_all(tiny_model, x), _run_all(tiny_model, x)
    _check_contracts(manifest, a, channels_exact=False)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs between two runs"
    assert a["G"].std() > 0.01  # random weights give a non-degenerate image


@pytest.mark.slow  # writes and loads the four public-size files (about 500 MB)
def test_full_motion_and_appearance_shapes(manifest, full_model):
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        f_s = full_model.appearance_extractor(x)
        full_model.motion_extractor(x)  # warm-up
        m = full_model.motion_extractor(x)
        m2 = full_model.motion_extractor(x)
    assert tuple(f_s.shape) == (1, 32, 16, 64, 64)
    shapes = _contract_shapes(manifest, "motion_extractor")
    assert {k: tuple(v.shape) for k, v in m.items()} == shapes and list(m) == list(shapes)
    assert all(torch.equal(m[k], m2[k]) for k in m)


@pytest.mark.slow
def test_full_contracts_and_determinism(manifest, full_model):
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    _run_all(full_model, x)  # warm-up, as in the tiny test
    a, b = _run_all(full_model, x), _run_all(full_model, x)
    _check_contracts(manifest, a, channels_exact=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_coordinate_grid_convention():
    g = make_coordinate_grid((3, 4, 5), torch.zeros(1))  # (D, H, W, 3) of (x, y, z)
    assert g.shape == (3, 4, 5, 3)
    assert torch.equal(g[0, 0, :, 0], torch.linspace(-1, 1, 5))  # x varies along W, endpoints included
    assert torch.equal(g[0, :, 0, 1], 2 * (torch.arange(4.0) / 3) - 1)  # y along H, the public arithmetic
    assert torch.equal(g[:, 0, 0, 2], torch.tensor([-1.0, 0.0, 1.0]))  # z along D


def test_gaussian_heatmap_peak_and_width():
    kp = torch.tensor([[[0.0, 0.0, 0.0]]])  # exactly on the centre voxel of a (3, 3, 3) grid
    h = kp2gaussian(kp, (3, 3, 3), kp_variance=0.01)  # (1, 1, 3, 3, 3)
    assert h[0, 0, 1, 1, 1] == 1.0
    assert torch.isclose(h[0, 0, 1, 1, 2], torch.exp(torch.tensor(-0.5 / 0.01)))


def test_grn_and_channels_first_layernorm():
    x = torch.randn(2, 5, 6, 8)  # (B, H, W, C)
    grn = GRN(8)
    with torch.no_grad():
        grn.gamma.normal_()
        grn.beta.normal_()
    gx = x.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()
    ref = grn.gamma * (x * gx / (gx.mean(-1, keepdim=True) + 1e-6)) + grn.beta + x
    torch.testing.assert_close(grn(x), ref)
    ln = LayerNorm2d(8)
    y = torch.randn(2, 8, 5, 6)
    ref = F.layer_norm(y.permute(0, 2, 3, 1), (8,), eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(y), ref, atol=1e-5, rtol=1e-5)


def test_spectral_norm_eval_has_no_power_iteration(tiny_model):
    conv = tiny_model.spade_generator.up_0.conv_0
    u0, v0 = conv.weight_u.clone(), conv.weight_v.clone()
    x = torch.randn(1, conv.in_channels, 8, 8)
    with torch.no_grad():
        y = conv(x)
    assert torch.equal(conv.weight_u, u0) and torch.equal(conv.weight_v, v0)
    w = conv.weight_orig.reshape(conv.out_channels, -1)
    sigma = torch.dot(u0, w @ v0)
    ref = F.conv2d(x, conv.weight_orig / sigma, conv.bias, padding=1)
    torch.testing.assert_close(y, ref)
    assert torch.isclose(sigma, torch.linalg.matrix_norm(w, ord=2), rtol=2e-2)  # init ≈ converges u, v


def test_gelu_is_exact_and_upsampling_nearest(tiny_model):
    block = tiny_model.motion_extractor.detector.stages[0][0]
    assert block.act.approximate == "none"
    assert tiny_model.spade_generator.up.mode == "nearest"
