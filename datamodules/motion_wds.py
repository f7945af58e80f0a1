"""WebDataset pipeline of training windows over contract shards, as a LightningDataModule.

Training: each DataLoader worker of each rank runs the stage list of `TrainWindowStream.pipeline`:
this rank's shards (urls[rank::world]), this worker's part of them, resampled forever with an RNG
seeded by (seed, epoch, rank, worker) → tar members grouped into samples (`datamodules/tar_reader.py`:
only the members a window needs; the video is skipped unread) → a shuffle buffer of the still
compressed samples → decode + validate (a bad sample is skipped, counted, logged with shard and key)
→ `windows_per_clip` random windows of Tp + T frames per clip, with the aligned audio and adaptive
normalisation (exp: global stats; pose: the clip's mean, dataset pose std; several windows per clip
are mixed in a buffer of 32 windows) → batches of the per-rank batch size (partial=False) → exactly
`batches_per_worker` batches, identical on every rank, so no rank waits for another.

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
import zlib
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
import webdataset as wds
from braceexpand import braceexpand
from torch.utils.data import DataLoader, IterableDataset

from configs.loader import ConfigError, ConfigPathError
from datamodules.contract import (
    DECODED_MEMBERS,
    SAMPLES_PER_FRAME,
    ContractError,
    decode_sample,
    sample_problems,
)
from datamodules.health import DataHealth, SampleLedger
from datamodules.shards import MANIFEST, STATS, StatsAccumulator
from datamodules.tar_reader import tar_samples
from datamodules.windows import WindowBatch, WindowMaker, collate_cuts, collate_windows
from datamodules.worker_signals import protect_worker_from_job_signals
from models.motion import MotionStats

log = logging.getLogger(__name__)

# The members a training or validation window is made of (and whose sha256 is checked); others,
# such as the video, are skipped unread.
WINDOW_MEMBERS = (*DECODED_MEMBERS, "sha256")


# ------------------------------------------------------------------------------------------------
# Shard lists and statistics
# ------------------------------------------------------------------------------------------------


def resolve_shards(specs: list[str], config_key: str = "data.train_shards") -> list[str]:
    """Dataset dirs (manifest.json), globs and brace patterns → sorted list of shard paths."""
    urls: list[str] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            urls += [str(p / name) for name in manifest_shards(p, config_key)]
        elif any(c in spec for c in "*?["):
            urls += sorted(glob.glob(spec))
        else:
            urls += [u for u in braceexpand(spec) if Path(u).is_file() or "://" in u]
    if not urls:
        raise ConfigPathError(f"{config_key}: {specs} matched no shards (give dataset dirs, globs or brace URLs)")
    return urls


def manifest_shards(directory: Path, config_key: str) -> list[str]:
    """Shard names of a dataset directory's manifest.json; one ConfigPathError line for a missing,
    unreadable, malformed or empty manifest."""
    f = directory / MANIFEST
    if not f.is_file():
        raise ConfigPathError(f"{config_key}: {directory} has no {MANIFEST}; write it with the shard writer")
    try:
        names = [s["name"] for s in json.loads(f.read_text())["shards"]]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ConfigPathError(f"{config_key}: {f} is not a valid manifest ({type(e).__name__}: {e}); "
                              "re-create it with `playmate prepare --merge` or the shard writer") from None
    if not names:
        raise ConfigPathError(f"{config_key}: {f} lists no shards; the dataset is empty")
    return names


def longest_clip(specs: list[str]) -> int:
    """Frames of the longest clip in the dataset dirs of `specs` (0 when their stats.json do not say)."""
    longest = 0
    for spec in specs:
        f = Path(spec) / STATS
        try:
            longest = max(longest, int(json.loads(f.read_text()).get("max_clip_frames", 0)) if f.is_file() else 0)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError):
            continue  # load_motion_stats reports an unreadable file
    return longest


def load_motion_stats(specs: list[str], stats_path: str | None = None) -> MotionStats:
    """stats.json of `stats_path`, else merged (exactly) over the dataset dirs in `specs`; one
    ConfigPathError line naming the file when it is missing, unreadable or implausible (NaN, std ≤ 0)."""
    files = [Path(stats_path)] if stats_path else [Path(s) / STATS for s in specs if (Path(s) / STATS).is_file()]
    if not files:
        raise ConfigPathError(
            f"data.stats: no stats.json in {specs}; point data.stats at a stats.json or give dataset directories"
        )
    try:
        if stats_path:
            return MotionStats.from_dict(json.loads(files[0].read_text()))
        acc = StatsAccumulator()
        for f in files:
            acc.merge(StatsAccumulator.from_json(json.loads(f.read_text())))
        return MotionStats.from_dict(acc.to_json())
    except FileNotFoundError:
        raise ConfigPathError(f"data.stats: {files[0]} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        where = files[0] if len(files) == 1 else ", ".join(map(str, files))
        raise ConfigPathError(f"data.stats: {where}: unusable normalisation statistics ({e}); re-create them "
                              "with `playmate prepare --merge` or point data.stats at a valid stats.json") from None


# ------------------------------------------------------------------------------------------------
# Pipeline stages (generator functions over the stream of the stage before)
# ------------------------------------------------------------------------------------------------


def resampled_shards(shards: Iterable[dict[str, str]], rng: random.Random, ledger: SampleLedger
                     ) -> Iterator[dict[str, str]]:
    """The given shards drawn with replacement by `rng`, forever (the ledger notes the shard being read)."""
    urls = [s["url"] for s in shards]
    while True:
        url = rng.choice(urls)
        ledger.shard_drawn(url)
        yield {"url": url}


def shards_once(shards: Iterable[dict[str, str]], ledger: SampleLedger) -> Iterator[dict[str, str]]:
    """Each shard once, in order (validation), the ledger noting the shard being read."""
    for s in shards:
        ledger.current_url = s["url"]
        yield s


def arrivals(samples: Iterable[dict], ledger: SampleLedger) -> Iterator[dict]:
    """Raw samples as they leave the tar reader (the ledger learns the shards are not empty)."""
    for raw in samples:
        ledger.sample_arrived()
        yield raw


def decoded_clips(samples: Iterable[dict], ledger: SampleLedger, maker: WindowMaker,
                  decode: Callable[[dict], dict] | None = None) -> Iterator[dict]:
    """Raw samples → decoded clips that meet the contract and give a window; others skipped and counted.
    `decode`: the raw sample's decoder, `decode_sample` unless given."""
    decode = decode or decode_sample
    for raw in samples:
        ledger.sample_read()
        url, key = raw.get("__url__", "?"), raw.get("__key__", "?")
        try:
            s = decode(raw)
        except ContractError as e:
            ledger.record_bad(url, key, str(e).split(": ", 1)[-1])
            continue
        problems = sample_problems(s)
        if not problems and s["motion"].shape[0] < maker.t_window:
            problems = [f"clip has {s['motion'].shape[0]} frames < data window {maker.t_window}"]
        if not problems and maker.audio_source == "precomputed" and "audio_feats" not in s:
            problems = ["no audio.npy but data.audio_source=precomputed"]
        if problems:
            ledger.record_bad(url, key, "; ".join(problems))
            continue
        ledger.sample_ok()
        yield s


