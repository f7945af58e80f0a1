"""The Sync-C/Sync-D crop of an evaluation: the metric pair (generated, ground truth) for the configured
crop mode, the frames each mode takes, and the protocol line (docs/evaluation.md, "Sync-C / Sync-D").

    whole       eval_size frames → 224×224 BGR, the whole face crop (LRS protocol, none_resize_224)
    s3fd_track  eval_size RGB frames → S3FD → IoU face tracks → syncnet_python's crop_video 224×224 BGR
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from configs.evaluation import EvaluationConfig

WHOLE_CROP = "whole 256x256 face crop resized to 224x224 (LRS protocol, none_resize_224), BGR"
TRACK_CROP = ("syncnet_python face-track crop: S3FD (conf 0.9, scale 0.25) → IoU tracks → median-13 smoothed box → "
              "crop_scale 0.4, pad 110 → 224x224 BGR, in memory")


def sync_metrics(cfg: EvaluationConfig, net: Any) -> dict[str, Any]:
    """{'sync', 'sync_gt'} SyncMetrics sharing `net` (and S3FD in s3fd_track mode)."""
    from metrics.sync import CROP_TRACK, SyncMetric

    kw: dict[str, Any] = {"crop": WHOLE_CROP}
    if cfg.sync_crop_mode == CROP_TRACK:
        from models.face_tracks import TrackParams
        from models.s3fd import S3FD

        det = S3FD.from_file(cfg.s3fd_weights, config_key="s3fd_weights (--s3fd)")
        kw = {"crop": TRACK_CROP, "crop_mode": CROP_TRACK, "detector": det,
              "track_params": TrackParams(min_track=cfg.sync_min_track, min_face_size=cfg.sync_min_face_size)}
    return {name: SyncMetric(net, weights_path=cfg.syncnet_weights, **kw) for name in ("sync", "sync_gt")}


def sync_frames(metric: Any, frames: Tensor, bgr224: Any) -> Tensor:
    """What the metric's update takes from uint8 (T, 3, H, W) RGB: BGR 224² crops, or RGB (T, H, W, 3) frames."""
    if getattr(metric, "crop_mode", "whole") == "whole":
        return bgr224(frames.cpu())
    return frames.cpu().permute(0, 2, 3, 1).contiguous()


def sync_resolution(cfg: EvaluationConfig, metrics: dict[str, Any]) -> str:
    """The protocol's Sync line for the crop mode of the metrics in use (injected ones included)."""
    metric = metrics.get("sync")
    if getattr(metric, "crop_mode", cfg.sync_crop_mode) == "whole":
        return f"{cfg.eval_size} → 224x224 BGR, whole face crop (no mouth/S3FD crop)"
    tp = getattr(metric, "track_params", None)
    min_track, min_face = (tp.min_track, tp.min_face_size) if tp else (cfg.sync_min_track, cfg.sync_min_face_size)
    return (f"{cfg.eval_size}x{cfg.eval_size} RGB → S3FD face tracks (min_track {min_track}, min face {min_face:g} px)"
            " → syncnet_python crop → 224x224 BGR (no JPEG/XVID round-trip)")
