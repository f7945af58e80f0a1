"""Sync-C / Sync-D as a torchmetrics Metric: one SyncNet score per video, averaged over videos.

The network, its MFCC front end and the per-clip scoring live in `models.syncnet` (data preparation
uses them too); see docs/metrics.md for the protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from metrics.frechet import FeatureNetHolder
from models.clock import SAMPLES_PER_FRAME
from models.syncnet import CONFIG_KEY, WINDOW, SyncNet, sync_scores
from models.weights import weights_info


# ------------------------------------------------------------------------------------------------
# torchmetrics Metric: per-video lists, synced by concatenation, video-level averages
# ------------------------------------------------------------------------------------------------


class SyncMetric(FeatureNetHolder, Metric):
    """Sync-C / Sync-D / AV offset averaged over videos (one SyncNet score per clip)."""

    full_state_update = False
    is_differentiable = False

    def __init__(
        self,
        net: SyncNet | None = None,
        vshift: int = 15,
        min_frames: int = 6,
        weights_path: str | Path | None = None,
        crop: str = "none_resize_224",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._hide_net("net", net)
        self.vshift, self.min_frames, self.crop = vshift, min_frames, crop
        self.weights_path = weights_path
        self.add_state("conf", [], dist_reduce_fx="cat")
        self.add_state("min_dist", [], dist_reduce_fx="cat")
        self.add_state("offset", [], dist_reduce_fx="cat")
        self.add_state("skipped", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @classmethod
    def from_file(cls, path: str | Path | None, config_key: str = CONFIG_KEY, **kwargs: Any) -> SyncMetric:
        return cls(SyncNet.from_file(path, config_key), weights_path=path, **kwargs)

    def update(self, frames: Tensor, audio: Tensor) -> None:
        """One clip: frames uint8 (T, 224, 224, 3) BGR, audio int16 (S,) 16 kHz. Too-short clips are counted."""
        if self.net is None:
            raise RuntimeError("SyncMetric has no network: use SyncMetric.from_file(metrics.sync.weights_path)")
        if min(frames.shape[0], audio.shape[0] // SAMPLES_PER_FRAME) < max(self.min_frames, WINDOW + 1):
            self.skipped += 1
            return
        off, conf, dist = sync_scores(self.net, frames, audio, self.vshift)
        self.add_scores(off, conf, dist)

    def add_scores(self, offset: int, conf: float, min_dist: float) -> None:
        """Record precomputed per-clip scores (e.g. from an offline SyncNet run)."""
        dev = self.skipped.device
        self._computed, self._update_count = None, self._update_count + 1  # as torchmetrics' wrapped update does
        self.conf.append(torch.tensor([conf], dtype=torch.float64, device=dev))
        self.min_dist.append(torch.tensor([min_dist], dtype=torch.float64, device=dev))
        self.offset.append(torch.tensor([offset], dtype=torch.float64, device=dev))

    def compute(self) -> dict[str, Tensor]:
        """{'sync_c', 'sync_d', 'offset_abs', 'sync_c_std', 'sync_d_std', 'num_videos', 'skipped'} over videos."""
        cat = [torch.cat(x) if isinstance(x, list) else x for x in (self.conf, self.min_dist, self.offset)]
        conf, dist, off = (c.reshape(-1) for c in cat)
        n = conf.numel()
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        self._synced_counts = (n, int(self.skipped))
        if n == 0:
            return {"sync_c": nan, "sync_d": nan, "num_videos": torch.tensor(0), "skipped": self.skipped.clone()}
        return {
            "sync_c": conf.mean(),
            "sync_d": dist.mean(),
            "sync_c_std": conf.std(unbiased=False),
            "sync_d_std": dist.std(unbiased=False),
            "offset_abs": off.abs().mean(),
            "num_videos": torch.tensor(n),
            "skipped": self.skipped.clone(),
        }

    def protocol(self) -> dict[str, Any]:
        counts = getattr(self, "_synced_counts", None)
        return {
            "metric": "Sync-C/Sync-D (SyncNet v2, syncnet_python evaluate)",
            "weights": weights_info(self.weights_path, CONFIG_KEY),
            "vshift": self.vshift,
            "crop": self.crop,
            "frames": "uint8 BGR 224x224, 25 fps, 5-frame windows",
            "audio": "int16 16 kHz, MFCC 13 x 100 Hz (python_speech_features 0.6 defaults)",
            "aggregation": "mean over videos",
            "min_frames": self.min_frames,
            "num_videos": None if counts is None else counts[0],
            "skipped": None if counts is None else counts[1],
        }
