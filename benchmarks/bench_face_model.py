"""Throughput of the face model: extract_motion and render frames/s, per device, precision and batch size.

    python benchmarks/bench_face_model.py                       # CPU fp32 (and GPU fp32/fp16/bf16 if present)
    python benchmarks/bench_face_model.py --weights-dir pretrained_weights   # the public weights
    python benchmarks/bench_face_model.py --preset tiny --frames 4          # quick smoke run

Without --weights-dir the model has deterministic random weights at the public shapes (same FLOPs as the
release). Prints a Markdown table; paste it into benchmarks/RESULTS.md with the device line it prints.
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import dataclass

import numpy as np
import torch

from models.liveportrait import FaceModel, FaceModelConfig, load_face_model
from models.liveportrait.testing import random_face_model

DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Row:
    device: str
    precision: str
    batch: int
    extract_fps: float
    render_fps: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, repeats: int) -> float:
    """Best wall time of `repeats` calls after one warm-up call (seconds)."""
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def bench(
    model: FaceModel, device: torch.device, precision: str, batch: int, frames: int, repeats: int
) -> Row:
    model.amp_dtype = DTYPES[precision]
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (frames, 256, 256, 3), dtype=np.uint8)
    motion, kp = model.extract_motion(video[:1])
    driving = motion.repeat(frames, 1)  # (frames, 70)
    t_ext = _timed(lambda: model.extract_motion(video, batch_size=batch), device, repeats)
    def render() -> None:
        model.render(video[0], motion[0], kp[0], driving, batch_size=batch)

    t_ren = _timed(render, device, repeats)
    return Row(str(device), precision, batch, frames / t_ext, frames / t_ren)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> list[Row]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights-dir", default=None, help="public weights folder; random weights if omitted")
    p.add_argument("--preset", choices=["full", "tiny"], default="full")
    p.add_argument("--cpu-batch-sizes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--gpu-batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--gpu-precisions", nargs="+", choices=list(DTYPES), default=["fp32", "fp16", "bf16"])
    p.add_argument("--frames", type=int, default=2, help="frames per timed call on CPU (GPU: 4 × max batch)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU rows")
    a = p.parse_args(argv)
    cfg = FaceModelConfig() if a.preset == "full" else FaceModelConfig.tiny()
    model = load_face_model(a.weights_dir, "cpu", cfg=cfg) if a.weights_dir else random_face_model(0, cfg)
    plans = [] if a.no_cpu else [(torch.device("cpu"), ["fp32"], a.cpu_batch_sizes, a.frames)]
    if torch.cuda.is_available():
        plans.append((torch.device("cuda"), a.gpu_precisions, a.gpu_batch_sizes, 4 * max(a.gpu_batch_sizes)))
    rows = []
    weights = a.weights_dir or "random, deterministic"
    print(f"torch {torch.__version__}; weights: {weights}; preset {a.preset}")
    for device, precisions, batches, frames in plans:
        model.to(device)
        print(f"device: {device_name(device)}")
        for prec in precisions:
            for b in batches:
                rows.append(bench(model, device, prec, b, max(frames, b), a.repeats))
    print("\n| device | precision | batch | extract_motion frames/s | render frames/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.device} | {r.precision} | {r.batch} | {r.extract_fps:.2f} | {r.render_fps:.3f} |")
    return rows


if __name__ == "__main__":
    main()
