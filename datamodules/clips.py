"""Held-out clips as whole decoded samples (evaluation, synthetic-world probes) and the rank split.

Every rank loads the same list in shard order (deterministic), then keeps `split_for_rank` of it, so
no clip is evaluated twice and the per-clip seeds do not depend on the number of ranks.

Shape legend: T frames (25 fps) · S = 640·T audio samples (16 kHz) · L/C encoder layers/channels.
"""

from __future__ import annotations

import logging
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from configs.loader import ConfigError
from datamodules.contract import ContractError, decode_sample, sample_problems, validate_sample
from datamodules.shards import iter_tar_samples
from models.clock import SAMPLES_PER_FRAME

log = logging.getLogger(__name__)


@dataclass
class EvalClip:
    """One validation clip (decoded contract sample, cut to max_frames)."""

    key: str
    motion: np.ndarray  # (T, 70) float32 raw ground-truth motion
    kp: np.ndarray  # (21, 3) canonical keypoints x_c
    wav: np.ndarray  # (S,) int16, S = 640·T
    meta: dict[str, Any]
    mp4: bytes | None = None  # 256×256 face crop video (first T frames are used)
    audio_feats: np.ndarray | None = None  # (T, L, C) precomputed encoder features

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[0])


def split_for_rank(items: Sequence[Any], rank: int, world: int) -> list[Any]:
    """Items of this rank: items[rank::world]. Ranks are disjoint and together cover every item once."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 ≤ rank < world, got rank {rank}, world {world}")
    return list(items[rank::world])


@dataclass(frozen=True)
class SkippedClip:
    shard: str
    key: str  # "-" for a shard that could not be read
    reason: str


class ClipList(list):
    """The loaded clips (a list of EvalClip), `skipped`: every sample or shard left out, and why, and
    `complete`: whether they are all valid clips of the data (False: num_clips stopped the reading)."""

    def __init__(self, clips: Sequence[EvalClip] = (), skipped: Sequence[SkippedClip] = (),
                 complete: bool = True) -> None:
        super().__init__(clips)
        self.skipped = list(skipped)
        self.complete = complete


def load_clips(data: Sequence[str], num_clips: int, max_frames: int = 0, config_key: str = "--data") -> ClipList:
    """The first `num_clips` valid clips (0: all) of the shards (dataset dirs, globs, brace URLs), in shard order.

    Every rank loads the same list (deterministic), then takes `split_for_rank`. A sample that breaks
    the contract or holds implausible numbers, and a shard that cannot be read, are skipped with a
    warning and recorded in `ClipList.skipped` (the evaluation report lists them).
    """
    from datamodules.motion_wds import resolve_shards

    clips = ClipList()

    def skip(url: str, key: str, reason: str) -> None:
        clips.skipped.append(SkippedClip(url, key, reason))
        log.warning("evaluation: skipping %s:%s (%s)", url, key, reason)

    urls = resolve_shards(list(data), config_key)
    for i, url in enumerate(urls):
        count = 0
        try:
            for raw in iter_tar_samples(Path(url)):
                if num_clips and len(clips) >= num_clips:  # one more sample or shard: not all clips
                    clips.complete = False
                    return clips
                count += 1
                key = str(raw.get("__key__", "?"))
                try:
                    s = validate_sample(decode_sample(raw))
                except ContractError as e:
                    skip(url, key, str(e).split(": ", 1)[-1])
                    continue
                problems = sample_problems(s)
                if problems:
                    skip(url, key, "; ".join(problems))
                    continue
                n = s["motion"].shape[0] if max_frames <= 0 else min(max_frames, s["motion"].shape[0])
                feats = s.get("audio_feats")
                clips.append(EvalClip(
                    key=s["__key__"], motion=s["motion"][:n].astype(np.float32), kp=s["kp"].astype(np.float32),
                    wav=s["wav"][: n * SAMPLES_PER_FRAME], meta=s["meta"], mp4=s.get("mp4"),
                    audio_feats=None if feats is None else feats[:n],
                ))
        except (tarfile.TarError, OSError, EOFError) as e:
            skip(url, "-", f"unreadable tar after {count} samples ({type(e).__name__}: {e})")
        if num_clips and len(clips) >= num_clips and i + 1 < len(urls):
            clips.complete = False
            return clips
    if not clips:
        why = "; ".join(f"{c.shard}:{c.key}: {c.reason}" for c in clips.skipped[:3])
        raise ConfigError(f"{config_key}: {list(data)} held no valid clip ({len(clips.skipped)} skipped"
                         + (f": {why}" if why else "") + ")")
    return clips
