"""Per-frame image metrics from torchmetrics with explicit data ranges: PSNR, SSIM, LPIPS.

PSNR is the mean of per-image PSNRs (dim=(1,2,3), list states), as video papers report, not the PSNR
of the pooled MSE. LPIPS needs torchvision's AlexNet backbone: `build_lpips` takes it from a local
file (alexnet-owt-7be5be79.pth) through a private torch.hub directory, so nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from models.weights import check_file, weights_info

LPIPS_CONFIG_KEY = "metrics.lpips.backbone_weights_path"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # the name torchvision expects (hash prefix is checked)


def build_psnr(data_range: float = 1.0) -> PeakSignalNoiseRatio:
    """Mean per-image PSNR (dB) of (N, C, H, W) images in [0, data_range]."""
    return PeakSignalNoiseRatio(data_range=data_range, dim=(1, 2, 3), reduction="elementwise_mean")


def build_ssim(data_range: float = 1.0) -> StructuralSimilarityIndexMeasure:
    """SSIM (Gaussian 11×11, σ 1.5, reflect padding) with an explicit data range."""
    return StructuralSimilarityIndexMeasure(data_range=data_range)


@contextlib.contextmanager
def _local_hub(weights: Path) -> Iterator[None]:
    old = torch.hub.get_dir()
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(f"{d}/checkpoints")
        os.symlink(weights.resolve(), f"{d}/checkpoints/{ALEXNET_FILE}")
        torch.hub.set_dir(d)
        try:
            yield
        finally:
            torch.hub.set_dir(old)


def build_lpips(backbone_weights_path: str | Path | None, config_key: str = LPIPS_CONFIG_KEY, **kwargs: Any) -> Any:
    """torchmetrics LPIPS (alex, inputs in [0, 1] with normalize=True) with a local AlexNet backbone."""
    path = check_file(backbone_weights_path, config_key)
    try:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
        import torchvision  # noqa: F401
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("LPIPS needs torchvision (AlexNet backbone); install torchvision") from e
    with _local_hub(path):
        metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=kwargs.pop("normalize", True),
                                                       **kwargs)
    metric.lpips_protocol = {"metric": "LPIPS (alex)", "backbone": weights_info(path, config_key), "input": "[0,1]"}
    return metric
