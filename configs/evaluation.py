"""The evaluation settings: torch-free, so the `playmate evaluate` parser takes its defaults from here
without importing the models. Part of the experiment schema (`ExperimentConfig.eval`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

METRICS = ("motion", "fid", "fvd", "sync", "csim", "psnr", "ssim", "lpips")
FVD_SAMPLINGS = ("first", "random", "all_non_overlapping")  # 16-frame clips per video (metrics.fvd.SAMPLINGS)
NUM_KEYPOINTS = 21  # implicit keypoints of the motion space (models.motion.NUM_KP)
# Settings of a named protocol (`--protocol`, `EvaluationConfig.for_protocol`). "hdtf": what published
# talking-head tables on HDTF use: 512x512 renders against 512x512 ground-truth crops, every frame
# of every clip (FID), every non-overlapping 16-frame clip (FVD), Sync-C/D on S3FD face tracks (auto
# picks them with real SyncNet and S3FD weights). "custom" leaves every setting to the user.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "custom": {},
    "hdtf": {"eval_size": 512, "num_clips": 0, "max_frames": 0, "fvd_clip_len": 16,
             "fvd_clip_sampling": "all_non_overlapping", "sync_crop": "auto"},
}
# Sync-C/D crops: whole (the frame is the face crop, LRS protocol) or s3fd_track (syncnet_python's
# S3FD face-track crop); auto = s3fd_track when syncnet_weights and s3fd_weights are both set
SYNC_CROPS = ("auto", "whole", "s3fd_track")


@dataclass
class EvaluationConfig:
    """Everything that changes an evaluation number (printed in the report's protocol block).

    The `eval` section of a training config (every `every_n_steps` optimiser steps; 0 = never) and
    the settings of `playmate evaluate` (whose flags take their defaults from here).
    """

    every_n_steps: int = field(default=0, metadata={"range": (0, None)})  # training only; 0 = never
    protocol: str = field(default="custom", metadata={"choices": tuple(PROTOCOLS)})  # named in every report
    num_clips: int = field(default=8, metadata={"range": (0, None)})  # the first N clips of the data; 0 = all
    max_frames: int = field(default=250, metadata={"range": (0, None)})  # per clip (10 s at 25 fps); 0 = whole
    sample_seed: int = 1234  # per-clip noise seed = sample_seed + crc32(clip key): independent of the rank split
    sampling_steps: Optional[int] = None  # DDIM steps; None = the checkpoint's diffusion.sampling_steps
    metrics: list[str] = field(default_factory=lambda: list(METRICS))  # subset of METRICS
    face_model_dir: Optional[str] = None  # LivePortrait weights dir (base_models/): enables rendering
    face_model_preset: str = field(default="full", metadata={"choices": ("full", "tiny")})  # tiny: test weights
    render_batch_size: int = field(default=8, metadata={"range": (1, None)})
    eval_size: int = field(default=256, metadata={"range": (32, None)})  # compared side: GT 256, renders 512 → 256
    fid_weights: Optional[str] = None  # FID Inception file (pt_inception-2015-12-05-6726825d.pth)
    fvd_weights: Optional[str] = None  # i3d_pretrained_400.pt (piergiaj / VideoGPT port)
    fvd_clip_len: int = field(default=16, metadata={"range": (9, None)})  # I3D needs ≥ 9 frames
    fvd_clip_sampling: str = field(default="first", metadata={"choices": FVD_SAMPLINGS})  # clips per video
    syncnet_weights: Optional[str] = None  # syncnet_v2.model (joonson/syncnet_python)
    s3fd_weights: Optional[str] = None  # sfd_face.pth (S3FD, the face detector of syncnet_python's pipeline)
    sync_crop: str = field(default="auto", metadata={"choices": SYNC_CROPS})  # see SYNC_CROPS
    sync_min_track: int = field(default=100, metadata={"range": (1, None)})  # s3fd_track: > this many detections
    sync_min_face_size: float = field(default=100.0, metadata={"range": (0.0, None)})  # s3fd_track: px at eval_size
    arcface_weights: Optional[str] = None  # insightface arcface_torch backbone.pth
    arcface_arch: str = field(default="r100", metadata={"choices": ("r18", "r34", "r50", "r100")})
    lpips_weights: Optional[str] = None  # alexnet-owt-7be5be79.pth; needs torchvision
    random_weights: bool = False  # unconfigured networks get random weights (numbers NOT comparable)
    num_videos: int = field(default=2, metadata={"range": (0, None)})  # clips kept as samples (videos, strips)
    # [upper lip, lower lip] keypoint indices of the mouth-opening signal (mouth_audio_r, in validation
    # too): the synthetic world's; check real LivePortrait motion with `playmate shards lips DIR`
    lip_keypoints: list[int] = field(default_factory=lambda: [19, 20])
    # Validation (training): the first clip's generated | ground-truth mp4 with audio (synthetic-world renderer,
    # 512×256, a few hundred KB) and its pose/mouth-over-time plot to W&B; needs logger.log_media too.
    val_video: bool = True
    val_video_seconds: float = field(default=4.0, metadata={"range": (0.04, 60.0)})

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"metrics {unknown} unknown; choose from {list(METRICS)}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r} unknown; choose from {list(PROTOCOLS)}")
        if self.fvd_clip_sampling not in FVD_SAMPLINGS:
            raise ValueError(f"fvd_clip_sampling {self.fvd_clip_sampling!r} unknown; choose from {list(FVD_SAMPLINGS)}")
        check_lip_keypoints(self.lip_keypoints)
        if self.num_clips < 0 or self.eval_size < 32 or self.render_batch_size < 1:
            raise ValueError(
                f"need num_clips ≥ 0 (0 = all), eval_size ≥ 32, render_batch_size ≥ 1; got {self.num_clips}, "
                f"{self.eval_size}, {self.render_batch_size}"
            )
        if self.face_model_preset not in ("full", "tiny"):
            raise ValueError(f"face_model_preset must be 'full' or 'tiny', got {self.face_model_preset!r}")
        if self.fvd_clip_len < 9:
            raise ValueError(f"fvd_clip_len {self.fvd_clip_len} < 9: I3D yields no logits for shorter clips")
        if self.sync_crop not in SYNC_CROPS:
            raise ValueError(f"sync_crop {self.sync_crop!r} unknown; choose from {list(SYNC_CROPS)}")
        if self.sync_crop == "s3fd_track" and not self.s3fd_weights:
            raise ValueError("sync_crop=s3fd_track needs s3fd_weights (--s3fd PATH to sfd_face.pth)")
        if self.sync_crop_mode == "s3fd_track" and self.eval_size < 112:
            raise ValueError(f"eval_size {self.eval_size} < 112: S3FD at scale 0.25 needs 28-pixel inputs; raise "
                             "eval_size or set sync_crop=whole")

    @classmethod
    def for_protocol(cls, name: str, **overrides: Any) -> EvaluationConfig:
        """The settings of protocol `name` (PROTOCOLS), then `overrides` (the report names what then differs)."""
        if name not in PROTOCOLS:
            raise ValueError(f"protocol {name!r} unknown; choose from {list(PROTOCOLS)}")
        return cls(protocol=name, **{**PROTOCOLS[name], **overrides})

    @property
    def lips(self) -> tuple[int, int]:
        """(upper, lower) lip keypoint indices."""
        return int(self.lip_keypoints[0]), int(self.lip_keypoints[1])

    @property
    def sync_crop_mode(self) -> str:
        """The Sync-C/D crop used: 'whole' or 's3fd_track' (auto: s3fd_track with real SyncNet and S3FD weights)."""
        if self.sync_crop == "auto":
            return "s3fd_track" if self.syncnet_weights and self.s3fd_weights else "whole"
        return self.sync_crop


def check_lip_keypoints(value: Any) -> tuple[int, int]:
    """[upper, lower] → (upper, lower); anything else raises a ValueError naming lip_keypoints and the fix."""
    fix = ("set lip_keypoints to [upper, lower]: two different keypoint indices in "
           f"0..{NUM_KEYPOINTS - 1} (`playmate shards lips DIR` suggests them from a prepared dataset)")
    pair = list(value) if isinstance(value, (list, tuple)) else None
    if pair is None or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"lip_keypoints {value!r} is not a list of integers; {fix}")
    if len(pair) != 2 or pair[0] == pair[1] or not all(0 <= v < NUM_KEYPOINTS for v in pair):
        raise ValueError(f"lip_keypoints {list(value)} is invalid; {fix}")
    return pair[0], pair[1]
