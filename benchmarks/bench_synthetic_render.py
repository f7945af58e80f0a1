"""Speed of the synthetic-world renderer against real time (25 fps), on one CPU core.

    python benchmarks/bench_synthetic_render.py [--frames 250] [--repeats 5]

Stages, measured interleaved (one repeat of each stage per round, median over rounds):
    draw           datamodules.synthetic.render_frames (keypoint transform + PIL drawing), 256²
    captioned      pl_modules.inference.synthetic_render.synthetic_frames (the above + caption band)
    side by side   generated | ground truth frames (512×256)
    mp4 + audio    write_synthetic_video: side by side + H.264 + AAC to a file
Prints a Markdown table: frames/s and the ratio to real time (frames/s ÷ 25; > 1 = faster than real time).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from datamodules.synthetic import make_identity, render_frames, synthesize_clip
    from pl_modules.inference.synthetic_render import side_by_side, synthetic_frames, write_synthetic_video

    seconds = args.frames / 25
    clip = synthesize_clip(0, 0, min_seconds=seconds, max_seconds=seconds, video=False)
    look = make_identity(0, 0)
    gen = clip.motion.copy()
    gen[:, 63:66] += 2.0  # another motion for the left panel
    tmp = Path(tempfile.mkdtemp())
    stages = {
        "draw": lambda: render_frames(clip.kp, gen, look),
        "captioned": lambda: synthetic_frames(clip.kp, gen, look),
        "side by side": lambda: side_by_side(clip.kp, gen, clip.motion, look),
        "mp4 + audio": lambda: write_synthetic_video(tmp / "v.mp4", clip.kp, gen, clip.wav, clip.motion, look),
    }
    times: dict[str, list[float]] = {k: [] for k in stages}
    for fn in stages.values():
        fn()  # warm-up
    for _ in range(args.repeats):
        for name, fn in stages.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"1 thread, {len(clip.motion)} frames, median of {args.repeats}")
    print("| stage | frames/s | × real time (25 fps) |\n|---|---|---|")
    for name, ts in times.items():
        fps = len(clip.motion) / statistics.median(ts)
        print(f"| {name} | {fps:.0f} | {fps / 25:.1f}× |")


if __name__ == "__main__":
    main()
