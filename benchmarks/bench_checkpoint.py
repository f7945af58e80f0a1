"""Checkpoint save/load time and size of a training state (CPU, fp32, Lightning checkpoint layout).

    python benchmarks/bench_checkpoint.py [--presets B L] [--rounds 3] [--dir /tmp]

The state is what `playmate train` writes in a Lightning `.ckpt` (single process or DDP): the module's
state dict, AdamW's state (exp_avg, exp_avg_sq and step per parameter, after one real step), the LR
scheduler, the fp32 EMA of the trainable weights in the callback state, the resolved config and the
normalisation statistics. `torch.save` to a file in --dir, then `torch.load(weights_only=True)`; the
rounds alternate the presets and the medians are printed. A DeepSpeed checkpoint holds the same
numbers (bf16 module weights + fp32 master weights + Adam moments), split into per-rank files.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs.loader import load_experiment, to_container  # noqa: E402
from models.motion import MotionStats  # noqa: E402
from pl_modules.module import MotionDiffusionModule  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def training_state(preset: str) -> dict:
    """The dict Lightning saves for a stage-one module of `preset` after one optimiser step."""
    cfg = load_experiment(ROOT / "configs" / "stage1.yaml", [f"model={preset}", "data.train_shards=[x]",
                                                             "data.val_shards=[]", "audio.name=mel"])
    torch.manual_seed(0)
    module = MotionDiffusionModule(cfg, MotionStats.identity())
    module.configure_model()
    opt_cfg = module.configure_optimizers()
    opt, sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    for p in module.trainable_parameters():
        p.grad = torch.randn_like(p) * 1e-3
    opt.step()
    sched.step()
    ema = {f"model.{n}": p.detach().float().clone() for n, p in module.model.named_parameters() if p.requires_grad}
    return {"epoch": 0, "global_step": 1, "pytorch-lightning_version": "2.6", "state_dict": module.state_dict(),
            "loops": {}, "optimizer_states": [opt.state_dict()], "lr_schedulers": [sched.state_dict()],
            "callbacks": {"EMACallback": {"decay": 0.999, "every": 1, "shadow": ema}},
            "hyper_parameters": {"config": to_container(cfg), "motion_stats": MotionStats.identity().to_dict()},
            "motion_stats": MotionStats.identity().to_dict()}


def save_load(state: dict, path: Path) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    torch.save(state, path)
    with open(path, "rb") as f:  # the data reaches the disk before the clock stops, as on a cluster FS
        os.fsync(f.fileno())
    t_save = time.perf_counter() - t0
    size = path.stat().st_size
    t0 = time.perf_counter()
    torch.load(path, map_location="cpu", weights_only=True)
    t_load = time.perf_counter() - t0
    path.unlink()
    return t_save, t_load, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["B", "L"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write (default: the system temp dir)")
    args = ap.parse_args()
    states = {p: training_state(p) for p in args.presets}
    times: dict[str, list[tuple[float, float, int]]] = {p: [] for p in args.presets}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for r in range(args.rounds):
            for p in (args.presets if r % 2 == 0 else reversed(args.presets)):
                times[p].append(save_load(states[p], Path(tmp) / f"{p}.ckpt"))
    print(f"torch {torch.__version__}, {args.rounds} interleaved rounds, load average {load_before:.1f} → "
          f"{os.getloadavg()[0]:.1f}, dir {args.dir or tempfile.gettempdir()}")
    print("| preset | parameters | file MB | save s (median) | load s (median) | save MB/s | all saves s |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for p, rows in times.items():
        n = sum(v.numel() for v in states[p]["state_dict"].values())
        save, load = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
        size = rows[0][2] / 1e6
        print(f"| {p} | {n / 1e6:.1f} M | {size:.0f} | {save:.2f} | {load:.2f} | {size / save:.0f} | "
              f"{' '.join(f'{r[0]:.2f}' for r in rows)} |")


if __name__ == "__main__":
    main()