def random_windows(clips: Iterable[dict], maker: WindowMaker, per_clip: int, rng: random.Random,
                   ledger: SampleLedger) -> Iterator[dict[str, Any]]:
    """`per_clip` random starts of each clip as cuts {clip, start, data_stats}: the windows themselves are
    cut by `collate_cuts` into the batch; each carries its worker's ledger as the clip was decoded."""
    for s in clips:
        snapshot = ledger.snapshot()
        for start in maker.random_starts(s["motion"].shape[0], per_clip, rng):
            yield {"clip": s, "start": start, "data_stats": snapshot}


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


def worker_skip(skip: int, worker: int, num_workers: int) -> int:
    """Batches worker `worker` already produced when `skip` batches of the epoch were consumed: the
    DataLoader takes batches from its workers in turn (batch i from worker i mod num_workers)."""
    return max(0, -(-(skip - worker) // num_workers))


class _StreamBase(IterableDataset):
    def __init__(self, urls: list[str], maker: WindowMaker, batch_size: int, rank: int, world: int) -> None:
        super().__init__()
        self.urls, self.maker, self.batch_size = urls, maker, batch_size
        self.rank, self.world = rank, world


class TrainWindowStream(_StreamBase):
    """Resampled stream of batches for one rank: exactly `batches_per_worker` per worker and epoch.

    `skip` batches of the epoch were already consumed (a resumed run): each worker regenerates and
    drops its share of them, so the stream continues exactly where the stopped run was.
    """

    def __init__(self, *args: Any, seed: int, shuffle_buffer: int, windows_per_clip: int,
                 batches_per_worker: int, epoch: int = 0, skip: int = 0, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.seed, self.shuffle_buffer = seed, shuffle_buffer
        self.windows_per_clip, self.batches_per_worker = windows_per_clip, batches_per_worker
        self.epoch, self.skip = epoch, skip

    def pipeline(self, worker: int, num_workers: int) -> list:
        """The stages of one DataLoader worker (its RNGs are seeded by seed, epoch, rank and worker)."""
        mine = self.urls[self.rank :: self.world][worker::num_workers]
        ledger = SampleLedger(worker, self.epoch, mine)
        seed = f"{self.seed}/{self.epoch}/{self.rank}/{worker}"
        rng = random.Random(f"{seed}/windows")  # draws both the shuffle order and the window starts
        pipeline = [
            # at this point we have this worker's shards {"url"}: the rank's urls[rank::world], then
            # [worker::num_workers] of those (no two ranks or workers share a shard)
            wds.SimpleShardList(mine),
            # at this point we have an endless stream of those shards, drawn with replacement; a
            # worker whose shards give no sample at all stops with an error instead of spinning
            partial(resampled_shards, rng=random.Random(f"{seed}/shards"), ledger=ledger),
            # at this point we have raw samples {__key__, __url__, member: bytes} of the members a
            # window needs (the video is skipped unread); an unreadable tar is counted once, against
            # the shard being read, and skipped
            partial(tar_samples, handler=ledger.tar_error, members=WINDOW_MEMBERS),
            partial(arrivals, ledger=ledger),
        ]
        if self.shuffle_buffer > 1:
            # at this point we have the raw (still compressed, so cheap to buffer) samples shuffled
            pipeline.append(wds.shuffle(self.shuffle_buffer, min(self.shuffle_buffer, 64), rng=rng))
        pipeline += [
            # at this point we have decoded clips that meet the contract (others skipped and counted)
            partial(decoded_clips, ledger=ledger, maker=self.maker),
            # at this point we have `windows_per_clip` cuts (clip, random start) of Tp + T frames per clip
            partial(random_windows, maker=self.maker, per_clip=self.windows_per_clip, rng=rng, ledger=ledger),
        ]
        if self.windows_per_clip > 1:
            # at this point we have the cuts mixed in a buffer of 32 (at least two clips' worth), so
            # that the windows of one clip do not sit side by side in a batch (a batch carries its
            # newest ledger snapshot)
            k = max(32, 2 * self.windows_per_clip)
            pipeline.append(wds.shuffle(k, k, rng=rng))
        pipeline += [
            # at this point we have WindowBatch-es of the per-rank batch size (each window normalised
            # straight into its batch row), data_stats attached
            wds.batched(self.batch_size, collation_fn=partial(collate_cuts, maker=self.maker), partial=False),
            # at this point we have this worker's batches of the epoch not yet consumed: exactly
            # batches_per_worker per epoch, minus those a stopped run already trained on
            wds.slice(worker_skip(self.skip, worker, num_workers), self.batches_per_worker),
        ]
        return pipeline

    def __iter__(self) -> Iterator[WindowBatch]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        return iter(wds.DataPipeline(*self.pipeline(worker, num_workers)))


class ValWindowStream(_StreamBase):
    """Each clip of this rank's shards once, in shard order: its window starting at frame 0."""

    def __init__(self, *args: Any, max_clips: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.max_clips = max_clips

    def __iter__(self) -> Iterator[WindowBatch]:
        urls = self.urls[self.rank :: self.world]
        if not urls:  # more ranks than validation shards
            return iter(())
        ledger = SampleLedger(0, 0, urls)
        pipeline = [
            # at this point we have this rank's shards {"url"}, in order, each read once
            wds.SimpleShardList(urls),
            partial(shards_once, ledger=ledger),
            # at this point we have raw samples {__key__, __url__, member: bytes} (the video skipped)
            partial(tar_samples, handler=ledger.tar_error, members=WINDOW_MEMBERS),
            # at this point we have decoded clips that meet the contract (others skipped and counted)
            partial(decoded_clips, ledger=ledger, maker=self.maker),
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
    """Training and validation windows from contract shards (config: `configs.schema.DataConfig`).

    Checkpoints carry the data position (`state_dict`: epoch, batches consumed, the bad-data
    ledger), so a resumed run reads exactly the windows an uninterrupted one would.
    """

    def __init__(self, data_cfg: Any, t_window: int, tp: int, seed: int = 0) -> None:
        super().__init__()
        self.cfg, self.t_window, self.tp, self.seed = data_cfg, t_window, tp, seed
        self.rank, self.world = 0, 1
        self.stats: MotionStats | None = None
        self.health = DataHealth(data_cfg.max_bad_fraction, data_cfg.min_bad_samples)
        self._resume: dict[str, int] | None = None  # {"epoch", "batches"} of a loaded checkpoint

    def setup(self, stage: str | None = None) -> None:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            self.rank, self.world = trainer.global_rank, trainer.world_size
            self.health.rank = self.rank
        self.train_urls = resolve_shards(list(self.cfg.train_shards))
        self.val_urls = resolve_shards(list(self.cfg.val_shards), "data.val_shards") if self.cfg.val_shards else []
        self.stats = load_motion_stats(list(self.cfg.train_shards), self.cfg.stats)
        longest = longest_clip(list(self.cfg.train_shards))
        if 0 < longest < self.t_window:
            raise ConfigError(
                f"model.t_window: windows of {self.t_window} frames do not fit any clip of data.train_shards (the "
                f"longest has {longest} frames); lower model.t_window or prepare longer clips"
            )
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

    def _epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        return trainer.current_epoch if trainer is not None else 0

    def epoch_and_skip(self) -> tuple[int, int]:
        """The epoch a new training stream serves and the batches of it a resumed run already trained on."""
        epoch, skip = self._epoch(), 0
        if self._resume is not None and self._resume["epoch"] == epoch:
            skip = self._resume["batches"]
        self._resume = None
        return epoch, skip

    def train_dataset(self) -> TrainWindowStream:
        epoch, skip = self.epoch_and_skip()
        maker = WindowMaker(self.stats, self.t_window, self.tp, self.cfg.audio_source)
        return TrainWindowStream(
            self.train_urls, maker, self.per_rank_batch, self.rank, self.world, seed=self.seed,
            shuffle_buffer=self.cfg.shuffle_buffer, windows_per_clip=self.cfg.windows_per_clip,
            batches_per_worker=self.batches_per_worker(), epoch=epoch, skip=skip,
        )

    def train_dataloader(self) -> DataLoader:
        workers = self.cfg.num_workers
        # Its own generator: the workers' base seed never draws from (and so never shifts) the
        # global RNG, which a resumed run restores exactly.
        seed = zlib.crc32(f"{self.seed}/{self._epoch()}/{self.rank}/loader".encode())
        return DataLoader(
            self.train_dataset(), batch_size=None, num_workers=workers, persistent_workers=False,
            pin_memory=torch.cuda.is_available(), generator=torch.Generator().manual_seed(seed),
            worker_init_fn=protect_worker_from_job_signals if workers else None,
            timeout=self.cfg.loader_timeout_s if workers else 0,
        )

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_urls:
            return []
        maker = WindowMaker(self.stats, self.t_window, self.tp, self.cfg.audio_source)
        per_rank_clips = math.ceil(self.cfg.val_max_clips / self.world)
        ds = ValWindowStream(self.val_urls, maker, self.cfg.val_batch_size, self.rank, self.world,
                             max_clips=per_rank_clips)
        return DataLoader(ds, batch_size=None, num_workers=0, generator=torch.Generator().manual_seed(self.seed))

    # ---------------------------------------------------------------------------------- run state

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Main process: the batch's ledger snapshot joins the run's bad-data account (and leaves the batch)."""
        stats = batch.pop("data_stats", None) if isinstance(batch, dict) else None
        if stats is not None:
            self.health.update(stats)
        return batch

    def state_dict(self) -> dict[str, Any]:
        trainer = getattr(self, "trainer", None)
        position = {"epoch": 0, "batches": 0}
        if trainer is not None:
            progress = trainer.fit_loop.epoch_loop.batch_progress.current
            position = {"epoch": trainer.current_epoch, "batches": int(progress.processed)}
        return {**position, "health": self.health.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}
        self.health.load_state_dict(state.get("health", {}))
