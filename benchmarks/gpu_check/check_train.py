"""GPU check steps for training: synthetic data, Lightning training (DeepSpeed ZeRO-2 / DDP, bf16), resume,
export, and a model-only loop with a profiler summary.

MFU = samples/s × 3 × `MotionDiT.flops_per_sample()` / dense bf16 peak. flops_per_sample is the forward
FLOPs of one training window (Tp + T = 125 frames): 2 × multiply-accumulates of every matmul and
convolution, attention scores and the audio aligner included, elementwise ops not; ×3 for forward +
backward. The shards carry precomputed audio features, so no audio encoder runs in the step.
"""

from __future__ import annotations

import statistics
import time
from typing import Any
from unittest import mock

from check_common import ROOT, Ctx, peak_bf16, peak_memory_gib, progress, read_step, reset_peak_memory, sync

# GPU sizes: B and L at a per-GPU batch that keeps an H100 busy, enough steps for a steady rate.
GPU_PLAN = {"B": {"batch": 256, "steps": 300, "resume_steps": 50},
            "L": {"batch": 128, "steps": 120, "resume_steps": 20}}
DDP_STEPS = 200  # the DDP comparison row of B (+ the same resume)
DRY_PLAN = {"batch": 4, "steps": 4, "resume_steps": 2}
WARMUP_STEPS = 0.2  # fraction of the steps excluded from the rate (compile, loader start, allocator)


def data(ctx: Ctx) -> None:
    """`playmate synth` + `playmate shards precompute --encoder mel` into the scratch directory."""
    from pl_modules.commands import main

    clips, per_shard = (8, 2) if ctx.dry else (96, 4)
    t0 = time.perf_counter()
    assert main(["synth", "--out", str(ctx.scratch / "synth"), "--clips", str(clips), "--no-video",
                 "--per-shard", str(per_shard), "--min-seconds", "6", "--max-seconds", "10"]) == 0
    t1 = time.perf_counter()
    assert main(["shards", "precompute", str(ctx.scratch / "synth"), str(ctx.scratch / "mel"), "--encoder", "mel"]) == 0
    size = sum(f.stat().st_size for f in (ctx.scratch / "mel").glob("*.tar"))
    ctx.figures.update(clips=clips, clips_per_shard=per_shard, synth_s=t1 - t0, precompute_s=time.perf_counter() - t1,
                       shards_mib=size / 2**20, features="log-mel (L 1, C 80), float16 audio.npy")


def _overrides(ctx: Ctx, preset: str, strategy: str, steps: int, batch: int, run: str) -> list[str]:
    if ctx.dry:  # Lightning's DeepSpeed strategy refuses CPU: the dry run takes the ddp/gloo path for every row
        base = ["model=tiny", "trainer=ddp", "trainer.accelerator=cpu", "trainer.precision=32-true",
                "data.num_workers=0", "data.windows_per_clip=1"]
    else:
        group = "deepspeed_stage_2" if strategy == "deepspeed_stage_2" else "gpu"  # gpu = DDP + bf16 autocast
        base = [f"model={preset}", f"trainer={group}", "data.num_workers=8", "data.windows_per_clip=4",
                "data.shuffle_buffer=256"]
    return [*base, "trainer.devices=1", "logger=none", f"name={run}", f"run_dir={ctx.scratch / 'runs' / run}",
            f"data.train_shards=[{ctx.scratch / 'mel'}]", "data.val_shards=[]", "data.audio_source=precomputed",
            "audio.name=mel",
            f"data.batch_size={batch}", "data.epoch_windows=100000000", f"trainer.max_steps={steps}",
            "trainer.val_every_n_steps=0", "trainer.ckpt_every_n_steps=100000", "trainer.log_every_n_steps=50",
            f"optim.warmup_steps={max(1, steps // 10)}"]


