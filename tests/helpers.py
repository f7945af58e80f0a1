"""Test helpers shared across test folders (import as `tests.helpers`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_random_dataset(out: Path, clips: int = 8, per_shard: int = 2, frames: int = 160, seed: int = 0,
                         emotions: bool = False, prefix: str = "rand") -> dict:
    """A small dataset of random (but contract-valid) clips: fast, no video."""
    from datamodules.contract import EMOTIONS, ClipSample, clip_meta, make_key
    from datamodules.shards import DatasetWriter

    rng = np.random.default_rng(seed)
    with DatasetWriter(out, prefix, maxcount=per_shard, provenance={"made_by": "tests"}) as w:
        for i in range(clips):
            m = (rng.normal(size=(frames, 70)) * 0.1).astype(np.float32)
            m[:, 69] = 1.0
            cid = f"s{seed}c{i:04d}"
            meta = clip_meta(clip_id=cid, dataset=prefix, speaker_id=f"spk{i % 3}", motion=m, source="random",
                             emotion=EMOTIONS[i % 8] if emotions else None, intensity=1 if emotions else None)
            w.write(ClipSample(make_key(prefix, cid), m, rng.normal(size=(21, 3)).astype(np.float32),
                               rng.integers(-3000, 3000, frames * 640).astype(np.int16), meta))
    return {"dir": out}
