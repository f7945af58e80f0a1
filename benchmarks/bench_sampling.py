"""Benchmark: sampling speed of `playmate generate`, in seconds of motion generated per second of wall time.

    python benchmarks/bench_sampling.py [--preset S] [--seconds 8] [--steps 50] [--threads 1 2] [--quick]

The DiT (random weights: speed does not depend on training) with an emotion controller attached
samples `--seconds` of motion window by window (`generate_windowed`, T = 100 + Tp = 25 context
frames) with DDIM and nested CFG (3 passes per step, batched into one forward), as `playmate
generate --emotion` does; a row with audio-only CFG (2 passes) is printed for comparison. Audio
features are random tensors of the wav2vec2-base shape (L 12, C 768): the frozen audio encoder is
not timed. CPU rows per intra-op thread count; CUDA rows (fp32 and bf16 autocast) when a GPU is there.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.diffusion import DiffusionConfig, NoiseSchedule, generate_windowed  # noqa: E402
from models.dit import MotionDiT, MotionDiTConfig, count_parameters  # noqa: E402
from models.emotion import EmotionControllerConfig, build_emotion_controller  # noqa: E402


def build(preset: str, layers: int, dim: int, device: str) -> MotionDiT:
    torch.manual_seed(0)
    model = MotionDiT(MotionDiTConfig(preset=preset, audio_layers=layers, audio_dim=dim))
    model.attach_emotion_controller(build_emotion_controller(EmotionControllerConfig(), model.config))
    return model.eval().to(device)


def run_once(model: MotionDiT, seconds: float, steps: int, nested: bool, device: str, dtype: torch.dtype | None,
             layers: int, dim: int) -> float:
    """Wall seconds to sample `seconds` of motion."""
    n = round(seconds * 25)
    g = torch.Generator(device).manual_seed(0)
    audio = torch.randn(1, n, layers, dim, device=device, generator=g)  # (1, N, L, C)
    id_feat = torch.randn(1, 133, device=device, generator=g)
    emotion = torch.tensor([5], device=device) if nested else None
    schedule = NoiseSchedule.from_config(DiffusionConfig())
    autocast = torch.autocast(device, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    c = model.config
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with autocast:
        out = generate_windowed(model, schedule, audio, id_feat, c.t_window, c.tp, n, emotion=emotion,
                                steps=steps, w_a=1.5, w_e=1.5 if nested else None, generator=g)
    if device == "cuda":
        torch.cuda.synchronize()
    assert out.shape == (1, n, 70) and torch.isfinite(out.float()).all()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="S")
    p.add_argument("--seconds", type=float, default=8.0, help="audio length (8 s = 2 windows)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU intra-op thread counts")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="2 s, 5 steps (smoke run)")
    args = p.parse_args()
    if args.quick:
        args.seconds, args.steps = 2.0, 5
    layers, dim = 12, 768
    rows = []
    targets = [("cpu", t, None) for t in args.threads]
    if torch.cuda.is_available():
        targets += [("cuda", None, None), ("cuda", None, torch.bfloat16)]
    for device, threads, dtype in targets:
        if threads is not None:
            torch.set_num_threads(threads)
        model = build(args.preset, layers, dim, device)
        for nested in (True, False):
            run_once(model, min(args.seconds, 4.0), 2, nested, device, dtype, layers, dim)  # warm-up
            wall = min(run_once(model, args.seconds, args.steps, nested, device, dtype, layers, dim)
                       for _ in range(args.repeats))
            passes = 3 if nested else 2
            forwards = -(-round(args.seconds * 25) // model.config.t_window) * args.steps
            rows.append((device, threads or "-", "bf16" if dtype else "fp32",
                         "nested (3)" if nested else "audio (2)", wall, args.seconds / wall, 1000 * wall / forwards,
                         passes))
    params = count_parameters(build(args.preset, layers, dim, "cpu"))
    print(f"\npreset {args.preset} + emotion controller ({params / 1e6:.1f} M params), {args.seconds:g} s of audio "
          f"({round(args.seconds * 25)} frames), DDIM {args.steps} steps, torch {torch.__version__}")
    print(f"{'device':6} {'threads':>7} {'dtype':5} {'CFG (passes)':12} {'wall s':>8} {'motion s / s':>12} "
          f"{'ms / step':>9}")
    for device, threads, dtype, cfg, wall, speed, ms, _ in rows:
        print(f"{device:6} {threads!s:>7} {dtype:5} {cfg:12} {wall:8.2f} {speed:12.2f} {ms:9.1f}")


if __name__ == "__main__":
    main()
