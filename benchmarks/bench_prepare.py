"""Data-preparation throughput: per-step CPU cost per clip, whole-pipeline clips/min per CPU worker, and
motion-extraction frames/s on the GPU (only when CUDA is available).

    python benchmarks/bench_prepare.py [--videos 6] [--seconds 6] [--size 640x360] [--threads 1]

Raw inputs are synthetic H.264/AAC files (30 fps, 44.1 kHz stereo) written with PyAV; the motion
extractor in the CPU pipeline is a stand-in (the face model runs on the GPU in production), so the
CPU figures are the cost of everything except motion extraction.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "prepare"))


def make_raw(root: Path, n: int, seconds: float, size: tuple[int, int]) -> None:
    from media import write_video  # tests/prepare/media.py

    for i in range(n):
        # folder adapter; non-square frames via a square writer then letterboxed is not needed: square side = height
        write_video(root / f"v{i:03d}.mp4", seconds=seconds, fps=30, rate=44100, size=size[1], seed=i)


def time_steps(root: Path, cfg, limit: int | None = None) -> dict[str, float]:
    """Seconds per clip of each CPU step (one item = one clip here)."""
    from datamodules.prepare import face, media, segment
    from models.liveportrait.crop import CropParams

    acc: dict[str, float] = {}

    def tick(name: str, t0: float) -> float:
        t = time.perf_counter()
        acc[name] = acc.get(name, 0.0) + t - t0
        return t

    videos = sorted(root.glob("*.mp4"))[:limit]
    for v in videos:
        t = time.perf_counter()
        pr = media.probe(v)
        t = tick("probe", t)
        x, rate, a0 = media.decode_audio(v)
        t = tick("decode audio", t)
        a16 = media.resample_audio(x, rate)
        t = tick("resample audio 44.1k→16k", t)
        tl = media.plan_timeline(pr, a0, a16)
        idx = media.select_frames(pr.frame_times, tl.t0, tl.num_frames)
        frames = media.FrameReader(v, pr, cfg.decode_max_side, "decord").read(idx)
        t = tick("decode video (decord) + 25 fps select", t)
        media.FrameReader(v, pr, cfg.decode_max_side, "pyav").read(idx)
        t = tick("  (decode video, PyAV fallback)", t)
        wav = a16[tl.audio_offset : tl.audio_offset + tl.num_frames * 640]
        segment.split_segments(segment.thumbnails(frames), wav, 75, 750, 30.0, -40.0, 8)
        t = tick("split (scene cuts, silences)", t)
        box = face.centre_box(frames.shape[2], frames.shape[1], 0.45)
        crops, _ = face.crop_frames(frames, box, CropParams(2.2, 0.0, -0.1))
        t = tick("crop 256²", t)
        from datamodules.video import encode_mp4

        encode_mp4(crops, fps=25)
        tick("encode mp4 crop", t)
    return {k: v / len(videos) for k, v in acc.items()}


def pipeline_rate(root: Path, out: Path, cfg, workers: int) -> tuple[float, int]:
    from conftest import StubExtractor

    from datamodules.prepare import run_prepare

    cfg.num_workers = workers
    t = time.perf_counter()
    s = run_prepare(cfg, extractor=StubExtractor())
    return time.perf_counter() - t, s["clips"]["kept"]


def gpu_rate(batch_sizes=(32, 64, 128), frames: int = 512) -> list[tuple[str, int, float]]:
    from models.liveportrait.testing import random_face_model

    model = random_face_model(0).cuda().eval()  # full public sizes, random weights (same cost as real ones)
    x = np.random.default_rng(0).integers(0, 256, (frames, 256, 256, 3), dtype=np.uint8)
    rows = []
    for dtype in (None, torch.float16):
        model.amp_dtype = dtype
        for bs in batch_sizes:
            model.extract_motion(x[: bs * 2], batch_size=bs)  # warm-up
            torch.cuda.synchronize()
            t = time.perf_counter()
            model.extract_motion(x, batch_size=bs)
            torch.cuda.synchronize()
            rows.append(("fp32" if dtype is None else "fp16 autocast", bs, frames / (time.perf_counter() - t)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--size", default="480", help="square raw frame side in pixels (default 480)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the main process (1 = one CPU worker)")
    ap.add_argument("--workers", type=int, nargs="*", default=[0], help="num_workers values to time (0 = inline)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    side = int(args.size)
    from datamodules.prepare.config import PrepareConfig

    tmp = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        make_raw(tmp / "raw", args.videos, args.seconds, (side, side))
        cfg = PrepareConfig(dataset="folder", input=str(tmp / "raw"), output=str(tmp / "out"))
        cfg.progress = False
        time_steps(tmp / "raw", cfg, limit=1)  # warm-up: imports (scipy.signal, decord, torch) are not per-clip cost
        per = time_steps(tmp / "raw", cfg)
        print(f"\nCPU steps per clip ({args.seconds:.0f} s clip, raw {side}x{side} 30 fps H.264 + 44.1 kHz AAC stereo, "
              f"torch threads {args.threads})")
        print("| step | ms/clip |\n|---|---:|")
        for k, v in per.items():
            print(f"| {k} | {1000 * v:.0f} |")
        print("\n| pipeline (stand-in motion) | workers | clips | s | clips/min | clips/min per worker |\n"
              "|---|---:|---:|---:|---:|---:|")
        for w in args.workers:
            shutil.rmtree(tmp / "out", ignore_errors=True)
            cfg.output = str(tmp / "out")
            secs, clips = pipeline_rate(tmp / "raw", tmp / "out", cfg, w)
            rate = 60 * clips / secs
            print(f"| decode→crop→mp4→shard | {w} | {clips} | {secs:.1f} | {rate:.1f} | {rate / max(w, 1):.1f} |")
        if torch.cuda.is_available():
            print(f"\nGPU motion extraction ({torch.cuda.get_device_name()}, full-size M, random weights)")
            print("| precision | batch | frames/s |\n|---|---:|---:|")
            for prec, bs, fps in gpu_rate():
                print(f"| {prec} | {bs} | {fps:.0f} |")
        else:
            print("\nGPU motion extraction: skipped (no CUDA device)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
