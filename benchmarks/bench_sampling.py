"""Benchmark: sampling speed of `playmate generate`, in seconds of motion generated per second of wall time.

    python benchmarks/bench_sampling.py [--preset S] [--seconds 8] [--steps 50] [--threads 1 2] [--quick]

The DiT (random weights: speed does not depend on training) with an emotion controller attached
samples `--seconds` of motion through `MotionGenerator` (the path of `playmate generate`: window by
window, T = 100 + Tp = 25 context frames) with DDIM and nested CFG (3 passes per step, batched into
one forward), as `playmate generate --emotion` does; a row with audio-only CFG (2 passes) is printed
for comparison. Audio features are random tensors of the wav2vec2-base shape (L 12, C 768), given
as precomputed features: the frozen audio encoder is not timed. CPU rows per intra-op thread count;
CUDA rows (fp32 and bf16 autocast) when a GPU is there.

`--ab-rounds N` instead times the aligner computed once per window (the default) against the old
path (the aligner inside every forward) in N interleaved rounds and prints the medians.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs.loader import load_experiment  # noqa: E402
from models.dit import MotionDiT, count_parameters  # noqa: E402
from models.emotion import build_emotion_controller  # noqa: E402
from models.motion import MotionStats  # noqa: E402
from pl_modules.inference.generator import MotionGenerator  # noqa: E402
from pl_modules.inference.inputs import Reference  # noqa: E402


def build(preset: str, layers: int, dim: int, device: str) -> MotionGenerator:
    """A stage-two generator with random weights for features of shape (L, C) = (layers, dim)."""
    cfg = load_experiment(Path(__file__).resolve().parents[1] / "configs" / "stage1.yaml",
                          [f"model={preset}", "data.train_shards=[x]", "data.val_shards=[]",
                           "data.audio_source=precomputed",
                           "audio.name=mel"])
    cfg.model.audio_layers, cfg.model.audio_dim = layers, dim
    torch.manual_seed(0)
    model = MotionDiT(cfg.model)
    model.attach_emotion_controller(build_emotion_controller(cfg.emotion, model.config))
    return MotionGenerator(model.eval(), MotionStats.identity(), cfg, encoder=None).to(device)


def run_once(gen: MotionGenerator, seconds: float, steps: int, nested: bool, device: str, dtype: torch.dtype | None,
             layers: int, dim: int) -> float:
    """Wall seconds to sample `seconds` of motion."""
    n = round(seconds * 25)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(n, layers, dim, generator=g)  # (N, L, C) precomputed features
    ref = Reference(torch.cat([torch.zeros(69), torch.ones(1)]), torch.randn(21, 3, generator=g))
    autocast = torch.autocast(device, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with autocast:
        out = gen.generate(torch.zeros(n * 640), ref, seed=0, emotion="happy" if nested else None, steps=steps,
                           audio_feats=feats)
    if device == "cuda":
        torch.cuda.synchronize()
    assert out.shape == (n, 70) and torch.isfinite(out.float()).all()
    return time.perf_counter() - t0


def ab_aligner_cache(args: argparse.Namespace, layers: int, dim: int) -> None:
    """Interleaved rounds: aligner once per window (new) vs inside every forward (old); medians."""
    torch.set_num_threads(args.threads[0])
    gen = build(args.preset, layers, dim, "cpu")
    old_path = mock.patch.object(MotionDiT, "with_aligned_audio", lambda self, cond, frames, drops=None: cond)
    run_once(gen, min(args.seconds, 4.0), 2, True, "cpu", None, layers, dim)  # warm-up
    walls: dict[str, list[float]] = {"once per window": [], "every forward": []}
    cpu: dict[str, list[float]] = {k: [] for k in walls}
    for r in range(args.ab_rounds):
        for name in (walls if r % 2 == 0 else reversed(list(walls))):
            with old_path if name == "every forward" else contextlib.nullcontext():
                c0 = time.process_time()
                walls[name].append(run_once(gen, args.seconds, args.steps, True, "cpu", None, layers, dim))
                cpu[name].append(time.process_time() - c0)
    print(f"\npreset {args.preset} + emotion controller, nested CFG, {args.seconds:g} s of audio, DDIM {args.steps}, "
          f"{args.threads[0]} thread(s), {args.ab_rounds} interleaved rounds, load average before "
          f"{LOAD_BEFORE:.1f}, after {os.getloadavg()[0]:.1f}")
    print(f"{'aligner':16} {'median wall s':>13} {'motion s / s':>12} {'median CPU s':>12}  all walls")
    for name, w in walls.items():
        med = statistics.median(w)
        print(f"{name:16} {med:13.2f} {args.seconds / med:12.2f} {statistics.median(cpu[name]):12.2f}  "
              f"{' '.join(f'{x:.2f}' for x in w)}")
    new, old = (statistics.median(w) for w in walls.values())
    new_c, old_c = (statistics.median(c) for c in cpu.values())
    print(f"wall time saved: {1 - new / old:.1%} (speed-up {old / new:.2f}x); "
          f"CPU time saved: {1 - new_c / old_c:.1%} (speed-up {old_c / new_c:.2f}x)")


LOAD_BEFORE = os.getloadavg()[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="S")
    p.add_argument("--seconds", type=float, default=8.0, help="audio length (8 s = 2 windows)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU intra-op thread counts")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="2 s, 5 steps (smoke run)")
    p.add_argument("--ab-rounds", type=int, default=0,
                   help="time aligner once per window vs every forward in N interleaved rounds (first thread count)")
    args = p.parse_args()
    if args.quick:
        args.seconds, args.steps = 2.0, 5
    layers, dim = 12, 768
    if args.ab_rounds:
        ab_aligner_cache(args, layers, dim)
        return
    rows = []
    targets = [("cpu", t, None) for t in args.threads]
    if torch.cuda.is_available():
        targets += [("cuda", None, None), ("cuda", None, torch.bfloat16)]
    for device, threads, dtype in targets:
        if threads is not None:
            torch.set_num_threads(threads)
        gen = build(args.preset, layers, dim, device)
        for nested in (True, False):
            run_once(gen, min(args.seconds, 4.0), 2, nested, device, dtype, layers, dim)  # warm-up
            wall = min(run_once(gen, args.seconds, args.steps, nested, device, dtype, layers, dim)
                       for _ in range(args.repeats))
            passes = 3 if nested else 2
            forwards = -(-round(args.seconds * 25) // gen.model.config.t_window) * args.steps
            rows.append((device, threads or "-", "bf16" if dtype else "fp32",
                         "nested (3)" if nested else "audio (2)", wall, args.seconds / wall, 1000 * wall / forwards,
                         passes))
    params = count_parameters(build(args.preset, layers, dim, "cpu").model)
    print(f"\npreset {args.preset} + emotion controller ({params / 1e6:.1f} M params), {args.seconds:g} s of audio "
          f"({round(args.seconds * 25)} frames), DDIM {args.steps} steps, torch {torch.__version__}")
    print(f"{'device':6} {'threads':>7} {'dtype':5} {'CFG (passes)':12} {'wall s':>8} {'motion s / s':>12} "
          f"{'ms / step':>9}")
    for device, threads, dtype, cfg, wall, speed, ms, _ in rows:
        print(f"{device:6} {threads!s:>7} {dtype:5} {cfg:12} {wall:8.2f} {speed:12.2f} {ms:9.1f}")


if __name__ == "__main__":
    main()
