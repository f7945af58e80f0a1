"""Stage-one step time through Lightning vs a raw PyTorch loop, same model, same batch, interleaved.

    python benchmarks/bench_train_overhead.py [--presets tiny S] [--steps 30] [--batch 16] [--reps 5]

Both loops do the same work per step: the module's training_step (audio features, ε-loss),
backward, gradient clipping at 1.0, AdamW step, zero_grad. The batch is fixed and reused, so data
loading is excluded; Lightning runs with its logger, checkpointing and progress bar off, as the
raw loop has none. The two run alternately (raw, Lightning, raw, Lightning, … `--reps` times each,
which one goes first alternating), each rep reporting its median step after warm-up; the table shows
the median over reps of each, their range and the ratio, so load from other processes hits both
alike. On a GPU (when present) the B preset also runs in bf16 with samples/s and MFU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from configs.loader import load_experiment
from models.motion import MotionStats
from pl_modules.callbacks import peak_flops
from pl_modules.module import MotionDiffusionModule


def make_batch(b: int, tp: int = 25, t: int = 100) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "motion": torch.randn(b, tp + t, 70, generator=g), "audio": torch.randn(b, (tp + t) * 640, generator=g) * 0.1,
        "kp": torch.randn(b, 21, 3, generator=g), "ref_motion": torch.randn(b, 70, generator=g),
        "pose_mean": torch.zeros(b, 7), "has_context": torch.ones(b, dtype=torch.bool),
        "emotion": torch.full((b,), 8), "key": [f"k{i}" for i in range(b)],
    }


class Repeat(IterableDataset):
    def __init__(self, batch: dict, n: int) -> None:
        self.batch, self.n = batch, n

    def __iter__(self):
        for _ in range(self.n):
            yield self.batch


class Timer(pl.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self._t = warmup, [], 0.0

    def on_train_batch_start(self, *a) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, *a) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._t)


def module_for(preset: str, device: str) -> MotionDiffusionModule:
    cfg = load_experiment("configs/stage1.yaml",
                              [f"model={preset}", "data.train_shards=[x]", "data.val_shards=[]",
                               "audio.name=mel", "optim.warmup_steps=0"])
    m = MotionDiffusionModule(cfg, MotionStats.identity())
    m.configure_model()
    return m


def raw_loop(preset: str, batch: dict, steps: int, warmup: int, device: str) -> float:
    torch.manual_seed(0)
    m = module_for(preset, device).to(device)
    m.log = lambda *a, **k: None  # the raw loop has no logger
    opt = m.configure_optimizers()["optimizer"]
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        loss = m.training_step(batch, 0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times[warmup:])[len(times[warmup:]) // 2]


def lightning_loop(preset: str, batch: dict, steps: int, warmup: int, device: str, precision: str = "32-true") -> float:
    torch.manual_seed(0)
    m = module_for(preset, device)
    timer = Timer(warmup)
    trainer = pl.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_steps=steps, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         gradient_clip_val=1.0, callbacks=[timer], precision=precision, num_sanity_val_steps=0)
    trainer.fit(m, DataLoader(Repeat(batch, steps), batch_size=None))
    t = timer.times[warmup:]
    return sorted(t)[len(t) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "S"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5, help="runs of each loop, interleaved")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    batch = make_batch(args.batch)
    warmup = max(3, args.steps // 5)
    loops = {"raw": raw_loop, "lightning": lightning_loop}
    rows = []
    for preset in args.presets:
        times: dict[str, list[float]] = {name: [] for name in loops}
        for rep in range(args.reps):
            for name in (("raw", "lightning") if rep % 2 == 0 else ("lightning", "raw")):
                times[name].append(loops[name](preset, batch, args.steps, warmup, device))
        rows.append((preset, times))
    print(f"{args.reps} interleaved reps of {args.steps} steps each ({warmup} warm-up), {args.threads} threads; "
          "medians over reps of each rep's median step")
    print(f"{'preset':6s} {'device':6s} {'batch':>5s} {'raw ms/step':>12s} {'(min–max)':>15s} "
          f"{'lightning ms/step':>18s} {'(min–max)':>15s} {'lightning/raw':>14s}")
    for preset, times in rows:
        raw, lit = (statistics.median(times[k]) for k in ("raw", "lightning"))
        spread = {k: f"{min(v) * 1e3:.1f}–{max(v) * 1e3:.1f}" for k, v in times.items()}
        print(f"{preset:6s} {device:6s} {args.batch:5d} {raw * 1e3:12.1f} {spread['raw']:>15s} "
              f"{lit * 1e3:18.1f} {spread['lightning']:>15s} {lit / raw:14.3f}")
    if device == "cuda":
        m = module_for("B", device)
        flops = 3 * m.model.flops_per_sample()
        step = lightning_loop("B", make_batch(64), args.steps, warmup, device, precision="bf16-mixed")
        sps = 64 / step
        peak = peak_flops(torch.device("cuda"))
        mfu = f"{sps * flops / peak:.1%}" if peak else "n/a"
        print(f"\nB, bf16-mixed, batch 64 on {torch.cuda.get_device_name()}: {sps:.0f} samples/s, MFU {mfu}")


if __name__ == "__main__":
    main()
