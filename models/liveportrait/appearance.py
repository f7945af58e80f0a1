"""Appearance feature extractor F: 256×256 RGB → 32×16×64×64 feature volume (LivePortrait).

Shape legend: B batch · C channels · D depth · H, W spatial.
"""

from __future__ import annotations

from dataclasses import dataclass

from einops import rearrange
from torch import Tensor, nn

from models.liveportrait.blocks import DownBlock2d, ResBlock3d, SameBlock2d


@dataclass
class AppearanceConfig:
    """Constructor params of F; defaults are the public `appearance_feature_extractor_params`."""

    image_channel: int = 3
    block_expansion: int = 64  # width of the first conv; doubles per down block
    num_down_blocks: int = 2  # 256 → 64 spatially
    max_features: int = 512  # 2D channels before the reshape into a volume; = reshape_channel · depth
    reshape_channel: int = 32
    reshape_depth: int = 16
    num_resblocks: int = 6


class AppearanceFeatureExtractor(nn.Module):
    """F: image (B, 3, H, W) in [0, 1] → appearance volume (B, 32, 16, H/4, W/4)."""

    def __init__(self, cfg: AppearanceConfig | None = None) -> None:
        super().__init__()
        c = cfg or AppearanceConfig()
        if c.max_features != c.reshape_channel * c.reshape_depth:
            raise ValueError(
                f"max_features {c.max_features} must equal reshape_channel {c.reshape_channel} "
                f"× reshape_depth {c.reshape_depth}"
            )
        self.cfg = c
        self.first = SameBlock2d(c.image_channel, c.block_expansion)
        widths = [min(c.max_features, c.block_expansion * 2**i) for i in range(c.num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(
            DownBlock2d(widths[i], widths[i + 1]) for i in range(c.num_down_blocks)
        )
        self.second = nn.Conv2d(widths[-1], c.max_features, kernel_size=1, stride=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(c.num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(c.reshape_channel))

    def forward(self, source_image: Tensor) -> Tensor:
        """source_image: (B, 3, H, W) RGB in [0, 1] → f_s (B, reshape_channel, reshape_depth, H/4, W/4)."""
        out = self.first(source_image)  # (B, 64, H, W)
        for block in self.down_blocks:
            out = block(out)  # (B, 128 → 256, H/2 → H/4, ...)
        out = self.second(out)  # (B, 512, H/4, W/4)
        f_s = rearrange(out, "b (c d) h w -> b c d h w", c=self.cfg.reshape_channel)  # (B, 32, 16, H/4, W/4)
        return self.resblocks_3d(f_s)  # (B, 32, 16, H/4, W/4)