def _recorder_class():
    """ThroughputCallback that also keeps per-step losses (no host sync) and a synchronised steady-state rate."""
    from pl_modules.callbacks import ThroughputCallback

    class Recorder(ThroughputCallback):
        last: Recorder | None = None

        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            Recorder.last = self
            self.losses: list[Any] = []
            self.start_step = self.end_step = 0
            self.t_mark: tuple[int, float] | None = None
            self.t_end = 0.0
            self.between_steps = 0.0
            self._batch_end = None
            self.batch = 0

        def on_train_start(self, trainer, pl_module) -> None:
            self.start_step = trainer.global_step
            reset_peak_memory(pl_module.device.type)
            self.t_start = time.perf_counter()

        def on_train_batch_start(self, trainer, pl_module, batch, *args) -> None:
            super().on_train_batch_start(trainer, pl_module, batch, *args)
            if self._batch_end is not None and self.t_mark is not None:
                self.between_steps += time.perf_counter() - self._batch_end
            self.batch = batch["motion"].shape[0]

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.losses.append(loss.detach())
            done = trainer.global_step - self.start_step
            if self.t_mark is None and done >= max(1, int(WARMUP_STEPS * (trainer.max_steps - self.start_step))):
                sync(pl_module.device.type)
                self.t_mark = (trainer.global_step, time.perf_counter())
            self._batch_end = time.perf_counter()

        def on_train_end(self, trainer, pl_module) -> None:
            sync(pl_module.device.type)
            self.t_end, self.end_step = time.perf_counter(), trainer.global_step

    return Recorder


def _fit(ctx: Ctx, overrides: list[str]):
    """`pl_modules.train.train` with the Recorder in place of the ThroughputCallback; (trainer, recorder, cfg)."""
    from configs.loader import load_experiment
    from pl_modules import train as train_mod

    cfg = load_experiment(ROOT / "configs" / "stage1.yaml", overrides)
    recorder = _recorder_class()
    with mock.patch.object(train_mod, "ThroughputCallback", recorder):
        t0 = time.perf_counter()
        trainer = train_mod.train(cfg)
        wall = time.perf_counter() - t0
    return trainer, recorder.last, cfg, wall


def _rates(ctx: Ctx, rec, cfg, trainer) -> dict[str, Any]:
    from pl_modules.strategy import flop_accounting

    steps = rec.end_step - rec.t_mark[0] if rec.t_mark else 0
    secs = rec.t_end - rec.t_mark[1] if rec.t_mark else float("nan")
    sps = steps * rec.batch / secs if steps else float("nan")
    flops = flop_accounting(cfg)
    peak, peak_note = peak_bf16(ctx.device)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("perf/")}
    return {"timed_steps": steps, "timed_s": secs, "samples_per_s": sps, "step_ms": 1000 * secs / max(steps, 1),
            "mfu": sps * flops["mfu_flops_per_window"] / peak if peak else None, "peak": peak_note,
            "mfu_flops_per_window": flops["mfu_flops_per_window"], "peak_memory_gib": peak_memory_gib(ctx.device),
            "between_steps_fraction": rec.between_steps / secs if steps else None, "logged_perf": logged}


def train(ctx: Ctx, preset: str, strategy: str, resume: bool) -> None:
    """Train N steps from scratch (resume=False), or resume that run for M more steps and check the export."""
    plan = DRY_PLAN if ctx.dry else GPU_PLAN[preset]
    if strategy == "ddp" and not ctx.dry:
        plan = {**plan, "steps": DDP_STEPS}
    run = f"{preset}_{strategy}"
    steps = plan["steps"] + (plan["resume_steps"] if resume else 0)
    ov = _overrides(ctx, preset, strategy, steps, plan["batch"], run)
    ctx.figures.update(preset="tiny" if ctx.dry else preset, batch=plan["batch"], max_steps=steps,
                       strategy=strategy if not ctx.dry else f"{strategy} requested; ddp on CPU (gloo) in the dry run",
                       precision="32-true" if ctx.dry else "bf16-mixed", overrides=ov)
    trainer, rec, cfg, wall = _fit(ctx, ov)
    losses = [float(x) for x in rec.losses]
    ctx.figures.update(wall_s=wall, start_step=rec.start_step, end_step=rec.end_step, first_losses=losses[:10],
                       last_losses=losses[-10:], **_rates(ctx, rec, cfg, trainer))
    progress(f"  {run}: steps {rec.start_step}→{rec.end_step}, {ctx.figures['samples_per_s']:.1f} samples/s, "
             f"MFU {ctx.figures['mfu']}, peak {ctx.figures['peak_memory_gib']} GiB")
    ctx.check("reached max_steps", rec.end_step == steps, f"{rec.end_step} of {steps}")
    if not resume:
        return
    before = read_step(ctx.work, f"train_{run}").get("figures", {})
    ctx.check("resumed at the saved step", rec.start_step == before.get("end_step"),
              f"resumed at {rec.start_step}, first run ended at {before.get('end_step')}")
    tail, head = before.get("last_losses") or [float("nan")], losses[:10]
    ratio = statistics.mean(head) / statistics.mean(tail)
    start = statistics.mean(before.get("first_losses") or [float("nan")])
    ctx.figures.update(loss_before_resume=statistics.mean(tail), loss_after_resume=statistics.mean(head),
                       loss_at_start=start)
    learnt = ctx.dry or statistics.mean(head) < 0.9 * start  # a few CPU steps of the dry run barely move it
    ctx.check("loss continues after resume", ratio < 1.5 and learnt,
              f"mean of 10 losses: {statistics.mean(tail):.4f} before, {statistics.mean(head):.4f} after "
              f"(start of training {start:.4f})")
    export_check(ctx, trainer, cfg)


