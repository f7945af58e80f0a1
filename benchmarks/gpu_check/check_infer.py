"""GPU check steps for inference: sampling speed through `MotionGenerator`, the face model, the S3FD
detector (when `models/s3fd.py` exists), and the Fréchet core on GPU vs CPU."""

from __future__ import annotations

import contextlib
import time
from unittest import mock

from check_common import Ctx, progress, sync, timed

SAMPLING_BATCHES = (1, 8, 32, 128)


def sampling(ctx: Ctx) -> None:
    """Seconds of motion per second of wall: S and B (+ emotion controller), nested CFG, DDIM 50, 8 s of audio
    (two windows), fp32 and bf16 autocast, per batch of clips; plus the aligner once per window vs per forward."""
    import torch
    from bench_sampling import build

    from models.dit import MotionDiT
    from pl_modules.inference.inputs import Reference

    seconds, steps = (2.0, 2) if ctx.dry else (8.0, 50)
    batches = (1, 2) if ctx.dry else SAMPLING_BATCHES
    presets = ("tiny",) if ctx.dry else ("S", "B")
    precisions = (None,) if ctx.dry else (None, torch.bfloat16)
    n = round(seconds * 25)
    rows = []

    def run(gen, b: int, dtype) -> float:
        g = torch.Generator().manual_seed(0)
        feats = torch.randn(b, n, 12, 768, generator=g)
        refs = [Reference(torch.cat([torch.zeros(69), torch.ones(1)]), torch.randn(21, 3, generator=g))] * b
        amp = torch.autocast(ctx.device, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        sync(ctx.device)
        t0 = time.perf_counter()
        with amp:
            out = gen.generate_batch(torch.zeros(b, n * 640), refs, list(range(b)), ["happy"] * b, steps=steps,
                                     audio_feats=feats)
        sync(ctx.device)
        assert out.shape == (b, n, 70) and torch.isfinite(out).all()
        return time.perf_counter() - t0

    for preset in presets:
        gen = build(preset, 12, 768, ctx.device)
        for dtype in precisions:
            run(gen, 1, dtype)  # warm-up: kernels, autocast caches
            for b in batches:
                wall = run(gen, b, dtype)
                rows.append({"preset": preset, "precision": "bf16 autocast" if dtype else "fp32", "batch": b,
                             "wall_s": wall, "motion_s_per_s": b * seconds / wall})
                progress(f"  sampling {rows[-1]}")
    ctx.figures.update(seconds=seconds, ddim_steps=steps, cfg="nested audio + emotion (3 passes, batched)",
                       features="(N, 12, 768) precomputed, encoder not timed", rows=rows)
    best = {}
    for r in rows:
        k = f"{r['preset']} {r['precision']}"
        if k not in best or r["motion_s_per_s"] > best[k]["motion_s_per_s"]:
            best[k] = r
    ctx.figures["best"] = best
    gen = build(presets[-1], 12, 768, ctx.device)  # the aligner computed once per window vs in every forward
    once = min(run(gen, 1, None) for _ in range(2))
    with mock.patch.object(MotionDiT, "with_aligned_audio", lambda self, cond, frames, drops=None: cond):
        every = min(run(gen, 1, None) for _ in range(2))
    ctx.figures["aligner_once_per_window"] = {"preset": presets[-1], "batch": 1, "once_s": once,
                                              "every_forward_s": every, "time_saved": 1 - once / every}


def face(ctx: Ctx) -> None:
    """extract_motion and render frames/s (512² output), fp32 / bf16 autocast, batch 1 / 8 / 32."""
    import torch
    from bench_face_model import bench

    from models.liveportrait import FaceModelConfig
    from models.liveportrait.testing import random_face_model

    cfg = FaceModelConfig.tiny() if ctx.dry else FaceModelConfig()
    model = random_face_model(0, cfg).to(ctx.device)
    precisions = ("fp32",) if ctx.dry else ("fp32", "bf16")
    batches = (1,) if ctx.dry else (1, 8, 32)
    frames = 1 if ctx.dry else 64
    rows = []
    for prec in precisions:
        for b in batches:
            r = bench(model, torch.device(ctx.device), prec, b, max(frames, b), 1)
            rows.append({"precision": prec, "batch": b, "extract_fps": r.extract_fps, "render_fps": r.render_fps})
            progress(f"  face {rows[-1]}")
    ctx.figures.update(preset="tiny" if ctx.dry else "full (public sizes, random weights)", frames_per_call=frames,
                       output="512×512", tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                       tf32_cudnn=torch.backends.cudnn.allow_tf32, rows=rows)


def s3fd(ctx: Ctx) -> None:
    """S3FD (random weights, the public network) frames/s: the network alone on scale-0.25 inputs of 1080p
    frames, and `detect_faces_batch` end to end (resize, network, decode, NMS) on uint8 frames."""
    import numpy as np
    import torch

    from models.s3fd import S3FD, S3FDNet

    torch.manual_seed(0)
    det = S3FD(S3FDNet(), ctx.device)
    frame = (128, 128) if ctx.dry else (1080, 1920)  # (H, W); the standard pipeline detects at scale 0.25
    side = (frame[0] // 4, frame[1] // 4)
    rows = []
    for b in ((1,) if ctx.dry else (1, 8, 32)):
        x = torch.randn(b, 3, *side, device=ctx.device) * 50
        with torch.no_grad():
            wall = timed(lambda: det.net(x), ctx.device, repeats=1 if ctx.dry else 5)
        frames = np.random.default_rng(0).integers(0, 256, (b, *frame, 3), dtype=np.uint8)
        end_to_end = timed(lambda: det.detect_faces_batch(frames, conf_th=0.9, batch_size=b), ctx.device,
                           repeats=1 if ctx.dry else 3)
        rows.append({"batch": b, "input": f"{side[1]}×{side[0]}", "network_fps": b / wall,
                     "detect_faces_fps": b / end_to_end})
    ctx.figures.update(module="S3FD", rows=rows, note="fp32, random weights (speed only)")


def frechet(ctx: Ctx) -> None:
    """The Fréchet core (symmetric eigh, float64) at d = 2048: CPU (the metric's path) vs the same math on CUDA."""
    import numpy as np
    import torch

    from metrics.frechet import frechet_distance, sqrtm_psd

    d = 128 if ctx.dry else 2048
    g = np.random.default_rng(0)
    x1 = g.standard_normal((2 * d, d))
    x2 = g.standard_normal((2 * d, d)) @ np.diag(g.uniform(0.5, 1.5, d))
    mu1, mu2, s1, s2 = x1.mean(0), x2.mean(0), np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
    t0 = time.perf_counter()
    fd_cpu = frechet_distance(mu1, s1, mu2, s2)
    t_cpu = time.perf_counter() - t0
    ctx.figures.update(d=d, cpu_s=t_cpu, fd_cpu=fd_cpu, cpu_threads=torch.get_num_threads())
    if ctx.device != "cuda":
        ctx.notes.append("no CUDA: CPU row only")
        return
    t = {k: torch.as_tensor(v, dtype=torch.float64, device="cuda") for k, v in
         {"mu1": mu1, "mu2": mu2, "s1": s1, "s2": s2}.items()}

    def on_gpu() -> float:
        a = sqrtm_psd(t["s1"])
        m = a @ t["s2"] @ a
        tr = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
        return float((t["mu1"] - t["mu2"]).square().sum() + t["s1"].trace() + t["s2"].trace() - 2 * tr)

    fd_gpu = on_gpu()  # warm-up: cuSOLVER handles
    t_gpu = timed(on_gpu, "cuda", repeats=3, warmup=0)
    ctx.figures.update(gpu_s=t_gpu, fd_gpu=fd_gpu, speedup=t_cpu / t_gpu, rel_diff=abs(fd_gpu - fd_cpu) / abs(fd_cpu))
    ctx.check("GPU Fréchet = CPU Fréchet", ctx.figures["rel_diff"] < 1e-9, f"relative {ctx.figures['rel_diff']:.2e}")
