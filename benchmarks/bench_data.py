"""Data pipeline throughput on synthetic shards: training windows/s per worker, video decode clips/s.

    python benchmarks/bench_data.py [--clips 64] [--seconds 20]

Prints one table; the figures go to benchmarks/RESULTS.md with the machine they were measured on.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path



def windows_per_s(ds: Path, workers: int, audio_source: str, seconds: float, windows_per_clip: int = 1) -> float:
    from configs.schema import DataConfig
    from datamodules.motion_wds import MotionDataModule

    cfg = DataConfig(train_shards=[str(ds)], batch_size=32, num_workers=workers, shuffle_buffer=64,
                     epoch_windows=10**9, audio_source=audio_source, windows_per_clip=windows_per_clip)
    dm = MotionDataModule(cfg, t_window=100, tp=25)
    dm.setup()
    it = iter(dm.train_dataloader())
    next(it)  # workers started, first shards opened
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += next(it)["motion"].shape[0]
    return n / (time.perf_counter() - t0)


def decode_clips_per_s(ds: Path, seconds: float, backend: str) -> float:
    from datamodules.shards import iter_tar_samples
    from datamodules.video import decode_frames

    videos = [s["mp4"] for tar in sorted(ds.glob("*.tar")) for s in iter_tar_samples(tar) if "mp4" in s]
    rng = random.Random(0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        data = rng.choice(videos)
        n_frames = 150  # synthetic clips are ≥ 6 s
        start = rng.randint(0, n_frames - 16)
        frames = decode_frames(data, list(range(start, start + 16)), backend=backend)
        assert frames.shape[0] == 16
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=15.0)
    args = ap.parse_args()
    from datamodules.features import precompute_audio_features
    from datamodules.synthetic import synthesize_dataset
    from models.audio import AudioEncoderConfig

    with tempfile.TemporaryDirectory() as tmp:
        ds = Path(tmp) / "synth"
        synthesize_dataset(ds, clips=args.clips, seed=0, maxcount=4)
        mel = Path(tmp) / "synth_mel"
        precompute_audio_features(ds, mel, AudioEncoderConfig(name="mel"))
        rows = []
        for workers in (1, 2):
            wps = windows_per_s(ds, workers, "wav", args.seconds)
            rows.append((f"train windows, wav audio, {workers} worker(s)", wps, wps / workers))
            wps = windows_per_s(mel, workers, "precomputed", args.seconds)
            rows.append((f"train windows, precomputed mel, {workers} worker(s)", wps, wps / workers))
        for backend in ("decord", "pyav"):
            cps = decode_clips_per_s(ds, args.seconds, backend)
            rows.append((f"16-frame video window decode ({backend}), 1 process", cps, cps))
    print(f"{'pipeline (T=100, Tp=25, batch 32)':58s} {'total /s':>10s} {'per worker /s':>14s}")
    for name, total, per in rows:
        print(f"{name:58s} {total:10.1f} {per:14.1f}")
    base = rows[0][2]
    print(f"\nratio precomputed-mel / wav windows per worker (1 worker): {rows[1][2] / base:.2f}")


if __name__ == "__main__":
    main()
