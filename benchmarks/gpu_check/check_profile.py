"""GPU check: the training step alone (no loader, no Lightning) at several batch sizes, its MFU, a
torch-profiler summary (top ops by CUDA time) and the same step with compiled Conformer blocks.

The audio features have the wav2vec2-base shape (L 12, C 768), as precomputed wav2vec2 shards give,
so the aligner costs what it costs in production; bf16 autocast on fp32 weights (the `gpu`/DDP path).
"""

from __future__ import annotations

import time
from typing import Any

from check_common import ROOT, Ctx, peak_bf16, peak_memory_gib, progress, read_step, reset_peak_memory, sync

GPU_BATCHES = (64, 256, 1024)
PROFILE_BATCH = 256
TOP_OPS = 15


def _module(ctx: Ctx, preset: str, extra: list[str] = ()):  # type: ignore[assignment]
    import torch

    from configs.loader import load_experiment
    from models.motion import MotionStats
    from pl_modules.module import MotionDiffusionModule

    cfg = load_experiment(ROOT / "configs" / "stage1.yaml",
                          [f"model={'tiny' if ctx.dry else preset}", "data.train_shards=[x]", "data.val_shards=[]",
                           "data.audio_source=precomputed", "audio.name=mel", "optim.warmup_steps=0", *extra])
    if cfg.data.audio_source == "precomputed":
        cfg.model.audio_layers, cfg.model.audio_dim = 12, 768  # precomputed wav2vec2-base features
    torch.manual_seed(0)
    module = MotionDiffusionModule(cfg, MotionStats.identity())
    module.configure_model()
    module.to(ctx.device).train()
    module.log = lambda *a, **k: None  # no trainer
    return module, module.configure_optimizers()["optimizer"]


def _batch(b: int, device: str, wav: bool = False) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    audio = torch.randn(b, 125 * 640, generator=g) * 0.1 if wav else torch.randn(b, 125, 12, 768, generator=g).half()
    batch = {"motion": torch.randn(b, 125, 70, generator=g), "audio": audio,
             "kp": torch.randn(b, 21, 3, generator=g), "ref_motion": torch.randn(b, 70, generator=g),
             "has_context": torch.ones(b, dtype=torch.bool)}
    return {k: v.to(device) for k, v in batch.items()}


