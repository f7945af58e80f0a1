"""Frame pairs of one clip for stage zero (docs/stage-zero.md): a WebDataset pipeline over the `mp4` members.

Training, per DataLoader worker of each rank (as the window stream of `datamodules/motion_wds.py`):
this rank's shards (urls[rank::world]), this worker's part of them, resampled forever with RNGs seeded by
(seed, epoch, rank, worker) → samples → a shuffle buffer of the still compressed samples → decode and
validate (a bad sample, including one without an `mp4` member or whose video does not decode to 256²
frames, is skipped and counted with its shard and reason in the worker's `SampleLedger`; the run-wide
budget of `datamodules/health.py` judges it) → `stage0.pairs_per_clip` random pairs (i ≠ j) of the
clip's frames → batches of the per-rank batch size → the batches of the epoch a resumed run has not
trained on yet (as the window stream).

Validation reads each clip of the rank's shards once, in order; its `stage0.val_pairs_per_clip` pairs
are drawn by an RNG seeded with crc32(key), so every validation (and every run) sees the same pairs.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any, NotRequired, TypedDict

import numpy as np
import torch
import webdataset as wds
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from datamodules.contract import ContractError, decode_sample, sample_problems
from datamodules.health import SampleLedger
from datamodules.motion_wds import MotionDataModule, arrivals, resampled_shards, shards_once, worker_skip
from datamodules.tar_reader import tar_samples
from datamodules.video import decode_frames
from models.liveportrait.face_model import INPUT_SIZE

FRAME_SHAPE = (INPUT_SIZE, INPUT_SIZE, 3)


class PairBatch(TypedDict):
    """B pairs of frames (i, j) of one clip each, as `collate_pairs` makes them."""

    src: Tensor  # (B, 256, 256, 3) uint8 RGB: frame i
    drv: Tensor  # (B, 256, 256, 3) uint8 RGB: frame j of the same clip
    frames: Tensor  # (B, 2) int64: i, j
    key: list[str]  # (B,) sample keys
    # training only: the DataLoader worker's ledger snapshot (as WindowBatch.data_stats)
    data_stats: NotRequired[dict[str, Any]]


def collate_pairs(items: list[dict[str, Any]]) -> PairBatch:
    batch = PairBatch(
        src=torch.from_numpy(np.stack([it["src"] for it in items])),
        drv=torch.from_numpy(np.stack([it["drv"] for it in items])),
        frames=torch.tensor([it["frames"] for it in items], dtype=torch.long),
        key=[it["key"] for it in items],
    )
    if "data_stats" in items[0]:
        batch["data_stats"] = items[-1]["data_stats"]
    return batch


def random_pairs(num_frames: int, k: int, rng: random.Random) -> list[tuple[int, int]]:
    """k ordered pairs (i, j) of distinct frames, uniformly at random."""
    return [tuple(rng.sample(range(num_frames), 2)) for _ in range(k)]  # type: ignore[misc]


def fixed_pairs(key: str, num_frames: int, k: int) -> list[tuple[int, int]]:
    """The validation pairs of a clip: k random pairs from an RNG seeded by crc32(key)."""
    return random_pairs(num_frames, k, random.Random(zlib.crc32(key.encode())))


def video_clips(samples: Iterable[dict], counter: SampleLedger) -> Iterator[dict]:
    """Raw samples → decoded clips that meet the contract and carry an mp4 of ≥ 2 frames; others counted."""
    for raw in samples:
        counter.sample_read()
        url, key = raw.get("__url__", "?"), raw.get("__key__", "?")
        try:
            s = decode_sample(raw, verify_all=True)  # the mp4's sha256 too
        except ContractError as e:
            counter.record_bad(url, key, str(e).split(": ", 1)[-1])
            continue
        problems = sample_problems(s)
        if "mp4" not in s:
            problems.append("no mp4 member: stage zero trains on video (prepare with write_mp4=true)")
        elif not problems and s["motion"].shape[0] < 2:
            problems.append("clip has fewer than 2 frames")
        if problems:
            counter.record_bad(url, key, "; ".join(problems))
            continue
        yield s


def clip_pairs(clips: Iterable[dict], choose: Callable[[dict], list[tuple[int, int]]], counter: SampleLedger,
               with_stats: bool = False) -> Iterator[dict[str, Any]]:
    """Each clip's chosen pairs as uint8 frames (one decode per clip); an undecodable video is a bad sample."""
    for s in clips:
        pairs = choose(s)
        wanted = sorted({f for p in pairs for f in p})
        try:
            frames = decode_frames(s["mp4"], wanted)  # (len(wanted), 256, 256, 3)
            if frames.shape != (len(wanted), *FRAME_SHAPE):
                raise ValueError(f"decoded {frames.shape} for frames {wanted[:4]}…, expected {FRAME_SHAPE} each")
        except Exception as e:  # a decoder failure is a problem of this sample
            counter.record_bad(s.get("__url__", "?"), s["__key__"], f"mp4 does not decode ({type(e).__name__}: {e})")
            continue
        counter.sample_ok()
        at = {f: n for n, f in enumerate(wanted)}
        snapshot = counter.snapshot()
        for i, j in pairs:
            item = {"src": frames[at[i]], "drv": frames[at[j]], "frames": (i, j), "key": s["__key__"]}
            if with_stats:
                item["data_stats"] = snapshot
            yield item


