"""SPADE generator G: warped features (B, 256, 64, 64) → RGB image (B, 3, 512, 512) in [0, 1] (LivePortrait).

Shape legend: B batch · C channels · H, W spatial.
Convolutions of every residual block use torch.nn.utils.spectral_norm (weight_orig / weight_u /
weight_v in the state dict); in eval mode the weight is weight_orig / (u · W v), no power iteration.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm


@dataclass
class SPADEConfig:
    """Constructor params of G; defaults are the public `spade_generator_params` and SPADEDecoder defaults."""

    upscale: int = 2  # PixelShuffle factor of the output conv: 256 → 512
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2  # input channels = min(max_features, block_expansion · 2^num_down_blocks) = 256
    out_channels: int = 64  # channels of the last residual block
    spade_nhidden: int = 128
    num_middle_blocks: int = 6


class SPADE(nn.Module):
    """Spatially-adaptive norm: InstanceNorm(x)·(1 + γ(seg)) + β(seg), seg resized by nearest."""

    def __init__(self, norm_nc: int, label_nc: int, nhidden: int) -> None:
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(norm_nc, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, nhidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(nhidden, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(nhidden, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: Tensor, segmap: Tensor) -> Tensor:
        normalized = self.param_free_norm(x)  # (B, C, H, W)
        segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")  # (B, L, H, W)
        actv = self.mlp_shared(segmap)  # (B, nhidden, H, W)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)  # (B, C, H, W)


class SPADEResnetBlock(nn.Module):
    """Residual block of two SPADE → LeakyReLU(0.2) → spectral-norm conv; learned shortcut if fin ≠ fout."""

    def __init__(self, fin: int, fout: int, label_nc: int, nhidden: int) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = spectral_norm(nn.Conv2d(fin, fmiddle, kernel_size=3, padding=1))
        self.conv_1 = spectral_norm(nn.Conv2d(fmiddle, fout, kernel_size=3, padding=1))
        if self.learned_shortcut:
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, kernel_size=1, bias=False))
        self.norm_0 = SPADE(fin, label_nc, nhidden)
        self.norm_1 = SPADE(fmiddle, label_nc, nhidden)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc, nhidden)

    def forward(self, x: Tensor, seg: Tensor) -> Tensor:
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x  # (B, fout, H, W)
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 2e-1))  # (B, fmiddle, H, W)
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 2e-1))  # (B, fout, H, W)
        return x_s + dx


class SPADEDecoder(nn.Module):
    """G: feature (B, 256, 64, 64) → image (B, 3, 512, 512) after sigmoid."""

    def __init__(self, cfg: SPADEConfig | None = None) -> None:
        super().__init__()
        c = cfg or SPADEConfig()
        self.cfg = c
        ic = min(c.max_features, c.block_expansion * 2**c.num_down_blocks)  # 256: input and label channels
        self.fc = nn.Conv2d(ic, 2 * ic, kernel_size=3, padding=1)
        for i in range(c.num_middle_blocks):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(2 * ic, 2 * ic, ic, c.spade_nhidden))
        self.up_0 = SPADEResnetBlock(2 * ic, ic, ic, c.spade_nhidden)
        self.up_1 = SPADEResnetBlock(ic, c.out_channels, ic, c.spade_nhidden)
        self.up = nn.Upsample(scale_factor=2)  # nearest
        if c.upscale is None or c.upscale <= 1:
            self.conv_img = nn.Conv2d(c.out_channels, 3, kernel_size=3, padding=1)
        else:
            self.conv_img = nn.Sequential(
                nn.Conv2d(c.out_channels, 3 * c.upscale**2, kernel_size=3, padding=1),
                nn.PixelShuffle(upscale_factor=c.upscale),
            )

    def forward(self, feature: Tensor) -> Tensor:
        """feature: (B, 256, H, W) (W's `out`) → image (B, 3, 4·upscale·H, 4·upscale·W) in [0, 1]."""
        seg = feature
        x = self.fc(feature)  # (B, 512, H, W)
        for i in range(self.cfg.num_middle_blocks):
            x = getattr(self, f"G_middle_{i}")(x, seg)  # (B, 512, H, W)
        x = self.up_0(self.up(x), seg)  # (B, 256, 2H, 2W)
        x = self.up_1(self.up(x), seg)  # (B, 64, 4H, 4W)
        x = self.conv_img(F.leaky_relu(x, 2e-1))  # (B, 3, 4·upscale·H, 4·upscale·W)
        return x.sigmoid()
