"""Fixtures for the evaluation tests: a tiny exported motion model, a dataset with video, tiny face weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.helpers import tiny_config, write_checkpoint, write_random_dataset


# A small model: 16-frame windows with 4 context frames, 2 DDIM steps (tests.helpers.tiny_config).
SMALL = {"model.t_window": "16", "model.tp": "4", "diffusion.sampling_steps": "2"}


def small_config(ds: Path, **extra: str):
    return tiny_config(ds, **{**SMALL, **extra})


def small_export(out: Path, ds: Path, seed: int, global_step: int) -> Path:
    """An export (model.pt, config.yaml, stats.json) of a random small MotionDiT, via the production exporter."""
    from datamodules.motion_wds import load_motion_stats

    return write_checkpoint(out, small_config(ds), load_motion_stats([str(ds)]), seed=seed, global_step=global_step)


def face_frames(n: int, seed: int, size: int = 256) -> np.ndarray:
    """Simple moving 'faces': a disc with a mouth bar whose height changes per frame."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    base = rng.integers(40, 200, 3)
    frames = np.zeros((n, size, size, 3), np.uint8)
    for t in range(n):
        img = np.full((size, size, 3), 30, np.uint8)
        img[(yy - 128) ** 2 + (xx - 128) ** 2 < 90**2] = base
        h = 4 + (t * 7) % 20
        img[170 : 170 + h, 100:156] = (120, 20, 20)
        frames[t] = img
    return frames


def write_video_dataset(out: Path, clips: int = 2, frames: int = 10, seed: int = 0) -> Path:
    """Contract shards whose clips carry a 256×256 mp4 of `frames` frames (for rendering tests)."""
    from datamodules.contract import ClipSample, clip_meta, make_key
    from datamodules.shards import DatasetWriter
    from datamodules.video import encode_mp4

    rng = np.random.default_rng(seed)
    with DatasetWriter(out, "vid", maxcount=1) as w:
        for i in range(clips):
            m = (rng.normal(size=(frames, 70)) * 0.05).astype(np.float32)
            m[:, 69] = 1.0
            cid = f"v{i:03d}"
            meta = clip_meta(clip_id=cid, dataset="vid", speaker_id=f"s{i}", motion=m, source="test")
            w.write(ClipSample(make_key("vid", cid), m, (rng.normal(size=(21, 3)) * 0.3).astype(np.float32),
                               rng.integers(-8000, 8000, frames * 640).astype(np.int16), meta,
                               mp4=encode_mp4(face_frames(frames, seed + i))))
    return out


@pytest.fixture(scope="session")
def eval_assets(tmp_path_factory):
    """Random dataset (no video), video dataset, two exports (steps 10 and 20), tiny face weights."""
    from models.liveportrait.testing import write_random_weights

    tmp = tmp_path_factory.mktemp("evalassets")
    write_random_dataset(tmp / "ds", clips=4, per_shard=2, frames=40)
    write_video_dataset(tmp / "vds")
    write_random_weights(tmp / "face", seed=0, cfg="tiny")
    return {
        "ds": tmp / "ds", "vds": tmp / "vds", "face": tmp / "face",
        "exp1": small_export(tmp / "exp1", tmp / "ds", seed=1, global_step=10),
        "exp2": small_export(tmp / "exp2", tmp / "ds", seed=2, global_step=20),
    }
