"""Motion extractor M: ConvNeXt-V2-tiny with keypoint, pose-bin, translation, expression and scale heads.

Shape legend: B batch · C channels · H, W spatial · K = 21 keypoints · NB = 66 angle bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class MotionExtractorConfig:
    """Constructor params of M; defaults are the public `motion_extractor_params` (convnextv2_tiny)."""

    num_kp: int = 21
    backbone: str = "convnextv2_tiny"  # the only backbone of the public release
    num_bins: int = 66  # 3° bins from −97.5° (models.motion.headpose_bins_to_degrees)
    in_chans: int = 3
    depths: tuple[int, ...] = (3, 3, 9, 3)
    dims: tuple[int, ...] = (96, 192, 384, 768)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of (B, C, H, W), eps 1e-6 (ConvNeXt 'channels_first')."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        u = x.mean(1, keepdim=True)  # (B, 1, H, W)
        s = (x - u).pow(2).mean(1, keepdim=True)  # (B, 1, H, W)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class GRN(nn.Module):
    """Global response normalisation (ConvNeXt-V2) on channels-last (B, H, W, C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: Tensor) -> Tensor:
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)  # (B, 1, 1, C)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)  # (B, 1, 1, C)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtBlock(nn.Module):
    """dwconv 7×7 → LN → Linear(d, 4d) → exact GELU → GRN → Linear(4d, d) → residual (no layer scale)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()  # approximate='none' (erf), as the public release
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.dwconv(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        h = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(h)))))  # (B, H, W, C)
        return x + h.permute(0, 3, 1, 2)  # (B, C, H, W)


class ConvNeXtV2(nn.Module):
    """ConvNeXt-V2 backbone + LivePortrait's global-pool heads (the public `detector`)."""

    def __init__(self, c: MotionExtractorConfig) -> None:
        super().__init__()
        dims = c.dims
        stem = nn.Sequential(nn.Conv2d(c.in_chans, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0]))
        downs = [
            nn.Sequential(LayerNorm2d(dims[i]), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2))
            for i in range(len(dims) - 1)
        ]
        self.downsample_layers = nn.ModuleList([stem, *downs])
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvNeXtBlock(d) for _ in range(n)]) for d, n in zip(dims, c.depths)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.fc_kp = nn.Linear(dims[-1], 3 * c.num_kp)
        self.fc_scale = nn.Linear(dims[-1], 1)
        self.fc_pitch = nn.Linear(dims[-1], c.num_bins)
        self.fc_yaw = nn.Linear(dims[-1], c.num_bins)
        self.fc_roll = nn.Linear(dims[-1], c.num_bins)
        self.fc_t = nn.Linear(dims[-1], 3)
        self.fc_exp = nn.Linear(dims[-1], 3 * c.num_kp)

    def forward_features(self, x: Tensor) -> Tensor:
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))  # (B, C_i, H/4/2^i, W/4/2^i)
        return self.norm(x.mean([-2, -1]))  # (B, 768)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.forward_features(x)  # (B, 768)
        return {
            "pitch": self.fc_pitch(h),  # (B, NB)
            "yaw": self.fc_yaw(h),  # (B, NB)
            "roll": self.fc_roll(h),  # (B, NB)
            "t": self.fc_t(h),  # (B, 3)
            "exp": self.fc_exp(h),  # (B, 3K)
            "scale": self.fc_scale(h),  # (B, 1)
            "kp": self.fc_kp(h),  # (B, 3K)
        }


class MotionExtractor(nn.Module):
    """M: image (B, 3, 256, 256) in [0, 1] → dict pitch, yaw, roll (66-bin logits), t, exp, scale, kp."""

    def __init__(self, cfg: MotionExtractorConfig | None = None) -> None:
        super().__init__()
        c = cfg or MotionExtractorConfig()
        if c.backbone != "convnextv2_tiny":
            raise ValueError(
                f"backbone '{c.backbone}' is not supported; the public release uses 'convnextv2_tiny'"
            )
        if len(c.depths) != len(c.dims):
            raise ValueError(f"depths {c.depths} and dims {c.dims} must have the same length")
        self.cfg = c
        self.detector = ConvNeXtV2(c)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """x: (B, 3, H, W) RGB in [0, 1] →
        pitch/yaw/roll (B, 66), t (B, 3), exp (B, 63), scale (B, 1), kp (B, 63)."""
        return self.detector(x)

