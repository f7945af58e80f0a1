"""FVD: Fréchet distance of I3D (Kinetics-400) 400-d logits averaged over time, per 16-frame clip.

I3D is the piergiaj/VideoGPT PyTorch port (`i3d_pretrained_400.pt` key names):
Unit3D = Conv3d(no bias) + BatchNorm3d + ReLU with TF-"SAME" padding computed in forward.
The variant (weights, BN eps, logit pool, resize, scaling, covariance, clip sampling) is explicit
in `FVDConfig` and printed by `FVD.protocol()`.

Shape legend: B videos · T frames · C=3 RGB · H, W pixels · t, h, w feature-map sizes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metrics.frechet import FeatureNetHolder, FrechetDistance, frechet_counts
from models.weights import load_strict, weights_info

CONFIG_KEY = "metrics.fvd.weights_path"
RESIZES = ("direct_224_bilinear", "short_side_center_crop")
SAMPLINGS = ("first", "random", "all_non_overlapping")
MIN_FRAMES = 9  # SAME-padded I3D needs ≥ 9 frames for one temporal logit step


def _same_pad(x: Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> Tensor:
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):  # w, h, t
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def _t3(v: int | tuple[int, int, int]) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


class Unit3D(nn.Module):
    """Conv3d + BatchNorm3d + ReLU with TF-SAME padding (piergiaj `Unit3D`)."""

    def __init__(self, cin: int, cout: int, k: int | tuple = 1, s: int | tuple = 1, bn: bool = True,
                 relu: bool = True, bias: bool = False, bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.k, self.s, self.relu = _t3(k), _t3(s), relu
        self.conv3d = nn.Conv3d(cin, cout, self.k, self.s, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(cout, eps=bn_eps) if bn else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(_same_pad(x, self.k, self.s))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPool3dSame(nn.MaxPool3d):
    """MaxPool3d with TF-SAME (zero) padding."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(_same_pad(x, _t3(self.kernel_size), _t3(self.stride)))


class InceptionModule(nn.Module):
    """I3D inception block: b0 1×1 | b1 1×1→3³ | b2 1×1→3³ | b3 maxpool→1×1, concatenated."""

    def __init__(self, cin: int, o: list[int], bn_eps: float) -> None:
        super().__init__()
        self.b0 = Unit3D(cin, o[0], 1, bn_eps=bn_eps)
        self.b1a, self.b1b = Unit3D(cin, o[1], 1, bn_eps=bn_eps), Unit3D(o[1], o[2], 3, bn_eps=bn_eps)
        self.b2a, self.b2b = Unit3D(cin, o[3], 1, bn_eps=bn_eps), Unit3D(o[3], o[4], 3, bn_eps=bn_eps)
        self.b3a, self.b3b = MaxPool3dSame(3, 1), Unit3D(cin, o[5], 1, bn_eps=bn_eps)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


_MIXED = [  # name, in channels, [b0, b1a, b1b, b2a, b2b, b3b]
    ("Mixed_3b", 192, [64, 96, 128, 16, 32, 32]), ("Mixed_3c", 256, [128, 128, 192, 32, 96, 64]),
    ("Mixed_4b", 480, [192, 96, 208, 16, 48, 64]), ("Mixed_4c", 512, [160, 112, 224, 24, 64, 64]),
    ("Mixed_4d", 512, [128, 128, 256, 24, 64, 64]), ("Mixed_4e", 512, [112, 144, 288, 32, 64, 64]),
    ("Mixed_4f", 528, [256, 160, 320, 32, 128, 128]), ("Mixed_5b", 832, [256, 160, 320, 32, 128, 128]),
    ("Mixed_5c", 832, [384, 192, 384, 48, 128, 128]),
]


