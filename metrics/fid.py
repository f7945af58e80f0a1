"""FID: torchmetrics `FrechetInceptionDistance` with our float64 symmetric-eigen Fréchet core.

Two feature paths (docs/metrics.md):
* an injected `nn.Module` (forward (N, …) → (N, D), attribute `num_features`; one row per image) —
  no torch-fidelity needed; the module owns its resize/normalisation (reported via `resize_mode`);
* `feature=2048` with `weights_path` = the torch-fidelity Inception file
  (weights-inception-2015-12-05-6726825d.pth), resize pinned by `resize` ∈ {antialias, tf1};
  needs the torch-fidelity package.
In both cases the network is held outside module registration: no checkpoint ever contains it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance

from metrics.frechet import FeatureNetHolder, frechet_distance, mean_cov_from_sums
from models.weights import check_file, weights_info

CONFIG_KEY = "metrics.fid.weights_path"
RESIZES = {"antialias": True, "tf1": False}  # torchmetrics ≥ 1.8 bilinear+antialias | torch-fidelity TF1 bilinear


class FID(FeatureNetHolder, FrechetInceptionDistance):
    """FID over uint8 (N, 3, H, W) images, float64 states synced by sum."""

    def __init__(
        self,
        feature: nn.Module | int = 2048,
        weights_path: str | Path | None = None,
        resize: str = "antialias",
        config_key: str = CONFIG_KEY,
        **kwargs: Any,
    ) -> None:
        if resize not in RESIZES:
            raise ValueError(f"resize must be one of {sorted(RESIZES)}, got {resize!r}")
        self.resize, self.weights_path, self.config_key = resize, weights_path, config_key
        if isinstance(feature, int):
            check_file(weights_path, config_key)  # never let torch-fidelity download
            try:
                super().__init__(feature=feature, feature_extractor_weights_path=str(weights_path),
                                 antialias=RESIZES[resize], **kwargs)
            except ModuleNotFoundError as e:
                raise ModuleNotFoundError(
                    f"FID with feature={feature} needs torch-fidelity (pip install torch-fidelity); "
                    "or pass an injected feature network (nn.Module with `num_features`)"
                ) from e
        else:
            super().__init__(feature=feature, **kwargs)
        self._hide_net("inception", self._modules.pop("inception"))

    def compute(self) -> Tensor:
        """FID as a float64 scalar (symmetric eigen trace term, unbiased covariance)."""
        mu_r, cov_r = mean_cov_from_sums(self.real_features_num_samples, self.real_features_sum,
                                         self.real_features_cov_sum)
        mu_f, cov_f = mean_cov_from_sums(self.fake_features_num_samples, self.fake_features_sum,
                                         self.fake_features_cov_sum)
        self._synced_counts = (int(self.real_features_num_samples), int(self.fake_features_num_samples))
        return torch.tensor(frechet_distance(mu_r, cov_r, mu_f, cov_f), dtype=torch.float64)

    def protocol(self) -> dict[str, Any]:
        counts = (getattr(self, "_synced_counts", None)
                  or (int(self.real_features_num_samples), int(self.fake_features_num_samples)))
        net = self.inception
        custom = self.used_custom_model
        return {
            "metric": "FID",
            "network": type(net).__name__ if custom else "torch-fidelity InceptionV3 pool3 (2048)",
            "weights": weights_info(self.weights_path, self.config_key) if (self.weights_path or not custom) else
            {"note": getattr(net, "weights_note", "injected network (weights described by caller)")},
            "resize": getattr(net, "resize_mode", "module-defined") if custom else
            ("bilinear antialias (torchmetrics>=1.8)" if RESIZES[self.resize] else "TF1 bilinear (torch-fidelity)"),
            "covariance": "unbiased",
            "trace_method": "symmetric_eigh_float64",
            "n_real": counts[0],
            "n_fake": counts[1],
        }


class ResizedFeatures(nn.Module):
    """uint8 (N, 3, H, W) → resize to size×size, [−1, 1] → net → (N, D): an injected FID feature network."""

    def __init__(self, net: nn.Module, size: int, num_features: int, weights_note: str) -> None:
        super().__init__()
        self.net, self.size, self.num_features, self.weights_note = net, size, num_features, weights_note
        self.resize_mode = f"bilinear antialias to {size}x{size}, x/127.5-1"

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x.float(), size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return self.net(x / 127.5 - 1.0).double()  # (N, D)
