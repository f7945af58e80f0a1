"""How smooth is generated motion? Velocity/acceleration ratios (generated / ground truth) per recipe.

Trains stage one at the demo's budget (`pl_modules.demo`: its DemoConfig sizes and training overrides) on
the synthetic world, once per training variant, then generates every held-out clip (whole clips, window
by window, as `playmate generate`) and prints one table row per (variant, sampling setting):

    pose / exp velocity and acceleration ratio · mouth/audio r (lip sync) · seconds to train

Ratios are metrics/temporal.py's: the mean over clips of the generated clip's mean ‖Δx‖ (‖Δ²x‖) over the
same for the ground truth (pose: pitch/yaw/roll in degrees; expression: the 63 raw deformation values);
1.0 = as smooth as the data. docs/motion-smoothness.md records the runs and what they showed.

    OMP_NUM_THREADS=2 PYTHONPATH=$PWD python benchmarks/motion_smoothness.py --variants eps v_acc4 \
        --sampling default w1 steps50 raw
    ... --steps 1500        # the slow tests' budget
    ... --diagnose          # ratios of the one-step x̂_0 estimate of noised ground truth, per timestep
    ... --stage2            # also train stage two on each variant and measure emotion accuracy
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

# Training variants: overrides of configs/stage1.yaml on top of the demo's.
VARIANTS: dict[str, list[str]] = {
    "eps": ["diffusion.prediction=eps", "diffusion.velocity_weight=0", "diffusion.acceleration_weight=0"],
    "eps_acc4": ["diffusion.prediction=eps", "diffusion.velocity_weight=0", "diffusion.acceleration_weight=4"],
    "v": ["diffusion.prediction=v", "diffusion.velocity_weight=0", "diffusion.acceleration_weight=0"],
    "v_vel1": ["diffusion.prediction=v", "diffusion.velocity_weight=1", "diffusion.acceleration_weight=0"],
    "v_acc4": ["diffusion.prediction=v", "diffusion.velocity_weight=0", "diffusion.acceleration_weight=4"],
    "v_acc16": ["diffusion.prediction=v", "diffusion.velocity_weight=0", "diffusion.acceleration_weight=16"],
    "v_vel1_acc4": ["diffusion.prediction=v", "diffusion.velocity_weight=1", "diffusion.acceleration_weight=4"],
    "x0": ["diffusion.prediction=x0", "diffusion.velocity_weight=0", "diffusion.acceleration_weight=0"],
    "x0_acc4": ["diffusion.prediction=x0", "diffusion.velocity_weight=0", "diffusion.acceleration_weight=4"],
    "eps_ctx0": ["diffusion.prediction=eps", "diffusion.velocity_weight=0", "diffusion.acceleration_weight=0",
                 "model.context_noise_max=0.0"],
    "eps_ctx05": ["diffusion.prediction=eps", "diffusion.velocity_weight=0", "diffusion.acceleration_weight=0",
                  "model.context_noise_max=0.5"],
    "defaults": [],  # whatever the schema and configs/model/tiny.yaml say now
}

# Sampling settings applied to a trained variant: (field of the diffusion config → value), "raw" = no EMA.
SAMPLING: dict[str, dict[str, float]] = {
    "default": {},
    "w1": {"w_a": 1.0},
    "w3": {"w_a": 3.0},
    "rescale07": {"cfg_rescale": 0.7},
    "steps50": {"sampling_steps": 50},
    "steps100": {"sampling_steps": 100},
    "eta1": {"eta": 1.0},
    "noclamp": {"clip_x0": 0.0},
    "raw": {},
    "ddpm": {"sampler": "ddpm"},
}


def temporal_ratios(generated: list[torch.Tensor], truth: list[np.ndarray]) -> dict[str, float]:
    """The four realism ratios (ratios of the means over clips; metrics/temporal.py)."""
    from metrics.temporal import RATIOS, temporal_report

    rep = temporal_report([torch.as_tensor(m) for m in generated], [torch.as_tensor(np.asarray(m)) for m in truth])
    return {k: rep[k] for k in RATIOS}


def measure(gen, clips, steps: int, seed: int = 0) -> dict[str, float]:
    from pl_modules.evaluation.probes import generate_for_clips, mean_mouth_correlation

    motions = generate_for_clips(gen, clips, steps, seed)
    out = temporal_ratios(motions, [c.motion[: len(m)] for c, m in zip(clips, motions)])
    out["mouth_audio_r"] = mean_mouth_correlation(motions, [torch.from_numpy(c.kp) for c in clips],
                                                  [c.wav for c in clips])
    return out


def with_sampling(gen, name: str):
    """The generator with one SAMPLING setting applied to its diffusion config (in place; returns it)."""
    from models.diffusion import NoiseSchedule

    d = gen.config.diffusion
    for key, value in SAMPLING[name].items():
        setattr(d, key, value)
    gen.schedule = NoiseSchedule.from_config(d)
    return gen


def make_world(c, root: Path) -> tuple[Path, Path]:
    """The demo's synthetic world: training clips with emotions, held-out clips."""
    from datamodules.synthetic import synthesize_dataset

    train_dir, val_dir = root / "data" / "train", root / "data" / "val"
    if not (train_dir / "manifest.json").is_file():
        synthesize_dataset(train_dir, clips=c.train_clips, seed=c.seed, emotions=True, video=False, maxcount=8)
    if not (val_dir / "manifest.json").is_file():
        synthesize_dataset(val_dir, clips=c.val_clips, seed=c.seed + 1, emotions=True, video=False, maxcount=4)
    return train_dir, val_dir


