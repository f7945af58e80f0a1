"""`PrepareConfig`: the schema of `playmate prepare` (configs/prepare.yaml only overrides these defaults).

Units and reasons sit next to each default; `load_config` rejects unknown keys and wrong types and
applies the `range` / `choices` metadata; `PrepareConfig.check` holds the cross-field rules.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

ADAPTER_NAMES = ("avspeech", "celebvtext", "acappella", "mead", "mafw", "hdtf", "folder")


@dataclass
class ClipConfig:
    """How a resampled video is cut into clips (3–30 s, at scene cuts or silences)."""

    min_s: float = field(default=3.0, metadata={"range": (0.5, None)})  # shorter pieces are dropped
    max_s: float = field(default=30.0, metadata={"range": (1.0, None)})  # longer ones are split at a silence
    # a scene cut: mean |Δgrey| (0..255) of 32² thumbnails above this
    scene_threshold: float = field(default=30.0, metadata={"range": (0.0, 255.0)})
    silence_db: float = field(default=-40.0, metadata={"range": (-120.0, 0.0)})  # frame RMS (dBFS) below this is silent
    min_silence_s: float = field(default=0.3, metadata={"range": (0.04, None)})  # a silence to split at lasts this long
    chunk_s: float = field(default=60.0, metadata={"range": (1.0, None)})  # long videos are decoded in chunks (memory)


@dataclass
class DetectorConfig:
    """Where the face comes from: dataset annotations, S3FD face tracks, a detector file, or the centre fallback."""

    # auto: annotations where the adapter has them (AVSpeech), else S3FD tracks if detector.weights is set,
    # else the centre box; file: a TorchScript detector (one box per frame)
    kind: str = field(default="auto", metadata={"choices": ("auto", "annotations", "s3fd", "file", "centre")})
    weights: Optional[str] = None  # s3fd: the public sfd_face.pth; file: a TorchScript detector (docs)
    every: int = field(default=5, metadata={"range": (1, None)})  # run the detector on every N-th 25 fps frame
    min_score: float = field(default=0.5, metadata={"range": (0.0, 1.0)})  # file detector: lower scores are gaps
    centre_fraction: float = field(default=0.45, metadata={"range": (0.05, 1.0)})  # centre box side / min(H, W)
    annotation_fraction: float = field(default=0.35, metadata={"range": (0.05, 1.0)})  # AVSpeech box side / H
    # s3fd: the Sync-C/Sync-D pipeline's numbers (syncnet_python run_pipeline.py)
    conf_th: float = field(default=0.9, metadata={"range": (0.0, 1.0)})  # S3FD face score threshold
    scale: float = field(default=0.25, metadata={"range": (0.01, 4.0)})  # S3FD input scale of the decoded frame
    iou_threshold: float = field(default=0.5, metadata={"range": (0.0, 1.0)})  # joins a track: IoU > this
    max_missed: int = field(default=25, metadata={"range": (0, None)})  # ... at most this many frames later
    smooth_kernel: int = field(default=13, metadata={"range": (1, None)})  # odd median filter of size and centre
    batch_size: int = field(default=16, metadata={"range": (1, None)})  # frames per S3FD forward


@dataclass
class FilterConfig:
    """Clip and video rejection rules (docs/data-preparation.md); each rejection is a reason in the ledger."""

    min_face_px: float = field(default=48.0, metadata={"range": (0.0, None)})  # face box side in source pixels
    max_abs_yaw_deg: float = field(default=60.0, metadata={"range": (0.0, 97.5)})  # max |yaw| over the clip
    max_detection_gap: float = field(default=0.2, metadata={"range": (0.0, 1.0)})  # fraction of probed frames w/o face
    audio_tolerance_s: float = field(default=0.1, metadata={"range": (0.0, None)})  # audio may end this much early
    allow_vfr: bool = False  # variable-frame-rate video: reject (default) or resample by timestamps
    vfr_tolerance: float = field(default=0.1, metadata={"range": (0.0, None)})  # max |Δt − median| / median
    sync: bool = False  # SyncNet confidence/offset filter (models.syncnet; needs sync_weights)
    sync_weights: Optional[str] = None  # syncnet_v2.model
    sync_min_confidence: float = field(default=3.0, metadata={"range": (0.0, None)})
    sync_max_offset: int = field(default=5, metadata={"range": (0, 15)})  # |offset| ≤ this is corrected, else rejected


@dataclass
class PrepareConfig:
    """Raw dataset → validated contract shards, resumable, sliced for SLURM arrays."""

    dataset: str = field(default=MISSING, metadata={"choices": ADAPTER_NAMES})  # adapter
    input: str = MISSING  # raw dataset root (layout per adapter: docs/data-preparation.md)
    output: str = MISSING  # dataset directory written (slices/ + manifest.json + stats.json)
    action: str = field(default="run", metadata={"choices": ("run", "merge")})
    name: Optional[str] = None  # dataset name in sample keys; default: the adapter name
    labels: Optional[str] = None  # label file (mafw, folder) or clip CSV (avspeech); default per adapter
    views: list[str] = field(default_factory=lambda: ["front"])  # MEAD camera views to keep
    face_model_dir: Optional[str] = None  # LivePortrait base_models/ dir (or its parent); required for run
    face_model_preset: str = field(default="full", metadata={"choices": ("full", "tiny")})  # tiny: tests only
    crop_scale: float = field(default=2.2, metadata={"range": (1.0, 4.0)})  # LivePortrait driving crop
    crop_vx: float = 0.0
    crop_vy: float = -0.1
    clips: ClipConfig = field(default_factory=ClipConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    decode_backend: str = field(default="decord", metadata={"choices": ("decord", "pyav")})
    decode_max_side: int = field(default=720, metadata={"range": (64, None)})  # decode downscaled to this long side
    write_mp4: bool = True  # store the 256² 25 fps crop (evaluation, renderer fine-tuning)
    crf: int = field(default=20, metadata={"range": (0, 51)})
    device: str = "auto"  # auto → cuda if available; motion extraction (and SyncNet) run here
    batch_size: int = field(default=64, metadata={"range": (1, None)})  # frames per extract_motion call
    num_workers: int = field(default=0, metadata={"range": (0, 256)})  # CPU processes; 0 = in the main process
    slice: Optional[int] = None  # default: SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN, else 0
    num_slices: Optional[int] = None  # default: SLURM_ARRAY_TASK_COUNT, else 1
    maxcount: int = field(default=500, metadata={"range": (1, None)})  # clips per shard
    retry_failed: bool = True  # a rerun retries items that failed with an error (rejections are final)
    item_timeout_s: float = field(default=3600.0, metadata={"range": (1.0, None)})  # a hung worker → item failed
    max_items: Optional[int] = None  # process only the first N items of this slice (debugging)
    progress: bool = True

    def check(self) -> list[tuple[str, str]]:
        bad = []
        if self.clips.min_s > self.clips.max_s:
            bad.append(("clips.min_s",
                        f"{self.clips.min_s} > clips.max_s {self.clips.max_s}; lower min_s or raise max_s"))
        if self.clips.chunk_s < self.clips.max_s:
            bad.append(("clips.chunk_s",
                        f"{self.clips.chunk_s} < clips.max_s {self.clips.max_s}; a clip must fit a chunk"))
        if self.detector.kind == "file" and not self.detector.weights:
            bad.append(("detector.weights", "detector.kind=file needs detector.weights=PATH (a TorchScript detector)"))
        if self.detector.kind == "s3fd" and not self.detector.weights:
            bad.append(("detector.weights", "detector.kind=s3fd needs detector.weights=PATH (sfd_face.pth)"))
        if self.detector.smooth_kernel % 2 == 0:
            bad.append(("detector.smooth_kernel", f"{self.detector.smooth_kernel} must be odd (a median filter)"))
        if self.filters.sync and not self.filters.sync_weights:
            bad.append(("filters.sync_weights", "filters.sync=true needs filters.sync_weights=PATH (syncnet_v2.model)"))
        if self.num_slices is not None and self.num_slices < 1:
            bad.append(("num_slices", f"{self.num_slices} must be ≥ 1"))
        if self.slice is not None and self.num_slices is not None and not 0 <= self.slice < self.num_slices:
            bad.append(("slice", f"{self.slice} must be in [0, num_slices={self.num_slices})"))
        return bad

    @property
    def dataset_name(self) -> str:
        return self.name or self.dataset


def resolve_slice(cfg: PrepareConfig, env: dict[str, str] | None = None) -> tuple[int, int]:
    """(slice, num_slices) from the config, else from a SLURM array job's environment, else (0, 1)."""
    env = dict(os.environ) if env is None else env
    num = cfg.num_slices
    if num is None:
        num = int(env.get("SLURM_ARRAY_TASK_COUNT", "1"))
    idx = cfg.slice
    if idx is None:
        if "SLURM_ARRAY_TASK_ID" in env:
            idx = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        else:
            idx = 0
    if not 0 <= idx < num:
        raise ValueError(
            f"slice {idx} is outside [0, {num}): use --array=0-{num - 1} (or set slice= and num_slices= explicitly)"
        )
    return idx, num
