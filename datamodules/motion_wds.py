"""WebDataset pipeline of training windows over contract shards, as a LightningDataModule.

Training: each DataLoader worker of each rank runs the stage list of `TrainWindowStream.pipeline`:
this rank's shards (urls[rank::world]), this worker's part of them, resampled forever with an RNG seeded
by (seed, epoch, rank, worker) → tar members grouped into samples → a shuffle buffer of the still
compressed samples → decode + validate (a bad sample is skipped, counted, logged with shard and key)
→ `windows_per_clip` random windows of Tp + T frames per clip, with the aligned audio and adaptive
normalisation (exp: global stats; pose: the clip's mean, dataset pose std) → batches of the per-rank
batch size (partial=False) → exactly `batches_per_worker` batches, identical on every rank, so no rank
waits for another.

Ranks never share a shard, so within an epoch no sample key is seen by two ranks. Validation is
deterministic and not resampled: every rank reads its own shards once, and each clip gives the window
whose first generated frame is 0, with the raw audio and motion of those frames (`ValWindowStream`).
The batch is a `WindowBatch`; the shard members are described in docs/data-format.md.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import numpy as np
import torch
import webdataset as wds
from braceexpand import braceexpand
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from configs.loader import ConfigError, ConfigPathError
from datamodules.contract import (
    SAMPLES_PER_FRAME,
    ContractError,
    decode_sample,
    sample_problems,
)
from datamodules.shards import MANIFEST, STATS, StatsAccumulator
from models.emotion import EMOTIONS, NULL_EMOTION
from models.motion import POSE, MotionStats, normalize_motion

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# Shard lists and statistics
# ------------------------------------------------------------------------------------------------


def resolve_shards(specs: list[str], config_key: str = "data.train_shards") -> list[str]:
    """Dataset dirs (manifest.json), globs and brace patterns → sorted list of shard paths."""
    urls: list[str] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            if not (p / MANIFEST).is_file():
                raise ConfigPathError(f"{config_key}: {spec} has no {MANIFEST}; write it with the shard writer")
            urls += [str(p / s["name"]) for s in json.loads((p / MANIFEST).read_text())["shards"]]
        elif any(c in spec for c in "*?["):
            urls += sorted(glob.glob(spec))
        else:
            urls += [u for u in braceexpand(spec) if Path(u).is_file() or "://" in u]
    if not urls:
        raise ConfigPathError(f"{config_key}: {specs} matched no shards (give dataset dirs, globs or brace URLs)")
    return urls


def load_motion_stats(specs: list[str], stats_path: str | None = None) -> MotionStats:
    """stats.json of `stats_path`, else merged (exactly) over the dataset dirs in `specs`."""
    if stats_path:
        return MotionStats.from_dict(json.loads(Path(stats_path).read_text()))
    acc, found = StatsAccumulator(), []
    for spec in specs:
        f = Path(spec) / STATS
        if f.is_file():
            acc.merge(StatsAccumulator.from_json(json.loads(f.read_text())))
            found.append(str(f))
    if not found:
        raise ConfigPathError(
            f"data.stats: no stats.json in {specs}; point data.stats at a stats.json or give dataset directories"
        )
    return MotionStats.from_dict(acc.to_json())


# ------------------------------------------------------------------------------------------------
# Bad-sample accounting (per worker process)
# ------------------------------------------------------------------------------------------------


class BadSampleCounter:
    """Counts decoded and skipped samples; stops the run once the bad fraction is exceeded."""

    def __init__(self, max_fraction: float, min_bad: int) -> None:
        self.max_fraction, self.min_bad = max_fraction, min_bad
        self.seen = 0
        self.bad = 0
        self.bad_shards: Counter[str] = Counter()

    def record_bad(self, url: str, key: str, reason: str) -> None:
        self.bad += 1
        self.bad_shards[url] += 1
        if self.bad <= 20 or self.bad % 100 == 0:
            log.warning("skipping bad sample %s:%s (%s) [%d bad of %d]", url, key, reason, self.bad, self.seen)
        if self.bad >= self.min_bad and self.bad > self.max_fraction * max(self.seen, 1):
            worst = ", ".join(f"{u} ({n})" for u, n in self.bad_shards.most_common(10))
            raise RuntimeError(
                f"{self.bad} of {self.seen} samples were bad (> data.max_bad_fraction={self.max_fraction}); "
                f"bad shards: {worst}. Run `playmate shards check` on their dataset and rewrite them."
            )

    def tar_error(self, exn: Exception) -> bool:
        """webdataset handler for unreadable tars (truncated shard, bad header): count and continue."""
        self.seen += 1
        url = str(getattr(exn, "args", [""])[-1]) if exn.args else "?"
        self.record_bad(url if ".tar" in url else "?", "-", f"{type(exn).__name__}: {exn}")
        return True


# ------------------------------------------------------------------------------------------------
# Windows
# ------------------------------------------------------------------------------------------------


class WindowMaker:
    """Decoded clip → normalised training windows of Tp context + T frames with aligned audio."""

    def __init__(self, stats: MotionStats, t_window: int, tp: int, audio_source: str) -> None:
        self.stats, self.t_window, self.tp, self.audio_source = stats, t_window, tp, audio_source
        self.exp_mean = stats.exp_mean.numpy()
        self.exp_std = stats.exp_std.numpy()
        self.pose_std = stats.pose_std.numpy()

    def window(self, s: dict[str, Any], start: int) -> dict[str, Any]:
        """The window whose first generated frame is `start`; context [start-Tp, start) zero-padded."""
        t, tp, n = self.t_window, self.tp, s["motion"].shape[0]
        lo = start - tp
        pad = max(0, -lo)
        idx = slice(max(lo, 0), start + t)
        pose_mean = np.asarray(s["meta"]["pose_mean"], dtype=np.float32)
        motion = normalize_motion(
            torch.from_numpy(s["motion"][idx]), self.stats, torch.from_numpy(pose_mean)
        ).numpy()  # (≤Tp+T, 70)
        motion = np.pad(motion, ((pad, 0), (0, 0)))  # (Tp+T, 70)
        # The reference frame's pose is normalised by itself (→ 0), exactly as at inference, where
        # the reference pose is the pose mean: the identity feature carries its expression only.
        first = torch.from_numpy(s["motion"][0])
        ref = normalize_motion(first, self.stats, first[POSE]).numpy()
        emotion = s["meta"]["emotion"]
        out = {
            "motion": motion.astype(np.float32),
            "has_context": start >= tp,
            "kp": s["kp"],
            "ref_motion": ref.astype(np.float32),  # (70,) normalised reference (first) frame
            "pose_mean": pose_mean,
            "emotion": EMOTIONS.index(emotion) if emotion is not None else NULL_EMOTION,
            "key": s["__key__"],
            "start": start,
            "num_frames": n,
        }
        if self.audio_source == "precomputed":
            feats = s["audio_feats"][idx].astype(np.float32)  # (≤Tp+T, L, C)
            out["audio"] = np.pad(feats, ((pad, 0), (0, 0), (0, 0)))
        else:
            a = s["wav"][max(lo, 0) * SAMPLES_PER_FRAME : (start + t) * SAMPLES_PER_FRAME].astype(np.float32) / 32768.0
            out["audio"] = np.pad(a, (pad * SAMPLES_PER_FRAME, 0))  # ((Tp+T)·640,)
        return out

    def random_starts(self, n_frames: int, k: int, rng: random.Random) -> list[int]:
        return [rng.randint(0, n_frames - self.t_window) for _ in range(k)]


class WindowBatch(TypedDict):
    """One batch of windows, as `collate_windows` makes it and the LightningModule reads it.

    B windows; Tp context frames, then T generated frames, S = Tp + T; L, C: audio-encoder layers,
    channels. Normalised motion: exp by the global z-score, pose by (pose - clip pose mean) / dataset
    pose std. Context frames before the clip start are zero rows (and zero audio).
    """

    motion: Tensor  # (B, S, 70) float32: normalised motion of frames [start-Tp, start+T)
    has_context: Tensor  # (B,) bool: start ≥ Tp, i.e. the Tp context frames are real, not padding
    kp: Tensor  # (B, 21, 3) float32: the clip's canonical keypoints
    ref_motion: Tensor  # (B, 70) float32: the clip's first frame normalised, its pose by itself (→ 0)
    pose_mean: Tensor  # (B, 7) float32: the clip's pose mean (to de-normalise)
    emotion: Tensor  # (B,) int64: index into EMOTIONS; NULL_EMOTION (8) = no label
    start: Tensor  # (B,) int64: clip frame of the first generated frame
    key: list[str]  # (B,) sample keys
    # wav audio: (B, S·640) float32 in [-1, 1]; precomputed: (B, S, L, C) float32 encoder features
    audio: Tensor
    # training only: (3,) int64 [worker, seen, bad] of the DataLoader worker that made the batch,
    # its counts of samples read and skipped when the batch's last window was cut
    data_stats: NotRequired[Tensor]
    # validation only (windows start at frame 0), raw for generation-based metrics:
    wav: NotRequired[Tensor]  # (B, T·640) int16: the clip's audio of frames [0, T)
    gt_motion: NotRequired[Tensor]  # (B, T, 70) float32: the clip's raw (not normalised) motion of [0, T)
    ref_raw: NotRequired[Tensor]  # (B, 70) float32: the clip's raw first frame (the reference frame)


def collate_windows(items: list[dict[str, Any]]) -> WindowBatch:
    """Windows of `WindowMaker.window` (with their validation or training extras) → a `WindowBatch`."""
    stack = {k: torch.from_numpy(np.stack([it[k] for it in items]))
             for k in ("motion", "kp", "ref_motion", "pose_mean", "audio")}
    batch = WindowBatch(
        **stack,
        has_context=torch.tensor([it["has_context"] for it in items]),
        emotion=torch.tensor([it["emotion"] for it in items], dtype=torch.long),
        start=torch.tensor([it["start"] for it in items], dtype=torch.long),
        key=[it["key"] for it in items],
    )
    for k in ("wav", "gt_motion", "ref_raw"):
        if k in items[0]:
            batch[k] = torch.from_numpy(np.stack([it[k] for it in items]))
    if "data_stats" in items[0]:
        batch["data_stats"] = torch.tensor(items[-1]["data_stats"])
    return batch


# ------------------------------------------------------------------------------------------------
# Pipeline stages (generator functions over the stream of the stage before)
# ------------------------------------------------------------------------------------------------


def resampled_shards(shards: Iterable[dict[str, str]], rng: random.Random) -> Iterator[dict[str, str]]:
    """The given shards drawn with replacement by `rng`, forever."""
    urls = [s["url"] for s in shards]
    while True:
        yield {"url": rng.choice(urls)}


def decoded_clips(samples: Iterable[dict], counter: BadSampleCounter, maker: WindowMaker) -> Iterator[dict]:
    """Raw samples → decoded clips that meet the contract and give a window; others skipped and counted."""
    for raw in samples:
        counter.seen += 1
        url, key = raw.get("__url__", "?"), raw.get("__key__", "?")
        try:
            s = decode_sample(raw)
        except ContractError as e:
            counter.record_bad(url, key, str(e).split(": ", 1)[-1])
            continue
        problems = sample_problems(s)
        if not problems and s["motion"].shape[0] < maker.t_window:
            problems = [f"clip has {s['motion'].shape[0]} frames < data window {maker.t_window}"]
        if not problems and maker.audio_source == "precomputed" and "audio_feats" not in s:
            problems = ["no audio.npy but data.audio_source=precomputed"]
        if problems:
            counter.record_bad(url, key, "; ".join(problems))
            continue
        yield s


def random_windows(clips: Iterable[dict], maker: WindowMaker, per_clip: int, rng: random.Random,
                   counter: BadSampleCounter, worker: int) -> Iterator[dict[str, Any]]:
    """`per_clip` windows at random starts of each clip, each carrying the worker's counts so far."""
    for s in clips:
        counts = (worker, counter.seen, counter.bad)
        for start in maker.random_starts(s["motion"].shape[0], per_clip, rng):
            w = maker.window(s, start)
            w["data_stats"] = counts
            yield w