class InceptionI3d(nn.Module):
    """I3D (Inception-v1 inflated) → Kinetics logits averaged over time (piergiaj key names)."""

    def __init__(self, num_classes: int = 400, bn_eps: float = 1e-5, logit_pool_t: int = 2) -> None:
        super().__init__()
        self.num_features = num_classes
        e = bn_eps
        self.Conv3d_1a_7x7 = Unit3D(3, 64, 7, 2, bn_eps=e)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, 1, bn_eps=e)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, 3, bn_eps=e)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        for name, cin, o in _MIXED[:2]:
            self.add_module(name, InceptionModule(cin, o, e))
        self.MaxPool3d_4a_3x3 = MaxPool3dSame(3, 2)
        for name, cin, o in _MIXED[2:7]:
            self.add_module(name, InceptionModule(cin, o, e))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame(2, 2)
        for name, cin, o in _MIXED[7:]:
            self.add_module(name, InceptionModule(cin, o, e))
        self.avg_pool = nn.AvgPool3d((logit_pool_t, 7, 7), stride=1)
        self.dropout = nn.Dropout(0.5)
        self.logits = Unit3D(1024, num_classes, 1, bn=False, relu=False, bias=True)
        self._order = [n for n, _ in self.named_children() if n not in ("avg_pool", "dropout", "logits")]

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, T, 224, 224) in [−1, 1] → (B, num_classes) logits averaged over time."""
        for name in self._order:
            x = getattr(self, name)(x)  # ... → (B, 1024, ⌈T/8⌉, 7, 7)
        if x.shape[2] < self.avg_pool.kernel_size[0]:
            raise ValueError(f"I3D produced no temporal logit steps: clips need ≥ {MIN_FRAMES} frames")
        x = self.logits(self.dropout(self.avg_pool(x)))  # (B, 400, t', 1, 1)
        return x.flatten(3).mean(dim=(2, 3))  # (B, 400)

    @classmethod
    def from_file(cls, path: str | Path | None, config_key: str = CONFIG_KEY, **kwargs: Any) -> InceptionI3d:
        return load_strict(cls(**kwargs), path, config_key).eval()


@dataclass
class FVDConfig:
    """The FVD variant: every knob that changes the number."""

    weights_path: str | None = None  # i3d_pretrained_400.pt (VideoGPT/TATS piergiaj port)
    bn_eps: float = 1e-5  # VideoGPT/cd-fvd copy; DisCo uses 1e-3
    logit_pool_t: int = 2  # AvgPool3d [2,7,7] (VideoGPT/cd-fvd); DisCo [1,7,7]
    clip_len: int = 16
    clip_sampling: str = "first"  # first | random (seeded) | all_non_overlapping
    seed: int = 0
    resize: str = "direct_224_bilinear"  # TF/TATS: every frame straight to 224×224; or short_side_center_crop
    scaling: str = "2x/255-1"
    covariance: str = "unbiased"

    def __post_init__(self) -> None:
        if self.clip_len < MIN_FRAMES:
            raise ValueError(f"clip_len {self.clip_len} < {MIN_FRAMES}: I3D yields no logits for shorter clips")
        if self.resize not in RESIZES:
            raise ValueError(f"resize must be one of {RESIZES}, got {self.resize!r}")
        if self.clip_sampling not in SAMPLINGS:
            raise ValueError(f"clip_sampling must be one of {SAMPLINGS}, got {self.clip_sampling!r}")


def resize_frames(x: Tensor, mode: str, size: int = 224) -> Tensor:
    """(N, 3, H, W) float → (N, 3, size, size) by the configured resize mode."""
    if mode == "direct_224_bilinear":
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    x = F.interpolate(x, size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bilinear",
                      align_corners=False)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top : top + size, left : left + size]


def sample_clips(videos: Tensor, clip_len: int, sampling: str, generator: torch.Generator | None = None) -> Tensor:
    """(B, T, 3, H, W) → (N, clip_len, 3, H, W) clips; T < clip_len raises."""
    b, t = videos.shape[:2]
    if t < clip_len:
        raise ValueError(f"videos have {t} frames, FVD clips need clip_len={clip_len}")
    if sampling == "first":
        return videos[:, :clip_len]
    if sampling == "random":
        starts = torch.randint(0, t - clip_len + 1, (b,), generator=generator)
        return torch.stack([videos[i, s : s + clip_len] for i, s in enumerate(starts.tolist())])
    n = t // clip_len
    return videos[:, : n * clip_len].reshape(b * n, clip_len, *videos.shape[2:])


class FVD(FeatureNetHolder, FrechetDistance):
    """Fréchet Video Distance (I3D 400-d logits per clip; streaming float64 sums)."""

    def __init__(self, net: nn.Module, config: FVDConfig | None = None, **kwargs: Any) -> None:
        self.config = config or FVDConfig()
        super().__init__(int(getattr(net, "num_features", 400)), covariance=self.config.covariance, **kwargs)
        self._hide_net("net", net)
        self._gen = torch.Generator().manual_seed(self.config.seed)

    @classmethod
    def from_config(cls, config: FVDConfig, config_key: str = CONFIG_KEY, **kwargs: Any) -> FVD:
        """Build I3D from `config.weights_path` (strict) and wrap it."""
        net = InceptionI3d.from_file(config.weights_path, config_key, bn_eps=config.bn_eps,
                                     logit_pool_t=config.logit_pool_t)
        return cls(net, config, **kwargs)

    @torch.inference_mode()
    def extract(self, videos: Tensor) -> Tensor:
        """uint8 (B, T, 3, H, W) RGB videos → (N clips, 400) features."""
        if videos.dim() != 5 or videos.shape[2] != 3:
            raise ValueError(f"videos must be (B, T, 3, H, W) uint8 RGB, got {tuple(videos.shape)}")
        c = self.config
        clips = sample_clips(videos, c.clip_len, c.clip_sampling, self._gen)  # (N, L, 3, H, W)
        n, length = clips.shape[:2]
        dev = next(iter(self.net.parameters()), videos).device
        x = clips.reshape(n * length, *clips.shape[2:]).to(dev, torch.float32)
        x = resize_frames(x, c.resize) * (2.0 / 255.0) - 1.0  # (N·L, 3, 224, 224) in [−1, 1]
        x = x.reshape(n, length, 3, 224, 224).transpose(1, 2)  # (N, 3, L, 224, 224)
        return self.net(x).double()

    def protocol(self) -> dict[str, Any]:
        cfg = {k: v for k, v in asdict(self.config).items() if k != "weights_path"}
        return {
            "metric": "FVD",
            "network": "InceptionI3d(400) piergiaj/VideoGPT port, logits averaged over time",
            "weights": weights_info(self.config.weights_path, CONFIG_KEY),
            **cfg,
            "trace_method": "symmetric_eigh_float64",
            **frechet_counts(self),
        }