def _step_fn(module, opt, batch, device: str):
    import torch

    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")

    def step() -> None:
        with autocast:
            loss = module.training_step(batch, 0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.trainable_parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _rate(ctx: Ctx, step, b: int, flops: float, steps: int) -> dict[str, Any]:
    reset_peak_memory(ctx.device)
    for _ in range(1 if ctx.dry else 3):
        step()
    sync(ctx.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(ctx.device)
    secs = (time.perf_counter() - t0) / steps
    peak, _ = peak_bf16(ctx.device)
    return {"batch": b, "step_ms": 1000 * secs, "samples_per_s": b / secs,
            "mfu": b / secs * flops / peak if peak else None, "peak_memory_gib": peak_memory_gib(ctx.device)}


def profile(ctx: Ctx, preset: str) -> None:
    """Batch sweep (samples/s, MFU, memory) and the profiler's top ops at PROFILE_BATCH."""
    import torch

    module, opt = _module(ctx, preset)
    flops = 3 * module.model.flops_per_sample()
    peak, peak_note = peak_bf16(ctx.device)
    ctx.figures.update(preset="tiny" if ctx.dry else preset, features="(125, 12, 768) fp16, wav2vec2-base shape",
                       precision="bf16 autocast, fp32 weights" if not ctx.dry else "fp32 (CPU)", peak=peak_note,
                       mfu_flops_per_window=flops, fused_adamw=module.cfg.optim.fused)
    rows = []
    for b in ((2,) if ctx.dry else GPU_BATCHES):
        try:
            rows.append(_rate(ctx, _step_fn(module, opt, _batch(b, ctx.device), ctx.device), b, flops,
                              2 if ctx.dry else 10))
        except torch.cuda.OutOfMemoryError:
            ctx.notes.append(f"batch {b}: out of memory")
            torch.cuda.empty_cache()
            continue
        progress(f"  batch {b}: {rows[-1]}")
    ctx.figures["sweep"] = rows
    b = 2 if ctx.dry else PROFILE_BATCH
    step = _step_fn(module, opt, _batch(b, ctx.device), ctx.device)
    step()
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if not ctx.dry else [])
    n = 1 if ctx.dry else 5
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(n):
            step()
        sync(ctx.device)
    ctx.figures["profile"] = top_ops(prof, n, cuda=not ctx.dry)
    ctx.figures["profile_batch"] = b
    if module.cfg.optim.fused is False and not ctx.dry:  # the fused AdamW kernel, same batch
        module_f, opt_f = _module(ctx, preset, ["optim.fused=true"])
        ctx.figures["fused_adamw"] = _rate(ctx, _step_fn(module_f, opt_f, _batch(b, ctx.device), ctx.device), b,
                                           flops, 10)
        del module_f, opt_f
    try:
        encoder_in_step(ctx, preset, b)
    except Exception as e:  # noqa: BLE001 (a finding, not a reason to lose the figures above)
        ctx.figures["wav2vec2_in_step"] = {"error": f"{type(e).__name__}: {e}"[:500]}
        ctx.notes.append(f"wav2vec2 in the step failed: {type(e).__name__}")


def encoder_in_step(ctx: Ctx, preset: str, b: int) -> None:
    """wav in the batch, a wav2vec2-base encoder (random weights, built from its config) run in the step under
    bf16 autocast: windows/s, MFU (DiT FLOPs only, as logged) and the hardware utilisation with the encoder."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from models.audio import encoder_flops_per_window

    d = ctx.scratch / "wav2vec2"
    if not (d / "config.json").is_file():
        torch.manual_seed(0)
        small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     conv_dim=(16, 16, 16), conv_stride=(5, 8, 8), conv_kernel=(10, 8, 8),
                     num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
        Wav2Vec2Model(Wav2Vec2Config(**(small if ctx.dry else {}))).save_pretrained(d)
    module, opt = _module(ctx, preset, ["audio.name=wav2vec2", f"audio.wav2vec2_path={d}", "data.audio_source=wav",
                                        "trainer.precision=bf16-mixed"])
    counted = 3 * module.model.flops_per_sample()
    encoder = encoder_flops_per_window(module.cfg.audio, 125)
    row = _rate(ctx, _step_fn(module, opt, _batch(b, ctx.device, wav=True), ctx.device), b, counted,
                2 if ctx.dry else 10)
    peak, _ = peak_bf16(ctx.device)
    row.update(encoder_gflop_per_window=encoder / 1e9, dit_training_gflop_per_window=counted / 1e9,
               hfu=row["samples_per_s"] * (counted + encoder) / peak if peak else None)
    ctx.figures["wav2vec2_in_step"] = row
    progress(f"  wav2vec2 in the step: {row}")


def top_ops(prof, steps: int, cuda: bool) -> dict[str, Any]:
    """The profiler's ops by self device time (CPU time on CPU), per step, with their share of the total."""
    def self_time(e) -> float:  # µs; the attribute was renamed from *_cuda_* to *_device_* in torch 2.4
        if not cuda:
            return e.self_cpu_time_total
        return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0)

    events = [e for e in prof.key_averages() if self_time(e) > 0]
    total = sum(self_time(e) for e in events)
    events.sort(key=self_time, reverse=True)
    rows = [{"op": e.key[:80], "ms_per_step": self_time(e) / 1000 / steps, "share": self_time(e) / total,
             "calls_per_step": e.count / steps} for e in events[:TOP_OPS]]
    return {"clock": "CUDA self time" if cuda else "CPU self time", "total_ms_per_step": total / 1000 / steps,
            "top": rows}


def compiled(ctx: Ctx, preset: str) -> None:
    """The same step with `trainer.compile=true` (each Conformer block torch.compile'd): compile time, rate."""
    module, opt = _module(ctx, preset, ["trainer.compile=true"])
    flops = 3 * module.model.flops_per_sample()
    b = 2 if ctx.dry else PROFILE_BATCH
    step = _step_fn(module, opt, _batch(b, ctx.device), ctx.device)
    t0 = time.perf_counter()
    step()
    sync(ctx.device)
    ctx.figures["first_step_s"] = time.perf_counter() - t0
    ctx.figures["compiled"] = _rate(ctx, step, b, flops, 2 if ctx.dry else 10)
    eager = [r for r in read_step(ctx.work, f"profile_{preset}").get("figures", {}).get("sweep", []) if r["batch"] == b]
    if eager:
        ctx.figures["speedup_vs_eager"] = ctx.figures["compiled"]["samples_per_s"] / eager[0]["samples_per_s"]
    progress(f"  compiled: {ctx.figures['compiled']}, first step {ctx.figures['first_step_s']:.1f} s")