class TrainPairStream(IterableDataset):
    """Resampled stream of pair batches for one rank: exactly `batches_per_worker` per worker and epoch,
    minus the `skip` batches of the epoch a resumed run already trained on."""

    def __init__(self, urls: list[str], batch_size: int, rank: int, world: int, *, seed: int, shuffle_buffer: int,
                 pairs_per_clip: int, batches_per_worker: int, epoch: int = 0, skip: int = 0) -> None:
        super().__init__()
        self.urls, self.batch_size, self.rank, self.world = urls, batch_size, rank, world
        self.seed, self.shuffle_buffer = seed, shuffle_buffer
        self.pairs_per_clip, self.batches_per_worker = pairs_per_clip, batches_per_worker
        self.epoch, self.skip = epoch, skip

    def pipeline(self, worker: int, num_workers: int) -> list:
        mine = self.urls[self.rank :: self.world][worker::num_workers]
        ledger = SampleLedger(worker, self.epoch, mine)
        seed = f"{self.seed}/{self.epoch}/{self.rank}/{worker}"
        rng = random.Random(f"{seed}/pairs")  # draws the shuffle order and the pairs
        stages = [
            # this worker's shards: the rank's urls[rank::world], then [worker::num_workers] of those
            wds.SimpleShardList(mine),
            # an endless stream of those shards, drawn with replacement (shards that yield nothing: an error)
            partial(resampled_shards, rng=random.Random(f"{seed}/shards"), ledger=ledger),
            # raw samples {__key__, __url__, member: bytes}; an unreadable tar counts once, against its shard
            partial(tar_samples, handler=ledger.tar_error),
            partial(arrivals, ledger=ledger),
        ]
        if self.shuffle_buffer > 1:
            stages.append(wds.shuffle(self.shuffle_buffer, min(self.shuffle_buffer, 64), rng=rng))
        choose = partial(_choose_random, k=self.pairs_per_clip, rng=rng)
        return stages + [
            # decoded clips with a valid mp4 (others skipped and counted)
            partial(video_clips, counter=ledger),
            # pairs_per_clip random pairs (i ≠ j) per clip as uint8 frames, the ledger snapshot attached
            partial(clip_pairs, choose=choose, counter=ledger, with_stats=True),
            wds.batched(self.batch_size, collation_fn=collate_pairs, partial=False),
            # the batches of this epoch a stopped run has not trained on yet
            wds.slice(worker_skip(self.skip, worker, num_workers), self.batches_per_worker),
        ]

    def __iter__(self) -> Iterator[PairBatch]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        return iter(wds.DataPipeline(*self.pipeline(worker, num_workers)))


def _choose_random(s: dict, k: int, rng: random.Random) -> list[tuple[int, int]]:
    return random_pairs(s["motion"].shape[0], k, rng)


def _choose_fixed(s: dict, k: int) -> list[tuple[int, int]]:
    return fixed_pairs(s["__key__"], s["motion"].shape[0], k)


class ValPairStream(IterableDataset):
    """Each clip of this rank's shards once, in shard order, with its fixed pairs."""

    def __init__(self, urls: list[str], batch_size: int, rank: int, world: int, *, max_clips: int,
                 pairs_per_clip: int) -> None:
        super().__init__()
        self.urls, self.batch_size, self.rank, self.world = urls, batch_size, rank, world
        self.max_clips, self.pairs_per_clip = max_clips, pairs_per_clip

    def __iter__(self) -> Iterator[PairBatch]:
        urls = self.urls[self.rank :: self.world]
        if not urls:  # more ranks than validation shards
            return iter(())
        ledger = SampleLedger(0, 0, urls)
        return iter(wds.DataPipeline(
            wds.SimpleShardList(urls),
            partial(shards_once, ledger=ledger),
            partial(tar_samples, handler=ledger.tar_error),
            partial(video_clips, counter=ledger),
            wds.slice(self.max_clips),
            partial(clip_pairs, choose=partial(_choose_fixed, k=self.pairs_per_clip), counter=ledger),
            wds.batched(self.batch_size, collation_fn=collate_pairs, partial=True),
        ))


class FramePairDataModule(MotionDataModule):
    """Stage zero's data: the shard resolution and checks of `MotionDataModule`, batches of frame pairs.

    data.batch_size counts pairs (global), data.epoch_windows pairs per epoch; the pairs per clip come
    from the stage0 section (`configs.schema.Stage0Config`).
    """

    def __init__(self, data_cfg: Any, stage0_cfg: Any, seed: int = 0) -> None:
        super().__init__(data_cfg, t_window=2, tp=0, seed=seed)
        self.stage0 = stage0_cfg

    def train_dataset(self) -> TrainPairStream:
        c = self.cfg
        epoch, skip = self.epoch_and_skip()
        return TrainPairStream(
            self.train_urls, self.per_rank_batch, self.rank, self.world, seed=self.seed,
            shuffle_buffer=c.shuffle_buffer, pairs_per_clip=self.stage0.pairs_per_clip,
            batches_per_worker=self.batches_per_worker(), epoch=epoch, skip=skip,
        )

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_urls:
            return []
        c = self.cfg
        ds = ValPairStream(
            self.val_urls, c.val_batch_size, self.rank, self.world, max_clips=math.ceil(c.val_max_clips / self.world),
            pairs_per_clip=self.stage0.val_pairs_per_clip,
        )
        return DataLoader(ds, batch_size=None, num_workers=0)