def first_windows(clips: Iterable[dict], maker: WindowMaker) -> Iterator[dict[str, Any]]:
    """Each clip's window starting at frame 0, plus the raw audio, motion and first frame of [0, T)."""
    t = maker.t_window
    for s in clips:
        w = maker.window(s, 0)
        w["wav"] = s["wav"][: t * SAMPLES_PER_FRAME]  # (T·640,) int16
        w["gt_motion"] = s["motion"][:t]  # (T, 70) float32, raw
        w["ref_raw"] = s["motion"][0]  # (70,) float32, raw
        yield w


# ------------------------------------------------------------------------------------------------
# The iterable datasets
# ------------------------------------------------------------------------------------------------


class _StreamBase(IterableDataset):
    def __init__(self, urls: list[str], maker: WindowMaker, batch_size: int, rank: int, world: int,
                 counter_args: tuple[float, int]) -> None:
        super().__init__()
        self.urls, self.maker, self.batch_size = urls, maker, batch_size
        self.rank, self.world = rank, world
        self.counter_args = counter_args


class TrainWindowStream(_StreamBase):
    """Infinite resampled stream of batches for one rank; `with_epoch` fixes the batches per worker."""

    def __init__(self, *args: Any, seed: int, shuffle_buffer: int, windows_per_clip: int,
                 batches_per_worker: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.seed, self.shuffle_buffer = seed, shuffle_buffer
        self.windows_per_clip, self.batches_per_worker = windows_per_clip, batches_per_worker
        self.epoch = 0

    def pipeline(self, worker: int, num_workers: int) -> list:
        """The stages of one DataLoader worker (its RNGs are seeded by seed, epoch, rank and worker)."""
        counter = BadSampleCounter(*self.counter_args)
        seed = f"{self.seed}/{self.epoch}/{self.rank}/{worker}"
        rng = random.Random(f"{seed}/windows")  # draws both the shuffle order and the window starts
        pipeline = [
            # at this point we have this worker's shards {"url"}: the rank's urls[rank::world], then
            # [worker::num_workers] of those (no two ranks or workers share a shard)
            wds.SimpleShardList(self.urls[self.rank :: self.world][worker::num_workers]),
            # at this point we have an endless stream of those shards, drawn with replacement
            partial(resampled_shards, rng=random.Random(f"{seed}/shards")),
            # at this point we have raw samples {__key__, __url__, member: bytes}; an unreadable tar
            # is counted as one bad sample and skipped
            wds.tarfile_to_samples(handler=counter.tar_error),
        ]
        if self.shuffle_buffer > 1:
            # at this point we have the raw (still compressed, so cheap to buffer) samples shuffled
            pipeline.append(wds.shuffle(self.shuffle_buffer, min(self.shuffle_buffer, 64), rng=rng))
        pipeline += [
            # at this point we have decoded clips that meet the contract (others skipped and counted)
            partial(decoded_clips, counter=counter, maker=self.maker),
            # at this point we have normalised windows of Tp + T frames, `windows_per_clip` per clip
            partial(random_windows, maker=self.maker, per_clip=self.windows_per_clip, rng=rng,
                    counter=counter, worker=worker),
            # at this point we have WindowBatch-es of the per-rank batch size, data_stats attached
            wds.batched(self.batch_size, collation_fn=collate_windows, partial=False),
        ]
        return pipeline

    def __iter__(self) -> Iterator[WindowBatch]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        # exactly batches_per_worker batches, then the epoch ends
        return iter(wds.DataPipeline(*self.pipeline(worker, num_workers)).with_epoch(self.batches_per_worker))


class ValWindowStream(_StreamBase):
    """Each clip of this rank's shards once, in shard order: its window starting at frame 0."""

    def __init__(self, *args: Any, max_clips: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.max_clips = max_clips

    def __iter__(self) -> Iterator[WindowBatch]:
        urls = self.urls[self.rank :: self.world]
        if not urls:  # more ranks than validation shards
            return iter(())
        counter = BadSampleCounter(*self.counter_args)
        pipeline = [
            # at this point we have this rank's shards {"url"}, in order, each read once
            wds.SimpleShardList(urls),
            # at this point we have raw samples {__key__, __url__, member: bytes}
            wds.tarfile_to_samples(handler=counter.tar_error),
            # at this point we have decoded clips that meet the contract (others skipped and counted)
            partial(decoded_clips, counter=counter, maker=self.maker),
            # at this point we have the first max_clips of those clips
            wds.slice(self.max_clips),
            # at this point we have each clip's window starting at frame 0 (Tp zero context rows,
            # has_context False) with the raw wav, gt_motion and ref_raw of frames [0, T)
            partial(first_windows, maker=self.maker),
            # at this point we have WindowBatch-es of val_batch_size, the last one possibly smaller
            wds.batched(self.batch_size, collation_fn=collate_windows, partial=True),
        ]
        return iter(wds.DataPipeline(*pipeline))


# ------------------------------------------------------------------------------------------------
# The LightningDataModule
# ------------------------------------------------------------------------------------------------

try:  # the datamodule is only needed by training; the pipeline above works without Lightning
    from lightning.pytorch import LightningDataModule
except ImportError:  # pragma: no cover
    LightningDataModule = object  # type: ignore[misc,assignment]


class MotionDataModule(LightningDataModule):
    """Training and validation windows from contract shards (config: `configs.schema.DataConfig`)."""

    def __init__(self, data_cfg: Any, t_window: int, tp: int, seed: int = 0) -> None:
        super().__init__()
        self.cfg, self.t_window, self.tp, self.seed = data_cfg, t_window, tp, seed
        self.rank, self.world = 0, 1
        self.stats: MotionStats | None = None
        self._train: TrainWindowStream | None = None

    def setup(self, stage: str | None = None) -> None:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            self.rank, self.world = trainer.global_rank, trainer.world_size
        self.train_urls = resolve_shards(list(self.cfg.train_shards))
        self.val_urls = resolve_shards(list(self.cfg.val_shards), "data.val_shards") if self.cfg.val_shards else []
        self.stats = load_motion_stats(list(self.cfg.train_shards), self.cfg.stats)
        need = self.world * max(self.cfg.num_workers, 1)
        if len(self.train_urls) < need:
            raise ConfigError(
                f"data.train_shards: {len(self.train_urls)} shards < {max(self.cfg.num_workers, 1)} workers × "
                f"{self.world} ranks; every worker of every rank needs its own shard: re-shard with smaller "
                f"shards (maxcount) or lower data.num_workers"
            )

    @property
    def per_rank_batch(self) -> int:
        return self.cfg.batch_size // self.world

    def batches_per_worker(self) -> int:
        per_rank = max(1, self.cfg.epoch_windows // self.cfg.batch_size)
        return math.ceil(per_rank / max(self.cfg.num_workers, 1))

    def train_dataset(self) -> TrainWindowStream:
        maker = WindowMaker(self.stats, self.t_window, self.tp, self.cfg.audio_source)
        ds = TrainWindowStream(
            self.train_urls, maker, self.per_rank_batch, self.rank, self.world,
            (self.cfg.max_bad_fraction, self.cfg.min_bad_samples),
            seed=self.seed, shuffle_buffer=self.cfg.shuffle_buffer, windows_per_clip=self.cfg.windows_per_clip,
            batches_per_worker=self.batches_per_worker(),
        )
        ds.epoch = self.trainer.current_epoch if getattr(self, "trainer", None) is not None else 0
        return ds

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_dataset(), batch_size=None, num_workers=self.cfg.num_workers,
            persistent_workers=False, pin_memory=torch.cuda.is_available(),
        )

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_urls:
            return []
        maker = WindowMaker(self.stats, self.t_window, self.tp, self.cfg.audio_source)
        per_rank_clips = math.ceil(self.cfg.val_max_clips / self.world)
        ds = ValWindowStream(
            self.val_urls, maker, self.cfg.val_batch_size, self.rank, self.world,
            (self.cfg.max_bad_fraction, self.cfg.min_bad_samples), max_clips=per_rank_clips,
        )
        return DataLoader(ds, batch_size=None, num_workers=0)
