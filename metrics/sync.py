"""Sync-C / Sync-D as a torchmetrics Metric: one SyncNet score per video, averaged over videos.

The network, its MFCC front end and the per-clip scoring live in `models.syncnet` (data preparation
uses them too); see docs/metrics.md for the protocol. Two crop modes:

* ``whole`` (LRS protocol): the frames are already 224×224 BGR face crops;
* ``s3fd_track`` (syncnet_python's run_pipeline): full RGB frames → S3FD every frame → IoU face tracks
  → the 224×224 crop of crop_video → SyncNet on each track with its audio; a video's score is the
  mean over its tracks (LatentSync's aggregation), a video without a track is counted, not scored.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from metrics.frechet import FeatureNetHolder
from models.clock import SAMPLES_PER_FRAME
from models.face_tracks import Track, TrackParams, detect_frames, syncnet_crops, track_shot
from models.syncnet import CONFIG_KEY, WINDOW, SyncNet, num_windows, sync_scores
from models.weights import weights_info

CROP_WHOLE = "whole"  # frames are 224×224 BGR face crops already (LRS protocol)
CROP_TRACK = "s3fd_track"  # syncnet_python: S3FD → face tracks → crop_video's 224×224 crop
CROP_MODES = (CROP_WHOLE, CROP_TRACK)
TRACK_DIFFERENCES = (
    "in memory: no JPEG frame extraction and no XVID re-encode of the crops (the reference's lossy round-trips); "
    "one shot per clip (no PySceneDetect); audio cut at the track's frames (frame * 640 samples); "
    "a video's score is the mean over its tracks"
)


# ------------------------------------------------------------------------------------------------
# The syncnet_python pipeline on one clip: detect → track → crop → SyncNet
# ------------------------------------------------------------------------------------------------


def track_sync_scores(
    net: SyncNet, detector: Any, frames: np.ndarray, audio: np.ndarray | Tensor,
    params: TrackParams = TrackParams(), vshift: int = 15,
) -> list[tuple[int, float, float, Track]]:
    """(offset, Sync-C, Sync-D, track) per face track of one clip (one shot).

    frames: uint8 (T, H, W, 3) RGB at 25 fps; audio: int16 (S,) at 16 kHz; detector: S3FD (or anything
    with its detect_faces). The crops are made from the RGB frames and flipped to SyncNet's BGR.
    """
    frames = np.asarray(frames)
    au = audio.cpu().numpy() if isinstance(audio, Tensor) else np.asarray(audio)
    out = []
    for track in track_shot(detect_frames(detector, frames, params), params):
        crops = np.ascontiguousarray(syncnet_crops(frames, track, params)[..., ::-1])  # (n, 224, 224, 3) BGR
        seg = au[int(track.frames[0]) * SAMPLES_PER_FRAME : (int(track.frames[-1]) + 1) * SAMPLES_PER_FRAME]
        if num_windows(len(crops), len(seg)) >= 1:
            out.append((*sync_scores(net, crops, seg, vshift), track))
    return out


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
        crop_mode: str = CROP_WHOLE,
        detector: Any = None,
        track_params: TrackParams | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if crop_mode not in CROP_MODES:
            raise ValueError(f"SyncMetric crop_mode {crop_mode!r} unknown; choose from {list(CROP_MODES)}")
        if crop_mode == CROP_TRACK and detector is None:
            raise ValueError("SyncMetric crop_mode 's3fd_track' needs a face detector (S3FD.from_file(s3fd_weights))")
        self._hide_net("net", net)
        if isinstance(getattr(detector, "net", None), torch.nn.Module):
            self._hide_net("detector_net", detector.net)  # S3FD follows .to(device), never in a state dict
        self.vshift, self.min_frames, self.crop = vshift, min_frames, crop
        self.crop_mode, self.detector, self.track_params = crop_mode, detector, track_params or TrackParams()
        self.weights_path = weights_path
        self.add_state("conf", [], dist_reduce_fx="cat")
        self.add_state("min_dist", [], dist_reduce_fx="cat")
        self.add_state("offset", [], dist_reduce_fx="cat")
        self.add_state("skipped", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("no_track", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @classmethod
    def from_file(cls, path: str | Path | None, config_key: str = CONFIG_KEY, **kwargs: Any) -> SyncMetric:
        return cls(SyncNet.from_file(path, config_key), weights_path=path, **kwargs)

    def update(self, frames: Tensor, audio: Tensor) -> None:
        """One clip, audio int16 (S,) 16 kHz; frames uint8 (T, 224, 224, 3) BGR crops (crop_mode whole) or
        (T, H, W, 3) RGB frames (s3fd_track). Too-short clips and clips without a face track are counted."""
        if self.net is None:
            raise RuntimeError("SyncMetric has no network: use SyncMetric.from_file(metrics.sync.weights_path)")
        if min(frames.shape[0], audio.shape[0] // SAMPLES_PER_FRAME) < max(self.min_frames, WINDOW + 1):
            self.skipped += 1
            return
        if self.crop_mode == CROP_WHOLE:
            self.add_scores(*sync_scores(self.net, frames, audio, self.vshift))
            return
        fr = frames.cpu().numpy() if isinstance(frames, Tensor) else np.asarray(frames)
        tracks = track_sync_scores(self.net, self.detector, fr, audio, self.track_params, self.vshift)
        if not tracks:
            self.no_track += 1
            self.skipped += 1
            return
        self.add_scores(*(float(np.mean([t[k] for t in tracks])) for k in range(3)))

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
        self._synced_counts = (n, int(self.skipped), int(self.no_track))
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
        track = {}
        if self.crop_mode == CROP_TRACK:
            track = {
                "face_detector": {"model": "S3FD (sfd_face.pth)",
                                  **weights_info(getattr(self.detector, "weights_path", None), "s3fd_weights")},
                "tracking": asdict(self.track_params),
                "differences_from_syncnet_python": TRACK_DIFFERENCES,
                "no_track": None if counts is None else counts[2],
            }
        return {
            "metric": "Sync-C/Sync-D (SyncNet v2, syncnet_python evaluate)",
            "weights": weights_info(self.weights_path, CONFIG_KEY),
            "vshift": self.vshift,
            "crop_mode": self.crop_mode,
            "crop": self.crop,
            **track,
            "frames": "uint8 BGR 224x224, 25 fps, 5-frame windows",
            "audio": "int16 16 kHz, MFCC 13 x 100 Hz (python_speech_features 0.6 defaults)",
            "aggregation": "mean over videos",
            "min_frames": self.min_frames,
            "num_videos": None if counts is None else counts[0],
            "skipped": None if counts is None else counts[1],
        }
