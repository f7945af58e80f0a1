"""Warping module W: dense motion from implicit keypoints, occlusion map, 3D feature warping (LivePortrait).

Shape legend: B batch · K = 21 keypoints · C feature channels · D depth (16) · H, W (64).
Coordinates are (x, y, z) in [-1, 1], in the order grid_sample expects (align_corners=False).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from models.liveportrait.blocks import (
    Hourglass,
    SameBlock2d,
    flatten_depth,
    kp2gaussian,
    make_coordinate_grid,
)


@dataclass
class DenseMotionConfig:
    """Params of the dense motion network; defaults are the public `dense_motion_params`."""

    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5  # hourglass depth: 64 → 2 spatially
    reshape_depth: int = 16
    compress: int = 4  # feature channels kept per keypoint-warped copy
    kp_variance: float = 0.01  # Gaussian heatmap variance (hard-coded in the public code)


@dataclass
class WarpingConfig:
    """Constructor params of W; defaults are the public `warping_module_params`."""

    num_kp: int = 21
    block_expansion: int = 64
    max_features: int = 512  # = reshape_channel · depth of the warped volume
    num_down_blocks: int = 2
    reshape_channel: int = 32
    estimate_occlusion_map: bool = True
    flag_use_occlusion_map: bool = True  # multiply the output by the occlusion map
    dense_motion: DenseMotionConfig = field(default_factory=DenseMotionConfig)


class DenseMotionNetwork(nn.Module):
    """Keypoints + source volume → per-voxel deformation (B, D, H, W, 3), keypoint masks, occlusion map."""

    def __init__(
        self, c: DenseMotionConfig, num_kp: int, feature_channel: int, estimate_occlusion_map: bool
    ) -> None:
        super().__init__()
        in_features = (num_kp + 1) * (c.compress + 1)  # per warped copy: 1 heatmap + compressed features
        self.hourglass = Hourglass(c.block_expansion, in_features, c.num_blocks, c.max_features)
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, c.compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(c.compress, affine=True)
        self.num_kp = num_kp
        self.kp_variance = c.kp_variance
        self.occlusion = (
            nn.Conv2d(self.hourglass.out_filters * c.reshape_depth, 1, kernel_size=7, padding=3)
            if estimate_occlusion_map
            else None
        )

    def sparse_motions(self, shape: tuple[int, int, int], kp_driving: Tensor, kp_source: Tensor) -> Tensor:
        """Identity plus one rigid shift per keypoint: (B, K+1, D, H, W, 3) sampling coordinates."""
        b = kp_driving.shape[0]
        identity = make_coordinate_grid(shape, kp_source)[None, None]  # (1, 1, D, H, W, 3)
        # (grid − kp_d) + kp_s, in this order as the public code (identical rounding)
        to_source = identity - kp_driving[:, :, None, None, None, :] + kp_source[:, :, None, None, None, :]
        identity = identity.expand(b, 1, *identity.shape[2:])  # (B, 1, D, H, W, 3)
        return torch.cat([identity, to_source], dim=1)  # (B, K+1, D, H, W, 3)

    def deformed_features(self, feature: Tensor, sparse: Tensor) -> Tensor:
        """Warp the (compressed) volume with each sparse motion: (B, K+1, C, D, H, W)."""
        b, k1 = sparse.shape[:2]
        rep = feature[:, None].expand(b, k1, *feature.shape[1:])  # (B, K+1, C, D, H, W)
        rep = rearrange(rep, "b k c d h w -> (b k) c d h w")
        grid = rearrange(sparse, "b k d h w x -> (b k) d h w x")  # (B(K+1), D, H, W, 3)
        out = F.grid_sample(rep, grid, align_corners=False)  # (B(K+1), C, D, H, W)
        return rearrange(out, "(b k) c d h w -> b k c d h w", b=b)

    def heatmaps(self, shape: tuple[int, int, int], kp_driving: Tensor, kp_source: Tensor) -> Tensor:
        """Driving minus source Gaussians with a zero background channel: (B, K+1, 1, D, H, W)."""
        var = self.kp_variance
        heat = kp2gaussian(kp_driving, shape, var) - kp2gaussian(kp_source, shape, var)  # (B, K, D, H, W)
        zeros = heat.new_zeros(heat.shape[0], 1, *shape)  # (B, 1, D, H, W)
        return torch.cat([zeros, heat], dim=1)[:, :, None]  # (B, K+1, 1, D, H, W)

    def forward(self, feature: Tensor, kp_driving: Tensor, kp_source: Tensor) -> dict[str, Tensor]:
        """feature (B, C, D, H, W), kp (B, K, 3) → mask (B, K+1, D, H, W), deformation (B, D, H, W, 3),
        occlusion_map (B, 1, H, W) when estimated."""
        feature = F.relu(self.norm(self.compress(feature)))  # (B, 4, D, H, W)
        shape = tuple(feature.shape[2:])  # (D, H, W)
        sparse = self.sparse_motions(shape, kp_driving, kp_source)  # (B, K+1, D, H, W, 3)
        deformed = self.deformed_features(feature, sparse)  # (B, K+1, 4, D, H, W)
        heat = self.heatmaps(shape, kp_driving, kp_source)  # (B, K+1, 1, D, H, W)
        inp = torch.cat([heat, deformed], dim=2)  # (B, K+1, 5, D, H, W)
        inp = rearrange(inp, "b k c d h w -> b (k c) d h w")  # (B, 110, D, H, W)
        prediction = self.hourglass(inp)  # (B, 142, D, H, W)
        mask = F.softmax(self.mask(prediction), dim=1)  # (B, K+1, D, H, W)
        weighted = rearrange(sparse, "b k d h w x -> b k x d h w") * mask[:, :, None]  # (B, K+1, 3, D, H, W)
        deformation = rearrange(weighted.sum(dim=1), "b x d h w -> b d h w x")  # (B, D, H, W, 3)
        out = {"mask": mask, "deformation": deformation}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(flatten_depth(prediction)))  # (B, 1, H, W)
        return out


class WarpingNetwork(nn.Module):
    """W: source volume + driving/source keypoints → warped 2D features (B, 256, 64, 64)."""

    def __init__(self, cfg: WarpingConfig | None = None) -> None:
        super().__init__()
        c = cfg or WarpingConfig()
        if c.max_features != c.reshape_channel * c.dense_motion.reshape_depth:
            raise ValueError(
                f"max_features {c.max_features} must equal reshape_channel {c.reshape_channel} "
                f"× dense_motion.reshape_depth {c.dense_motion.reshape_depth}"
            )
        self.cfg = c
        self.dense_motion_network = DenseMotionNetwork(
            c.dense_motion, c.num_kp, c.reshape_channel, c.estimate_occlusion_map
        )
        width = c.block_expansion * 2**c.num_down_blocks  # 256
        self.third = SameBlock2d(c.max_features, width, lrelu=True)
        self.fourth = nn.Conv2d(width, width, kernel_size=1, stride=1)

    def forward(self, feature_3d: Tensor, kp_driving: Tensor, kp_source: Tensor) -> dict[str, Tensor | None]:
        """feature_3d (B, 32, 16, 64, 64), kp_driving/kp_source (B, 21, 3) →
        occlusion_map (B, 1, 64, 64), deformation (B, 16, 64, 64, 3), out (B, 256, 64, 64)."""
        dense = self.dense_motion_network(feature_3d, kp_driving, kp_source)
        occlusion_map = dense.get("occlusion_map")  # (B, 1, H, W) or None
        deformation = dense["deformation"]  # (B, D, H, W, 3)
        out = F.grid_sample(feature_3d, deformation, align_corners=False)  # (B, 32, D, H, W)
        out = self.fourth(self.third(flatten_depth(out)))  # (B, 512 → 256, H, W)
        if self.cfg.flag_use_occlusion_map and occlusion_map is not None:
            out = out * occlusion_map  # (B, 256, H, W)
        return {"occlusion_map": occlusion_map, "deformation": deformation, "out": out}
