"""WebDataset pipeline of training windows over contract shards, as a LightningDataModule.

Training (per rank, per worker):
    shards of this rank (urls[rank::world]) → of this worker ([worker::num_workers])
    → resampled forever with a seeded RNG (seed, epoch, rank, worker)
    → tar members grouped into samples (webdataset)               # raw bytes
    → shuffle buffer (compressed samples)
    → decode + validate; a bad sample is skipped, counted, logged with shard and key
    → cut `windows_per_clip` windows of Tp + T frames with the aligned audio
    → adaptive normalisation (exp: global stats; pose: the clip's mean, dataset pose std)
    → batched inside the pipeline (per-rank batch, partial=False)
    → with_epoch(batches per worker), identical on every rank, so no rank waits for another.

Ranks never share a shard, so within an epoch no sample key is seen by two ranks. Validation is
deterministic and not resampled: every rank reads its own shards once, one fixed window per clip.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from braceexpand import braceexpand
from torch.utils.data import DataLoader, IterableDataset

from datamodules.contract import (
    SAMPLES_PER_FRAME,
    ContractError,
    decode_sample,
    sample_problems,
)
from configs.loader import ConfigError, ConfigPathError
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

    def fixed_start(self, n_frames: int) -> int:
        """Validation: the first window that has a full real context, else the clip start."""
        return self.tp if n_frames >= self.tp + self.t_window else 0


def collate_windows(items: list[dict[str, Any]]) -> dict[str, Any]:
    batch: dict[str, Any] = {}
    for k in ("motion", "kp", "ref_motion", "pose_mean", "audio"):
        batch[k] = torch.from_numpy(np.stack([it[k] for it in items]))
    batch["has_context"] = torch.tensor([it["has_context"] for it in items])
    batch["emotion"] = torch.tensor([it["emotion"] for it in items], dtype=torch.long)
    batch["start"] = torch.tensor([it["start"] for it in items], dtype=torch.long)
    batch["key"] = [it["key"] for it in items]
    if "wav" in items[0]:
        batch["wav"] = torch.from_numpy(np.stack([it["wav"] for it in items]))  # (B, T·640) int16
    return batch


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

    def _decoded(self, raw_samples: Iterator[dict], counter: BadSampleCounter) -> Iterator[dict]:
        for raw in raw_samples:
            counter.seen += 1
            url, key = raw.get("__url__", "?"), raw.get("__key__", "?")
            try:
                s = decode_sample(raw)
            except ContractError as e:
                counter.record_bad(url, key, str(e).split(": ", 1)[-1])
                continue
            problems = sample_problems(s)
            if not problems and s["motion"].shape[0] < self.maker.t_window:
                problems = [f"clip has {s['motion'].shape[0]} frames < data window {self.maker.t_window}"]
            if not problems and self.maker.audio_source == "precomputed" and "audio_feats" not in s:
                problems = ["no audio.npy but data.audio_source=precomputed"]
            if problems:
                counter.record_bad(url, key, "; ".join(problems))
                continue
            yield s


class TrainWindowStream(_StreamBase):
    """Infinite resampled stream of batches for one rank; `with_epoch` fixes batches per worker."""

    def __init__(self, *args: Any, seed: int, shuffle_buffer: int, windows_per_clip: int,
                 batches_per_worker: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.seed, self.shuffle_buffer = seed, shuffle_buffer
        self.windows_per_clip, self.batches_per_worker = windows_per_clip, batches_per_worker
        self.epoch = 0

    def _shard_urls(self, worker: int, num_workers: int) -> Iterator[dict[str, str]]:
        mine = self.urls[self.rank :: self.world][worker::num_workers]
        rng = random.Random(f"{self.seed}/{self.epoch}/{self.rank}/{worker}/shards")
        while True:
            yield {"url": rng.choice(mine)}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        counter = BadSampleCounter(*self.counter_args)
        rng = random.Random(f"{self.seed}/{self.epoch}/{self.rank}/{worker}/windows")
        raw = wds.tarfile_to_samples(handler=counter.tar_error)(self._shard_urls(worker, num_workers))
        if self.shuffle_buffer > 1:
            raw = wds.filters._shuffle(raw, self.shuffle_buffer, min(self.shuffle_buffer, 64), rng)
        items: list[dict] = []
        emitted = 0
        for s in self._decoded(raw, counter):
            for start in self.maker.random_starts(s["motion"].shape[0], self.windows_per_clip, rng):
                items.append(self.maker.window(s, start))
            while len(items) >= self.batch_size:
                batch = collate_windows(items[: self.batch_size])
                items = items[self.batch_size :]
                batch["data_stats"] = torch.tensor([worker, counter.seen, counter.bad])
                yield batch
                emitted += 1
                if emitted >= self.batches_per_worker:
                    return


class ValWindowStream(_StreamBase):
    """Each clip of this rank's shards once, one fixed window per clip, in shard order."""

    def __init__(self, *args: Any, max_clips: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.max_clips = max_clips

    def __iter__(self) -> Iterator[dict[str, Any]]:
        counter = BadSampleCounter(*self.counter_args)
        urls = [{"url": u} for u in self.urls[self.rank :: self.world]]
        raw = wds.tarfile_to_samples(handler=counter.tar_error)(iter(urls))
        items: list[dict] = []
        n = 0
        for s in self._decoded(raw, counter):
            start = self.maker.fixed_start(s["motion"].shape[0])
            items.append(self.maker.window(s, start))
            # the raw wav of the T generated frames, for audio-aligned validation metrics
            items[-1]["wav"] = s["wav"][start * SAMPLES_PER_FRAME : (start + self.maker.t_window) * SAMPLES_PER_FRAME]
            n += 1
            if len(items) == self.batch_size:
                yield collate_windows(items)
                items = []
            if n >= self.max_clips:
                break
        if items:
            yield collate_windows(items)


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