def demo_overrides(c, run: Path, steps: int, train_dir: Path, val_dir: Path, lr: float = 1e-3) -> list[str]:
    """The demo's training overrides without W&B and end-of-run validation, checkpoints every 200 steps."""
    from pl_modules.demo import _overrides

    ov = [o for o in _overrides(c, run, steps, train_dir, val_dir, lr) if not o.startswith("logger")]
    return [*ov, "logger=none", "trainer.val_every_n_steps=0", f"trainer.ckpt_every_n_steps={min(200, steps)}",
            "trainer.keep_last_checkpoints=20"]


def train_variant(c, root: Path, name: str, steps: int, train_dir: Path, val_dir: Path) -> tuple[Path, float]:
    from configs.loader import load_experiment
    from pl_modules.train import train

    run = root / "runs" / f"{name}_{steps}"
    t0 = time.time()
    if not (run / "checkpoints" / "last.ckpt").is_file():
        train(load_experiment(ROOT / "configs" / "stage1.yaml",
                              demo_overrides(c, run, steps, train_dir, val_dir) + VARIANTS[name]))
    return run, time.time() - t0


def train_stage2(c, name: str, run1: Path, steps: int, train_dir: Path, val_dir: Path) -> Path:
    from configs.loader import load_experiment
    from pl_modules.train import train

    run2 = run1.parent / f"{run1.name}_stage2"
    if not (run2 / "checkpoints" / "last.ckpt").is_file():
        ov = demo_overrides(c, run2, steps, train_dir, val_dir, lr=3e-3)
        train(load_experiment(ROOT / "configs" / "stage2.yaml",
                              [*ov, *VARIANTS[name], f"stage2.init_from={run1 / 'export'}"]))
    return run2


@torch.no_grad()
def diagnose_timesteps(gen, clips, ts=(0, 10, 50, 100, 200, 400, 600, 800, 999), seed: int = 0) -> dict[int, dict]:
    """Ratios of x̂_0 from ONE network evaluation on ground truth noised to step t (first window of each
    clip, start token, w_a = 1): where along the chain the network leaves jitter in its estimate."""
    from models.diffusion import guided_eps
    from models.dit import Condition, reference_id_feat
    from models.motion import POSE, denormalize_motion, normalize_motion

    m = gen.model.config
    out = {}
    for t_int in ts:
        gens, gts = [], []
        for i, clip in enumerate(clips):
            raw = torch.from_numpy(clip.motion[: m.t_window]).float()[None]  # (1, T, 70)
            ref_pose = raw[:, 0, POSE]
            x0 = normalize_motion(raw, gen.stats, ref_pose[:, None])  # (1, T, 70)
            feats = gen.audio_features(torch.from_numpy(clip.wav[: m.t_window * 640]).float()[None] / 32768.0,
                                       m.t_window)
            id_feat = reference_id_feat(torch.from_numpy(clip.kp)[None], raw[:, 0], gen.stats)
            g = torch.Generator().manual_seed(seed + i)
            t = torch.full((1,), t_int, dtype=torch.long)
            x_t = gen.schedule.q_sample(x0, t, torch.randn(x0.shape, generator=g))
            y = guided_eps(gen.model, x_t, t, Condition(feats, id_feat), w_a=1.0)
            x0_hat = gen.schedule.output_to_x0(x_t, t, y)
            gens.append(denormalize_motion(x0_hat, gen.stats, ref_pose[:, None])[0])
            gts.append(raw[0].numpy())
        out[t_int] = temporal_ratios(gens, gts)
    return out