def export_check(ctx: Ctx, trainer, cfg) -> None:
    """`playmate export` of last.ckpt reproduces the trained module: weights, outputs, EMA."""
    import torch

    from models.dit import Condition
    from pl_modules.callbacks import EMACallback
    from pl_modules.checkpoints import build_model, read_checkpoint
    from pl_modules.commands import main

    ckpt = ctx.scratch / "runs" / cfg.name / "checkpoints" / "last.ckpt"
    raw, ema = ctx.scratch / "exports" / f"{cfg.name}_raw", ctx.scratch / "exports" / f"{cfg.name}_ema"
    t0 = time.perf_counter()
    assert main(["export", str(ckpt), str(raw), "--no-ema"]) == 0
    ctx.figures["export_s"] = time.perf_counter() - t0
    assert main(["export", str(ckpt), str(ema)]) == 0
    live = trainer.lightning_module.model.eval()
    p = next(live.parameters())
    exported = build_model(read_checkpoint(raw))
    mism = [k for k, v in live.state_dict().items() if not torch.equal(exported.state_dict()[k].to(v.dtype), v.cpu())]
    ctx.check("exported weights = trained weights (cast to the training dtype)", not mism,
              f"{p.dtype} live weights; mismatching: {mism[:3]}")
    g = torch.Generator().manual_seed(0)
    m = cfg.model
    b = 4
    x_t, t = torch.randn(b, m.t_window, 70, generator=g), torch.randint(0, 1000, (b,), generator=g)
    cond = Condition(torch.randn(b, m.tp + m.t_window, m.audio_layers, m.audio_dim, generator=g),
                     torch.randn(b, 133, generator=g), torch.randn(b, m.tp, 70, generator=g))
    dev = p.device
    cond = Condition(*(v.to(dev) for v in (cond.audio, cond.id_feat, cond.context)))
    with torch.no_grad():
        want = live(x_t.to(dev), t.to(dev), cond).float()
        again = live(x_t.to(dev), t.to(dev), cond).float()  # the module's own run-to-run spread (0 if deterministic)
        got = exported.to(dev, p.dtype)(x_t.to(dev), t.to(dev), cond).float()
        fp32 = build_model(read_checkpoint(raw)).to(dev)(x_t.to(dev), t.to(dev), cond).float()
    noise = float((again - want).abs().max())
    ctx.figures.update(export_max_abs_diff=float((got - want).abs().max()), module_rerun_max_abs_diff=noise,
                       export_fp32_rel_diff=float((fp32 - want).norm() / want.norm().clamp_min(1e-12)))
    ctx.check("exported model reproduces the trained outputs", ctx.figures["export_max_abs_diff"] <= noise,
              f"same dtype {p.dtype}: max |Δ| {ctx.figures['export_max_abs_diff']:.3g} (the module against itself: "
              f"{noise:.3g}); fp32 export vs trained: relative {ctx.figures['export_fp32_rel_diff']:.3g}")
    shadow = next(c for c in trainer.callbacks if isinstance(c, EMACallback)).shadow
    ema_sd = read_checkpoint(ema).weights()
    bad = [n for n, v in shadow.items() if not torch.equal(ema_sd[n.removeprefix("model.")], v.cpu())]
    ctx.check("exported EMA = the fp32 EMA of the callback", not bad and len(shadow) > 0, f"mismatching: {bad[:3]}")
