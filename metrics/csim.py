"""CSIM: cosine similarity of ArcFace (IResNet) identity embeddings (arcface_torch key names, §5.2).

Input: aligned 112×112 RGB face crops, uint8 (N, 3, 112, 112); normalised (x/255 − 0.5)/0.5 here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from metrics.frechet import FeatureNetHolder
from models.weights import load_strict, weights_info

CONFIG_KEY = "metrics.csim.weights_path"
LAYERS = {"r18": [2, 2, 2, 2], "r34": [3, 4, 6, 3], "r50": [3, 4, 14, 3], "r100": [3, 13, 30, 3]}


class IBasicBlock(nn.Module):
    """BN → conv3×3 → BN → PReLU → conv3×3(stride) → BN (+ downsample)."""

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes, eps=1e-5))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """ArcFace IResNet backbone: (N, 3, 112, 112) in [−1, 1] → (N, 512) embedding."""

    def __init__(self, arch: str = "r100", embed_dim: int = 512) -> None:
        super().__init__()
        self.num_features = embed_dim
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), LAYERS[arch]), start=1):
            blocks = [IBasicBlock(cin, planes, 2)] + [IBasicBlock(planes, planes, 1) for _ in range(n - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            cin = planes
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(0.0)
        self.fc = nn.Linear(512 * 7 * 7, embed_dim)
        self.features = nn.BatchNorm1d(embed_dim, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))  # (N, 64, 112, 112)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N, 512, 7, 7)
        x = self.dropout(self.bn2(x).flatten(1))  # (N, 25088)
        return self.features(self.fc(x))  # (N, 512)

    @classmethod
    def from_file(cls, path: str | Path | None, arch: str = "r100", config_key: str = CONFIG_KEY) -> IResNet:
        return load_strict(cls(arch), path, config_key).eval()


def embed_faces(net: nn.Module, faces: Tensor) -> Tensor:
    """uint8 (N, 3, 112, 112) RGB aligned crops → L2-normalised (N, D) embeddings."""
    dev = next(iter(net.parameters()), faces).device
    x = (faces.to(dev, torch.float32) / 255.0 - 0.5) / 0.5
    with torch.inference_mode():
        return F.normalize(net(x).float(), dim=-1)


class CSIM(FeatureNetHolder, Metric):
    """Mean cosine similarity between identity embeddings of paired faces (per-pair list, synced by cat)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, net: nn.Module, pairing: str = "source_vs_gen", weights_path: str | Path | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._hide_net("net", net)
        self.pairing, self.weights_path = pairing, weights_path
        self.add_state("cos", [], dist_reduce_fx="cat")

    def update(self, faces_a: Tensor, faces_b: Tensor) -> None:
        """faces_a, faces_b: uint8 (N, 3, 112, 112) aligned crops; a (1, …) reference broadcasts."""
        ea, eb = embed_faces(self.net, faces_a), embed_faces(self.net, faces_b)
        self.cos.append((ea * eb).sum(-1).double().to(self.device))

    def compute(self) -> Tensor:
        cos = torch.cat(self.cos) if isinstance(self.cos, list) else self.cos
        self._n = int(cos.numel())
        return cos.mean()

    def protocol(self) -> dict[str, Any]:
        return {"metric": "CSIM (ArcFace IResNet cosine)", "pairing": self.pairing,
                "weights": weights_info(self.weights_path, CONFIG_KEY), "num_pairs": getattr(self, "_n", None)}
