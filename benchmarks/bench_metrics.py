"""Benchmark: Fréchet distance (symmetric eigh vs scipy.linalg.sqrtm) and metric throughput.

    python benchmarks/bench_metrics.py [--d 2048] [--quick]

Prints one table measured side by side in a single run; GPU rows only when CUDA is available.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metrics.csim import IResNet  # noqa: E402
from metrics.frechet import frechet_distance  # noqa: E402
from metrics.fvd import InceptionI3d  # noqa: E402
from metrics.motion import MotionMetrics  # noqa: E402
from models.syncnet import SyncNet, sync_scores  # noqa: E402


def _timed(fn, repeats: int = 1) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def bench_frechet(d: int) -> list[tuple[str, str]]:
    from scipy import linalg

    g = np.random.default_rng(0)
    x1, x2 = g.standard_normal((2 * d, d)), g.standard_normal((2 * d, d)) @ np.diag(g.uniform(0.5, 1.5, d))
    mu1, mu2 = x1.mean(0), x2.mean(0)
    s1, s2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)

    def ref() -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cs = linalg.sqrtm(s1 @ s2)
        cs = cs[0] if isinstance(cs, tuple) else cs
        return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(cs.real))

    t0 = time.perf_counter()
    v_ours = frechet_distance(mu1, s1, mu2, s2)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    v_ref = ref()
    t_ref = time.perf_counter() - t0
    return [
        (f"frechet d={d} eigh (ours)", f"{t_ours:.2f} s  FD={v_ours:.6f}"),
        (f"frechet d={d} scipy sqrtm", f"{t_ref:.2f} s  FD={v_ref:.6f}"),
        ("speed-up (sqrtm / eigh)", f"{t_ref / t_ours:.1f}x  rel.diff={abs(v_ours - v_ref) / abs(v_ref):.1e}"),
    ]


def bench_networks(device: str, quick: bool) -> list[tuple[str, str]]:
    rows = []
    torch.manual_seed(0)
    dev = torch.device(device)
    sync = SyncNet().eval().to(dev)
    n_frames = 30 if quick else 60
    frames = torch.randint(0, 256, (n_frames, 224, 224, 3), dtype=torch.uint8)
    audio = (np.random.default_rng(0).standard_normal(n_frames * 640) * 3000).astype(np.int16)
    t = _timed(lambda: sync_scores(sync, frames, audio))
    rows.append((f"Sync ({device}, {n_frames}-frame clip)", f"{n_frames / t:.1f} frames/s"))
    i3d = InceptionI3d().eval().to(dev)
    clips = torch.rand(2, 3, 16, 224, 224, device=dev) * 2 - 1
    with torch.inference_mode():
        t = _timed(lambda: i3d(clips))
    rows.append((f"FVD I3D ({device}, 2x16x224²)", f"{32 / t:.1f} frames/s"))
    arc = IResNet("r100").eval().to(dev)
    faces = torch.rand(8, 3, 112, 112, device=dev) * 2 - 1
    with torch.inference_mode():
        t = _timed(lambda: arc(faces))
    rows.append((f"CSIM IResNet-100 ({device}, 8 faces)", f"{8 / t:.1f} frames/s"))
    motion = torch.randn(16, 100, 70)
    motion[..., 69] = 1
    kp, wav = torch.randn(16, 21, 3), torch.randn(16, 100 * 640)
    t = _timed(lambda: MotionMetrics().update(motion, kp, wav, motion))
    rows.append(("Motion metrics (cpu, 16x100 frames)", f"{1600 / t:.0f} frames/s"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--quick", action="store_true", help="smaller clips")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    rows = bench_frechet(args.d) + bench_networks("cpu", args.quick)
    if torch.cuda.is_available():
        rows += bench_networks("cuda", args.quick)
    w = max(len(r[0]) for r in rows)
    print(f"| {'benchmark'.ljust(w)} | result |\n|{'-' * (w + 2)}|--------|")
    for name, val in rows:
        print(f"| {name.ljust(w)} | {val} |")


if __name__ == "__main__":
    main()
