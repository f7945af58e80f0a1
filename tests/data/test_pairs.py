"""Stage zero's frame-pair pipeline (datamodules/pairs.py): pairs are decoded frames of one clip, validation
pairs are fixed by the clip key, and bad samples are skipped, counted and stop the run like the window stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.helpers import write_random_dataset

from datamodules.motion_wds import resolve_shards
from datamodules.pairs import TrainPairStream, ValPairStream, fixed_pairs
from datamodules.shards import iter_tar_samples
from datamodules.synthetic import synthesize_dataset
from datamodules.video import decode_frames


@pytest.fixture(scope="module")
def video_ds(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    d = tmp_path_factory.mktemp("pairs") / "ds"
    synthesize_dataset(d, clips=2, seed=0, min_seconds=1.0, max_seconds=1.2, maxcount=1)
    frames = {raw["__key__"]: decode_frames(raw["mp4"], backend="pyav")
              for url in resolve_shards([str(d)]) for raw in iter_tar_samples(Path(url))}
    return d, frames


def stream(urls: list[str], **kw) -> TrainPairStream:
    args = dict(seed=0, shuffle_buffer=0, pairs_per_clip=2, batches_per_worker=3)
    args.update(kw)
    return TrainPairStream(urls, 2, 0, 1, **args)


def test_training_pairs_are_two_distinct_frames_of_one_clip(video_ds) -> None:
    d, frames = video_ds
    batches = list(stream(resolve_shards([str(d)])))
    assert len(batches) == 3
    for b in batches:
        assert b["src"].shape == b["drv"].shape == (2, 256, 256, 3) and b["src"].dtype.is_floating_point is False
        for n, key in enumerate(b["key"]):
            i, j = b["frames"][n].tolist()
            assert i != j
            assert np.array_equal(b["src"][n].numpy(), frames[key][i])
            assert np.array_equal(b["drv"][n].numpy(), frames[key][j])
        assert b["data_stats"]["bad"] == 0  # the worker's ledger snapshot
    drawn = {tuple(f) for b in batches for f in b["frames"].tolist()}
    assert len(drawn) > 3  # random pairs, not one repeated pair


def test_validation_pairs_are_fixed_by_the_clip_key(video_ds) -> None:
    d, frames = video_ds
    urls = resolve_shards([str(d)])
    runs = [list(ValPairStream(urls, 3, 0, 1, max_clips=8, pairs_per_clip=2)) for _ in range(2)]
    assert [b["frames"].tolist() for b in runs[0]] == [b["frames"].tolist() for b in runs[1]]
    pairs = [(k, tuple(f)) for b in runs[0] for k, f in zip(b["key"], b["frames"].tolist())]
    assert [p for _, p in pairs] == [p for k in frames for p in fixed_pairs(k, len(frames[k]), 2)]
    assert [k for k, _ in pairs] == [k for k in frames for _ in range(2)]  # shard order, every clip once


def test_samples_without_video_are_counted_and_stop_the_run(video_ds, tmp_path: Path) -> None:
    from datamodules.health import BadDataError, DataHealth

    d, _ = video_ds
    write_random_dataset(tmp_path / "novideo", clips=4, per_shard=2)  # contract-valid clips, no mp4 member
    mixed = resolve_shards([str(d)]) + resolve_shards([str(tmp_path / "novideo")])
    batches = list(stream(mixed, batches_per_worker=4))
    assert len(batches) == 4 and max(b["data_stats"]["bad"] for b in batches) > 0
    reasons = batches[-1]["data_stats"]["reasons"]
    assert reasons and all("novideo" in url and "no mp4 member" in why for url, why in reasons.items())
    health = DataHealth(max_fraction=0.01, min_bad=1)  # the run-wide budget judges the snapshots
    with pytest.raises(BadDataError, match=r"samples read so far were bad.*novideo/rand-00000[01]\.tar"):
        for b in batches:
            health.update(b["data_stats"])
    # a worker whose every sample is bad never yields a batch: it stops itself
    with pytest.raises(BadDataError, match=r"data worker 0: the last 1000 samples it read were all bad.*no mp4"):
        list(stream(resolve_shards([str(tmp_path / "novideo")])))
