"""Shared building blocks of the LivePortrait networks: coordinate grids, Gaussian heatmaps, conv blocks.

Our own implementation of the conventions recorded in `tests/liveportrait/data/liveportrait_state_dicts.json`
(public release KwaiVGI/LivePortrait @ 1986663). Attribute names (conv, norm, conv1, ...) are the
public state-dict names, so the released checkpoints load with strict=True.

Shape legend: B batch · C channels · D depth · H height · W width · K keypoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def make_coordinate_grid(spatial_size: tuple[int, int, int], ref: Tensor) -> Tensor:
    """(D, H, W) → grid (D, H, W, 3) of (x, y, z) in [-1, 1], endpoints included (dtype/device of ref).

    The public convention: coordinate i maps to 2·i/(n−1) − 1; the grid is later used by
    grid_sample with align_corners=False (the released weights were trained with this pairing).
    """
    d, h, w = spatial_size
    axes = [torch.arange(n, dtype=ref.dtype, device=ref.device) for n in (w, h, d)]
    x, y, z = (2 * (a / (n - 1)) - 1 for a, n in zip(axes, (w, h, d)))
    zz, yy, xx = torch.meshgrid(z, y, x, indexing="ij")  # (D, H, W) each
    return torch.stack([xx, yy, zz], dim=-1)  # (D, H, W, 3)


def kp2gaussian(kp: Tensor, spatial_size: tuple[int, int, int], kp_variance: float) -> Tensor:
    """Keypoints (B, K, 3) → Gaussian heatmaps (B, K, D, H, W): exp(−½‖grid − kp‖² / variance)."""
    grid = make_coordinate_grid(spatial_size, kp)  # (D, H, W, 3)
    diff = grid[None, None] - kp[:, :, None, None, None, :]  # (B, K, D, H, W, 3)
    return torch.exp(-0.5 * (diff**2).sum(-1) / kp_variance)  # (B, K, D, H, W)


class SameBlock2d(nn.Module):
    """Conv2d → BatchNorm2d → ReLU (or LeakyReLU 0.01), resolution kept."""

    def __init__(self, in_features: int, out_features: int, lrelu: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.ac = nn.LeakyReLU() if lrelu else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.ac(self.norm(self.conv(x)))


class DownBlock2d(nn.Module):
    """Conv2d → BatchNorm2d → ReLU → AvgPool 2×2 (halves H, W)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.pool = nn.AvgPool2d(kernel_size=(2, 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))  # (B, C', H/2, W/2)


class DownBlock3d(nn.Module):
    """Conv3d → BatchNorm3d → ReLU → AvgPool (1, 2, 2) (halves H, W, keeps D)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features, affine=True)
        self.pool = nn.AvgPool3d(kernel_size=(1, 2, 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))  # (B, C', D, H/2, W/2)


class UpBlock3d(nn.Module):
    """Nearest upsample (1, 2, 2) → Conv3d → BatchNorm3d → ReLU."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")  # (B, C, D, 2H, 2W)
        return F.relu(self.norm(self.conv(x)))  # (B, C', D, 2H, 2W)


class ResBlock3d(nn.Module):
    """Pre-activation residual block: x + conv2(relu(bn2(conv1(relu(bn1(x))))))."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(features, features, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(features, affine=True)
        self.norm2 = nn.BatchNorm3d(features, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


def _hourglass_width(block_expansion: int, max_features: int, i: int) -> int:
    return min(max_features, block_expansion * (2**i))


class Encoder(nn.Module):
    """Hourglass encoder: `num_blocks` DownBlock3d; returns every intermediate (input first)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        blocks = []
        for i in range(num_blocks):
            cin = in_features if i == 0 else _hourglass_width(block_expansion, max_features, i)
            blocks.append(DownBlock3d(cin, _hourglass_width(block_expansion, max_features, i + 1)))
        self.down_blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))  # (B, C_i, D, H/2^i, W/2^i)
        return outs


class Decoder(nn.Module):
    """Hourglass decoder: UpBlock3d with skip concatenation, then Conv3d → BatchNorm3d → ReLU."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            mult = 1 if i == num_blocks - 1 else 2  # skip concatenation doubles the input below the top
            cin = mult * _hourglass_width(block_expansion, max_features, i + 1)
            blocks.append(UpBlock3d(cin, _hourglass_width(block_expansion, max_features, i)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters, affine=True)

    def forward(self, feats: list[Tensor]) -> Tensor:
        feats = list(feats)
        out = feats.pop()  # (B, C_top, D, h, w)
        for block in self.up_blocks:
            out = block(out)  # (B, C_i, D, 2h, 2w)
            out = torch.cat([out, feats.pop()], dim=1)  # (B, C_i + C_skip, D, 2h, 2w)
        return F.relu(self.norm(self.conv(out)))  # (B, out_filters, D, H, W)


class Hourglass(nn.Module):
    """3D U-Net (encoder + decoder with skips) used by the dense motion network."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))  # (B, out_filters, D, H, W)


def flatten_depth(x: Tensor) -> Tensor:
    """(B, C, D, H, W) → (B, C·D, H, W), channel-major as the public `.view(bs, c * d, h, w)`."""
    return rearrange(x, "b c d h w -> b (c d) h w")