def main() -> None:
    from datamodules.clips import load_clips
    from pl_modules.checkpoints import export
    from pl_modules.demo import DemoConfig
    from pl_modules.evaluation.probes import emotion_control
    from pl_modules.inference.generator import MotionGenerator

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="smoothness_out")
    ap.add_argument("--steps", type=int, default=DemoConfig.stage1_steps, help="stage-one steps (the demo's)")
    ap.add_argument("--variants", nargs="+", default=["eps", "defaults"], choices=sorted(VARIANTS))
    ap.add_argument("--sampling", nargs="+", default=["default"], choices=sorted(SAMPLING))
    ap.add_argument("--trajectory", action="store_true", help="also measure the 200-step checkpoints")
    ap.add_argument("--diagnose", action="store_true", help="per-timestep ratios of one-step x̂_0")
    ap.add_argument("--stage2", action="store_true", help="train stage two per variant: emotion accuracy")
    ap.add_argument("--clips", type=int, default=DemoConfig.val_clips, help="held-out clips measured")
    ap.add_argument("--checkpoint", nargs="+", default=[], help="measure these checkpoints instead of training")
    args = ap.parse_args()

    os.environ.setdefault("PLAYMATE_PROGRESS", "0")
    c = DemoConfig(out=args.out)
    root = Path(args.out)
    train_dir, val_dir = make_world(c, root)
    clips = load_clips([str(val_dir)], args.clips)
    rows = []
    for ckpt in args.checkpoint:
        for s in args.sampling:
            gen = with_sampling(MotionGenerator.from_checkpoint(ckpt, use_ema=s != "raw"), s)
            rows.append({"variant": Path(ckpt).parent.parent.name, "ckpt": Path(ckpt).stem, "sampling": s,
                         "train_s": 0, **measure(gen, clips, gen.config.diffusion.sampling_steps)})
            print(json.dumps(rows[-1]), flush=True)
        if args.diagnose:
            for t, r in diagnose_timesteps(MotionGenerator.from_checkpoint(ckpt), clips).items():
                print(json.dumps({"variant": Path(ckpt).parent.parent.name, "diagnose_t": t, **r}), flush=True)
    for name in [] if args.checkpoint else args.variants:
        run, seconds = train_variant(c, root, name, args.steps, train_dir, val_dir)
        last = run / "checkpoints" / "last.ckpt"
        # --trajectory: the 200-step checkpoints (default sampling only) before the last one (every setting).
        ckpts = sorted((run / "checkpoints").glob("step*.ckpt"))[:-1] if args.trajectory else []
        for ckpt in [*ckpts, last]:
            label = ckpt.stem if ckpt != last else str(args.steps)
            for s in (args.sampling if ckpt == last else ["default"]):
                gen = with_sampling(MotionGenerator.from_checkpoint(ckpt, use_ema=s != "raw"), s)
                row = {"variant": name, "ckpt": label, "sampling": s, "train_s": round(seconds),
                       **measure(gen, clips, gen.config.diffusion.sampling_steps)}
                rows.append(row)
                print(json.dumps(row), flush=True)
        if args.diagnose:
            gen = MotionGenerator.from_checkpoint(run / "checkpoints" / "last.ckpt")
            for t, r in diagnose_timesteps(gen, clips).items():
                print(json.dumps({"variant": name, "diagnose_t": t, **r}), flush=True)
        if args.stage2:
            export(run / "checkpoints" / "last.ckpt", run / "export")
            run2 = train_stage2(c, name, run, c.stage2_steps, train_dir, val_dir)
            gen2 = MotionGenerator.from_checkpoint(run2 / "checkpoints" / "last.ckpt")
            emo = emotion_control(gen2, load_clips([str(train_dir)], c.train_clips), clips[:2], c.sampling_steps)
            row = {"variant": name, "ckpt": "stage2", "sampling": "default", "train_s": 0,
                   **measure(gen2, clips, c.sampling_steps), "emotion_accuracy": emo["emotion_accuracy"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print_table(rows)
    (root / "smoothness.json").write_text(json.dumps(rows, indent=1))


def print_table(rows: list[dict]) -> None:
    cols = ["pose_velocity_ratio", "pose_acceleration_ratio", "exp_velocity_ratio", "exp_acceleration_ratio",
            "mouth_audio_r", "emotion_accuracy"]
    short = ["pose vel", "pose acc", "exp vel", "exp acc", "lip r", "emo acc"]
    print(f"\n| variant | ckpt | sampling | {' | '.join(short)} | train s |")
    print("|" + "---|" * (len(cols) + 4))
    for r in rows:
        vals = " | ".join(f"{r[k]:.2f}" if k in r else "–" for k in cols)
        print(f"| {r['variant']} | {r['ckpt']} | {r['sampling']} | {vals} | {r['train_s']} |")


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    main()
