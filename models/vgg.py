"""VGG19 features for perceptual losses, loading torchvision's ImageNet checkpoint (pure torch).

The network is VGG19 (configuration E of Simonyan & Zisserman, arXiv 1409.1556) laid out exactly as
torchvision's `vgg19`, so its public ImageNet file (`vgg19-dcbb9e9d.pth`) loads by name:

    features.{0,2,5,7,10,12,14,16,19,21,23,25,28,30,32,34}.{weight,bias}   3×3 convolutions (ReLU after
        each; 2×2 max-pool after each block, at features.4, 9, 18, 27, 36)
    classifier.{0,3,6}.{weight,bias}                                         the ImageNet head (unused)

`load_vgg19` reads the file through `models.weights` (weights_only, strict names and shapes), accepts
it with or without the classifier, and reports the classifier keys it ignores. Inputs are RGB in
[0, 1]; the network applies torchvision's ImageNet normalisation (mean 0.485, 0.456, 0.406; std 0.229,
0.224, 0.225) itself.

Perceptual distances tap relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (features.1, 6, 11, 20, 29)
over an image pyramid (scales 1, ½, ¼, ⅛) with anti-aliased (Gaussian) downsampling: the pyramid
perceptual loss of First Order Motion Model (Siarohin et al., NeurIPS 2019) that face-vid2vid and the
LivePortrait re-implementations train with (docs/stage-zero.md).

Shape legend: B batch · C channels · H, W spatial.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.weights import load_strict, read_state_dict

log = logging.getLogger(__name__)

# torchvision `cfgs["E"]`: conv widths, "M" = 2×2 max-pool.
VGG19_LAYOUT: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                       512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
# Index in `features` of the ReLU after the first convolution of each block.
TAPS: dict[str, int] = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu5_1": 29}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLASSIFIER_PREFIX = "classifier."  # torchvision's ImageNet head: accepted in a file, never loaded
WEIGHTS_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's file name of the ImageNet weights
HINT = (f"HINT: give torchvision's ImageNet VGG19 state dict ({WEIGHTS_FILE}; not vgg19_bn) and, for generated "
        "test weights, the same channel width as the config (stage0.vgg_width)")


class VGG19(nn.Module):
    """VGG19 `features` (torchvision names) with ImageNet input normalisation and named taps.

    width scales every channel count (1.0 = torchvision's network; smaller widths exist only for tests
    and demos with generated weights). `forward` stops after the deepest requested tap.
    """

    def __init__(self, width: float = 1.0, taps: Sequence[str] = tuple(TAPS)) -> None:
        super().__init__()
        unknown = [t for t in taps if t not in TAPS]
        if unknown or not taps:
            raise ValueError(f"taps {list(taps)} must be a non-empty subset of {list(TAPS)}")
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        layers: list[nn.Module] = []
        cin = 3
        for v in VGG19_LAYOUT:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                cout = max(1, round(int(v) * width))
                layers += [nn.Conv2d(cin, cout, kernel_size=3, padding=1), nn.ReLU()]
                cin = cout
        self.features = nn.Sequential(*layers)
        self.width = width
        self.taps = tuple(sorted(taps, key=TAPS.__getitem__))
        self._tap_index = {TAPS[t] for t in self.taps}
        self._last = max(self._tap_index)
        # Not in the state dict (torchvision's file has no normalisation buffers).
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.ignored_keys: list[str] = []  # keys of the loaded file that were not used (the classifier)

    def forward(self, x: Tensor) -> list[Tensor]:
        """RGB (B, 3, H, W) in [0, 1] → the tapped activations, shallow to deep (relu1_1: (B, 64, H, W), …)."""
        h = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self._tap_index:
                out.append(h)
            if i == self._last:
                break
        return out


def load_vgg19(path: str | Path | None, config_key: str = "vgg_weights", width: float = 1.0,
               taps: Sequence[str] = tuple(TAPS)) -> VGG19:
    """torchvision's VGG19 file → frozen `VGG19` in eval mode; the classifier, if present, is ignored.

    Every `features.*` key must match by name and shape (`models.weights.load_strict`); any other key is
    an error naming it. The ignored classifier keys are logged and kept in `net.ignored_keys`.
    """
    sd = read_state_dict(path, config_key)
    ignored = [k for k in sd if k.startswith(CLASSIFIER_PREFIX)]
    features = OrderedDict((k, v) for k, v in sd.items() if not k.startswith(CLASSIFIER_PREFIX))
    net = VGG19(width, taps)
    load_strict(net, features, f"{config_key}: {str(path)!r}", hint=HINT)
    net.ignored_keys = ignored
    if ignored:
        log.info("%s: %s: ignored the %d classifier keys (%s): perceptual losses use features only",
                 config_key, path, len(ignored), ", ".join(ignored))
    return net.eval().requires_grad_(False)


def vgg19_state_dict(width: float = 1.0, seed: int = 0, classifier: bool = True) -> OrderedDict[str, Tensor]:
    """A state dict in torchvision's vgg19 format with deterministic random weights (tests, demos).

    Features: He-normal weights, small biases. The classifier (if asked) has the right shapes but is
    stored as zero tensors with stride 0 (a few bytes on disk whatever its 123 M entries): loaders ignore it.
    """
    g = torch.Generator().manual_seed(seed)
    net = VGG19(width)
    sd: OrderedDict[str, Tensor] = OrderedDict()
    for name, p in net.state_dict().items():
        if name.endswith("weight"):
            fan_in = p[0].numel()
            sd[name] = torch.randn(p.shape, generator=g) * math.sqrt(2.0 / fan_in)
        else:
            sd[name] = 0.01 * torch.randn(p.shape, generator=g)
    if classifier:
        flat = max(1, round(512 * width)) * 7 * 7  # adaptive 7×7 average pool of the last block
        for i, (n_out, n_in) in zip((0, 3, 6), ((4096, flat), (4096, 4096), (1000, 4096))):
            sd[f"classifier.{i}.weight"] = torch.zeros(()).expand(n_out, n_in)
            sd[f"classifier.{i}.bias"] = torch.zeros(()).expand(n_out)
    return sd


# ------------------------------------------------------------------------------------------------
# The image pyramid and the perceptual distance
# ------------------------------------------------------------------------------------------------


def pyramid_downsample(x: Tensor, scale: float) -> Tensor:
    """Anti-aliased downsampling by 1/scale (an integer): Gaussian blur σ = (1/scale − 1)/2, kernel
    2·round(4σ)+1, zero padding, then every (1/scale)-th pixel (FOMM's AntiAliasInterpolation2d)."""
    if scale == 1.0:
        return x
    stride = round(1.0 / scale)
    if not 0 < scale < 1 or abs(stride * scale - 1.0) > 1e-6:
        raise ValueError(f"pyramid scale {scale} must be 1/n for an integer n ≥ 1")
    sigma = (stride - 1) / 2
    k = 2 * round(sigma * 4) + 1
    r = torch.arange(k, dtype=torch.float32, device=x.device) - (k - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = (g / g.sum()).to(x.dtype)  # (k,)
    c = x.shape[1]
    kernel = (g[:, None] * g[None, :]).expand(c, 1, k, k)  # (C, 1, k, k) depthwise
    return F.conv2d(F.pad(x, (k // 2,) * 4), kernel, stride=stride, groups=c)  # (B, C, H/n, W/n)


def perceptual_distance(vgg: VGG19, a: Tensor, b: Tensor, scales: Sequence[float] = (1.0,),
                        layer_weights: Sequence[float] | None = None, norm: str = "l1") -> Tensor:
    """Per-sample pyramid perceptual distance (B,) between images (B, 3, H, W) in [0, 1].

    Σ over scales s and taps l of w_l · d(V_l(a_s), V_l(b_s)), with d the mean absolute difference
    (norm "l1": FOMM's perceptual loss) or the L2 norm divided by √(number of elements) (norm "l2",
    i.e. the root-mean-square difference: an L2 norm whose size does not depend on the image size).
    """
    if norm not in ("l1", "l2"):
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    weights = list(layer_weights) if layer_weights is not None else [1.0] * len(vgg.taps)
    if len(weights) != len(vgg.taps):
        raise ValueError(f"{len(weights)} layer weights for {len(vgg.taps)} taps {list(vgg.taps)}")
    total = a.new_zeros(a.shape[0], dtype=torch.float32)
    for s in scales:
        feats = vgg(torch.cat([pyramid_downsample(a, s), pyramid_downsample(b, s)]))  # one pass for both
        for w, f in zip(weights, feats):
            fa, fb = f.float().chunk(2)
            d = (fa - fb).flatten(1)  # (B, C·H·W)
            per = d.abs().mean(1) if norm == "l1" else (d.square().mean(1) + 1e-12).sqrt()
            total = total + w * per
    return total  # (B,)
