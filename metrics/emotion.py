"""Emotion accuracy with a pluggable classifier (frames → logits over a configured label set).

The classifier is any `nn.Module`; `load_classifier` fills one from a local state-dict file strictly.
Video-level aggregation ∈ {mean_logits, mean_probs, majority_vote}; labels are mapped to the
framework's 8 emotions by name (models.emotion.EMOTIONS).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from metrics.frechet import FeatureNetHolder
from models.weights import load_strict, weights_info

CONFIG_KEY = "metrics.emotion.weights_path"
AGGREGATIONS = ("mean_logits", "mean_probs", "majority_vote")


def load_classifier(net: nn.Module, path: str | Path | None, config_key: str = CONFIG_KEY) -> nn.Module:
    """Strictly load a plain state dict (optionally wrapped in 'state_dict' / 'module.' prefixed)."""
    return load_strict(net, path, config_key).eval()


def video_prediction(logits: Tensor, aggregation: str) -> int:
    """Per-frame logits (T, E) → one class index for the video."""
    if aggregation == "mean_logits":
        return int(logits.mean(0).argmax())
    if aggregation == "mean_probs":
        return int(logits.softmax(-1).mean(0).argmax())
    return int(torch.bincount(logits.argmax(-1), minlength=logits.shape[-1]).argmax())


class EmotionAccuracy(FeatureNetHolder, Metric):
    """Video-level top-1 emotion accuracy (per-video hits, synced by cat)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, classifier: nn.Module, labels: list[str], aggregation: str = "mean_probs",
                 weights_path: str | Path | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        self._hide_net("classifier", classifier)
        self.labels, self.aggregation, self.weights_path = list(labels), aggregation, weights_path
        self.add_state("hits", [], dist_reduce_fx="cat")

    def update(self, frames: Tensor, target: str | int) -> None:
        """One video: frames (T, …) in the classifier's input format; target label name or index."""
        t = self.labels.index(target) if isinstance(target, str) else int(target)
        with torch.inference_mode():
            logits = self.classifier(frames).float()  # (T, E)
        if logits.shape[-1] != len(self.labels):
            raise ValueError(f"classifier returns {logits.shape[-1]} classes, labels has {len(self.labels)}")
        hit = float(video_prediction(logits, self.aggregation) == t)
        self.hits.append(torch.tensor([hit], dtype=torch.float64, device=self.device))

    def compute(self) -> Tensor:
        hits = torch.cat(self.hits) if isinstance(self.hits, list) else self.hits
        self._n = int(hits.numel())
        return hits.mean()

    def protocol(self) -> dict[str, Any]:
        return {"metric": "Emo-A (video-level top-1)", "aggregation": self.aggregation, "labels": self.labels,
                "weights": weights_info(self.weights_path, CONFIG_KEY), "num_videos": getattr(self, "_n", None)}
